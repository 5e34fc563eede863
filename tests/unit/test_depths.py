"""Queue depths (store/census.py): exact up to DEPTH_CAP waiting jobs a queue, and the
leader's census beyond it, marked estimated; a census writes nothing when no queue is
deep; the memory backend is exact always. And the leader's other counting off the hot
path: its chores thread's priority, and the pushed counter's catch-up in short
transactions."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tasks

from mpjobs.runtime.housekeeping import Housekeeping
from mpjobs.store import counters
from mpjobs.store.base import RUNNING, SCHEDULED
from mpjobs.store.census import DEPTH_CAP
from mpjobs.store.memory import MemoryStore


def test_a_deep_queue_shows_a_floor_then_the_census(tmp_path: Path) -> None:
    app = tasks.make_app(tmp_path / "home")
    tasks.noop.map([()] * (DEPTH_CAP + 20), queue="deep", delay=3600)  # due in an hour
    tasks.noop.map([()] * 3, queue="small")
    store = app.store
    store.claim("w", 1, ["small"], 1, time.time())
    first = store.depths()
    assert first.counts == {
        "deep": {SCHEDULED: DEPTH_CAP + 1}, "small": {SCHEDULED: 2, RUNNING: 1}
    }
    assert first.estimated == {"deep": None}  # a floor: no census yet
    assert store.take_census(1234.5) == 1
    second = store.depths()
    assert second.counts["deep"] == {SCHEDULED: DEPTH_CAP + 20}
    assert second.estimated == {"deep": 1234.5}
    assert store.queue_depths() == second.counts
    # Below the cap again, the live count is exact and the census's row goes at the next.
    for job in app.jobs(status="SCHEDULED", queue="deep", limit=100):
        job.cancel()
    assert store.depths().counts["deep"] == {SCHEDULED: DEPTH_CAP - 80}
    assert store.depths().estimated == {}
    assert store.take_census(1240.0) == 0
    assert store._conn().execute("SELECT count(*) FROM depths").fetchone()[0] == 0


def test_a_census_with_nothing_deep_writes_nothing(tmp_path: Path) -> None:
    app = tasks.make_app(tmp_path / "home")
    tasks.noop.map([()] * 5)
    conn = app.store._conn()
    before = conn.total_changes  # type: ignore[union-attr]
    assert app.store.take_census(time.time()) == 0
    assert conn.total_changes == before  # type: ignore[union-attr]


def test_the_memory_backend_counts_exactly(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path)
    now = time.time()
    store.push([tasks.noop.schedule().new_job(now) for _ in range(DEPTH_CAP + 5)], now)
    assert store.depths().counts == {"default": {SCHEDULED: DEPTH_CAP + 5}}
    assert store.depths().estimated == {} and store.take_census(time.time()) == 0


def test_the_chores_read_at_the_lowest_priority_and_write_at_their_own(
    tmp_path: Path,
) -> None:
    """The leader's long reads (the census's counts) take the CPU the workers leave
    idle: nice 19, in a reader thread of their own; the writes, which take the write
    lock, stay at the chores thread's normal priority (a descheduled lock holder would
    hold every worker up). Nothing else of the process is niced."""
    store = tasks.make_app(tmp_path / "home").store
    tasks.noop.map([()] * (DEPTH_CAP + 1), queue="deep")
    seen: dict[str, int] = {}
    count, record = store._count_deep, store._tx
    counted = threading.Event()

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def counting(now: float) -> list[tuple[str, int, float]]:
        seen["read"] = niceness()
        return count(now)

    @contextlib.contextmanager
    def recording() -> Iterator[Any]:
        seen["write"] = niceness()
        with record() as tx:
            yield tx
        counted.set()

    store._count_deep = counting  # type: ignore[method-assign]
    store._tx = recording  # type: ignore[assignment]
    before = os.getpriority(os.PRIO_PROCESS, 0)
    runner = Housekeeping(store, None)
    runner.start()
    try:
        assert counted.wait(10), "the census did not run"
    finally:
        runner.stop()
        store.slow_reads = None
    assert seen == {"read": 19, "write": before}
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
    assert store.depths().counts["deep"] == {SCHEDULED: DEPTH_CAP + 1}


def test_a_catch_up_of_many_pushes_counts_them_in_short_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite counts pushes from the job rows above a watermark (store/counters.py); a
    bulk load counted in one go would hold the write lock against every worker, so the
    purge's catch-up takes CATCH_UP ids a transaction, and the count stays exact."""
    app = tasks.make_app(tmp_path / "home")
    tasks.noop.map([()] * 35)
    tasks.add.map([(1, 2)] * 5, queue="other")
    monkeypatch.setattr(counters, "CATCH_UP", 10)
    conn = app.store._conn()
    commits = []
    conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)  # type: ignore[union-attr]
    app.store.purge(time.time() - 3600)
    conn.set_trace_callback(None)  # type: ignore[union-attr]
    assert len(commits) >= 4  # 40 pushes, 10 a transaction, then the purge's own
    pushed = {
        (r.task, r.queue): r.n
        for r in app.store.metric_counts(time.time()).counters
        if r.name == counters.PUSHED
    }
    assert pushed == {("tasks.noop", "default"): 35, ("tasks.add", "other"): 5}
