"""Lifecycle tasks in real pools: cadence, crash/restart, async generators, worker scope."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import coord_tasks
import pytest
from conftest import wait_for

from mpjobs.scheduling import lifecycle
from mpjobs.scheduling.lifecycle import LifecycleRunner, LifecycleTask


def n_events(out: Path, kind: str) -> int:
    return sum(e[1] == kind for e in coord_tasks.events(out))


def test_ticks_keep_cadence_without_drift(tmp_path: Path, home: Path) -> None:
    """Each tick takes 40% of the period; measured from the end of the last tick that
    would drift by 0.4 period per tick. Ticks must stay at start + k*every."""
    every = 0.1
    out = tmp_path / "ticks"
    app = coord_tasks.slow_ticker_app(home, out, every=every, work=0.04)
    with app.start(workers=1, graceful_timeout=5.0) as pool:
        pool.wait_ready(timeout=20)
        wait_for(lambda: n_events(out, "tick") >= 12, 20, what="12 ticks")
    ticks = [t for _, e, t, _ in coord_tasks.events(out) if e == "tick"]
    phases = [(t - ticks[0]) / every for t in ticks]
    slots = [round(p) for p in phases]
    assert slots == sorted(set(slots)), f"ticks out of order or doubled: {phases}"
    # On a loaded machine one tick may be late, but the next one is back on the grid.
    off = [abs(p - s) for p, s in zip(phases, slots, strict=True)]
    assert sorted(off)[len(off) // 2] < 0.2, f"ticks drift off start + k*every: {phases}"
    assert off[-1] < 0.35, f"last tick is {off[-1]:.2f} period off the grid: {phases}"


def test_a_crashing_generator_is_cleaned_up_and_restarted(tmp_path: Path, home: Path) -> None:
    out = tmp_path / "ticks"
    app = coord_tasks.crashing_app(home, out, every=0.05, fail_at=3)
    with app.start(workers=1, graceful_timeout=5.0) as pool:
        pool.wait_ready(timeout=20)
        coordinator = wait_for(pool.coordinator, 20, home=home, what="the coordinator")
        wait_for(lambda: n_events(out, "tick") >= 4, 20, home=home, what="a restart")
        assert pool.coordinator() == coordinator, "the crash took the coordinator down"
    evs = coord_tasks.events(out)
    assert {pid for pid, *_ in evs} == {coordinator}
    kinds = [e for _, e, _, _ in evs]
    assert kinds[:6] == ["setup", "tick", "tick", "tick", "cleanup", "setup"]
    cleanup, again = evs[4][2], evs[5][2]
    assert again - cleanup >= lifecycle.RESTART_BACKOFF[0] * 0.9, "restarted without a backoff"


def test_crash_is_logged_and_backoff_grows(caplog: pytest.LogCaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """In-process (threads only): the failure is logged with its traceback, the finally
    block runs, and the restart delay doubles."""
    monkeypatch.setattr(lifecycle, "RESTART_BACKOFF", (0.02, 0.08))
    seen: list[str] = []
    three = threading.Event()

    def gen() -> Iterator[None]:
        seen.append("setup")
        try:
            yield
            raise KeyError("tick failed")
        finally:
            seen.append("cleanup")
            if seen.count("cleanup") >= 3:
                three.set()

    runner = LifecycleRunner([LifecycleTask(gen, 0.01, "leader")])
    with caplog.at_level(logging.ERROR, logger="mpjobs.lifecycle"):
        runner.start()
        try:
            assert three.wait(10)
        finally:
            runner.stop(10)
    assert seen[:6] == ["setup", "cleanup"] * 3
    failures = [r for r in caplog.records if "failed; restarting" in r.getMessage()]
    assert len(failures) >= 3 and failures[0].exc_info is not None
    assert "KeyError" in caplog.text


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_worker_scope_runs_in_each_worker(tmp_path: Path, home: Path, asynchronous: bool) -> None:
    out = tmp_path / "ticks"
    app = coord_tasks.ticker_app(home, out, every=0.05, scope="worker", asynchronous=asynchronous)
    pool = app.start(workers=2, graceful_timeout=5.0)
    try:
        pool.wait_ready(timeout=20, workers=2)
        workers = set(pool.workers())

        def each_ticked() -> bool:
            evs = coord_tasks.events(out)
            return all(any(p == w and e == "tick" for p, e, _, _ in evs) for w in workers)

        wait_for(each_ticked, 20, what="a tick in each worker")
    finally:
        pool.stop(timeout=20)
    evs = coord_tasks.events(out)
    assert {pid for pid, *_ in evs} == workers  # never in the coordinator or supervisor
    for w in workers:
        kinds = [e for p, e, _, _ in evs if p == w]
        assert kinds[0] == "setup" and kinds[-1] == "cleanup", kinds
        assert kinds.count("setup") == kinds.count("cleanup") == 1


def test_async_leader_task(tmp_path: Path, home: Path) -> None:
    out = tmp_path / "ticks"
    app = coord_tasks.ticker_app(home, out, every=0.05, asynchronous=True)
    with app.start(workers=1, graceful_timeout=5.0) as pool:
        pool.wait_ready(timeout=20)
        wait_for(lambda: n_events(out, "tick") >= 3, 20, what="3 async ticks")
        coordinator = pool.coordinator()
    kinds = [e for p, e, _, _ in coord_tasks.events(out) if p == coordinator]
    assert kinds[0] == "setup" and kinds[-1] == "cleanup" and kinds.count("tick") >= 3
