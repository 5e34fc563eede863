"""Job control with real pools (SQLite and PostgreSQL): expires, rate_limit and
concurrency_key, checked from the jobs' own traces (files, O_APPEND start/end lines)
while workers are SIGKILLed, across two supervisors on one home."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import limit_tasks as lt
import pytest
from conftest import start_pools, started, stop_pools, wait_for

import mpjobs
from mpjobs import JobStatus

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def app(home: Path) -> mpjobs.App:
    return lt.make_app(home)


def _expired(job: mpjobs.Job) -> None:
    assert job.status is JobStatus.CANCELLED
    assert (job.error or "").startswith("expired: not started by its deadline 20")


def test_a_delayed_job_past_its_deadline_never_runs(app: mpjobs.App, tmp_path: Path) -> None:
    effect = tmp_path / "effect"
    job = lt.side_effect.schedule(str(effect)).options(expires=0.3).delay(0.2)
    deadline = time.time() + 0.5
    wait_for(lambda: time.time() > deadline + 0.05, 5, what="the deadline to pass")
    with started(app, workers=2):
        job.wait(20)
        _expired(job)
        after = lt.side_effect.schedule(str(tmp_path / "fresh")).options(expires="10s").now()
        assert after.wait(20).status is JobStatus.SUCCESS, "a job within its deadline runs"
    assert not effect.exists() and job.attempts == 0


def test_a_retry_due_after_the_deadline_is_not_run(app: mpjobs.App, tmp_path: Path) -> None:
    """The deadline is fixed at push from the first due time; retries keep it."""
    log, effect = tmp_path / "log", tmp_path / "effect"
    with started(app, workers=2):
        job = lt.fails_first.schedule(str(log), str(effect)).options(expires=1.0).now()
        job.wait(20)
        _expired(job)
    assert [w for w, _, _ in lt.lines(log)] == ["fail"]
    assert not effect.exists() and job.attempts == 1


def test_a_job_in_a_queue_no_worker_serves_is_expired_by_the_leader(
    app: mpjobs.App, tmp_path: Path
) -> None:
    effect = tmp_path / "effect"
    with started(app, workers=1, queues=["default"]):
        job = lt.side_effect.schedule(str(effect)).options(queue="nobody", expires=0.3).now()
        job.wait(20)
        _expired(job)
    assert not effect.exists()


def test_rate_limit_holds_across_two_supervisors_with_kills(
    app: mpjobs.App, tmp_path: Path
) -> None:
    log, n, rate = tmp_path / "starts", 100, 20
    pools = start_pools(app, 2)
    try:
        jobs = app.push_many([lt.rated.schedule(str(log)) for _ in range(n)])
        t0 = time.time()
        kills = 0
        while not all(j.is_done() for j in jobs) and time.time() - t0 < 30:
            victim = pools[kills % 2].workers()
            if victim:
                os.kill(victim[0], signal.SIGKILL)
                kills += 1
            wait_for(lambda k=kills: time.time() > t0 + 0.7 * k, 5, what="the next kill time")
        wait_for(lambda: all(j.is_done() for j in jobs), 40, home=app.home.path,
                 what="every rated job to finish")  # fmt: skip
    finally:
        stop_pools(pools)
    assert all(j.status is JobStatus.SUCCESS for j in jobs)
    assert kills >= 4
    starts = sorted(t for w, t, _ in lt.lines(log) if w == "start")
    assert len(starts) >= n
    # A fixed window of one second admits 20 claims; a start is noted a few ms after its
    # claim, so a start may cross into the next second: 2 of slack per aligned window.
    per_second: dict[int, int] = {}
    for t in starts:
        per_second[math.floor(t)] = per_second.get(math.floor(t), 0) + 1
    assert max(per_second.values()) <= rate + 2, per_second
    span = starts[-1] - starts[0]
    assert len(starts) <= rate * (span + 1) + 2, "within one window of the limit overall"
    # liveness only (kills and a loaded machine slow the starts; the bound above is the promise)
    assert span <= len(starts) / rate + 10, "and not much slower: jobs start as windows open"


def test_concurrency_limit_holds_across_two_supervisors_with_kills(
    app: mpjobs.App, tmp_path: Path
) -> None:
    log, n = tmp_path / "slots", 16
    pools = [app.start(workers=2, graceful_timeout=5.0) for _ in range(2)]
    killed: dict[int, float] = {}  # pid -> when it was killed
    try:
        for p in pools:
            p.wait_ready(timeout=20, workers=2)
        jobs = app.push_many([lt.slotted.schedule(str(log), "k", 0.3) for _ in range(n)])
        for _ in range(3):  # kill a worker while it holds a slot
            def holder() -> int | None:
                open_ = {pid for w, _, pid in lt.lines(log) if w == "start"} - {
                    pid for w, _, pid in lt.lines(log) if w == "end"} - set(killed)
                alive = {w for p in pools for w in p.workers()}
                return next(iter(open_ & alive), None)

            pid = wait_for(holder, 20, what="a worker holding a slot")
            assert isinstance(pid, int)
            os.kill(pid, signal.SIGKILL)
            killed[pid] = time.time()
        wait_for(lambda: all(j.is_done() for j in jobs), 60, home=app.home.path,
                 what="every slotted job to finish")  # fmt: skip
    finally:
        stop_pools(pools)
    assert all(j.status is JobStatus.SUCCESS for j in jobs)
    events: list[tuple[float, int]] = []
    open_starts: dict[int, float] = {}
    for what, t, pid in lt.lines(log):
        if what == "start":
            assert pid not in open_starts, "one job at a time per worker"
            open_starts[pid] = t
            events.append((t, +1))
        else:
            del open_starts[pid]
            events.append((t, -1))
    for pid in open_starts:  # a killed job stopped when its worker was killed
        events.append((killed[pid], -1))
    assert set(open_starts) == set(killed)
    running = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        running += step
        peak = max(peak, running)
    assert peak == 2, f"at most 2 with key 'k' at once, and the limit is used (peak {peak})"


def test_a_job_waiting_on_its_key_does_not_block_the_queue(
    app: mpjobs.App, tmp_path: Path
) -> None:
    log, release = tmp_path / "log", tmp_path / "release"
    with started(app, workers=2):
        first = lt.hold_door.schedule(str(log), str(release)).now()
        wait_for(lambda: lt.lines(log), 20, what="the first job to hold the key")
        second = lt.hold_door.schedule(str(log), str(release)).now()
        behind = lt.plain.schedule(str(log)).now()
        assert behind.wait(20).status is JobStatus.SUCCESS
        assert second.status is JobStatus.SCHEDULED, "it waits for the key's one slot"
        release.touch()
        assert first.wait(20).status is JobStatus.SUCCESS
        assert second.wait(20).status is JobStatus.SUCCESS
    starts = [t for w, t, _ in lt.lines(log) if w == "start"]
    ends = [t for w, t, _ in lt.lines(log) if w == "end"]
    assert len(starts) == 2 and starts[1] >= ends[0], "never both at once"


def test_parallel_claimers_never_share_a_keys_last_slot(app: mpjobs.App, tmp_path: Path) -> None:
    """Eight threads (each its own connection) claim at once: one takes the key's slot."""
    import threading

    log = tmp_path / "log"
    jobs = app.push_many(
        [lt.slotted.schedule(str(log), "last").options(concurrency_limit=1) for _ in range(10)]
    )
    store, barrier = app.store, threading.Barrier(8)
    taken: list[int] = []

    def claim(i: int) -> None:
        barrier.wait(10)
        got = store.claim(f"claimer-{i}", os.getpid(), None, 4, time.time())
        taken.extend(j.id for j in got)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(taken) == 1, taken  # exactly one claimer got the key's one slot
    if app.store_url is None:  # SQLite's claims take turns: the first in queue order
        assert taken[0] == int(jobs[0].id), taken
    # (PostgreSQL's claimers skip rows another holds locked, so any of them may go first)
