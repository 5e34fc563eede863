"""Kills and signals with real processes: kill -9 of a whole pool, of one worker, of the
supervisor; SIGTERM/SIGINT graceful drain; SIGHUP reload; no tight fork loop at boot."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import tasks
from conftest import started, wait_for

import mpjobs
from mpjobs import JobStatus


def pool_tree(pool: mpjobs.Pool) -> list[psutil.Process]:
    sup = psutil.Process(pool.pid)
    return [sup, *sup.children(recursive=True)]


def gone(procs: list[psutil.Process]) -> bool:
    def dead(p: psutil.Process) -> bool:
        try:
            return p.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    return all(dead(p) for p in procs)


def marker_pid(path: Path) -> int:
    return int(path.read_text())


def block(tmp: Path, name: str, **options: object) -> tuple[mpjobs.Job, Path, Path]:
    marker, release = tmp / f"{name}.started", tmp / f"{name}.release"
    job = tasks.block.schedule(str(marker), str(release)).options(**options).now()
    return job, marker, release


# -- kill -9 ---------------------------------------------------------------------------


def test_kill_9_whole_pool_then_restart_runs_jobs(app: mpjobs.App, tmp_path: Path) -> None:
    pool = app.start(workers=2, graceful_timeout=5.0)
    try:
        pool.wait_ready(timeout=20, workers=2)
        # one at a time: a worker may claim several waiting jobs in one batch
        retried, m1, r1 = block(tmp_path, "retried", max_attempts=2)
        wait_for(m1.exists, 10, what="first job to start")
        lost, m2, r2 = block(tmp_path, "lost", max_attempts=1)
        wait_for(m2.exists, 10, what="second job to start")
        pushed = tasks.add.schedule(20, 22).now()  # returned: committed, though no worker is free
        procs = pool_tree(pool)
        assert len(procs) == 4  # supervisor, coordinator, 2 workers
        for p in procs:
            p.kill()
        wait_for(lambda: gone(procs), 10, what="the whole pool to die")
    finally:
        pool.stop(timeout=5)  # reaps the supervisor
    assert pushed.status is JobStatus.SCHEDULED
    r1.touch()
    r2.touch()
    with started(app, workers=2):
        assert pushed.wait(15).result() == 42
        assert retried.wait(15).result() == "released"
        lost.wait(15)
    assert retried.attempts == 2
    assert lost.status is JobStatus.FAILED and lost.attempts == 1
    assert "worker lost" in (lost.error or "")
    with pytest.raises(mpjobs.JobFailedError, match="worker lost"):
        lost.result()


@pytest.mark.parametrize("attempts", [2, 1])
def test_sigkill_worker_retries_or_fails_and_is_replaced(
    pool: mpjobs.Pool, tmp_path: Path, attempts: int
) -> None:
    before = set(pool.workers())
    assert len(before) == 2
    job, marker, release = block(tmp_path, "j", max_attempts=attempts)
    wait_for(marker.exists, 10, home=pool.app.home.path, what="job to start")
    victim = marker_pid(marker)
    assert victim in before
    marker.unlink()
    os.kill(victim, signal.SIGKILL)
    release.touch()  # after the kill: the job polls for it, and must not finish first
    job.wait(15)
    if attempts == 2:
        assert job.result() == "released" and job.attempts == 2
        assert marker_pid(marker) != victim
    else:
        assert job.status is JobStatus.FAILED and job.attempts == 1
        assert "worker lost" in (job.error or "")
        assert "SIGKILL" in (job.error or "")
    def replaced() -> bool:
        now = set(pool.workers())
        return len(now) == 2 and victim not in now
    wait_for(replaced, 10, home=pool.app.home.path, what="a replacement worker")
    assert tasks.add.schedule(1, 1).now().wait(10).result() == 2


def test_supervisor_sigkill_leaves_no_orphans_and_job_recovers(
    app: mpjobs.App, tmp_path: Path
) -> None:
    pool = app.start(workers=2, graceful_timeout=5.0)
    try:
        pool.wait_ready(timeout=20, workers=2)
        job, marker, release = block(tmp_path, "j", max_attempts=2)
        wait_for(marker.exists, 10, what="job to start")
        children = pool_tree(pool)[1:]
        assert len(children) == 3
        os.kill(pool.pid, signal.SIGKILL)
        wait_for(lambda: gone(children), 10, what="workers and coordinator to exit")
    finally:
        pool.stop(timeout=5)
    release.touch()
    with started(app, workers=1):
        assert job.wait(15).result() == "released"
    assert job.attempts == 2


# -- graceful stop ---------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop_lets_running_job_finish(app: mpjobs.App, tmp_path: Path, sig: int) -> None:
    pool = app.start(workers=2, graceful_timeout=20.0)
    try:
        pool.wait_ready(timeout=20, workers=2)
        job, marker, release = block(tmp_path, "j")
        wait_for(marker.exists, 10, what="job to start")
        waiting = tasks.add.schedule(1, 2).delay(3600)
        os.kill(pool.pid, sig)
        # the coordinator exits at once on a drain: a sign the signal was handled
        wait_for(lambda: pool.coordinator() is None, 10, home=app.home.path, what="drain to begin")
        assert pool.is_alive()
        release.touch()
        assert job.wait(15).result() == "released"
        wait_for(lambda: not pool.is_alive(), 15, what="supervisor to exit")
    finally:
        pool.stop(timeout=5)
    assert waiting.status is JobStatus.SCHEDULED


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_job_outlasting_grace_is_killed_and_rescheduled(
    app: mpjobs.App, tmp_path: Path, sig: int
) -> None:
    pool = app.start(workers=1, graceful_timeout=0.5)
    try:
        pool.wait_ready(timeout=20, workers=1)
        job, marker, release = block(tmp_path, "j", max_attempts=1)
        wait_for(marker.exists, 10, what="job to start")
        worker = marker_pid(marker)
        os.kill(pool.pid, sig)
        wait_for(lambda: not pool.is_alive(), 15, what="supervisor to exit")
        wait_for(lambda: not psutil.pid_exists(worker), 5, what="worker to die")
    finally:
        pool.stop(timeout=5)
    assert job.status is JobStatus.SCHEDULED
    assert job.attempts == 0  # a deliberate stop does not use an attempt
    release.touch()
    with started(app, workers=1):
        assert job.wait(15).result() == "released"
    assert job.attempts == 1


def test_pool_stop_drains_with_timeout(app: mpjobs.App, tmp_path: Path) -> None:
    pool = app.start(workers=1, graceful_timeout=1)
    pool.wait_ready(timeout=20, workers=1)
    job, marker, _release = block(tmp_path, "j", max_attempts=1)
    wait_for(marker.exists, 10, what="job to start")
    pool.stop(timeout=20)
    assert not pool.is_alive()
    assert job.status is JobStatus.SCHEDULED and job.attempts == 0


# -- SIGHUP ----------------------------------------------------------------------------


def test_sighup_replaces_every_worker_and_keeps_running(pool: mpjobs.Pool, app: mpjobs.App) -> None:
    before = set(pool.workers())
    assert len(before) == 2
    os.kill(pool.pid, signal.SIGHUP)
    jobs = [tasks.add.schedule(i, 1).now() for i in range(30)]

    def all_new() -> bool:
        now = set(pool.workers())
        return len(now) == 2 and not (now & before)

    wait_for(all_new, 20, home=app.home.path, what="all workers to be replaced")
    jobs += [tasks.add.schedule(i, 2).now() for i in range(30)]
    assert [j.wait(20).result() for j in jobs] == [i + 1 for i in range(30)] + [
        i + 2 for i in range(30)
    ]
    assert pool.is_alive()


# -- boot failures ---------------------------------------------------------------------


def _log_time(line: str) -> float:
    stamp = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line)
    assert stamp, line
    return datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_worker_failing_at_boot_backs_off(home: Path, tmp_path: Path) -> None:
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mpjobs", "run", "core_tasks:bad_app", "--workers", "1",
             "--home", str(home)],
            stdout=subprocess.DEVNULL, stderr=f,
        )  # fmt: skip
    try:
        def failures() -> list[str]:
            return [ln for ln in err.read_text().splitlines() if "while booting" in ln]

        wait_for(lambda: len(failures()) >= 3, 20, what="three boot failures")
        text = err.read_text()
        assert "does_not_exist_module" in text
        assert "retrying in" in text
        times = [_log_time(ln) for ln in failures()]
        # backoff 0.5 s then 1 s: a tight loop would fail three times within milliseconds
        assert times[2] - times[0] >= 1.2
        forks = len(failures())
        assert forks <= 5
        assert proc.poll() is None  # the supervisor itself stays up
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
