"""Bulk pushes with a real pool, on SQLite and PostgreSQL: push_many of delayed and timed
builders, task.map, and that a failed bulk push leaves nothing behind.

"Not run before it is due" is read from the store: a job's started_at (the worker's
claim time) is never before its exec_at, and a delayed job seen while its due time is
still ahead is SCHEDULED. Nothing here sleeps to let time pass: it waits on the jobs.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import pytest
import tasks
from conftest import pg_base_url, started, wait_for

import mpjobs
from mpjobs import SerializationError
from mpjobs.store.base import JobRecord

if TYPE_CHECKING:
    import psycopg

DELAY = 1.0  # long enough to see a job wait, short enough for the suite


def _rec(app: mpjobs.App, job: mpjobs.Job[object]) -> JobRecord:
    rec = app.store.get(int(job.id))
    assert rec is not None
    return rec


def _not_early(app: mpjobs.App, jobs: list[mpjobs.Job[int]]) -> None:
    for j in jobs:
        rec = _rec(app, j)
        assert rec.started_at is not None and rec.started_at >= rec.exec_at, (
            f"job {j.id} started at {rec.started_at}, before it was due at {rec.exec_at}"
        )


def test_push_many_runs_delayed_and_timed_jobs_when_due(app: mpjobs.App) -> None:
    with started(app):
        t0 = time.time()
        at = datetime.fromtimestamp(t0 + DELAY + 0.5, tz=timezone.utc)
        jobs = app.push_many([
            tasks.add.schedule(1, 1),
            tasks.add.schedule(2, 2).options(delay=DELAY),
            tasks.add.schedule(3, 3).options(at=at),
            tasks.add.schedule(4, 4),
        ])  # fmt: skip
        assert jobs[0].wait(timeout=30).result() == 2
        assert jobs[3].wait(timeout=30).result() == 8
        seen_at = time.time()  # read the clock, then the state: a due time still ahead
        delayed = [jobs[1].status, jobs[2].status]  # means the job must not have started
        if seen_at < t0 + DELAY:
            assert delayed == [mpjobs.JobStatus.SCHEDULED] * 2
        assert [j.wait(timeout=30).result() for j in jobs] == [2, 4, 6, 8]
    _not_early(app, jobs)
    assert _rec(app, jobs[1]).exec_at >= t0 + DELAY
    assert _rec(app, jobs[2]).exec_at == at.timestamp()


def test_map_results_and_options_on_a_pool(app: mpjobs.App) -> None:
    with started(app):
        jobs = tasks.add.map([(i, i) for i in range(300)], priority=-5, max_attempts=2)
        later = tasks.add.map([(i, 1) for i in range(3)], delay=DELAY, queue="default")
        assert [j.wait(timeout=60).result() for j in jobs] == [2 * i for i in range(300)]
        assert [j.wait(timeout=30).result() for j in later] == [1, 2, 3]
    assert {(_rec(app, j).priority, _rec(app, j).max_attempts) for j in jobs} == {(-5, 2)}
    _not_early(app, later)
    assert min(_rec(app, j).exec_at for j in later) >= max(_rec(app, j).created_at
                                                           for j in later) + DELAY  # fmt: skip


def test_map_takes_the_queue_it_is_given(app: mpjobs.App) -> None:
    """A pool serving only queue "bulk" runs the mapped jobs: the queue is each row's."""
    jobs = tasks.add.map([(i, 0) for i in range(20)], queue="bulk")
    with started(app, workers=1, queues=["bulk"]):
        assert [j.wait(timeout=30).result() for j in jobs] == list(range(20))


def test_a_bulk_push_with_an_unpicklable_argument_pushes_nothing(app: mpjobs.App) -> None:
    lock = threading.Lock()
    items = [(i, i) for i in range(500)] + [(lock, 0)]
    with pytest.raises(SerializationError, match="item 500 of the map"):
        tasks.add.map(items)
    builders = [tasks.add.schedule(i, i).options(delay=5) for i in range(500)]
    builders.append(tasks.add.schedule(lock, 0))
    with pytest.raises(SerializationError, match="job 500"):
        app.push_many(builders)
    assert app.jobs() == []
    # and the store is fine afterwards: the next bulk push goes in whole
    assert len(tasks.add.map([(1, 1), (2, 2)])) == 2
    wait_for(lambda: len(app.jobs()) == 2, timeout=10, what="the two jobs listed")


def _callers_connection(app: mpjobs.App) -> psycopg.Connection[tuple[object, ...]]:
    """A connection of the caller's own to the app's server, autocommit between its
    explicit transactions."""
    import psycopg

    assert app.store_url is not None and app.store_url.startswith(pg_base_url())
    return psycopg.connect(pg_base_url(), autocommit=True)


@pytest.mark.postgres_only
def test_push_many_of_delayed_builders_in_the_callers_transaction(app: mpjobs.App) -> None:
    """The runs of a bulk push go through COPY on the caller's connection too."""
    with _callers_connection(app) as conn:
        with pytest.raises(ZeroDivisionError), conn.transaction():
            app.push_many([tasks.add.schedule(i, 0).options(delay=60) for i in range(5)],
                          connection=conn)  # fmt: skip
            1 / 0  # noqa: B018
        assert app.jobs() == []
        with conn.transaction():
            t0 = time.time()
            jobs = app.push_many(
                [tasks.add.schedule(i, 0).options(delay=60) for i in range(5)]
                + [tasks.add.schedule(9, 9)],
                connection=conn,
            )
        assert {j.id for j in app.jobs()} == {j.id for j in jobs}
    assert all(t0 + 60 <= _rec(app, j).exec_at <= time.time() + 60 for j in jobs[:5])
    assert _rec(app, jobs[5]).exec_at <= time.time()


@pytest.mark.postgres_only
def test_map_in_the_callers_transaction(app: mpjobs.App) -> None:
    with _callers_connection(app) as conn:
        with pytest.raises(ZeroDivisionError), conn.transaction():
            tasks.add.map([(i, 0) for i in range(5)], connection=conn)
            assert app.jobs() == []  # not visible to others before the caller commits
            1 / 0  # noqa: B018
        assert app.jobs() == []
        with conn.transaction():
            jobs = tasks.add.map([(i, 0) for i in range(5)], connection=conn, delay=60)
            gated = tasks.add.map([(1, 1)], connection=conn, expires="1h")  # general path
        assert {j.id for j in app.jobs()} == {j.id for j in jobs + gated}


def test_a_bulk_push_stores_each_value_exactly(app: mpjobs.App) -> None:
    """What the bulk path writes reads back the same: no arguments (NULL), a queue with
    the characters COPY's text format escapes, a due time to the microsecond."""
    at = datetime(2031, 5, 4, 12, 0, 0, 123457, tzinfo=timezone.utc)
    queue = "q\t1\\2\n3\r"
    bare = tasks.noop.map([(), ()], queue=queue, priority=-7, at=at)
    mixed = app.push_many([tasks.noop.schedule().options(queue=queue, at=at),
                           tasks.add.schedule(1, 2).options(at=at)])  # fmt: skip
    for j in [*bare, mixed[0]]:
        rec = _rec(app, j)
        assert rec.payload is None and rec.queue == queue and rec.exec_at == at.timestamp()
    assert [_rec(app, j).priority for j in bare] == [-7, -7]
    assert _rec(app, mixed[1]).payload is not None and mixed[1].exec_at == at
