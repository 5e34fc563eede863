"""Leader election with several real supervisors on one home.

Each supervisor forks a coordinator, and every coordinator is a leader candidate. A
leader-scoped lifecycle task records setup/tick/cleanup lines; the tests check that they
only ever come from one process at a time, including across SIGKILLs of the leader.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import coord_tasks
import pytest
from conftest import start_pools, stop_pools, wait_for

from mpjobs.coordination.leader import current_leader

EVERY = 0.05


def runs(evs: list[tuple[int, str, float, list[str]]]) -> list[tuple[int, list[str]]]:
    """Group events, ordered by time, into maximal runs of one pid."""
    out: list[tuple[int, list[str]]] = []
    for pid, event, _t, _x in sorted(evs, key=lambda e: e[2]):
        if out and out[-1][0] == pid:
            out[-1][1].append(event)
        else:
            out.append((pid, [event]))
    return out


def check_one_at_a_time(evs: list[tuple[int, str, float, list[str]]], every: float) -> None:
    """Each pid's lines form one contiguous run that starts with its setup, and a new
    leader's first tick comes at least `every` after the previous leader's last tick."""
    rs = runs(evs)
    pids = [pid for pid, _ in rs]
    assert len(pids) == len(set(pids)), f"two processes interleaved: {pids}"
    for pid, kinds in rs:
        assert kinds[0] == "setup" and kinds.count("setup") == 1, (pid, kinds)
    ticks = sorted((t, pid) for pid, e, t, _ in evs if e == "tick")
    for (t0, p0), (t1, p1) in itertools.pairwise(ticks):
        if p0 != p1:
            assert t1 - t0 >= every, f"ticks of {p0} and {p1} only {t1 - t0:.3f}s apart"


def test_leader_task_ticks_in_exactly_one_of_three(tmp_path: Path, home: Path) -> None:
    out = tmp_path / "ticks"
    app = coord_tasks.ticker_app(home, out, every=EVERY)
    pools = start_pools(app, 3)
    try:
        wait_for(lambda: sum(e[1] == "tick" for e in coord_tasks.events(out)) >= 15, 20,
                 what="15 ticks")  # fmt: skip
        leader = current_leader(app.home)
        assert leader is not None
        coordinators = {p.coordinator() for p in pools}
        assert leader["pid"] in coordinators and len(coordinators) == 3
        running = coord_tasks.events(out)
    finally:
        stop_pools(pools)
    assert {pid for pid, *_ in running} == {leader["pid"]}
    kinds = [e for _, e, _, _ in running]
    assert kinds[0] == "setup" and kinds.count("setup") == 1
    # Stopping the pools one by one hands leadership over: each leader cleans up before
    # the next one sets up, and none of them overlap.
    evs = coord_tasks.events(out)
    check_one_at_a_time(evs, EVERY)
    for pid in {pid for pid, *_ in evs}:
        assert [e for p, e, _, _ in evs if p == pid][-1] == "cleanup"


@pytest.mark.timeout(90)
def test_failover_after_sigkill_of_the_leader(tmp_path: Path, home: Path) -> None:
    out = tmp_path / "ticks"
    app = coord_tasks.ticker_app(home, out, every=EVERY)
    pools = start_pools(app, 3)
    killed: list[int] = []
    try:
        wait_for(lambda: any(e[1] == "tick" for e in coord_tasks.events(out)), 20, what="a tick")
        for _ in range(4):
            leader = current_leader(app.home)
            assert leader is not None
            pid = leader["pid"]
            # taken before the kill: the new leader may set up before os.kill() returns
            t_kill = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

            def new_tick(pid: int = pid, t_kill: float = t_kill) -> bool:
                return any(e[1] == "tick" and e[0] != pid and e[2] > t_kill
                           for e in coord_tasks.events(out))  # fmt: skip

            wait_for(new_tick, 20, home=home, what="a tick of a new leader")
            evs = coord_tasks.events(out)
            new_pid = next(p for p, e, t, _ in evs if e == "setup" and t > t_kill)
            setup = next(t for p, e, t, _ in evs if p == new_pid and e == "setup")
            first = next(t for p, e, t, _ in evs if p == new_pid and e == "tick")
            assert new_pid not in killed
            # The bound the issue asks for; in practice it is a few milliseconds + EVERY.
            assert first - t_kill < 1.0, f"new leader ticked {first - t_kill:.3f}s after the kill"
            assert setup > t_kill
            wait_for(lambda p=new_pid: (current_leader(app.home) or {}).get("pid") == p, 10,
                     home=home, what="leader.json to name the new leader")  # fmt: skip
        # every supervisor replaced its killed coordinator: still one candidate each
        wait_for(lambda: all(p.coordinator() is not None for p in pools), 20, home=home,
                 what="replacement coordinators")  # fmt: skip
        running = coord_tasks.events(out)
    finally:
        stop_pools(pools)
    assert len({pid for pid, *_ in running}) == len(killed) + 1
    evs = coord_tasks.events(out)  # with the handovers of the graceful stops
    check_one_at_a_time(evs, EVERY)
    for pid in killed:  # SIGKILL: no cleanup ran
        assert [e for p, e, _, _ in evs if p == pid].count("cleanup") == 0


def test_status_cli_shows_the_leader(tmp_path: Path, home: Path) -> None:
    out = tmp_path / "ticks"
    app = coord_tasks.ticker_app(home, out, every=1.0)
    pools = start_pools(app, 2)
    try:
        wait_for(lambda: current_leader(app.home), 20, home=home, what="a leader")
        leader = current_leader(app.home)
        assert leader is not None
        cmd = [sys.executable, "-m", "mpjobs", "status", "--home", str(home)]
        text = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
        assert f"leader: pid {leader['pid']}" in text
        assert "(leader)" in text
        data = json.loads(subprocess.run([*cmd, "--json"], capture_output=True, text=True,
                                         timeout=30, check=True).stdout)  # fmt: skip
        assert data["leader"]["pid"] == leader["pid"]
        leaders = [p for p in data["processes"] if p["kind"] == "coordinator" and p.get("leader")]
        assert [p["pid"] for p in leaders] == [leader["pid"]]
    finally:
        stop_pools(pools)
