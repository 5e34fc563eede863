"""Job control in one process: option checks, the retry rule, progress storage and its
throttle, the soft-limit alarm, and the schema step that adds the progress columns."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

import mpjobs
from mpjobs import serialization
from mpjobs.control import progress
from mpjobs.control.context import JobContext, current_job
from mpjobs.control.soft import main_thread_alarm
from mpjobs.control.spec import Control, control_of
from mpjobs.home import Home
from mpjobs.rules import outcomes
from mpjobs.runtime.executors import SerialExecutor, Stats
from mpjobs.store.base import FAILED, RUNNING, SCHEDULED, JobRecord, NewJob
from mpjobs.store.memory import MemoryStore
from mpjobs.store.schema import SCHEMA_VERSION
from mpjobs.store.sqlite import SqliteStore, open_store
from tests.schema_v1 import downgrade_sqlite


@pytest.fixture
def app(tmp_path: Path) -> mpjobs.App:
    return mpjobs.App(tmp_path / "home")


def _record(attempts: int = 1, max_attempts: int = 3, **kw: object) -> JobRecord:
    fields: dict[str, object] = dict(
        id=7, name="t", func="m:f", func_pickle=None, payload=None, queue="default",
        priority=0, status=RUNNING, exec_at=0.0, attempts=attempts, max_attempts=max_attempts,
        retry_backoff=100.0, timeout=None, memory_limit=None, unique_key=None,
        schedule_id=None, owner="w1", pid=1, result=None, exc=None, error=None,
        created_at=0.0, started_at=0.0, finished_at=None,
    )  # fmt: skip
    fields.update(kw)
    return JobRecord(**fields)  # type: ignore[arg-type]


# -- options: checked where they are given ---------------------------------------------


def test_bad_control_options_fail_at_the_decorator(app: mpjobs.App) -> None:
    with pytest.raises(mpjobs.ConfigError, match="retry_on must be an exception class"):
        app.task(retry_on=("ConnectionError",))(print)
    with pytest.raises(mpjobs.ConfigError, match="dont_retry_on"):
        app.task(dont_retry_on=int)(print)
    with pytest.raises(mpjobs.ConfigError, match="soft_timeout"):
        app.task(soft_timeout="soon")(print)
    with pytest.raises(mpjobs.ConfigError, match="more than 0"):
        app.task(soft_timeout=0)(print)
    with pytest.raises(mpjobs.ConfigError, match="must be less than timeout"):
        app.task(soft_timeout="1m", timeout="30s")(print)


def test_soft_timeout_is_checked_against_the_merged_timeout(app: mpjobs.App) -> None:
    task = app.task(soft_timeout=10)(print)
    task.schedule().options(timeout=11)  # fine
    with pytest.raises(mpjobs.ConfigError, match="must be less than timeout"):
        task.schedule().options(timeout=10)


def test_control_is_resolved_once() -> None:
    assert control_of({"queue": "q"}) is None
    c = control_of({"retry_on": ConnectionError, "soft_timeout": timedelta(minutes=5)})
    assert c == Control(("builtins.ConnectionError",), (), 300.0)
    assert hash(c) == hash(Control(("builtins.ConnectionError",), (), 300.0))


def test_control_travels_in_the_payload_only_when_set(app: mpjobs.App) -> None:
    plain = app.task(print)
    assert plain.schedule().payload() is None, "no options, no args: no payload, as before"
    assert serialization.loads(plain.schedule(1).payload() or b"") == ((1,), {})
    ruled = app.task(retry_on=OSError)(print)
    args, kwargs, control = serialization.loads(ruled.schedule(1, sep="-").payload() or b"")
    assert (args, kwargs) == ((1,), {"sep": "-"})
    assert Control(*control) == Control(("builtins.OSError",))


# -- the retry rule ----------------------------------------------------------------------


def test_retry_on_matches_subclasses_by_name() -> None:
    c = Control(retry_on=("builtins.ConnectionError",))
    assert c.retries(ConnectionRefusedError())
    assert not c.retries(ValueError())
    assert c.retries(mpjobs.Retry()), "Retry is always a retry"
    d = Control(retry_on=("builtins.OSError",), dont_retry_on=("builtins.ConnectionError",))
    assert d.retries(FileNotFoundError()) and not d.retries(ConnectionResetError())


def test_a_rule_says_fail_now_even_with_attempts_left() -> None:
    c = Control(dont_retry_on=("builtins.KeyError",))
    done = outcomes.from_exception(_record(), KeyError("k"), 1000.0, c)
    assert done.status == FAILED and "not retried (KeyError" in (done.error or "")
    again = outcomes.from_exception(_record(), ValueError("v"), 1000.0, c)
    assert again.status == SCHEDULED


def test_retry_asks_for_its_delay_within_max_attempts() -> None:
    done = outcomes.from_exception(_record(), mpjobs.Retry("busy", delay="30s"), 1000.0)
    assert done.status == SCHEDULED and done.exec_at == 1030.0
    assert "busy" in (done.error or "")
    last = outcomes.from_exception(_record(attempts=3), mpjobs.Retry("busy"), 1000.0)
    assert last.status == FAILED and "used up" in (last.error or "")
    assert "busy" in (last.error or "")
    bad = outcomes.from_exception(_record(), mpjobs.Retry(delay="soonish"), 1000.0)
    assert bad.status == FAILED and "invalid Retry delay" in (bad.error or "")


def test_no_control_is_the_old_rule() -> None:
    done = outcomes.from_exception(_record(), ValueError("v"), 1000.0)
    assert done.status == SCHEDULED and (done.exec_at or 0) > 1000.0


# -- progress ----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SqliteStore | MemoryStore:
    home = Home.resolve(tmp_path / "home")
    return open_store(home) if request.param == "sqlite" else MemoryStore(home)


def _running(store: SqliteStore | MemoryStore, owner: str = "w1") -> int:
    job = NewJob("t", "m:f", None, None, "default", 0, 0.0, 1, 0.0, None, None, None, None)
    ((jid, _),) = store.push([job], time.time())
    (rec,) = store.claim(owner, 1, None, 1, time.time())
    assert rec.owner == owner
    return jid


def test_only_the_running_owner_writes_progress(store: SqliteStore | MemoryStore) -> None:
    jid = _running(store)
    assert store.progress_of(jid) == (None, None)
    assert store.set_progress(jid, "w1", 0.25, '{"a": 1}')
    assert store.set_progress(jid, "w1", 0.5, None), "None keeps the meta"
    assert store.progress_of(jid) == (0.5, {"a": 1})
    assert not store.set_progress(jid, "someone-else", 0.9, None)
    store.complete("w1", [outcomes.success(store.get(jid), 1)], time.time())  # type: ignore[arg-type]
    assert not store.set_progress(jid, "w1", 0.9, None), "not after the job ended"
    assert store.progress_of(jid) == (0.5, {"a": 1})
    assert store.progress_of(jid + 1000) is None


class _SlowStore:
    """Counts writes; each takes 20 ms, like a store under load."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, float | None, str | None]] = []

    def set_progress(self, job_id: int, owner: str, value: float | None, meta: str | None) -> bool:
        time.sleep(0.02)
        self.writes.append((job_id, value, meta))
        return True


