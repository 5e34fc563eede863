"""The dependency rules of store/deps.py (SQLite) and memory_deps.py (in memory), in this
process: release once the count reaches 0, cancellation cascades with the reason, a
retry releases nothing, a completion applied twice releases nothing twice, push-time
errors. Real workers: tests/integration/test_workflows.py."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from mpjobs.errors import ConfigError, NotFoundError
from mpjobs.home import Home
from mpjobs.store.base import (
    CANCELLED,
    FAILED,
    RUNNING,
    SCHEDULED,
    SUCCESS,
    Completion,
    NewJob,
    Store,
)
from mpjobs.store.deps import WAITING_AT
from mpjobs.store.memory import MemoryStore
from mpjobs.store.sqlite import open_store


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    home = Home.resolve(tmp_path / "home")
    s: Store = open_store(home) if request.param == "sqlite" else MemoryStore(home)  # type: ignore[assignment]
    return s


def new(name: str = "t", unique_key: str | None = None) -> NewJob:
    return NewJob(
        name=name, func="tasks:noop", func_pickle=None, payload=None, queue="default",
        priority=0, exec_at=time.time(), max_attempts=1, retry_backoff=1.0, timeout=None,
        memory_limit=None, unique_key=unique_key,
    )  # fmt: skip


def run(store: Store, job_id: int, status: str = SUCCESS, owner: str = "w") -> None:
    """Claim exactly `job_id` (the only due job) and complete it with `status`."""
    now = time.time()
    (rec,) = store.claim(owner, 1, None, 1, now)
    assert rec.id == job_id
    store.complete(owner, [Completion(job_id, status)], now)


def due(store: Store, job_id: int) -> bool:
    rec = store.get(job_id)
    assert rec is not None
    return rec.status == SCHEDULED and rec.exec_at < WAITING_AT


def test_child_released_when_all_parents_succeed(store: Store) -> None:
    now = time.time()
    a, b = (i for i, _ in store.push([new("a"), new("b")], now))
    (c,) = store.push_linked([new("c")], [[a, b]], None, now)
    assert store.get(c).exec_at == WAITING_AT  # type: ignore[union-attr]
    assert not store.has_due(None, WAITING_AT - 1) or store.next_exec_at(None) != WAITING_AT
    run(store, a)
    assert not due(store, c)
    run(store, b)
    assert due(store, c)
    assert store.links(c) == ([a, b], [])
    assert store.links(a) == ([], [c])


def test_failure_cancels_transitively_with_reason(store: Store) -> None:
    now = time.time()
    ((a, _),) = store.push([new("a")], now)
    (b,) = store.push_linked([new("b")], [[a]], None, now)
    (c,) = store.push_linked([new("c")], [[b]], None, now)
    run(store, a, FAILED)
    rb, rc = store.get(b), store.get(c)
    assert rb is not None and rc is not None
    assert (rb.status, rc.status) == (CANCELLED, CANCELLED)
    assert f"dependency job {a} ended FAILED" in (rb.error or "")
    assert f"dependency job {b} ended CANCELLED" in (rc.error or "")


def test_retry_of_parent_releases_nothing(store: Store) -> None:
    now = time.time()
    ((a, _),) = store.push([new("a")], now)
    (b,) = store.push_linked([new("b")], [[a]], None, now)
    (_rec,) = store.claim("w", 1, None, 1, time.time())
    store.complete("w", [Completion(a, SCHEDULED, exec_at=now)], now)
    assert store.status_of(a) == SCHEDULED and not due(store, b)
    run(store, a)
    assert due(store, b)


def test_completion_applied_twice_releases_once(store: Store) -> None:
    now = time.time()
    a, b = (i for i, _ in store.push([new("a"), new("b")], now))
    (c,) = store.push_linked([new("c")], [[a, b]], None, now)
    (_rec,) = store.claim("w", 1, None, 1, time.time())
    store.complete("w", [Completion(a, SUCCESS)], now)
    store.complete("w", [Completion(a, SUCCESS)], now)  # e.g. settled again from a journal
    assert not due(store, c)


def test_parents_already_done_at_push(store: Store) -> None:
    now = time.time()
    a, b = (i for i, _ in store.push([new("a"), new("b")], now))
    run(store, a)
    run(store, b, FAILED)
    (ok,) = store.push_linked([new("ok")], [[a]], None, now)
    (doomed,) = store.push_linked([new("doomed")], [[a, b]], None, now)
    assert due(store, ok)
    rec = store.get(doomed)
    assert rec is not None and rec.status == CANCELLED
    assert f"dependency job {b} ended FAILED" in (rec.error or "")


def test_cancel_cascades(store: Store) -> None:
    now = time.time()
    ((a, _),) = store.push([new("a")], now)
    (b,) = store.push_linked([new("b")], [[a]], None, now)
    assert store.cancel(a, False, now) == (True, None)
    assert store.status_of(b) == CANCELLED


def test_push_time_errors_leave_nothing(store: Store) -> None:
    now = time.time()
    with pytest.raises(NotFoundError, match="cannot depend on job 999"):
        store.push_linked([new("x")], [[999]], None, now)
    with pytest.raises(ConfigError, match="unique_key"):
        store.push_linked([new("x", unique_key="k")], [[]], None, now)
    assert store.list_jobs(None, None, 10) == []


def test_groups_keep_push_order(store: Store) -> None:
    now = time.time()
    ids = store.push_linked([new(f"m{i}") for i in range(5)], [[]] * 5, "g1", now)
    assert store.group_members("g1") == ids
    assert store.group_members("nope") == []
    assert [o[1] for o in store.outcomes_of(ids)] == [SCHEDULED] * 5


def test_version_1_store_migrates(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "home")
    from mpjobs.store.schema import APPLICATION_ID, MIGRATIONS

    conn = sqlite3.connect(home.path / "mpjobs.db")
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = open_store(home)
    ((a, _),) = store.push([new("a")], time.time())
    (b,) = store.push_linked([new("b")], [[a]], None, time.time())
    assert store.links(b) == ([a], [])
    assert store.status_of(a) == SCHEDULED and store.get(b).status != RUNNING  # type: ignore[union-attr]


def test_link_lines_for_jobs_show(store: Store) -> None:
    from mpjobs.workflows.links import link_lines

    now = time.time()
    parents = [i for i, _ in store.push([new(f"p{i}") for i in range(12)], now)]
    (c,) = store.push_linked([new("c")], [parents], None, now)
    (line,) = link_lines(store, c)
    assert line.startswith(f"  depends on: {parents[0]} (SCHEDULED), ")
    assert line.endswith("... and 2 more")
    assert link_lines(store, parents[0]) == [f"  dependents: {c}"]
    assert link_lines(store, c + 1) == []
