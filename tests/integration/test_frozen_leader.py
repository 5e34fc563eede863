"""A leader that shows no sign of life is made to give way, within a bound.

A stopped (SIGSTOP) or stuck leader keeps `leader.lock`, so no schedule fires and no
leader lifecycle task ticks. The leader beats (`leader.beat`); a candidate that finds
the beat older than MPJOBS_LEADER_TIMEOUT kills the silent leader (which frees the lock
only once it is gone, so two leaders never overlap) and takes over, and a leader whose
lifecycle tick hangs in user code exits by itself. Each test synchronises on the lines
the tasks record and bounds every wait.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path

import coord_tasks
import frozen_tasks
import psutil
import pytest
from conftest import start_pools, stop_pools, wait_for

import mpjobs
import mpjobs.runtime.supervisor
from mpjobs.coordination.leader import current_leader

BOUND = 1.5  # MPJOBS_LEADER_TIMEOUT in these tests
MARGIN = 4.0  # a look every BOUND/4, the kill, the handover, a setup and a tick, on a loaded host

Events = list[tuple[int, str, float, list[str]]]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def after(evs: Events, event: str, t: float, not_pid: int | None = None) -> Events:
    return [e for e in evs if e[1] == event and e[2] > t and e[0] != not_pid]


def leading(app: mpjobs.App) -> int:
    leader = wait_for(lambda: current_leader(app.home), 20, what="a leader")
    assert isinstance(leader, dict)
    return int(leader["pid"])


def check_one_leader_at_a_time(evs: Events) -> None:
    """Lifecycle lines come in one contiguous run per process: no two leaders overlap."""
    pids: list[int] = []
    for pid, _e, _t, _x in sorted(evs, key=lambda e: e[2]):
        if not pids or pids[-1] != pid:
            pids.append(pid)
    assert len(pids) == len(set(pids)), f"two leaders interleaved: {pids}"


def replaced(
    ticks: Path, fires: Path, old: int, t0: float, within: float = BOUND + 20
) -> tuple[int, float]:
    """Wait for a tick of another leader after t0, then for schedule fires after it."""
    wait_for(lambda: after(coord_tasks.events(ticks), "tick", t0, old), within,
             what="a tick of a new leader")  # fmt: skip
    new_pid, _, t_tick, _ = after(coord_tasks.events(ticks), "tick", t0, old)[0]
    wait_for(lambda: len(after(coord_tasks.events(fires), "fire", t_tick)) >= 3, 20,
             what="schedule fires under the new leader")  # fmt: skip
    return new_pid, t_tick


@pytest.mark.timeout(120)
@pytest.mark.parametrize("whole_pool", [False, True], ids=["coordinator", "whole-pool"])
def test_a_stopped_leader_is_killed_and_replaced_by_another_pool(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, whole_pool: bool
) -> None:
    """SIGSTOP of the leading coordinator, or of its whole pool (Ctrl-Z of `mpjobs run`,
    where its supervisor cannot act): a candidate of the other pool kills it and leads."""
    monkeypatch.setenv("MPJOBS_LEADER_TIMEOUT", str(BOUND))
    ticks, fires = tmp_path / "ticks", tmp_path / "fires"
    app = frozen_tasks.ticker_app(home, ticks)
    # The pool to stop leads, and its worker runs none of the fires: a worker stopped
    # inside a transaction would hold the store's write lock (not this test's subject).
    first = app.start(workers=1, queues=["elsewhere"], graceful_timeout=5.0)
    pools = [first]
    stopped: int | None = None
    try:
        first.wait_ready(timeout=20, workers=1)
        old = leading(app)
        assert old == first.coordinator()
        pools += start_pools(app, 1)
        app.schedule("coord_tasks:stamp", str(fires), "fire").every("0.1s")
        wait_for(lambda: len(after(coord_tasks.events(fires), "fire", 0)) >= 3, 20,
                 what="schedule fires")  # fmt: skip
        wait_for(lambda: after(coord_tasks.events(ticks), "tick", 0), 20, what="a tick")
        assert leading(app) == old
        stopped = first.pid if whole_pool else old
        if whole_pool:
            os.killpg(first.pid, signal.SIGSTOP)  # the pool is a process group of its own
        else:
            os.kill(old, signal.SIGSTOP)
        # From when it has stopped: a thread of it on the other core may still be
        # finishing a tick when kill() returns.
        wait_for(lambda: psutil.Process(old).status() == psutil.STATUS_STOPPED, 10,
                 what="the leader to stop")  # fmt: skip
        t0 = time.monotonic()
        new_pid, t_tick = replaced(ticks, fires, old, t0)
        assert t_tick - t0 < BOUND + MARGIN, f"replaced after {t_tick - t0:.2f}s"
        assert leading(app) == new_pid == pools[1].coordinator()
        # It was killed, not overtaken: when it is woken it cannot lead again.
        wait_for(lambda: gone(old), 10, what="the stopped leader to be killed")
        cont(stopped, whole_pool)  # the old leader is a zombie until its supervisor reaps it
        stopped = None
        t_cont = time.monotonic()
        wait_for(lambda: len(after(coord_tasks.events(ticks), "tick", t_cont)) >= 5, 20,
                 what="ticks after SIGCONT")  # fmt: skip
        assert leading(app) == new_pid
        # and the woken pool has a candidate again
        wait_for(lambda: first.coordinator() not in (None, old), 20, home=home,
                 what="the woken pool's new coordinator")  # fmt: skip
    finally:
        if stopped is not None:
            cont(stopped, whole_pool)
        stop_pools(pools)
    evs = coord_tasks.events(ticks)
    assert not [e for e in evs if e[0] == old and e[2] > t0], "the stopped leader ran again"
    check_one_leader_at_a_time(evs)


def cont(pid: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(pid, signal.SIGCONT)
        else:
            os.kill(pid, signal.SIGCONT)


@pytest.mark.timeout(120)
def test_a_stopped_leader_of_the_only_pool_is_replaced_by_its_supervisor(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPJOBS_LEADER_TIMEOUT", str(BOUND))
    ticks, fires = tmp_path / "ticks", tmp_path / "fires"
    app = frozen_tasks.ticker_app(home, ticks)
    pools = start_pools(app, 1)
    stopped: int | None = None
    try:
        app.schedule("coord_tasks:stamp", str(fires), "fire").every("0.1s")
        wait_for(lambda: after(coord_tasks.events(ticks), "tick", 0), 20, what="a tick")
        old = leading(app)
        os.kill(old, signal.SIGSTOP)
        stopped, t0 = old, time.monotonic()
        # no other candidate: only the supervisor (the 1 s housekeeping) can act
        new_pid, _ = replaced(ticks, fires, old, t0, within=BOUND + 1.0 + MARGIN)
        assert gone(old)
        assert leading(app) == new_pid == pools[0].coordinator()
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        stop_pools(pools)
    check_one_leader_at_a_time(coord_tasks.events(ticks))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("own_timeout", [False, True], ids=["leader-bound", "task-timeout"])
def test_a_lifecycle_tick_that_hangs_makes_the_leader_give_way(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, own_timeout: bool
) -> None:
    """By default a tick may run for the leader bound; `timeout=` sets its own bound."""
    ticks, fires, marker = tmp_path / "ticks", tmp_path / "fires", tmp_path / "hung"
    tick_timeout = 1.0
    monkeypatch.setenv("MPJOBS_LEADER_TIMEOUT", "30" if own_timeout else str(tick_timeout))
    app = frozen_tasks.ticker_app(
        home, ticks, hang_marker=marker, hang_timeout=tick_timeout if own_timeout else None
    )
    pools = start_pools(app, 1)
    try:
        app.schedule("coord_tasks:stamp", str(fires), "fire").every("0.1s")
        wait_for(lambda: after(coord_tasks.events(ticks), "hang", 0), 20, what="the hang")
        hung, _, t_hang, _ = after(coord_tasks.events(ticks), "hang", 0)[0]
        assert hung == leading(app)
        new_pid, t_tick = replaced(ticks, fires, hung, t_hang)
        assert t_tick - t_hang < tick_timeout + MARGIN, f"replaced after {t_tick - t_hang:.2f}s"
        assert gone(hung)
        assert leading(app) == new_pid == pools[0].coordinator()
    finally:
        stop_pools(pools)
    evs = coord_tasks.events(ticks)
    assert not [e for e in evs if e[0] == hung and e[2] > t_hang + tick_timeout + 1.0]
    check_one_leader_at_a_time([e for e in evs if e[1] != "hang"])


@pytest.mark.timeout(120)
def test_a_leader_waiting_on_a_locked_store_is_not_killed(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPJOBS_LEADER_TIMEOUT", "2")
    ticks, fires = tmp_path / "ticks", tmp_path / "fires"
    app = frozen_tasks.ticker_app(home, ticks)
    pools = start_pools(app, 2)
    fd = os.open(app.home.write_lock, os.O_RDWR | os.O_CLOEXEC)
    try:
        app.schedule("coord_tasks:stamp", str(fires), "fire").every("0.1s")
        wait_for(lambda: len(after(coord_tasks.events(fires), "fire", 0)) >= 3, 20,
                 what="schedule fires")  # fmt: skip
        leader = leading(app)
        fcntl.flock(fd, fcntl.LOCK_EX)  # every writer of the home now waits on us
        try:
            # the leader tries a write every 0.1 s (a fire is due) and waits, bounded
            t_held = time.monotonic()

            def held_long_enough() -> bool:  # twice the bound and more, the leader alive
                assert not gone(leader), "a leader waiting on the store was killed"
                return time.monotonic() - t_held > 2 * 2 + 1

            wait_for(held_long_enough, 10, what="twice the bound")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        t_free = time.monotonic()
        wait_for(lambda: len(after(coord_tasks.events(fires), "fire", t_free)) >= 3, 20,
                 what="fires after the store is free")  # fmt: skip
        assert leading(app) == leader and not gone(leader)
        running = coord_tasks.events(ticks)  # before the stop hands leadership over
    finally:
        os.close(fd)
        stop_pools(pools)
    assert {pid for pid, e, _t, _x in running if e == "setup"} == {leader}
