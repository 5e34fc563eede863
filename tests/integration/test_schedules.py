"""Recurring schedules with several real supervisors on one home.

A fire is identified by its exec_at (anchor + k*every for an interval): every test
checks that each k appears at most once, and, where the misfire rules say nothing may be
missed, that no k is missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import coord_tasks
import pytest
from conftest import wait_for

import mpjobs
from mpjobs.coordination.leader import current_leader


def pools(app: mpjobs.App, n: int, workers: int = 1) -> list[mpjobs.Pool]:
    out = [app.start(workers=workers, graceful_timeout=5.0) for _ in range(n)]
    for p in out:
        p.wait_ready(timeout=20, workers=workers)
    return out


def stop(ps: list[mpjobs.Pool]) -> None:
    for p in ps:
        p.stop(timeout=20)


def slots(sch: mpjobs.Schedule) -> list[int]:
    """k of each job's fire (anchor + k*interval), sorted."""
    spec = json.loads(sch.app.store.get_schedule(sch.id).trigger)  # type: ignore[union-attr]
    anchor, every = spec["anchor"], spec["interval"]
    rows = sch.app.store.list_jobs(None, None, 10_000, schedule_id=sch.id)
    ks = [(r.exec_at - anchor) / every for r in rows]
    assert all(abs(k - round(k)) < 1e-6 for k in ks), f"fires off the grid: {ks}"
    return sorted(round(k) for k in ks)


def assert_once_each(ks: list[int]) -> None:
    dup = [k for k, n in Counter(ks).items() if n > 1]
    assert not dup, f"fired twice: {dup}"
    assert ks == list(range(ks[0], ks[0] + len(ks))), f"missing fires: {ks}"


def test_every_fires_exactly_once_per_period_with_two_supervisors(
    tmp_path: Path, home: Path
) -> None:
    app = mpjobs.App(home)
    out = tmp_path / "runs"
    ps = pools(app, 2)
    try:
        sch = app.schedule("coord_tasks:stamp", str(out)).every(0.2)
        wait_for(lambda: len(sch.jobs()) >= 10, 20, home=home, what="10 fires")
        sch.pause()
        wait_for(lambda: all(j.is_done() for j in sch.jobs()), 20, home=home, what="jobs to run")
    finally:
        stop(ps)
    ks = slots(sch)
    assert ks[0] == 0  # the first fire is one interval after the declaration
    assert_once_each(ks)
    assert len(coord_tasks.events(out)) == len(ks)  # and each job ran once
    assert all(j.status == mpjobs.JobStatus.SUCCESS for j in sch.jobs())


@pytest.mark.timeout(90)
def test_no_fire_doubled_or_lost_while_the_leader_is_killed(tmp_path: Path, home: Path) -> None:
    app = mpjobs.App(home)
    out = tmp_path / "runs"
    ps = pools(app, 2)
    try:
        sch = (
            app.schedule("coord_tasks:stamp", str(out))
            .options(coalesce=False, max_instances=None)
            .every(0.1, start="startup")
        )
        kills = 0
        for _ in range(5):
            n = len(sch.jobs())
            wait_for(lambda n=n: len(sch.jobs()) >= n + 3, 20, home=home, what="more fires")
            leader = current_leader(app.home)
            if leader is not None:
                os.kill(leader["pid"], signal.SIGKILL)
                kills += 1
        assert kills >= 4
        n = len(sch.jobs())
        wait_for(lambda: len(sch.jobs()) >= n + 3, 20, home=home, what="fires after the kills")
        sch.pause()
        wait_for(lambda: all(j.is_done() for j in sch.jobs(limit=10_000)), 20, home=home,
                 what="jobs to run")  # fmt: skip
    finally:
        stop(ps)
    ks = slots(sch)
    assert ks[0] == 0
    assert_once_each(ks)
    assert len(coord_tasks.events(out)) == len(ks)


