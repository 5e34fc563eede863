"""Time and memory limits, and worker recycling, against real misbehaving processes.

Each limit test runs a neighbour job on the other worker and checks it finishes
unharmed (same worker pid, SUCCESS), and that the pool returns to full strength with a
new worker in place of the killed one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import chaos_tasks as ct
import psutil
import pytest
from conftest import wait_for

import mpjobs
from mpjobs import JobStatus, Limit

pytestmark = pytest.mark.timeout(60)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _neighbour(tmp_path: Path, pool: mpjobs.Pool, home: Path) -> tuple[mpjobs.Job, int, Path]:
    """Occupy one worker with a job that waits for a release file."""
    marker, release = tmp_path / "neighbour", tmp_path / "release"
    job = ct.stall.schedule(str(marker), str(release)).now()
    wait_for(lambda: ct.starts(marker), 10, what="neighbour to start")
    return job, int(ct.starts(marker)[0]["pid"]), release


def _full_strength(pool: mpjobs.Pool, home: Path, dead: set[int]) -> None:
    def ok() -> bool:
        alive = set(pool.workers())
        return len(alive) == 2 and not alive & dead and all(_gone(p) for p in dead)

    wait_for(ok, 15, home=home, what="pool back to 2 workers with new pids")


TIME_CASES = [
    ("sleeper", {"timeout": 1}),
    ("spinner", {"limits": [Limit(Limit.Type.TIME, 1)]}),
    ("regex_bomb", {"timeout": 1}),
]


@pytest.mark.parametrize(("task", "limit"), TIME_CASES, ids=[c[0] for c in TIME_CASES])
def test_time_limit_kills_stuck_job_and_retries(
    task: str, limit: dict[str, Any], chaos_pool: mpjobs.Pool, home: Path, tmp_path: Path
) -> None:
    neighbour, npid, release = _neighbour(tmp_path, chaos_pool, home)
    marker = tmp_path / "stuck"
    fn = getattr(ct, task)
    job = fn.schedule(str(marker)).options(max_attempts=2, retry_backoff=0.01, **limit).now()

    job.wait(20)
    assert job.status is JobStatus.TIMEOUT
    assert job.attempts == 2
    assert "time limit of 1 s exceeded" in (job.error or "")
    rec = chaos_pool.app.store.get(int(job.id))
    assert rec is not None and rec.started_at and rec.finished_at
    assert rec.finished_at - rec.started_at <= 1 + 1.0, "stopped later than limit + 1 s"
    first, second = ct.starts(marker)
    assert first["pid"] != second["pid"], "the retry ran in a fresh worker"
    # attempt 1: kill, settle, respawn, claim all fit in limit + 1 s (+ slack for a busy box)
    assert second["t"] - first["t"] <= 1 + 1.5
    with pytest.raises(mpjobs.JobFailedError):
        job.result()

    release.touch()
    assert neighbour.wait(10).result() == npid, "the neighbour ran on, in the same worker"
    _full_strength(chaos_pool, home, {int(first["pid"]), int(second["pid"])})


def _peak_mib(error: str) -> float:
    m = re.search(r"reached ([\d.]+) MiB", error)
    assert m, error
    return float(m.group(1))


MEM = 200 * 1024**2
GIB = 1024**3


@pytest.mark.parametrize("how", ["self", "multiprocessing", "fork"])
def test_memory_limit_kills_the_tree(
    how: str, chaos_pool: mpjobs.Pool, home: Path, tmp_path: Path
) -> None:
    neighbour, npid, release = _neighbour(tmp_path, chaos_pool, home)
    marker, pids = tmp_path / "hog", tmp_path / "children"
    if how == "self":
        job = ct.hog.schedule(int(1.5 * GIB), str(marker)).options(memory_limit="200MB").now()
    else:
        job = (
            ct.hog_in_child.schedule(int(1.5 * GIB), how, str(pids), str(marker))
            .options(limits=[Limit(Limit.Type.MEMORY, MEM)])
            .now()
        )
    job.wait(30)
    assert job.status is JobStatus.FAILED, job.error
    error = job.error or ""
    assert "memory limit of 200.0 MiB exceeded" in error
    peak = _peak_mib(error)
    assert 200 < peak < 1024, f"stopped near the limit, not at {peak} MiB"
    print(f"memory overshoot ({how}): {peak - 200:.1f} MiB")
    worker = int(ct.starts(marker)[0]["pid"])
    children = [int(x) for x in pids.read_text().split()] if how != "self" else []
    assert how == "self" or children, "the job started its child"
    wait_for(lambda: all(_gone(p) for p in [worker, *children]), 10, what="whole tree dead")

    release.touch()
    assert neighbour.wait(10).result() == npid
    _full_strength(chaos_pool, home, {worker})


def test_recycle_after_max_jobs(chaos_app: mpjobs.App, home: Path) -> None:
    with chaos_app.start(workers=2, max_jobs_per_worker=3) as pool:
        pool.wait_ready(timeout=20, workers=2)
        jobs = chaos_app.push_many([ct.whoami.schedule() for _ in range(20)])
        for j in jobs:
            j.wait(30)
        assert all(j.status is JobStatus.SUCCESS for j in jobs), [j.error for j in jobs]
        pids = [j.result() for j in jobs]
        assert max(pids.count(p) for p in set(pids)) <= 3
        assert len(set(pids)) >= 7
        wait_for(lambda: len(pool.workers()) == 2, 10, home=home, what="pool at full strength")


def test_recycle_after_max_memory(chaos_app: mpjobs.App, home: Path) -> None:
    with chaos_app.start(workers=2, max_memory_per_worker="150MB") as pool:
        pool.wait_ready(timeout=20, workers=2)
        jobs = [ct.leak.schedule(50 * 1024**2).now() for _ in range(8)]
        for j in jobs:
            j.wait(30)
        assert all(j.status is JobStatus.SUCCESS for j in jobs), [j.error for j in jobs]
        pids = [j.result() for j in jobs]
        # a fresh worker (~30 MiB) passes 150 MiB after its third 50 MiB leak at the latest
        assert max(pids.count(p) for p in set(pids)) <= 3
        assert len(set(pids)) >= 3
        wait_for(lambda: len(pool.workers()) == 2, 10, home=home, what="pool at full strength")
