"""Bulk pushes without workers: push_many with delays, task.map, the runs of store/batch.py.

Each test runs on SQLite and on the in-memory store (memory_backend.py), which reads a
Batch as plain NewJobs: both must store the same rows. The PostgreSQL store and a real
pool are in tests/integration/test_bulk_push.py.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import tasks

import mpjobs
from mpjobs import App, ConfigError, SerializationError, serialization
from mpjobs.store.base import JobRecord, NewJob
from mpjobs.store.batch import Batch, Run
from mpjobs.store.memory_backend import MemoryBackend
from mpjobs.store.sql import RUN_ROWS


@pytest.fixture(params=["sqlite", "memory"])
def bulk_app(request: pytest.FixtureRequest, tmp_path: Path) -> App:
    app = tasks.make_app(tmp_path / "home")
    if request.param == "memory":
        app._backend = MemoryBackend(app.home)
        app._backend_home = app.home
    return app


def _rec(app: App, job: mpjobs.Job[object]) -> JobRecord:
    rec = app.store.get(int(job.id))
    assert rec is not None
    return rec


def _args(app: App, job: mpjobs.Job[object]) -> object:
    payload = _rec(app, job).payload
    return None if payload is None else serialization.loads(payload)[:2]


def test_push_many_takes_each_builders_delay_and_time(bulk_app: App) -> None:
    at = datetime(2031, 5, 4, 12, 0, tzinfo=timezone.utc)
    t0 = time.time()
    jobs = bulk_app.push_many([
        tasks.add.schedule(1, 1),
        tasks.add.schedule(2, 2).options(delay=30),
        tasks.add.schedule(3, 3).options(delay="2h"),
        tasks.add.schedule(4, 4).options(at=at),
        tasks.add.schedule(5, 5).options(exec_at=at + timedelta(seconds=1)),
        tasks.add.schedule(6, 6).options(delay=timedelta(minutes=5), queue="q"),
        tasks.add.schedule(7, 7),
    ])  # fmt: skip
    t1 = time.time()
    due = [j.exec_at.timestamp() for j in jobs]
    assert t0 <= due[0] <= t1 and t0 <= due[6] <= t1
    assert t0 + 30 <= due[1] <= t1 + 30
    assert t0 + 7200 <= due[2] <= t1 + 7200
    assert due[3] == at.timestamp() and due[4] == at.timestamp() + 1
    assert t0 + 300 <= due[5] <= t1 + 300 and jobs[5].queue == "q"
    assert [_args(bulk_app, j) for j in jobs] == [((i, i), {}) for i in range(1, 8)]
    assert [int(j.id) for j in jobs] == sorted(int(j.id) for j in jobs)  # push order


def test_a_delay_counts_from_the_push_and_now_honours_it(bulk_app: App) -> None:
    b = tasks.add.schedule(1, 2).options(delay=60)
    time.sleep(0.05)  # the builder waits a moment before it is pushed
    t0 = time.time()
    job = b.now()
    assert t0 + 60 <= job.exec_at.timestamp() <= time.time() + 60
    later = b.options(priority=3)  # other options keep the delay ...
    assert later.due(t0) == t0 + 60
    now = b.options(delay=0)  # ... a new timing replaces it
    assert now.due(t0) == t0
    at = datetime(2031, 1, 1, tzinfo=timezone.utc)
    assert b.options(at=at).due(t0) == at.timestamp()
    assert b.delay(5).exec_at.timestamp() < t0 + 60  # .delay() says so itself: it wins


@pytest.mark.parametrize(
    ("opts", "words"),
    [
        ({"delay": "soon"}, "invalid delay 'soon'"),
        ({"delay": -1}, "must not be negative"),
        ({"delay": True}, "invalid delay True"),
        ({"at": "tomorrow"}, "invalid at 'tomorrow'"),
        ({"exec_at": 1.5}, "invalid exec_at 1.5"),
        ({"delay": 5, "at": datetime(2031, 1, 1)}, "one of delay=, at="),
    ],
)
def test_a_bad_timing_option_is_a_config_error_at_the_call(
    bulk_app: App, opts: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        tasks.add.schedule(1, 1).options(**opts)
    with pytest.raises(ConfigError, match=words):
        tasks.add.map([(1, 1)], **opts)
    assert bulk_app.jobs() == []


def test_a_schedule_refuses_a_jobs_own_timing(bulk_app: App) -> None:
    b = tasks.add.schedule(1, 1).options(delay=5)
    with pytest.raises(ConfigError, match="delay= and at= are for one job"):
        b.every("1m")
    with pytest.raises(ConfigError, match="delay= and at= are for one job"):
        b.cron("* * * * *")
    assert bulk_app.schedules() == []


def test_map_pushes_one_job_per_tuple_with_the_options(bulk_app: App) -> None:
    t0 = time.time()
    jobs = tasks.add.map([(i, 2 * i) for i in range(5)], queue="q", priority=-3, delay=90)
    t1 = time.time()
    assert len(jobs) == 5 and all(isinstance(j, mpjobs.Job) for j in jobs)
    assert [_args(bulk_app, j) for j in jobs] == [((i, 2 * i), {}) for i in range(5)]
    for j in jobs:
        rec = _rec(bulk_app, j)
        assert (rec.queue, rec.priority, rec.name, rec.func) == ("q", -3, "tasks.add", "tasks:add")
        assert t0 + 90 <= rec.exec_at <= t1 + 90 and rec.status == "SCHEDULED"
    at = datetime(2031, 5, 4, tzinfo=timezone.utc)
    (timed,) = tasks.add.map([(1, 1)], at=at)
    assert timed.exec_at == at


def test_map_shares_kwargs_and_keeps_the_tasks_defaults(bulk_app: App) -> None:
    jobs = tasks.touch.map([("a",), ("b",)], kwargs={"text": "x"})
    assert [_args(bulk_app, j) for j in jobs] == [(("a",), {"text": "x"}), (("b",), {"text": "x"})]
    (flaky,) = tasks.flaky.map([("c", 1)])  # declared max_attempts=3, retry_backoff=0.01
    rec = _rec(bulk_app, flaky)
    assert (rec.max_attempts, rec.retry_backoff) == (3, 0.01)
    (bare,) = tasks.noop.map([()])
    assert _rec(bulk_app, bare).payload is None  # no arguments: nothing pickled, as .now()


def test_map_of_nothing_pushes_nothing(bulk_app: App) -> None:
    assert tasks.add.map([]) == []
    assert tasks.add.map(iter(())) == []
    assert bulk_app.push_many([]) == []
    assert bulk_app.jobs() == []


def test_map_refuses_bad_options_and_items_clearly(bulk_app: App) -> None:
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['bogus'\]"):
        tasks.add.map([(1, 1)], bogus=1)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['coalesce'\]"):
        tasks.add.map([(1, 1)], coalesce=True)  # a schedule's option: map pushes jobs
    with pytest.raises(ValueError, match="max_attempts"):
        tasks.add.map([(1, 1)], max_attempts=0)
    with pytest.raises(TypeError, match=r"item 2 is 5, not a tuple.*give \(x,\)"):
        tasks.add.map([(1, 1), (2, 2), 5])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="kwargs must be a mapping"):
        tasks.add.map([(1, 1)], kwargs=[("x", 1)])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="the same key"):
        tasks.add.map([(1, 1)], unique_key="k")
    with pytest.raises(ConfigError, match="needs a PostgreSQL store"):
        tasks.add.map([(1, 1)], connection=object())
    assert bulk_app.jobs() == []


def test_an_unpicklable_argument_pushes_nothing_and_names_the_job(bulk_app: App) -> None:
    lock = threading.Lock()
    items = [(i, i) for i in range(1000)]
    items[637] = (lock, 1)
    with pytest.raises(SerializationError, match=r"item 637 of the map.*_thread.lock"):
        tasks.add.map(items)
    builders = [tasks.add.schedule(i, i) for i in range(10)]
    builders.insert(4, tasks.add.schedule(lock, 1))
    with pytest.raises(SerializationError, match=r"job 4\b.*_thread.lock"):
        bulk_app.push_many(builders)
    assert bulk_app.jobs() == []


def test_map_of_a_task_with_control_options_carries_them(bulk_app: App) -> None:
    jobs = tasks.add.map([(1, 2), (3, 4)], retry_on=(KeyError,), max_attempts=2)
    for j, args in zip(jobs, [(1, 2), (3, 4)], strict=True):
        payload = _rec(bulk_app, j).payload
        assert payload is not None
        pushed_args, kwargs, control = serialization.loads(payload)
        assert (pushed_args, kwargs) == (args, {}) and control is not None
    # gates (expires, rate_limit, concurrency_key) are computed per job: the general path
    gated = tasks.add.map([(1, 2), (3, 4)], expires="1h")
    assert [_rec(bulk_app, j).expires_at is not None for j in gated] == [True, True]


@pytest.mark.parametrize("general", [False, True], ids=["runs", "new-jobs"])
def test_long_mixed_batches_keep_push_order_and_each_jobs_own_row(
    bulk_app: App, general: bool
) -> None:
    """Runs longer than one multi-row statement, runs of other tasks and options between
    them, due times shared by a run or not: every id gets its own arguments and time.
    With a gated job in the batch, every job is a NewJob (the general path), else runs."""
    n = RUN_ROWS * 2 + 17
    base = float(int(time.time()) + 1000)  # whole seconds: a datetime holds them exactly
    builders = [tasks.add.schedule(i, 0) for i in range(n)]
    builders += [tasks.touch.schedule(f"p{i}") for i in range(3)]
    builders += [tasks.add.schedule(i, 1).options(at=datetime.fromtimestamp(base + i,
                 tz=timezone.utc)) for i in range(n)]  # fmt: skip
    builders += [tasks.add.schedule(i, 2).options(priority=1) for i in range(RUN_ROWS)]
    if general:
        builders.append(tasks.add.schedule(0, 4).options(expires="1h"))
    jobs = bulk_app.push_many(builders)
    ids = [int(j.id) for j in jobs]
    assert ids == list(range(ids[0], ids[0] + len(builders)))
    for b, j in zip(builders, jobs, strict=True):
        rec = _rec(bulk_app, j)
        assert rec.payload is not None
        assert serialization.loads(rec.payload)[:2] == (b.args, b.kwargs)
        assert (rec.name, rec.priority) == (b.name, b._shape_of().priority)
    timed = jobs[n + 3 : 2 * n + 3]
    assert [_rec(bulk_app, j).exec_at for j in timed] == [base + i for i in range(n)]


def test_unique_keys_in_a_batch_take_the_one_by_one_path(bulk_app: App) -> None:
    builders = [tasks.add.schedule(i, 0) for i in range(3)]
    builders += [tasks.add.schedule(i, 3).options(unique_key=f"k{i % 2}") for i in range(4)]
    jobs = bulk_app.push_many(builders)
    assert jobs[5] == jobs[3] and jobs[6] == jobs[4]  # a repeated key: its first job
    assert [_args(bulk_app, j) for j in jobs[3:5]] == [((0, 3), {}), ((1, 3), {})]
    assert len(bulk_app.jobs()) == 5


def test_a_batch_reads_as_the_new_jobs_it_holds() -> None:
    """What a store that does not read runs (memory.py) sees: NewJobs, in order."""
    t = NewJob("t", "m:f", None, None, "q", 1, 5.0, 1, 1.0, None, None, None)
    u = NewJob("u", "m:g", None, None, "q", 0, 7.0, 2, 1.0, 3.0, None, None)
    batch = Batch([Run(t, [b"a", b"b"]), Run(u, [None, b"d", b"e"], [8.0, 9.0, 10.0])])
    assert len(batch) == 5 and batch.plain
    rows = list(batch)
    assert [(j.name, j.payload, j.exec_at) for j in rows] == [
        ("t", b"a", 5.0), ("t", b"b", 5.0), ("u", None, 8.0), ("u", b"d", 9.0), ("u", b"e", 10.0)
    ]  # fmt: skip
    assert batch[3] == rows[3] and batch[-1] == rows[4] and batch[1:3] == rows[1:3]
    assert batch.templates() == [t, t, u, u, u]
    with pytest.raises(IndexError):
        batch[5]
    with pytest.raises(ValueError, match="plain jobs only"):
        Run(NewJob("t", "m:f", None, None, "q", 1, 5.0, 1, 1.0, None, None, "key"), [b"a"])


def test_copy_text_formats_values_as_postgres_reads_them() -> None:
    from mpjobs.store.postgres.copytext import copy_text, runs_text

    assert [copy_text(v) for v in (None, True, 3, 1.5, b"\x00\xff", "a\tb\\c\nd\re")] == [
        "\\N", "t", "3", "1.5", "\\\\x00ff", "a\\tb\\\\c\\nd\\re"
    ]  # fmt: skip
    assert float(copy_text(1796145103.8417802)) == 1796145103.8417802
    with pytest.raises(ValueError, match="NUL"):
        copy_text("a\x00b")
    with pytest.raises(TypeError):
        copy_text(object())
    t = NewJob("t", "m:f", None, None, "q", 1, 5.0, 1, 1.0, None, None, None)
    text = "".join(runs_text([7, 8], Batch([Run(t, [b"\x01", None])]), 2.0))
    assert text.splitlines() == [
        "7\t\\\\x01\t5.0\tt\tm:f\t\\N\tq\t1\t1\t1.0\t\\N\t\\N\t\\N\t\\N\tSCHEDULED\t2.0",
        "8\t\\N\t5.0\tt\tm:f\t\\N\tq\t1\t1\t1.0\t\\N\t\\N\t\\N\t\\N\tSCHEDULED\t2.0",
    ]