def test_max_instances_holds_across_processes(tmp_path: Path, home: Path) -> None:
    """Each run takes 0.3 s, fires come every 0.1 s, two supervisors with two workers
    each: runs never overlap, and the fires in between are skipped."""
    app = mpjobs.App(home)
    out = tmp_path / "runs"
    ps = pools(app, 2, workers=2)
    try:
        sch = app.schedule("coord_tasks:slow", str(out), 0.3).options(max_instances=1).every(0.1)
        active_seen: list[int] = []

        def three_ended() -> bool:
            active_seen.append(app.store.active_count(sch.id))
            return sum(e[1] == "end" for e in coord_tasks.events(out)) >= 3

        wait_for(three_ended, 30, home=home, what="three runs")
        sch.pause()
        wait_for(lambda: all(j.is_done() for j in sch.jobs()), 20, home=home, what="last run")
    finally:
        stop(ps)
    assert max(active_seen) <= 1
    evs = [(t, e) for _, e, t, _ in coord_tasks.events(out)]
    kinds = [e for _, e in sorted(evs)]
    assert kinds == ["start", "end"] * (len(kinds) // 2), f"runs overlapped: {kinds}"
    ks = slots(sch)
    assert len(set(ks)) == len(ks)
    assert ks[-1] - ks[0] > len(ks), f"no fire was skipped: {ks}"


def test_coalesce_and_misfire_after_downtime(tmp_path: Path, home: Path) -> None:
    """Nothing ran for 55 s (next_run_time moved back); the pool then starts."""
    app = mpjobs.App(home)
    anchor = datetime.now(timezone.utc) - timedelta(seconds=55.5)
    scheds = {}
    for name, opts in {
        "coalesce": {"coalesce": True},
        "each": {"coalesce": False, "max_instances": None},
        "grace": {"coalesce": False, "max_instances": None, "misfire_grace_time": 25},
    }.items():
        s = app.schedule("coord_tasks:stamp", str(tmp_path / name)).options(id=name, **opts)
        scheds[name] = s.every(10, start=anchor)
        app.store.update_schedule(name, next_run_time=anchor.timestamp())
    t_start = time.time()
    ps = pools(app, 1)
    try:
        def caught_up() -> bool:
            return all(s.jobs() and all(j.is_done() for j in s.jobs()) for s in scheds.values())

        wait_for(caught_up, 20, home=home, what="catch-up runs")
    finally:
        stop(ps)
    assert time.time() - t_start < 4.5, "too slow: the next regular fire may have come"
    assert slots(scheds["coalesce"]) == [5]  # one run, for the latest missed fire
    assert slots(scheds["each"]) == [0, 1, 2, 3, 4, 5]  # every missed fire
    assert slots(scheds["grace"]) == [4, 5]  # only those at most 25 s late
    for s in scheds.values():
        assert s.next_run_time == anchor + timedelta(seconds=60)
        assert all(j.status == mpjobs.JobStatus.SUCCESS for j in s.jobs())


def test_max_failures_stops_the_schedule(tmp_path: Path, home: Path) -> None:
    app = mpjobs.App(home)
    out = tmp_path / "booms"
    ps = pools(app, 2)
    try:
        sch = app.schedule("coord_tasks:boom", str(out)).options(max_failures=3).every(0.05)
        wait_for(lambda: sch.state == "stopped", 20, home=home, what="the schedule to stop")
        assert sch.next_run_time is None
    finally:
        stop(ps)
    jobs = sorted(sch.jobs(), key=lambda j: j.exec_at)
    assert [j.status for j in jobs] == [mpjobs.JobStatus.FAILED] * 2 + [
        mpjobs.JobStatus.PERMANENTLY_FAILED
    ]
    assert "stopped after 3 consecutive failures" in (jobs[-1].error or "")
    with pytest.raises(mpjobs.JobFailedError):
        jobs[-1].result()
    sch.resume()
    assert sch.state == "active" and sch.failures == 0


def test_same_schedule_declared_in_three_processes_is_one(home: Path) -> None:
    code = f"import coord_tasks; coord_tasks.declare_stable({str(home)!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
    assert [p.wait(30) for p in procs] == [0, 0, 0]
    app = mpjobs.App(home)
    ids = sorted(s.id for s in app.schedules())
    assert len(ids) == 2 and "stable-report" in ids
    derived = next(i for i in ids if i != "stable-report")
    assert derived.startswith("coord_tasks:stamp@")
    before = app.get_schedule(derived).next_run_time  # type: ignore[union-attr]
    coord_tasks.declare_stable(str(home))  # a fourth process, later: still the same phase
    assert app.get_schedule(derived).next_run_time == before  # type: ignore[union-attr]
    app.schedule("coord_tasks:stamp", "/dev/null").options(id="stable-report").every(30)
    assert len(app.schedules()) == 2
    assert app.get_schedule("stable-report").trigger == "every 30s"  # type: ignore[union-attr]


def mpjobs_cli(home: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "mpjobs", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_handle_and_cli(tmp_path: Path, home: Path) -> None:
    app = mpjobs.App(home)
    out = tmp_path / "runs"
    nightly = app.schedule("coord_tasks:stamp", str(out)).options(id="nightly")
    sch = nightly.cron("0 3 * * *", tz="Europe/Paris")
    other = app.schedule("coord_tasks:stamp", str(out)).options(id="often").every("1h")
    assert {s.id for s in app.schedules()} == {"nightly", "often"}
    nrt = sch.next_run_time
    assert nrt is not None and nrt.astimezone(ZoneInfo("Europe/Paris")).hour == 3

    listing = mpjobs_cli(home, "schedules", "list")
    assert "nightly" in listing and "cron '0 3 * * *'" in listing and "often" in listing

    assert "paused" in mpjobs_cli(home, "schedules", "pause", "nightly")
    assert sch.state == "paused"
    assert "nightly" in mpjobs_cli(home, "schedules", "list") and sch.state == "paused"
    mpjobs_cli(home, "schedules", "resume", "nightly")
    assert sch.state == "active" and sch.next_run_time == nrt

    ps = pools(app, 1)
    try:
        wait_for(lambda: current_leader(app.home), 20, home=home, what="a leader")
        status = mpjobs_cli(home, "status")
        assert f"leader: pid {current_leader(app.home)['pid']}" in status  # type: ignore[index]
        assert "nightly: active, next " + nrt.astimezone().strftime("%Y-%m-%d %H:%M") in status
        # reschedule to fire soon: the leader picks the new time up
        sch.reschedule(every=0.1)
        wait_for(lambda: len(sch.jobs()) >= 1, 10, home=home, what="a fire after reschedule")
        assert sch.trigger == "every 0.1s"
        sch.pause()
    finally:
        stop(ps)

    mpjobs_cli(home, "schedules", "remove", "often")
    assert [s.id for s in app.schedules()] == ["nightly"]
    with pytest.raises(LookupError):
        other.next_run_time  # noqa: B018
    cmd = [sys.executable, "-m", "mpjobs", "schedules", "pause", "nope", "--home", str(home)]
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "no schedule 'nope'" in bad.stderr
