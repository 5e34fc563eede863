"""Job control against real workers (issue 13, items 1, 2, 4, 7).

retry_on / dont_retry_on / Retry are judged in the worker on the live exception; a soft
time limit raises inside the job while the hard one still kills; progress written by a
running job is read fresh by another process; handles carry the job's whole story.
Every wait is on a marker file or the store, bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timezone
from pathlib import Path

import control_tasks as ct
import pytest
from conftest import started, wait_for

import mpjobs
from mpjobs import JobStatus

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def capp(home: Path) -> mpjobs.App:
    return ct.make_app(home)


@pytest.fixture
def cpool(capp: mpjobs.App) -> Iterator[mpjobs.Pool]:
    with started(capp, workers=2) as pool:
        yield pool


def _attempts(marker: Path, n: int, home: Path) -> list[dict[str, object]]:
    got = wait_for(lambda: len(ct.lines(marker)) >= n and ct.lines(marker), 20, home=home,
                   what=f"{n} attempt(s) in {marker.name}")  # fmt: skip
    assert isinstance(got, list)
    return got


# -- 1. retry_on, dont_retry_on, Retry ------------------------------------------------


def test_retry_on_retries_a_subclass_that_cannot_be_pickled(
    cpool: mpjobs.Pool, tmp_path: Path
) -> None:
    job = ct.flaky.schedule(str(tmp_path / "m")).now()
    assert job.wait(30).result() == "ok"
    assert job.attempts == 2
    assert [x["attempt"] for x in ct.lines(tmp_path / "m")] == [1, 2]


def test_retry_on_gives_up_at_once_on_another_exception(
    cpool: mpjobs.Pool, tmp_path: Path
) -> None:
    job = ct.wrong_error.schedule(str(tmp_path / "m")).now()
    job.wait(30)
    assert job.status is JobStatus.FAILED and job.attempts == 1
    assert "not retried (ValueError" in (job.error or "")
    with pytest.raises(mpjobs.JobFailedError) as info:
        job.result()
    assert isinstance(info.value.original, ValueError)
    assert len(ct.lines(tmp_path / "m")) == 1


def test_dont_retry_on_is_never_retried(cpool: mpjobs.Pool, tmp_path: Path) -> None:
    job = ct.no_such_key.schedule(str(tmp_path / "m")).now()
    job.wait(30)
    assert job.status is JobStatus.FAILED and job.attempts == 1
    assert "KeyError" in (job.error or "")


def test_options_override_the_task_rules(cpool: mpjobs.Pool, tmp_path: Path) -> None:
    """`.options(dont_retry_on=...)` travels with this one job (in its payload)."""
    job = ct.flaky.schedule(str(tmp_path / "m")).options(dont_retry_on=ConnectionError).now()
    job.wait(30)
    assert job.status is JobStatus.FAILED and job.attempts == 1
    assert "Unpicklable: upstream refused" in (job.error or "")


def test_retry_on_job_whose_worker_is_killed_is_recovered_and_retried(
    cpool: mpjobs.Pool, home: Path, tmp_path: Path
) -> None:
    """A lost worker is no exception to judge: it counts as a failed attempt and is
    retried while attempts remain, then the retry's own outcome is the one terminal state."""
    marker, release = tmp_path / "m", tmp_path / "r"
    job = ct.killed_once.schedule(str(marker), str(release)).now()
    victim = int(_attempts(marker, 1, home)[0]["pid"])  # type: ignore[call-overload]
    os.kill(victim, signal.SIGKILL)
    second = _attempts(marker, 2, home)[1]
    assert second["pid"] != victim and second["attempt"] == 2
    assert job.wait(30).result() == "recovered"
    assert job.status is JobStatus.SUCCESS and job.attempts == 2
    release.touch()


