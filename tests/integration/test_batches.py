"""A job never waits behind a slow batch-mate while another worker could run it."""

from __future__ import annotations

from pathlib import Path

import pytest
import tasks
from conftest import started, wait_for

import mpjobs
from mpjobs import JobStatus

pytestmark = pytest.mark.timeout(60)


def test_quick_jobs_do_not_wait_behind_a_slow_job_of_their_batch(
    app: mpjobs.App, tmp_path: Path
) -> None:
    """push_many([slow, quick, quick, quick]) in a fresh 2-worker pool: the quick ones all
    run while the slow one is still running (it holds until released)."""
    marker, release = tmp_path / "m", tmp_path / "r"
    with started(app, workers=2):
        slow, *quick = app.push_many(
            [tasks.block.schedule(str(marker), str(release))]
            + [tasks.touch.schedule(str(tmp_path / f"q{i}")) for i in range(3)]
        )
        try:
            wait_for(marker.exists, 10, what="the slow job to start")
            wait_for(lambda: all(j.is_done() for j in quick), 5, home=app.home.path,
                     what="every quick job to run beside the slow one")  # fmt: skip
            assert [j.status for j in quick] == [JobStatus.SUCCESS] * 3
            assert slow.status is JobStatus.RUNNING
        finally:
            release.touch()
        assert slow.wait(10).result() == "released"


def test_known_fast_task_that_turns_slow_gives_its_batch_back(
    app: mpjobs.App, tmp_path: Path
) -> None:
    """A task this worker knows as fast, called once with a slow argument: its mates,
    claimed in the same batch, are given back within milliseconds and run elsewhere."""
    release = tmp_path / "r"
    with started(app, workers=2):
        warm = app.push_many([tasks.maybe_block.schedule(None, None) for _ in range(200)])
        for job in warm:
            job.wait(10)  # both workers now know maybe_block as fast
        marker = tmp_path / "m"
        jobs = app.push_many(
            [tasks.maybe_block.schedule(None, None) for _ in range(3)]
            + [tasks.maybe_block.schedule(str(marker), str(release))]
            + [tasks.maybe_block.schedule(None, None) for _ in range(60)]
        )
        slow = jobs[3]
        rest = jobs[:3] + jobs[4:]
        try:
            wait_for(marker.exists, 10, what="the slow call to start")
            wait_for(lambda: all(j.is_done() for j in rest), 10, home=app.home.path,
                     what="every other call to run while the slow one runs")  # fmt: skip
            assert slow.status is JobStatus.RUNNING
        finally:
            release.touch()
        slow.wait(10)
