"""Every hot query of the SQLite store is an index seek, as SQLite plans it (issue 15).

The statements are not copied here: the store's own methods run on a connection that
records every statement with its parameters as bound, and each is planned by EXPLAIN
QUERY PLAN with those parameters, so a partial index the planner cannot use for a bound
value is seen as the scan it is. A full scan of the jobs table, or a sort of its rows,
fails (the one sort allowed is of a few rows merged from bounded ranges); a walk of an
index is allowed only where it is bounded (a page of a listing, newest first, stops
after `limit` rows) or reads the backlog's own index (queue depths).
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mpjobs.home import Home
from mpjobs.store import connection
from mpjobs.store.base import FAILED, SUCCESS, Completion, NewJob
from mpjobs.store.sqlite import SqliteStore, open_store

QUEUES = ("q0", "q1", "q2", "q3", "q4")


class Recording(sqlite3.Connection):
    """A connection that notes each statement it runs, with the parameters it bound."""

    seen: list[tuple[str, Any]] = []

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        Recording.seen.append((sql, parameters))
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        rows = list(parameters)
        Recording.seen.append((sql, rows[0] if rows else ()))
        return super().executemany(sql, rows)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqliteStore]:
    monkeypatch.setattr(
        connection.sqlite3, "connect", functools.partial(sqlite3.connect, factory=Recording)
    )
    s = open_store(Home.resolve(tmp_path / "home"))
    now = time.time()
    jobs = [
        NewJob(f"t{i % 2}", "m:f", None, None, QUEUES[i % 5], i % 3, when, 3, 1.0, None,
               None, None, "sched" if i % 7 == 0 else None)
        for i in range(300)
        for when in ((now - 5) if i % 2 else (now + 86400),)
    ]  # fmt: skip
    s.push(jobs, now)
    claimed = s.claim("w", 1, None, 40, now)
    s.complete("w", [Completion(j.id, SUCCESS if j.id % 3 else FAILED) for j in claimed], now)
    yield s
    s.close()


def plans(store: SqliteStore, call: Callable[[], object]) -> list[tuple[str, str]]:
    """(statement, plan) of every statement on jobs that `call` runs."""
    Recording.seen.clear()
    call()
    conn = store._conn()
    out = []
    for sql, args in list(Recording.seen):
        head = sql.lstrip().upper()
        if " JOBS" not in head or head.startswith(("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA")):
            continue
        rows = sqlite3.Connection.execute(conn, f"EXPLAIN QUERY PLAN {sql}", args).fetchall()
        out.append((sql, " | ".join(str(r[3]) for r in rows)))
    assert out, "the call ran no statement on jobs"
    return out


def assert_seeks(
    store: SqliteStore, call: Callable[[], object], walks: tuple[str, ...] = ()
) -> None:
    """No full scan of jobs, no sort; index walks only of the indexes in `walks`."""
    for sql, plan in plans(store, call):
        steps = plan.split(" | ")
        for step in steps:
            # The one sort allowed: of one priority's arms merged (store/due.py, alias u),
            # each arm a range of jobs_ready read at most LIMIT entries deep.
            merge = "SCAN u" in steps and "LIMIT ?) AS a UNION ALL" in sql
            assert "TEMP B-TREE FOR ORDER BY" not in step or merge, (sql, plan)
            if step.startswith("SCAN jobs"):
                assert " INDEX " in step, f"full scan of jobs: {sql}\n{plan}"
                index = step.split(" INDEX ", 1)[1].split()[0]
                assert index in walks, f"a walk of {index}: {sql}\n{plan}"


@pytest.mark.parametrize("queues", [None, ["q1"], ["q2", "q3"]])
def test_the_claim_and_the_due_reads_seek(store: SqliteStore, queues: list[str] | None) -> None:
    now = time.time()
    assert_seeks(store, lambda: store.has_due(queues, now))
    assert_seeks(store, lambda: store.has_due(queues, now - 3600))  # nothing due
    assert_seeks(store, lambda: store.next_exec_at(queues))
    assert_seeks(store, lambda: store.claim("w2", 2, queues, 10, now))
    assert_seeks(store, lambda: store.claim("w2", 2, queues, 10, now, share=4))  # fair share
    assert_seeks(store, lambda: store.claim("w2", 2, queues, 10, now - 3600))  # none due


def test_the_operator_reads_seek(store: SqliteStore) -> None:
    now = time.time()
    assert_seeks(store, lambda: store.active_count("sched"))
    assert_seeks(store, lambda: store.purge(now - 3600))  # nothing expired
    assert_seeks(store, lambda: store.get(7))
    assert_seeks(store, lambda: store.status_of(7))
    for status in (SUCCESS, FAILED):  # a page walks its status's index, newest first
        walk = (f"jobs_{status.lower()}",)
        assert_seeks(store, lambda s=status: store.list_jobs(s, "q1", 100), walk)  # type: ignore[misc]
        assert_seeks(store, lambda s=status: store.list_jobs(s, None, 100), walk)  # type: ignore[misc]
        assert_seeks(store, lambda s=status: store.job_ids(s, "q1", 100), walk)  # type: ignore[misc]
    # The running jobs are as many as the pools' slots: read them all (listing.py).
    assert_seeks(store, lambda: store.list_jobs("RUNNING", "q1", 100), ("jobs_running",))
    # The depths read each queue's backlog at most DEPTH_CAP deep (a seek, then a bounded
    # range), and the running jobs, as many as the slots (store/census.py).
    assert_seeks(store, store.queue_depths, ("jobs_running",))


def test_a_fire_counts_the_schedules_live_jobs_by_a_seek(store: SqliteStore) -> None:
    """max_instances is checked inside the fire's transaction: a seek among live jobs."""
    found = [
        (sql, plan)
        for sql, plan in plans(store, lambda: store.active_count("sched"))
        if "schedule_id" in sql
    ]
    assert found and all("jobs_schedule_live" in plan for _, plan in found), found
