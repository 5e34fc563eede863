"""Workers with concurrency N (the asyncio executor) against real processes.

N async jobs overlap on one worker's loop; sync jobs there run in its thread pool; an
async job over its time limit is cancelled and the worker lives on, unless it blocks
the loop, when the supervisor kills the worker after the grace and its other jobs are
run again; a terminate-cancel of one of N jobs in flight still stops it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import async_tasks as at
import pytest
from conftest import started, wait_for

import mpjobs
from mpjobs import JobStatus
from mpjobs.runtime.executors import GRACE

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def app(home: Path) -> mpjobs.App:
    return at.make_app(home)


def _starts(marker: Path, tag: str | None = None) -> list[dict[str, Any]]:
    return [m for m in at.marks(marker) if tag is None or m.get("tag") == tag]


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_n_jobs_overlap_on_one_worker(kind: str, app: mpjobs.App, tmp_path: Path) -> None:
    """Every job waits at a barrier of all of them: none can end before all have begun."""
    n = 20 if kind == "async" else 6
    barrier, marker = tmp_path / "barrier", tmp_path / "marks"
    barrier.mkdir()
    task = at.meet if kind == "async" else at.meet_sync
    jobs = app.push_many([task.schedule(str(barrier), i, n, str(marker)) for i in range(n)])
    with started(app, workers=1, concurrency=n):
        pids = {j.wait(30).result() for j in jobs}
    assert len(pids) == 1, "all ran in the one worker"
    events = at.marks(marker)
    last_start = max(float(e["t"]) for e in events if e["what"] == "start")  # type: ignore[arg-type]
    first_end = min(float(e["t"]) for e in events if e["what"] == "end")  # type: ignore[arg-type]
    assert last_start <= first_end


def test_async_job_over_its_limit_is_cancelled_and_the_worker_lives_on(
    app: mpjobs.App, tmp_path: Path
) -> None:
    marker, release = tmp_path / "marks", tmp_path / "release"
    with started(app, workers=1, concurrency=4) as pool:
        (worker,) = pool.workers()
        neighbour = at.wait_file.schedule(str(marker), str(release), "n").now()
        wait_for(lambda: _starts(marker, "n"), 10, what="the neighbour to start")
        job = at.hang.schedule(str(marker), "h").options(timeout=0.5, max_attempts=1).now()
        job.wait(10)
        assert job.status is JobStatus.TIMEOUT
        assert "time limit of 0.5 s exceeded (its task was cancelled)" in (job.error or "")
        release.touch()
        assert neighbour.wait(10).result() == worker, "the neighbour ran on, same worker"
        assert pool.workers() == [worker], "no worker was killed"


def test_async_job_blocking_the_loop_gets_its_worker_killed_and_others_retried(
    app: mpjobs.App, tmp_path: Path
) -> None:
    marker, release = tmp_path / "marks", tmp_path / "release"
    with started(app, workers=1, concurrency=4) as pool:
        (worker,) = pool.workers()
        neighbours = [
            at.wait_file.schedule(str(marker), str(release), f"n{i}").options(max_attempts=3).now()
            for i in range(2)
        ]
        wait_for(lambda: len(_starts(marker)) == 2, 10, what="the neighbours to start")
        job = at.block.schedule(str(marker)).options(timeout=0.5, max_attempts=1).now()
        job.wait(15)
        assert job.status is JobStatus.TIMEOUT
        assert f"did not end within {GRACE:g} s of its cancellation" in (job.error or "")
        rec = app.store.get(int(job.id))
        assert rec is not None and rec.started_at and rec.finished_at
        assert rec.finished_at - rec.started_at <= 0.5 + GRACE + 1.0
        # its batch-mates in flight were put back and run again in the new worker
        for i in range(2):
            wait_for(lambda i=i: len(_starts(marker, f"n{i}")) == 2, 15, what="a re-run")  # type: ignore[misc]
        release.touch()
        pids = {n.wait(10).result() for n in neighbours}
        assert pids and worker not in pids
        assert all(n.status is JobStatus.SUCCESS for n in neighbours)


def test_terminate_cancel_of_one_of_n_jobs_in_flight(app: mpjobs.App, tmp_path: Path) -> None:
    marker, release = tmp_path / "marks", tmp_path / "release"
    with started(app, workers=1, concurrency=4) as pool:
        (worker,) = pool.workers()
        jobs = [at.wait_file.schedule(str(marker), str(release), f"j{i}").now() for i in range(3)]
        wait_for(lambda: len(_starts(marker)) == 3, 10, what="three jobs in flight")
        assert jobs[1].cancel(terminate=True)
        wait_for(lambda: worker not in pool.workers() and len(pool.workers()) == 1, 15,
                 what="the worker killed and replaced")  # fmt: skip
        assert jobs[1].status is JobStatus.CANCELLED
        for i in (0, 2):  # put back without using an attempt, and run again
            wait_for(lambda i=i: len(_starts(marker, f"j{i}")) == 2, 15, what="a re-run")  # type: ignore[misc]
        release.touch()
        for i in (0, 2):
            assert jobs[i].wait(10).status is JobStatus.SUCCESS
            assert jobs[i].attempts == 1
        assert len(_starts(marker, "j1")) == 1
        assert jobs[1].status is JobStatus.CANCELLED


def test_concurrency_must_be_a_positive_int(app: mpjobs.App) -> None:
    with pytest.raises(ValueError, match="concurrency must be an int >= 1"):
        app.start(workers=1, concurrency=0)


def test_a_retry_claimed_again_beside_a_job_in_flight_keeps_the_journal_right(
    app: mpjobs.App, home: Path, tmp_path: Path
) -> None:
    """The journal is rewritten, never truncated, while a job is in flight.

    A job that failed and comes back to the same worker finds its own outcome in the
    journal; the journal is then replaced by one holding only the starts in flight. A
    kill after that must settle the job in flight as lost (retried), not forget it, and
    must leave the retried job's success alone.
    """
    import os
    import signal

    from mpjobs.runtime.journal import read_journal

    marker, release, flaky = tmp_path / "marks", tmp_path / "release", tmp_path / "flaky"
    with started(app, workers=1, concurrency=4) as pool:
        (worker,) = pool.workers()
        neighbour = (
            at.wait_file.schedule(str(marker), str(release), "n").options(max_attempts=3).now()
        )
        wait_for(lambda: _starts(marker, "n"), 10, what="the neighbour to start")
        job = at.flaky.schedule(str(flaky)).options(max_attempts=2, retry_backoff=0.0).now()
        assert job.wait(10).result() == worker
        assert job.attempts == 2
        (proc,) = [p for p in app.store.list_processes() if p.pid == worker]
        path = app.home.journal(proc.token)
        started_ids, done = read_journal(path)
        assert started_ids - done.keys() == {int(neighbour.id)}
        assert b"first attempt fails" not in path.read_bytes(), "the journal was rewritten"
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: len(_starts(marker, "n")) == 2, 15, what="the neighbour run again")
        release.touch()
        assert neighbour.wait(10).status is JobStatus.SUCCESS
        assert neighbour.attempts == 2, "the lost attempt was charged"
        assert job.status is JobStatus.SUCCESS and job.attempts == 2


def test_mpjobs_run_concurrency_option(app: mpjobs.App, home: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    n = 6
    barrier, marker = tmp_path / "barrier", tmp_path / "marks"
    barrier.mkdir()
    jobs = app.push_many([at.meet.schedule(str(barrier), i, n, str(marker)) for i in range(n)])
    cmd = [sys.executable, "-m", "mpjobs", "run", "async_tasks:app", "--workers", "1",
           "--concurrency", str(n), "--home", str(home)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert len({j.wait(30).result() for j in jobs}) == 1, "all met in the one worker"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err


def test_memory_limit_of_one_job_bounds_the_whole_worker(app: mpjobs.App, tmp_path: Path) -> None:
    marker, release = tmp_path / "marks", tmp_path / "release"
    with started(app, workers=1, concurrency=4) as pool:
        (worker,) = pool.workers()
        neighbour = at.wait_file.schedule(str(marker), str(release), "n").now()
        wait_for(lambda: _starts(marker, "n"), 10, what="the neighbour to start")
        job = (
            at.hog.schedule(1024**3, str(tmp_path / "hog"))
            .options(memory_limit="200MB", max_attempts=1)
            .now()
        )
        job.wait(30)
        assert job.status is JobStatus.FAILED
        assert "memory limit of 200.0 MiB exceeded" in (job.error or "")
        wait_for(lambda: len(_starts(marker, "n")) == 2, 15, what="the neighbour run again")
        release.touch()
        assert neighbour.wait(10).result() != worker
        assert neighbour.attempts == 1, "put back without using an attempt"
