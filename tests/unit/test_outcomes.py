"""Outcomes that are hard to store, in one process: making them, writing them, settling them.

tests/integration/test_poison.py runs the same poisons through real pools; here each
rule is pinned down on its own: texts are made storable, an outcome that cannot be
written is quarantined without failing its batch, settling never raises for one row,
and the journal knows whether it holds anything uncommitted.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from mpjobs.home import Home
from mpjobs.rules import outcomes
from mpjobs.runtime.journal import Journal, read_journal
from mpjobs.store import base
from mpjobs.store.base import FAILED, SCHEDULED, SUCCESS, Completion, JobRecord, NewJob
from mpjobs.store.sqlite import SqliteStore, open_store

SURROGATE = b"\xff.txt".decode("utf-8", "surrogateescape")


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return open_store(Home.resolve(tmp_path / "home"))


def _push(store: SqliteStore, n: int, max_attempts: int = 1) -> list[int]:
    job = NewJob(name="t", func="tasks:noop", func_pickle=None, payload=None, queue="default",
                 priority=0, exec_at=time.time(), max_attempts=max_attempts, retry_backoff=1.0,
                 timeout=None, memory_limit=None, unique_key=None)  # fmt: skip
    jobs = [job] * n
    return [i for i, _ in store.push(jobs, time.time())]


def _claim(store: SqliteStore, owner: str, n: int) -> list[JobRecord]:
    return store.claim(owner, 1, None, n, time.time())


def test_storable_text_escapes_surrogates_and_nuls_and_caps() -> None:
    assert base.storable_text(f"a {SURROGATE}") == "a \\udcff.txt"
    assert base.storable_text("a\x00b") == "a\\x00b"
    long = "H" + "x" * 5000 + "T"
    cut = base.storable_text(long, cap=1000)
    assert cut.startswith("H") and cut.endswith("T") and len(cut) < 1100
    assert "characters cut" in cut
    assert base.storable_text("plain") == "plain"


def test_storable_refuses_what_no_store_can_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="status"):
        base.storable(Completion(1, "BOGUS"))
    monkeypatch.setattr(base, "MAX_BLOB", 10)
    with pytest.raises(ValueError, match="over 10"):
        base.storable(Completion(1, SUCCESS, result=b"x" * 11))
    kept = base.storable(Completion(1, FAILED, exc=b"x" * 11, error="e"))
    assert kept.exc is None and "too large" in (kept.error or "")


def test_retry_delay_is_always_a_finite_time() -> None:
    assert 0 < outcomes.retry_delay(1.0, 5000) <= outcomes.MAX_BACKOFF * 1.2
    assert math.isfinite(outcomes.retry_delay(math.nan, 1))
    assert math.isfinite(outcomes.retry_delay(math.inf, 1))


def test_from_exception_never_raises() -> None:
    class StrRaises(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    class NeedsTwo(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(a)

    job = JobRecord(7, "t", None, None, None, "default", 0, "RUNNING", 0.0, 1, 1, 1.0,
                    None, None, None, None, "o", 1, None, None, None, 0.0, None, None)  # fmt: skip
    for exc in (StrRaises(), NeedsTwo(1, 2), ValueError(threading.Lock()), OSError(SURROGATE)):
        c = outcomes.from_exception(job, exc, time.time())
        assert c.status == FAILED and c.error and type(exc).__name__ in c.error
        c.error.encode("utf-8")
        if isinstance(exc, (NeedsTwo, ValueError)):
            assert c.exc is None, "an exception a client could not load is not kept"


def test_an_unstorable_completion_does_not_fail_its_batch(store: SqliteStore) -> None:
    ids = _push(store, 4)
    _claim(store, "w", 4)
    bogus = Completion(ids[1], "BOGUS", error=f"bad {SURROGATE}")
    store.complete("w", [Completion(ids[0], SUCCESS), bogus,
                         Completion(ids[2], FAILED, error=f"x {SURROGATE}"),
                         Completion(ids[3], SCHEDULED, exec_at=math.nan)], time.time())  # fmt: skip
    recs = [store.get(i) for i in ids]
    assert [r.status if r else None for r in recs] == [SUCCESS, FAILED, FAILED, FAILED]
    assert "outcome could not be stored: ValueError: no such job status" in (recs[1].error or "")
    assert "\\udcff" in (recs[1].error or ""), "the job's own error is quoted, escaped"
    assert recs[2].error == "x \\udcff.txt"
    assert "could not be stored: IntegrityError" in (recs[3].error or "")
    assert all(r is not None and r.owner is None for r in recs)


def test_recover_quarantines_a_row_it_cannot_write(store: SqliteStore) -> None:
    ids = _push(store, 3)
    _claim(store, "dead", 3)

    def decide(job: JobRecord) -> Completion:
        if job.id == ids[0]:
            raise RuntimeError("a broken journal record")
        if job.id == ids[1]:
            return Completion(job.id, SUCCESS, result=123)  # type: ignore[arg-type]
        return Completion(job.id, SUCCESS)

    settled = store.recover("dead", decide, time.time())
    assert len(settled) == 3
    recs = [store.get(i) for i in ids]
    assert [r.status if r else None for r in recs] == [FAILED, FAILED, SUCCESS]
    assert "cannot settle: RuntimeError: a broken journal record" in (recs[0].error or "")
    assert "result must be bytes" in (recs[1].error or "")


def test_journal_is_dirty_until_cleared(tmp_path: Path) -> None:
    j = Journal(tmp_path / "w.journal")
    assert not j.dirty
    j.started(1)
    assert j.dirty and j.open_start == 1
    j.completed(Completion(1, SUCCESS), next_id=2)
    assert j.open_start == 2
    j.not_begun(2)
    started, done = read_journal(j.path)
    assert started == {1} and set(done) == {1}, "a start taken back is not a start"
    j.clear()
    assert not j.dirty and j.open_start is None
    j.close(remove=True)
    assert not j.path.exists()


def test_a_store_fault_propagates_a_bug_quarantines(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk is retried by the writer (nothing written); any other error ends the job."""
    ids = _push(store, 2)
    _claim(store, "w", 2)
    real = SqliteStore._complete
    raising: list[BaseException] = [sqlite3.OperationalError("database or disk is full")]

    def flaky(self: SqliteStore, conn: sqlite3.Connection, owner: str, c: Completion,
              now: float) -> bool:  # fmt: skip
        if c.job_id == ids[1] and c.status == SCHEDULED and raising:
            raise raising.pop()
        return real(self, conn, owner, c, now)

    monkeypatch.setattr(SqliteStore, "_complete", flaky)
    batch = [Completion(ids[0], SUCCESS), Completion(ids[1], SCHEDULED, exec_at=time.time())]
    with pytest.raises(sqlite3.OperationalError):
        store.complete("w", batch, time.time())
    assert {store.status_of(i) for i in ids} == {"RUNNING"}, "the whole commit rolled back"
    raising.append(RuntimeError("a bug in writing"))
    store.complete("w", batch, time.time())
    assert store.status_of(ids[0]) == SUCCESS
    rec = store.get(ids[1])
    assert rec is not None and rec.status == FAILED
    assert "could not be stored: RuntimeError: a bug in writing" in (rec.error or "")


def test_a_short_journal_write_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write the kernel took only in part (a full disk) must not leave a torn record."""
    j = Journal(tmp_path / "w.journal")
    j.started(1)
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, data[:5]))
    with pytest.raises(OSError, match="short write"):
        j.completed(Completion(1, FAILED, error="e"), next_id=2)
    monkeypatch.setattr(os, "write", real)
    j.completed(Completion(1, FAILED, error="e"), next_id=2)
    started, done = read_journal(j.path)
    assert started == {1, 2} and done[1].error == "e"
    j.close(remove=True)
