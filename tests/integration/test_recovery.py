"""Recovery of jobs whose process died, whoever killed it.

A job's owner proves it is alive by holding a lock on a file of its own; the kernel
drops the lock at death, so any live process can tell, without clocks or pids, that
the job must be settled: retried while attempts remain, else FAILED "worker lost".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import chaos_tasks as ct
import psutil
import pytest
from conftest import wait_for

import mpjobs
from mpjobs import JobStatus

pytestmark = pytest.mark.timeout(60)

RECOVERY_BOUND = 1.5  # the contract says "within a second"; slack for a loaded 2-core box


def _started(marker: Path, n: int, home: Path, timeout: float = 10) -> list[dict[str, float]]:
    wait_for(lambda: len(ct.starts(marker)) >= n, timeout, home=home, what=f"attempt {n} to start")
    return ct.starts(marker)


def _kill(pid: int) -> float:
    os.kill(pid, signal.SIGKILL)
    return time.time()


@pytest.mark.parametrize("attempts", [1, 2])
def test_worker_killed_from_outside(
    attempts: int, chaos_pool: mpjobs.Pool, home: Path, tmp_path: Path
) -> None:
    """kill -9 by someone else (or the kernel's OOM killer): the supervisor settles at once."""
    marker, release = tmp_path / "m", tmp_path / "r"
    job = ct.stall.schedule(str(marker), str(release)).options(max_attempts=attempts).now()
    victim = int(_started(marker, 1, home)[0]["pid"])
    killed = _kill(victim)
    if attempts == 1:
        job.wait(RECOVERY_BOUND + 5)
        assert job.status is JobStatus.FAILED
        assert "worker lost" in (job.error or "") and "SIGKILL" in (job.error or "")
        assert "OOM killer" in (job.error or ""), "the error says it was not our own kill"
        rec = chaos_pool.app.store.get(int(job.id))
        assert rec is not None and rec.finished_at is not None
        assert rec.finished_at - killed < RECOVERY_BOUND
    else:
        retry = _started(marker, 2, home)[1]
        assert retry["pid"] != victim
        assert retry["t"] - killed < RECOVERY_BOUND, "retry started within a second of the kill"
        release.touch()
        assert job.wait(10).result() == retry["pid"]
        assert job.attempts == 2
    wait_for(
        lambda: len(chaos_pool.workers()) == 2 and victim not in chaos_pool.workers(),
        10,
        home=home,
        what="the killed worker replaced",
    )


def _tree(pid: int) -> list[int]:
    try:
        proc = psutil.Process(pid)
        return [pid, *(c.pid for c in proc.children(recursive=True))]
    except psutil.Error:
        return []


def test_whole_pool_killed_then_new_pool(chaos_app: mpjobs.App, home: Path, tmp_path: Path) -> None:
    marker, release = tmp_path / "m", tmp_path / "r"
    first = chaos_app.start(workers=1)
    try:
        first.wait_ready(timeout=20, workers=1)
        job = ct.stall.schedule(str(marker), str(release)).now()
        _started(marker, 1, home)
        for pid in _tree(first.pid):  # kill -9 of everything at once
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not first.is_alive(), 10, what="the supervisor to die")
        assert job.status is JobStatus.RUNNING, "nobody is left to notice"
    finally:
        first.stop(timeout=5)
    with chaos_app.start(workers=1):
        began = time.time()
        retry = _started(marker, 2, home)[1]
        assert retry["t"] - began < RECOVERY_BOUND + 1.0  # includes the new pool's boot
        release.touch()
        assert job.wait(10).result() == retry["pid"]


def test_supervisor_killed_other_supervisor_recovers(
    chaos_app: mpjobs.App, home: Path, tmp_path: Path
) -> None:
    """Only the supervisor dies: its workers exit, and the other pool's leader recovers."""
    marker, release = tmp_path / "m", tmp_path / "r"
    a = chaos_app.start(workers=1)
    b: mpjobs.Pool | None = None
    try:
        a.wait_ready(timeout=20, workers=1)
        job = ct.stall.schedule(str(marker), str(release)).now()
        victim = int(_started(marker, 1, home)[0]["pid"])
        b = chaos_app.start(workers=1)
        b.wait_ready(timeout=20, workers=1)
        a_children = _tree(a.pid)[1:]
        killed = _kill(a.pid)
        retry = _started(marker, 2, home)[1]
        assert retry["pid"] in b.workers()
        assert retry["t"] - killed < RECOVERY_BOUND
        wait_for(lambda: not any(psutil.pid_exists(p) and _alive(p) for p in [victim, *a_children]),
                 10, what="the dead supervisor's children to exit")  # fmt: skip
        release.touch()
        assert job.wait(10).result() == retry["pid"]
        assert job.attempts == 2
    finally:
        a.stop(timeout=5)
        if b is not None:
            b.stop(timeout=20)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _status(home: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "mpjobs", "status", "--home", str(home), "--json"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    data: dict[str, object] = json.loads(out.stdout)
    return data


def test_hung_job_without_limit_is_visible_and_cancellable(
    chaos_pool: mpjobs.Pool, home: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "m"
    job = ct.sleeper.schedule(str(marker)).now()
    victim = int(_started(marker, 1, home)[0]["pid"])
    wait_for(lambda: time.time() - ct.starts(marker)[0]["t"] > 0.3, 5, what="some run time")
    assert job.status is JobStatus.RUNNING
    procs = _status(home)["processes"]
    assert isinstance(procs, list)
    mine = [p for p in procs if p["pid"] == victim]
    assert mine and mine[0]["state"] == "running"
    assert mine[0]["job"]["id"] == job.id and mine[0]["job"]["running_for_s"] >= 0.3

    assert job.cancel(terminate=True)
    wait_for(lambda: not _alive(victim), 5, what="the hung worker to be killed")
    assert job.status is JobStatus.CANCELLED
    with pytest.raises(mpjobs.JobCancelledError):
        job.result()
    wait_for(
        lambda: len(chaos_pool.workers()) == 2 and victim not in chaos_pool.workers(),
        10,
        home=home,
        what="the worker replaced",
    )
    assert ct.whoami.schedule().now().wait(10).result() in chaos_pool.workers()


def test_stop_right_after_a_respawn_is_prompt(chaos_app: mpjobs.App, home: Path) -> None:
    """A SIGTERM that reaches a worker still booting must not be lost (it was, once)."""
    for _ in range(5):
        pool = chaos_app.start(workers=2, graceful_timeout=10.0)
        try:
            pool.wait_ready(timeout=20, workers=2)
            os.kill(pool.workers()[0], signal.SIGKILL)  # the supervisor forks a replacement
        finally:
            t = time.monotonic()
            pool.stop(timeout=20)
        assert time.monotonic() - t < 5.0, "a worker missed its SIGTERM"
