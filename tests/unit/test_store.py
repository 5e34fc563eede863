"""The SQLite store on its own, in this process: push, claim order, completion, cancel,
retry, schema markers. No workers here; tests/integration covers those."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from mpjobs.home import Home
from mpjobs.store.base import FAILED, SCHEDULED, SUCCESS, Completion, NewJob
from mpjobs.store.schema import APPLICATION_ID, SCHEMA_VERSION
from mpjobs.store.sqlite import SqliteStore, open_store


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return open_store(Home.resolve(tmp_path / "home"))


def new(name: str = "t", *, queue: str = "default", priority: int = 0, exec_at: float | None = None,
        unique_key: str | None = None, max_attempts: int = 1) -> NewJob:  # fmt: skip
    return NewJob(
        name=name, func="tasks:noop", func_pickle=None, payload=None, queue=queue,
        priority=priority, exec_at=time.time() if exec_at is None else exec_at,
        max_attempts=max_attempts, retry_backoff=1.0, timeout=None, memory_limit=None,
        unique_key=unique_key, schedule_id=None,
    )  # fmt: skip


def test_schema_is_marked_and_in_wal_mode(store: SqliteStore) -> None:
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    conn.close()


def test_reopening_keeps_jobs(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "home")
    s1 = SqliteStore(home)
    ((jid, created),) = s1.push([new()], time.time())
    s2 = SqliteStore(home)
    assert created and s2.status_of(jid) == SCHEDULED


def test_push_many_ids_in_order(store: SqliteStore) -> None:
    out = store.push([new(f"j{i}") for i in range(50)], time.time())
    ids = [i for i, _ in out]
    assert ids == list(range(ids[0], ids[0] + 50)) and all(c for _, c in out)
    assert [store.get(i).name for i in ids] == [f"j{i}" for i in range(50)]  # type: ignore[union-attr]


def test_unique_key_returns_live_job(store: SqliteStore) -> None:
    now = time.time()
    ((a, ca),) = store.push([new(unique_key="k")], now)
    ((b, cb),) = store.push([new(unique_key="k")], now)
    assert (b, cb) == (a, False) and ca
    both = store.push([new(unique_key="k2"), new(unique_key="k2")], now)
    assert both[1] == (both[0][0], False)
    store.cancel(a, False, now)
    ((c, cc),) = store.push([new(unique_key="k")], now)
    assert cc and c != a


def test_claim_orders_by_priority_then_due_time_then_push(store: SqliteStore) -> None:
    now = time.time()
    ids = [i for i, _ in store.push([
        new("late", priority=0, exec_at=now - 1),
        new("early", priority=0, exec_at=now - 2),
        new("urgent", priority=-5, exec_at=now - 0.5),
        new("low", priority=9, exec_at=now - 9),
        new("tie1", priority=0, exec_at=now - 1),
    ], now)]  # fmt: skip
    rows = store.claim("w1", 1, None, 10, now + 0.01)
    assert [r.name for r in rows] == ["urgent", "early", "late", "tie1", "low"]
    assert store.claim("w2", 2, None, 10, now + 0.01) == []  # nothing claimed twice
    assert {r.id for r in rows} == set(ids)


def test_claim_skips_future_and_other_queues(store: SqliteStore) -> None:
    now = time.time()
    store.push([new("future", exec_at=now + 60), new("b", queue="b"), new("a", queue="a")], now)
    assert store.next_exec_at(["a"]) is not None
    assert store.has_due(["c"], now) is False
    assert [r.name for r in store.claim("w", 1, ["a"], 10, now + 1)] == ["a"]
    assert [r.name for r in store.claim("w", 1, None, 10, now + 1)] == ["b"]
    assert store.has_due(None, now + 1) is False


def test_complete_success_failure_and_retry(store: SqliteStore) -> None:
    now = time.time()
    store.push([new("ok"), new("bad"), new("again", max_attempts=2)], now)
    ok, bad, again = store.claim("w", 1, None, 10, now + 1)
    store.complete("w", [
        Completion(ok.id, SUCCESS, result=b"r"),
        Completion(bad.id, FAILED, error="Traceback: boom"),
        Completion(again.id, SCHEDULED, exec_at=now + 30, error="first try"),
    ], now)  # fmt: skip
    assert store.status_of(ok.id) == SUCCESS and store.get(ok.id).result == b"r"  # type: ignore[union-attr]
    assert store.get(bad.id).error == "Traceback: boom"  # type: ignore[union-attr]
    rec = store.get(again.id)
    assert rec is not None and rec.status == SCHEDULED and rec.exec_at == now + 30
    assert rec.owner is None and rec.attempts == 1


def test_complete_by_a_stranger_is_ignored(store: SqliteStore) -> None:
    now = time.time()
    store.push([new()], now)
    (job,) = store.claim("w", 1, None, 1, now + 1)
    store.complete("someone-else", [Completion(job.id, SUCCESS)], now)
    assert store.get(job.id).status == "RUNNING"  # type: ignore[union-attr]


def test_cancel_and_retry(store: SqliteStore) -> None:
    now = time.time()
    (a, _), (b, _) = store.push([new("a"), new("b", exec_at=now + 60)], now)
    (running,) = store.claim("w", 1, None, 1, now + 1)
    assert running.id == a
    assert store.cancel(a, False, now) == (False, None)  # running: needs terminate
    assert store.cancel(a, True, now) == (True, "w")
    assert store.kill_requests(["w"]) == [(a, "w")]
    assert store.cancel(b, False, now) == (True, None)
    assert store.cancel(b, False, now) == (False, None)
    assert store.cancel(99999, False, now) == (False, None)
    assert store.retry(b, now) is True
    rec = store.get(b)
    assert rec is not None and rec.status == SCHEDULED and rec.attempts == 0 and rec.error is None
    assert store.retry(b, now) is False  # not finished


def test_queue_depths(store: SqliteStore) -> None:
    now = time.time()
    store.push([new(queue="x"), new(queue="x"), new(queue="y")], now)
    store.claim("w", 1, ["y"], 1, now + 1)
    assert store.queue_depths() == {"x": {"SCHEDULED": 2}, "y": {"RUNNING": 1}}


def test_open_store_is_cached_per_home(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "home")
    assert open_store(home) is open_store(Home.resolve(tmp_path / "home"))


def test_a_claim_planned_before_a_push_leaves_it_to_the_next_claim(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's claim reads its due pairs before it takes the write lock (jobs.py
    `_claim_plan`). A job of a new pair pushed in between is not lost: the claim takes
    what its plan names, the due check sees the new job, and the next claim takes it."""
    now = time.time()
    ((first, _),) = store.push([new(queue="a")], now)
    stale = store._claim_plan(None, now + 1)
    ((urgent, _),) = store.push([new(queue="b", priority=-1)], now)
    with monkeypatch.context() as m:
        m.setattr(store, "_claim_plan", lambda queues, now: stale)
        assert [j.id for j in store.claim("w", 1, None, 10, now + 1)] == [first]
    assert store.has_due(None, now + 1)
    assert [j.id for j in store.claim("w", 1, None, 10, now + 1)] == [urgent]