def test_the_writer_throttles_and_the_last_value_lands() -> None:
    slow = _SlowStore()
    ctx = JobContext(_record(), slow)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for i in range(1, 100_001):
        ctx.set_progress(i / 100_000, meta={"i": i} if i == 10 else None)
    took = time.perf_counter() - t0
    ctx.flush()
    assert took < 5, "the job never waits for the store"
    assert len(slow.writes) <= 4 * (time.perf_counter() - t0) + 2
    assert slow.writes[-1][1] == 1.0
    assert any(m == '{"i":10}' for _, _, m in slow.writes), "a pending meta is not dropped"


def test_set_progress_checks_its_input() -> None:
    ctx = JobContext(_record(), None)
    for bad in ("half", True, None):
        with pytest.raises(TypeError, match="takes a number"):
            ctx.set_progress(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        ctx.set_progress(float("nan"))
    with pytest.raises(TypeError, match="takes a dict"):
        ctx.set_progress(0.1, meta=[1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="JSON-able"):
        ctx.set_progress(0.1, meta={"x": object()})
    with pytest.raises(ValueError, match="over the limit"):
        ctx.set_progress(0.1, meta={"x": "y" * 5000})
    ctx.set_progress(3, meta={"ok": True})  # any finite number


def test_writers_do_not_cross_a_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = _SlowStore()
    first = progress.writer_for(slow)  # type: ignore[arg-type]
    assert progress.writer_for(slow) is first  # type: ignore[arg-type]
    monkeypatch.setattr(progress, "_writers_pid", -1)  # as if this were a forked child
    assert progress.writer_for(slow) is not first  # type: ignore[arg-type]


# -- the executor: context and the main-thread soft limit --------------------------------


def _nap_then(seconds: float) -> str:
    try:
        time.sleep(seconds)
    except mpjobs.SoftTimeout:
        return f"soft {current_job().id} {current_job().attempt}"
    return "slept"


def test_serial_executor_gives_context_and_soft_limit(tmp_path: Path) -> None:
    store = MemoryStore(Home.resolve(tmp_path / "home"))
    payload = serialization.dumps(((30,), {}, Control(soft_timeout=0.2).astuple()))
    rec = _record(func=f"{__name__}:_nap_then", payload=payload, attempts=2)
    done = SerialExecutor(lambda _: None, Stats(), store).execute(rec)
    assert serialization.loads(done.result or b"") == "soft 7 2"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0), "no alarm left armed"
    os.kill(os.getpid(), signal.SIGALRM)  # a stray alarm between jobs raises nothing
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # someone else's handler meanwhile:
    done = SerialExecutor(lambda _: None, Stats(), store).execute(rec)
    assert serialization.loads(done.result or b"") == "soft 7 2", "ours is put back"
    with pytest.raises(mpjobs.MpjobsError, match="outside a job"):
        current_job()


def test_an_alarm_left_unfired_never_fires_later() -> None:
    with main_thread_alarm(0.05):
        pass
    ev = threading.Event()
    assert not ev.wait(0.1)  # the interval passes with the block left: nothing raised


# -- schema step ---------------------------------------------------------------------------


def test_a_version_1_store_gains_the_progress_columns(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "home")
    s = open_store(home)
    jid = _running(s)
    downgrade_sqlite(Path(s.path))  # everything version 2 added goes, not only progress
    s2 = SqliteStore(home)
    assert s2.status_of(jid) == RUNNING
    assert s2.set_progress(jid, "w1", 0.75, None) and s2.progress_of(jid) == (0.75, None)
    conn = sqlite3.connect(s.path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


# -- handles -------------------------------------------------------------------------------


def test_cron_expression_and_schedule_of_a_fired_job(app: mpjobs.App) -> None:
    task = app.task(print)
    cron = task.schedule("tick").cron("*/5 * * * *")
    every = task.schedule("tock").every("1h")
    now = time.time()
    ((a, _), (b, _), (c, _)) = app.store.push(
        [task.schedule("tick").new_job(now, schedule_id=cron.id),
         task.schedule("tock").new_job(now, schedule_id=every.id),
         task.schedule("once").new_job(now)], now,
    )  # fmt: skip
    fired, ticked, once = (app.get_job(i) for i in (a, b, c))
    assert fired is not None and ticked is not None and once is not None
    assert fired.cron_expression == "*/5 * * * *" and fired.schedule == cron
    assert ticked.cron_expression is None and ticked.schedule == every
    assert once.cron_expression is None and once.schedule is None
    cron.remove()
    assert fired.cron_expression is None and fired.schedule is None
