"""The operator's store queries (store/listing.py) on SQLite and the in-memory backend
alike; the schema-2 indexes they walk; a version-1 store migrating; and the safe
showing of pickles (a pickle whose __reduce__ would write a file is described, not run)."""

from __future__ import annotations

import pickle
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from mpjobs.home import Home
from mpjobs.operations.safe_pickle import describe, globals_named, safe_loads
from mpjobs.store.base import CANCELLED, FAILED, SCHEDULED, SUCCESS, Completion, JobFilter, NewJob
from mpjobs.store.memory import MemoryStore
from mpjobs.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from mpjobs.store.sqlite import open_store


def new(name: str, queue: str) -> NewJob:
    return NewJob(
        name=name, func="tasks:noop", func_pickle=None, payload=None, queue=queue, priority=0,
        exec_at=time.time(), max_attempts=1, retry_backoff=1.0, timeout=None,
        memory_limit=None, unique_key=None, schedule_id=None,
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    home = Home.resolve(tmp_path / "home")
    return open_store(home) if request.param == "sqlite" else MemoryStore(home)


def finish(store: Any, ids: list[int], status: str, when: float) -> None:
    claimed = store.claim("w", 1, None, len(ids), time.time() + 1)
    assert sorted(j.id for j in claimed) == sorted(ids)
    store.complete("w", [Completion(i, status, error="x" if status == FAILED else None)
                         for i in ids], when)  # fmt: skip


def test_pages_filters_purge_and_minutes(store: Any) -> None:
    now = time.time()
    ids = [i for i, _ in store.push([new(f"t{k % 2}", f"q{k % 3}") for k in range(12)], now)]
    finish(store, ids[:4], SUCCESS, now - 120)
    finish(store, ids[4:6], FAILED, now - 60)
    assert [r.id for r in store.job_page(JobFilter(), None, 100)] == ids[::-1]
    page = store.job_page(JobFilter(), None, 5)
    rest = store.job_page(JobFilter(), page[-1].id, 100)
    assert [r.id for r in page + rest] == ids[::-1]
    where = JobFilter((SUCCESS, FAILED), queue="q0")
    assert [r.id for r in store.job_page(where, None, 100)] == [ids[3], ids[0]]
    assert {r.name for r in store.job_page(JobFilter(name="t1"), None, 100)} == {"t1"}
    assert [r.id for r in store.job_page(JobFilter((SCHEDULED,)), None, 100)] == ids[:5:-1]
    # app.jobs() reads ids alone: the same jobs as list_jobs, in the same order.
    for status in (None, SUCCESS, FAILED, SCHEDULED, "RUNNING"):
        for queue in (None, "q0", "q1"):
            want = [r.id for r in store.list_jobs(status, queue, 3)]
            assert store.job_ids(status, queue, 3) == want, (status, queue)

    per_minute = store.finished_per_minute(now - 3600)
    assert sum(n for _, s, n in per_minute if s == SUCCESS) == 4
    assert {m for m, s, _ in per_minute if s == FAILED} == {int(now - 60) // 60}

    assert store.queue_depths() == {
        "q0": {SCHEDULED: 2}, "q1": {SCHEDULED: 2}, "q2": {SCHEDULED: 2}
    }
    row = store.job_row(ids[4])
    assert row["status"] == FAILED and row["error"] == "x" and row["queue"] == "q1"
    assert store.job_row(10**9) is None
    assert store.purge_matching(JobFilter((SUCCESS,)), now - 200) == 0
    assert store.purge_matching(JobFilter((SUCCESS,), queue="q1"), now) == 1
    assert store.purge_matching(JobFilter((SUCCESS, SCHEDULED, CANCELLED)), now) == 3
    assert [r.status for r in store.job_page(JobFilter(), None, 100)].count(FAILED) == 2


@pytest.mark.parametrize(
    "where",
    ["status = 'FAILED'", "status = 'SUCCESS'",
     "status = 'FAILED' AND queue = 'q1'", "status = 'CANCELLED' AND name = 't1'"],
)  # fmt: skip
def test_every_filter_walks_an_index_not_the_table(tmp_path: Path, where: str) -> None:
    store = open_store(Home.resolve(tmp_path / "home"))
    conn = sqlite3.connect(store.path)
    plan = " ".join(r[3] for r in conn.execute(
        f"EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE {where} AND id < 5 ORDER BY id DESC LIMIT 50"
    ))  # fmt: skip
    assert plan.startswith("SEARCH jobs USING") and "INDEX jobs_" in plan, plan
    for sql, index in (
        ("SELECT queue, count(*) FROM jobs WHERE status = 'SCHEDULED' GROUP BY queue", "ready"),
        ("SELECT queue, count(*) FROM jobs WHERE status = 'RUNNING' GROUP BY queue", "running"),
        ("SELECT count(*) FROM jobs WHERE finished_at >= 1", "finished"),
    ):  # the overview reads the backlog and the last hour, never the whole history
        plan = " ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert f"INDEX jobs_{index}" in plan, plan


def test_a_version_1_store_migrates(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "home")
    home.path.mkdir(parents=True, exist_ok=True)
    db = home.path / "mpjobs.db"
    conn = sqlite3.connect(db)
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = open_store(home)
    assert store.job_page(JobFilter(), None, 10) == []
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    new = {"jobs_failed", "jobs_success", "jobs_timeout", "jobs_finished"}
    assert new <= names


class WritesFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_pickle_that_would_write_a_file_is_described_not_run(
    tmp_path: Path, protocol: int
) -> None:
    target = tmp_path / "written"
    data = pickle.dumps(((WritesFile(str(target)), 1), {"k": "v"}), protocol)
    shown = describe(data)
    assert shown["safe"] is False and "io.open" in shown["repr"]
    assert any(n.endswith("io.open") for n in globals_named(data))
    with pytest.raises(pickle.UnpicklingError):
        safe_loads(data)
    assert not target.exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_is_shown(protocol: int) -> None:
    value = ((None, True, 1, 2.5, "s", b"b", [1], (2,), {"a": {3}}, frozenset({4})), {"x": 1})
    shown = describe(pickle.dumps(value, protocol))
    assert shown == {"safe": True, "repr": repr(value)}
    assert describe(b"not a pickle")["safe"] is False
    assert describe(None) == {"safe": True, "repr": "None"}
