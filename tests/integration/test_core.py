"""The core with real worker processes: pushing, results, handles, priority, queues,
unique keys, retries and push-to-start."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import core_tasks
import pytest
import tasks
from conftest import started, wait_for

import mpjobs
from mpjobs import JobStatus


@pytest.fixture(autouse=True)
def capp(home: Path) -> mpjobs.App:
    """core_tasks' app on the test's home (autouse: never push into ./.mpjobs)."""
    return core_tasks.make_app(home)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- pushing and results -------------------------------------------------------------


def test_sync_and_async_tasks_return_results(pool: mpjobs.Pool) -> None:
    a = tasks.add.schedule(2, 3).now()
    b = tasks.async_double.schedule(21).now()
    n = tasks.noop.schedule().now()
    assert a.wait(10).result() == 5
    assert b.wait(10).result() == 42
    assert n.wait(10).result() is None
    assert a.status is JobStatus.SUCCESS and a.is_done() and a.attempts == 1


def test_undecorated_import_path_and_lambda(pool: mpjobs.Pool, app: mpjobs.App) -> None:
    by_path = app.schedule("tasks:add", 4, y=5).now()
    by_pickle = app.schedule(lambda x: x * 3, 7).now()
    assert by_path.wait(10).result() == 9
    assert by_pickle.wait(10).result() == 21


def test_failure_carries_original_exception_and_remote_traceback(pool: mpjobs.Pool) -> None:
    job = core_tasks.fail_custom.schedule("kaput").now()
    job.wait(10)
    assert job.status is JobStatus.FAILED
    with pytest.raises(mpjobs.JobFailedError) as info:
        job.result()
    err = info.value
    assert isinstance(err.original, core_tasks.CustomError)
    assert str(err.original) == "kaput"
    assert err.status == "FAILED"
    assert err.remote_traceback is not None
    assert "Traceback" in err.remote_traceback and "CustomError: kaput" in err.remote_traceback
    assert "fail_custom" in err.remote_traceback
    assert job.error == err.remote_traceback


def test_failure_with_unloadable_exception_still_has_traceback(pool: mpjobs.Pool) -> None:
    job = core_tasks.fail_unloadable.schedule().now()
    with pytest.raises(mpjobs.JobFailedError) as info:
        job.wait(10).result()
    assert info.value.original is None
    assert "NeedsTwoArgs: left-right" in (info.value.remote_traceback or "")


def test_cancelled_not_completed_and_wait_timeout(app: mpjobs.App) -> None:
    job = tasks.add.schedule(1, 1).delay(3600)
    assert job.status is JobStatus.SCHEDULED and not job.is_done()
    with pytest.raises(mpjobs.JobNotCompletedError):
        job.result()
    t0 = time.monotonic()
    with pytest.raises(mpjobs.WaitTimeout):
        job.wait(timeout=0.2)
    assert time.monotonic() - t0 >= 0.19
    with pytest.raises(TimeoutError):  # WaitTimeout is a TimeoutError too
        job.wait(timeout=0)
    assert job.cancel() is True
    assert job.status is JobStatus.CANCELLED and job.is_done()
    assert job.wait(1) is job
    with pytest.raises(mpjobs.JobCancelledError):
        job.result()
    assert job.cancel() is False  # already done


def test_wait_async(pool: mpjobs.Pool) -> None:
    async def main() -> list[object]:
        jobs = [tasks.add.schedule(i, i).now() for i in range(3)]
        done = await asyncio.gather(*(j.wait_async(10) for j in jobs))
        pending = tasks.add.schedule(0, 0).delay(3600)
        with pytest.raises(mpjobs.WaitTimeout):
            await pending.wait_async(0.1)
        assert await pending.cancel_async() is True
        return [j.result() for j in done]

    assert asyncio.run(main()) == [0, 2, 4]


def test_delay_and_at_run_no_earlier_than_asked(pool: mpjobs.Pool) -> None:
    t0 = time.time()
    d = tasks.add.schedule(1, 2).delay(0.4)
    a = tasks.add.schedule(3, 4).at(datetime.now(timezone.utc) + timedelta(seconds=0.3))
    assert d.wait(10).result() == 3 and a.wait(10).result() == 7
    d_rec, a_rec = d._record(), a._record()
    assert d_rec.started_at is not None and a_rec.started_at is not None
    assert d_rec.started_at >= d_rec.exec_at >= t0 + 0.39
    assert a_rec.started_at >= a_rec.exec_at >= t0 + 0.29


def test_options_are_stored_and_applied(pool: mpjobs.Pool, tmp_path: Path) -> None:
    job = core_tasks.record.schedule(str(tmp_path / "o"), "x").options(
        priority=-10, unique_key="opt-k", queue="default", max_attempts=3, timeout=30,
        memory_limit="512MB",
    ).now()
    assert job.wait(10).result() == "x"
    rec = job._record()
    assert (job.priority, job.queue, job.unique_key) == (-10, "default", "opt-k")
    assert (rec.max_attempts, rec.timeout, rec.memory_limit) == (3, 30.0, 512 * 1024**2)


def test_push_many_runs_all_in_order_of_ids(pool: mpjobs.Pool, app: mpjobs.App) -> None:
    jobs = app.push_many([tasks.add.schedule(i, 1) for i in range(200)])
    ids = [int(j.id) for j in jobs]
    assert ids == list(range(ids[0], ids[0] + 200))
    for i, j in enumerate(jobs):
        assert j.wait(20).result() == i + 1
    assert app.push_many([]) == []


def test_job_handle_pickles_into_another_process(pool: mpjobs.Pool, tmp_path: Path) -> None:
    release = tmp_path / "release"
    job = tasks.block.schedule(str(tmp_path / "m"), str(release)).now()
    code = (
        "import pickle, sys\n"
        "job = pickle.loads(sys.stdin.buffer.read())\n"
        "print(job.id, job.wait(20).result(), job.status.value, flush=True)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=False
    )
    assert child.stdin is not None
    child.stdin.write(pickle.dumps(job))
    child.stdin.close()
    release.touch()
    assert child.wait(30) == 0
    assert child.stdout is not None
    out = child.stdout.read()
    assert out.decode().split() == [job.id, "released", "SUCCESS"]
    assert pickle.loads(pickle.dumps(job)) == job


def test_get_job_and_jobs_filters(app: mpjobs.App) -> None:
    a = tasks.add.schedule(1, 2).options(queue="qa").delay(3600)
    b = tasks.add.schedule(1, 2).options(queue="qb").delay(3600)
    c = tasks.add.schedule(1, 2).options(queue="qa").delay(3600)
    c.cancel()
    assert app.get_job(a.id) == a and app.get_job(int(b.id)) == b
    assert app.get_job("999999") is None and app.get_job("not-an-id") is None
    assert set(app.jobs()) == {a, b, c}
    assert set(app.jobs(status="SCHEDULED")) == {a, b}
    assert app.jobs(status=JobStatus.SCHEDULED, queue="qa") == [a]
    assert app.jobs(status="CANCELLED") == [c]
    assert app.jobs(queue="qb") == [b]
    assert len(app.jobs(limit=2)) == 2
    with pytest.raises(ValueError):
        app.jobs(status="NOPE")


# -- ordering, routing, uniqueness ---------------------------------------------------


def test_priority_lower_runs_first(capp: mpjobs.App, tmp_path: Path) -> None:
    out = tmp_path / "order"
    prios = [5, -1, 0, 3, -7, 2]
    jobs = [core_tasks.record.schedule(str(out), str(p)).options(priority=p).now() for p in prios]
    with started(capp, workers=1):
        for j in jobs:
            j.wait(20)
    assert lines(out) == [str(p) for p in sorted(prios)]


def test_queue_routing(capp: mpjobs.App, tmp_path: Path) -> None:
    with started(capp, workers=1, queues=["a"]):
        in_b = core_tasks.record.schedule(str(tmp_path / "b"), "b").options(queue="b").now()
        in_a = core_tasks.record.schedule(str(tmp_path / "a"), "a").options(queue="a").now()
        assert in_a.wait(10).result() == "a"
        in_a2 = core_tasks.record.schedule(str(tmp_path / "a"), "a2").options(queue="a").now()
        assert in_a2.wait(10).result() == "a2"
        assert in_b.status is JobStatus.SCHEDULED
    assert not (tmp_path / "b").exists()
    with started(capp, workers=1, queues=["b"]):
        assert in_b.wait(10).result() == "b"


def test_unique_key_dedups_while_live(app: mpjobs.App, tmp_path: Path) -> None:
    first = tasks.add.schedule(1, 1).options(unique_key="u1").now()
    again = tasks.add.schedule(2, 2).options(unique_key="u1").now()
    assert again == first and len(app.jobs()) == 1
    marker, release = tmp_path / "m", tmp_path / "r"
    with started(app, workers=2):
        assert first.wait(10).result() == 2
        blocker = tasks.block.schedule(str(marker), str(release)).options(unique_key="u2").now()
        wait_for(marker.exists, 10, what="blocker to start")
        assert blocker.status is JobStatus.RUNNING
        assert tasks.block.schedule("x", "y").options(unique_key="u2").now() == blocker
        release.touch()
        assert blocker.wait(10).result() == "released"
        fresh = tasks.add.schedule(3, 3).options(unique_key="u1").now()
        assert fresh != first
        assert fresh.wait(10).result() == 6
    same = app.push_many([tasks.add.schedule(0, 0).options(unique_key="u3") for _ in range(3)])
    assert len(set(same)) == 1 and len(app.jobs(status="SCHEDULED")) == 1


def test_terminate_cancel_of_a_job_given_back_by_its_batch_skips_it_without_a_kill(
    app: mpjobs.App, tmp_path: Path
) -> None:
    """A batch-mate of a slow job goes back to the queue (batch.py); cancelling it kills nothing."""
    marker, release, never = tmp_path / "m", tmp_path / "r", tmp_path / "never"
    with started(app, workers=1) as pool:
        for job in app.push_many([tasks.noop.schedule() for _ in range(5)]):
            job.wait(10)  # the worker now knows noop is fast, so it claims in batches
        (worker,) = pool.workers()
        gate, waiting = app.push_many(
            [tasks.block.schedule(str(marker), str(release)), tasks.touch.schedule(str(never))]
        )
        try:
            wait_for(marker.exists, 10, what="the gate job to start")
            wait_for(lambda: waiting.status is JobStatus.SCHEDULED, 5, home=app.home.path,
                     what="the gate's batch-mate to be given back")  # fmt: skip
            assert waiting.cancel(terminate=True)
        finally:
            release.touch()
        assert gate.wait(10).result() == "released"
        assert waiting.wait(10).status is JobStatus.CANCELLED
        assert pool.workers() == [worker]  # nothing was killed for a job that never started
    assert not never.exists()  # and the cancelled job never ran


def test_result_of_quick_job_not_withheld_by_long_job_in_same_batch(
    app: mpjobs.App, tmp_path: Path
) -> None:
    marker, release = tmp_path / "m", tmp_path / "r"
    quick = tasks.add.schedule(1, 1).now()
    tasks.block.schedule(str(marker), str(release)).now()
    with started(app, workers=1):
        try:
            wait_for(marker.exists, 10, what="long job to start")
            assert quick.wait(3).result() == 2
        finally:
            release.touch()


# -- retries -------------------------------------------------------------------------


def test_retries_with_exponential_backoff(capp: mpjobs.App, tmp_path: Path) -> None:
    log = tmp_path / "attempts"
    with started(capp, workers=1):
        job = core_tasks.flaky_timed.schedule(str(log), 2).now()
        assert job.wait(20).result() == 3
    assert job.attempts == 3
    t = [float(x) for x in lines(log)]
    # backoff 0.2 s doubles per attempt, with at most 20% jitter below it
    assert t[1] - t[0] >= 0.2 * 0.8 - 0.01
    assert t[2] - t[1] >= 0.4 * 0.8 - 0.01


def test_final_failure_keeps_traceback(pool: mpjobs.Pool, tmp_path: Path) -> None:
    job = tasks.flaky.schedule(str(tmp_path / "c"), 5).options(max_attempts=2).now()
    job.wait(20)
    assert job.status is JobStatus.FAILED and job.attempts == 2
    assert job.error is not None
    assert "Traceback" in job.error and "RuntimeError: attempt 2 fails" in job.error
    with pytest.raises(mpjobs.JobFailedError, match="attempt 2 fails"):
        job.result()


# -- push to start -------------------------------------------------------------------


def test_idle_pool_picks_up_a_push_quickly(pool: mpjobs.Pool) -> None:
    for _ in range(5):
        t0 = time.monotonic()
        job = tasks.getpid.schedule().now()
        assert job.wait(5).result() in pool.workers()
        assert time.monotonic() - t0 < 5.0
        rec = job._record()
        assert rec.started_at is not None and rec.started_at - rec.created_at < 5.0
