"""The library API from a multi-process program: several `multiprocessing` children (fork
and spawn) push into one home served by `app.start()`, and every job runs exactly once.
"""

from __future__ import annotations

import gc
import multiprocessing
from pathlib import Path

import pytest
import web_jobs
import web_mp

import mpjobs

CHILDREN = 4
PER_CHILD = 30


def _map(method: str, home: Path, marks: Path) -> list[list[tuple[str, int]]]:
    with multiprocessing.get_context(method).Pool(CHILDREN) as children:
        return children.map_async(
            web_mp.push_and_wait,
            [(str(home), str(marks), k * PER_CHILD, PER_CHILD) for k in range(CHILDREN)],
        ).get(timeout=45)


def run_children(method: str, home: Path, marks: Path) -> list[list[tuple[str, int]]]:
    try:
        return _map(method, home, marks)
    finally:
        if method != "fork":
            # spawn starts multiprocessing's resource tracker, which would outlive the test
            # (collect the pool's semaphores first, or the tracker unlinks them under them)
            gc.collect()
            from multiprocessing import resource_tracker

            resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_children_push_into_one_home(
    method: str, home: Path, tmp_path: Path
) -> None:
    app = web_jobs.app
    app._home_arg, app._home = str(home), None
    marks = tmp_path / "marks"
    marks.mkdir()
    # start the pool first: this process is still single-threaded, so it forks
    with app.start(workers=2, graceful_timeout=5.0) as pool:
        batches = run_children(method, home, marks)
        ran = [item for batch in batches for item in batch]
        ids = [job_id for job_id, _ in ran]
        assert len(ids) == len(set(ids)) == CHILDREN * PER_CHILD
        # every job is SUCCESS, seen from this process too
        for job_id in ids:
            job = app.get_job(job_id)
            assert job is not None and job.status is mpjobs.JobStatus.SUCCESS
        # run by the pool's workers, never by the pushing children
        assert {pid for _, pid in ran} <= set(pool.workers())
    # exactly once: one file per job, one line per execution
    files = sorted(marks.iterdir())
    assert len(files) == CHILDREN * PER_CHILD
    assert all(len(f.read_text().splitlines()) == 1 for f in files)
