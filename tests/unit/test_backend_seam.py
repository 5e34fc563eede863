"""The backend seam: nothing outside mpjobs/store reaches a concrete backend, and both
backends (SQLite-plus-files and the in-memory fake) provide the whole interface and
move rows alike, as the shared rules say."""

from __future__ import annotations

import inspect
import json
import re
import time
from pathlib import Path

import pytest

import mpjobs
from mpjobs.home import Home
from mpjobs.rules.schedules import fire_rule
from mpjobs.runtime.journal import Journal
from mpjobs.runtime.recovery import forget_dead_processes, recover_dead_owners
from mpjobs.scheduling.triggers import IntervalTrigger
from mpjobs.store import Backend
from mpjobs.store import backend as seam
from mpjobs.store.backends import open_backend
from mpjobs.store.base import (
    FAILED,
    PERMANENTLY_FAILED,
    RUNNING,
    SCHEDULED,
    SUCCESS,
    Completion,
    NewJob,
    ProcessRecord,
    ScheduleRecord,
    Store,
)
from mpjobs.store.memory_backend import MemoryBackend
from mpjobs.store.sqlite import SqliteBackend

PACKAGE = Path(mpjobs.__file__).parent
_IMPLS = r"(sqlite|connection|jobs|completions|sql|schedules|schema|memory|memory_backend)\b"
CONCRETE = re.compile(
    rf"^\s*(from|import)\s+(sqlite3\b|mpjobs\.store\.{_IMPLS})"
    rf"|^\s*from\s+mpjobs\.store\s+import\s+(\([^)]*|[^(\n]*)\b{_IMPLS}"
    r"|SqliteStore|SqliteBackend|open_store|MemoryBackend|MemoryStore",
    re.MULTILINE,
)


def test_nothing_outside_the_store_package_names_a_concrete_backend() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "store"):
            continue
        for m in CONCRETE.finditer(path.read_text()):
            line = path.read_text()[: m.start()].count("\n") + 1
            offenders.append(f"{path.relative_to(PACKAGE)}:{line}: {m.group(0).strip()}")
    assert offenders == []


def _members(proto: type) -> set[str]:
    return {n for n in vars(proto) if not n.startswith("_")} | (
        set(getattr(proto, "__annotations__", {})) - {"return"}
    )


@pytest.mark.parametrize("cls", [SqliteBackend, MemoryBackend])
def test_each_backend_provides_the_whole_seam(cls: type, tmp_path: Path) -> None:
    b = cls(Home.resolve(tmp_path / "home"))
    for proto, obj in [
        (seam.Backend, b), (Store, b.store), (seam.Liveness, b.liveness),
        (seam.Doorbell, b.doorbell), (seam.Leadership, b.leadership("t1")),
    ]:  # fmt: skip
        missing = {n for n in _members(proto) if not hasattr(obj, n)}
        assert missing == set(), (proto.__name__, missing)
        for name in _members(proto):
            want = getattr(proto, name, None)
            if inspect.isfunction(want):
                got = list(inspect.signature(getattr(obj, name)).parameters)
                wanted = list(inspect.signature(want).parameters)[1:]
                assert got[: len(wanted)] == wanted, (proto.__name__, name)  # may add more


def test_the_app_gets_its_backend_from_one_place(tmp_path: Path) -> None:
    app = mpjobs.App(home=tmp_path / "home")
    assert app.backend is open_backend(app.home)
    assert app.store is app.backend.store


@pytest.fixture(params=["sqlite", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    home = Home.resolve(tmp_path / "home")
    return open_backend(home) if request.param == "sqlite" else MemoryBackend(home)


def _new(name: str = "t", max_attempts: int = 1, sid: str | None = None) -> NewJob:
    return NewJob(name, "m:f", None, None, "default", 0, 0.0, max_attempts, 0.0, None, None,
                  None, sid)  # fmt: skip


def test_a_dead_owner_is_settled_from_its_journal(backend: Backend) -> None:
    """Finished: kept. Begun: a failed attempt (retried). Claimed only: back, refunded."""
    store, now = backend.store, time.time()
    ids = [i for i, _ in store.push([_new(max_attempts=2) for _ in range(3)], now)]
    held = backend.liveness.hold("w1")
    store.register_process(ProcessRecord("w1", "worker", 1, None, now, "{}"))
    assert [j.id for j in store.claim("w1", 1, None, 3, now)] == ids
    journal = Journal(backend.home.journal("w1"))
    journal.started(ids[0])
    journal.completed(Completion(ids[0], SUCCESS), ids[1])
    journal.close(remove=False)
    assert recover_dead_owners(backend) == 0  # alive: nothing to settle
    held.release()  # its death
    assert recover_dead_owners(backend) == 3
    done, begun, idle = (store.get(i) for i in ids)
    assert done is not None and done.status == SUCCESS
    assert begun is not None and begun.status == SCHEDULED and begun.attempts == 1
    assert begun.error is not None and begun.error.startswith("worker lost")
    assert idle is not None and idle.status == SCHEDULED and idle.attempts == 0
    assert store.running_owners() == [] and store.list_processes() == []
    forget_dead_processes(backend)  # nothing left: harmless


def test_max_failures_stops_the_schedule_and_marks_its_job(backend: Backend) -> None:
    store, now = backend.store, time.time()
    store.upsert_schedule(ScheduleRecord(
        "s1", "s1", "m:f", None, b"", json.dumps(IntervalTrigger(1.0, 0.0).to_spec()),
        '{"coalesce": true, "misfire_grace_time": null, "max_instances": null, '
        '"max_failures": 2, "jitter": null, "queue": "default", "priority": 0, '
        '"max_attempts": 1, "retry_backoff": 1.0, "timeout": null, "memory_limit": null}',
        "active", now - 1, 0, now, now,
    ))  # fmt: skip
    statuses = []
    for k in (1, 2):
        at = now + 10 * k  # a fire is due each time
        (jid,) = store.fire_due(at, fire_rule)
        (job,) = store.claim("w", 1, None, 1, at)
        assert job.id == jid and job.status == RUNNING
        store.complete("w", [Completion(jid, FAILED, error="boom", schedule_id="s1")], at)
        rec = store.get(jid)
        assert rec is not None
        statuses.append(rec.status)
    sched = store.get_schedule("s1")
    assert sched is not None
    assert statuses == [FAILED, PERMANENTLY_FAILED]
    assert (sched.state, sched.failures, sched.next_run_time) == ("stopped", 2, None)
    assert store.get(jid).error.endswith("stopped after 2 consecutive failures")  # type: ignore[union-attr]