def test_retry_asks_for_its_own_delay_and_keeps_its_reason(
    cpool: mpjobs.Pool, home: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "m"
    job = ct.asks_retry.schedule(str(marker)).now()
    job.wait(30)
    assert job.status is JobStatus.FAILED and job.attempts == 2
    first, second = ct.lines(marker)
    gap = float(second["t"]) - float(first["t"])  # type: ignore[arg-type]
    assert 1.0 <= gap < 20, f"Retry(delay='1s') is due after 1 s, not the 30 s backoff: {gap}"
    error = job.error or ""
    assert "upstream busy (attempt 2)" in error
    assert "attempt(s) are used up" in error


# -- 2. soft_timeout -------------------------------------------------------------------


def test_soft_timeout_caught_returns_a_value(cpool: mpjobs.Pool, tmp_path: Path) -> None:
    job = ct.soft_catch.schedule(str(tmp_path / "m")).now()
    assert job.wait(30).result() == "cleaned up"
    assert job.status is JobStatus.SUCCESS
    rec = cpool.app.store.get(int(job.id))
    assert rec is not None and rec.started_at and rec.finished_at
    assert 0.5 <= rec.finished_at - rec.started_at < 10


def test_soft_timeout_ignored_is_hard_killed(
    cpool: mpjobs.Pool, home: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "m"
    job = ct.soft_ignore.schedule(str(marker)).now()
    job.wait(30)
    assert job.status is JobStatus.TIMEOUT
    assert "time limit of 2 s exceeded" in (job.error or "")
    assert any(x.get("soft") for x in ct.lines(marker)), "the job saw SoftTimeout first"


@pytest.mark.parametrize("concurrency", [1, 2])
def test_async_soft_timeout(
    concurrency: int, capp: mpjobs.App, tmp_path: Path
) -> None:
    """An async job's task is cancelled at its soft limit: caught, it returns; not
    caught, the job fails with SoftTimeout (in the one-at-a-time and the N-at-once loop)."""
    with started(capp, workers=1, concurrency=concurrency):
        caught = ct.soft_async_catch.schedule(str(tmp_path / "a")).now()
        raised = ct.soft_async_raise.schedule(str(tmp_path / "b")).now()
        assert caught.wait(30).result() == "async cleaned up"
        raised.wait(30)
        assert raised.status is JobStatus.FAILED
        assert "SoftTimeout: soft time limit of 0.5 s exceeded" in (raised.error or "")


def test_soft_timeout_in_a_pool_thread(capp: mpjobs.App, tmp_path: Path) -> None:
    """A sync job of a concurrency-N worker runs in a thread: it gets SoftTimeout too."""
    with started(capp, workers=1, concurrency=2):
        job = ct.soft_threaded.schedule(str(tmp_path / "m")).now()
        neighbour = ct.add.schedule(2, 3).now()
        assert job.wait(30).result() == "thread cleaned up"
        assert neighbour.wait(30).result() == 5


def test_soft_timeout_must_be_below_timeout() -> None:
    with pytest.raises(mpjobs.ConfigError, match=r"soft_timeout .* must be less than timeout"):
        ct.add.schedule(1).options(soft_timeout="5m", timeout=60)
    with pytest.raises(mpjobs.ConfigError, match="soft_timeout"):
        ct.soft_catch.schedule("x").options(timeout=0.5)  # the task's 0.5 s soft limit


# -- 4. progress -----------------------------------------------------------------------


def test_progress_is_read_by_another_process_while_the_job_runs(
    cpool: mpjobs.Pool, home: Path, tmp_path: Path
) -> None:
    marker, release = tmp_path / "m", tmp_path / "r"
    job = ct.progress_steps.schedule(str(marker), str(release)).now()
    _attempts(marker, 1, home)  # it has flushed set_progress(0.5, meta) and waits
    reader = (  # a fresh process, with nothing of this one's: only the home (and store)
        "import json, sys, mpjobs\n"
        "job = mpjobs.App(sys.argv[1], sys.argv[3] or None).get_job(sys.argv[2])\n"
        "print(json.dumps([job.status.value, job.progress, job.meta]))\n"
    )
    url = cpool.app.store_url or ""
    out = subprocess.run(
        [sys.executable, "-c", reader, str(home), job.id, url],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert json.loads(out) == ["RUNNING", 0.5, {"step": "halfway", "rows": 500}]
    release.touch()
    job.wait(30)
    assert job.progress == 1.0
    assert job.meta == {"step": "halfway", "rows": 500}, "a later value keeps the meta"


def test_progress_in_a_tight_loop_is_throttled(cpool: mpjobs.Pool) -> None:
    job = ct.progress_storm.schedule(100_000).now()
    got = job.wait(60).result()
    assert got["took"] < 10, f"100k set_progress calls took {got['took']:.1f} s"
    # at most 4 rounds a second, plus the flush at the end
    assert got["writes"] <= 4 * got["took"] + 3, got
    assert job.progress == 1.0, "the last value lands"
    assert job.meta == {"i": 100_000}


def test_progress_of_async_and_threaded_jobs_lands(capp: mpjobs.App) -> None:
    """In a concurrency-N worker: each async job has its own context, a sync job's
    thread gets its task's, and the last value lands without blocking the loop."""
    with started(capp, workers=1, concurrency=3):
        jobs = [ct.progress_async.schedule(v).now() for v in (0.25, 0.5, 0.75)]
        storm = ct.progress_storm.schedule(1000).now()
        for job, v in zip(jobs, (0.25, 0.5, 0.75), strict=True):
            assert job.wait(30).result() == job.id, "current_job() is this job's own"
            assert (job.progress, job.meta) == (v, {"async": True})
        storm.wait(30)
        assert storm.progress == 1.0 and storm.meta == {"i": 1000}


def test_current_job_outside_a_job_is_a_clear_error() -> None:
    with pytest.raises(mpjobs.MpjobsError, match="outside a job"):
        mpjobs.current_job()


# -- 7. handles ------------------------------------------------------------------------


def test_handle_fields(cpool: mpjobs.Pool) -> None:
    before = time.time()
    job = ct.add.schedule(2, b=40).now()
    assert job.wait(30).result() == 42
    assert job.args == (2,) and job.kwargs == {"b": 40}
    created, began, ended = job.created_at, job.started_at, job.finished_at
    assert began is not None and ended is not None
    for t in (created, began, ended):
        assert t.tzinfo is timezone.utc
    assert before - 1 <= created.timestamp() <= began.timestamp() <= ended.timestamp()
    assert job.cron_expression is None and job.schedule is None
    assert job.progress is None and job.meta is None


def test_job_retry_requeues_a_finished_job(cpool: mpjobs.Pool, tmp_path: Path) -> None:
    job = ct.wrong_error.schedule(str(tmp_path / "m")).now()
    job.wait(30)
    assert job.status is JobStatus.FAILED
    assert job.retry() is job
    job.wait(30)
    assert job.status is JobStatus.FAILED and job.attempts == 1
    assert len(ct.lines(tmp_path / "m")) == 2, "it ran again"


def test_job_retry_refuses_live_jobs_and_a_taken_unique_key(
    capp: mpjobs.App, tmp_path: Path
) -> None:
    waiting = ct.add.schedule(1).delay("1h")
    with pytest.raises(mpjobs.MpjobsError, match="not finished"):
        waiting.retry()
    with started(capp, workers=1):
        first = ct.add.schedule(1).options(unique_key="k").now()
        first.wait(30)
        taker = ct.add.schedule(2).options(unique_key="k").delay("1h")
        with pytest.raises(mpjobs.StoreError, match="unique key 'k'"):
            first.retry()
        taker.cancel()
        first.retry().wait(30)
        assert first.result() == 1
