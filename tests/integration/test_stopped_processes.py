"""What a stopped (not dead) process can and cannot hold up.

A process stopped with SIGSTOP (Ctrl-Z, a debugger) keeps every lock it holds, and no
kernel releases them. mpjobs must bound every wait for such a lock, keep its limits and
its signal handling on time while any lock of the home is held, and let a frozen idle
worker cost no more than its own slot.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import chaos_tasks as ct
import procfs
import psutil
import pytest
import tasks
from conftest import started, wait_for

import mpjobs
from mpjobs import JobStatus

pytestmark = pytest.mark.timeout(90)

HOLD_FLOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""
HOLD_SQLITE = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(600)
"""
PUSH = """
import sys, mpjobs
mpjobs.App(home=sys.argv[1]).schedule("os:getpid").now()
"""


@contextmanager
def stopped_holder(code: str, path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process that takes a lock on `path`, then is stopped (SIGSTOP) while holding it."""
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        proc.send_signal(signal.SIGSTOP)
        yield proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)


def _push_with_bound(home: Path, seconds: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPJOBS_LOCK_TIMEOUT": str(seconds)}
    return subprocess.run([sys.executable, "-c", PUSH, str(home)], capture_output=True,
                          text=True, timeout=30, env=env)  # fmt: skip


@pytest.mark.sqlite_only  # about the SQLite file or its locks
def test_a_writer_behind_a_stopped_flock_holder_gives_up_naming_it(home: Path) -> None:
    mpjobs.App(home=home).store  # noqa: B018 - create the store
    with stopped_holder(HOLD_FLOCK, home / "write.lock") as holder:
        t0 = time.monotonic()
        out = _push_with_bound(home, 1.0)
        took = time.monotonic() - t0
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "StoreError" in last and "write.lock" in last and f"pid {holder.pid}" in last, last
    assert took < 15, "the wait is bounded by MPJOBS_LOCK_TIMEOUT, not forever"


@pytest.mark.sqlite_only  # about the SQLite file or its locks
def test_a_writer_behind_another_programs_sqlite_lock_gives_up_naming_it(home: Path) -> None:
    mpjobs.App(home=home).store  # noqa: B018
    with stopped_holder(HOLD_SQLITE, home / "mpjobs.db") as holder:
        out = _push_with_bound(home, 1.0)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode != 0
    assert "SQLite's write lock" in last and f"pid {holder.pid}" in last, last


def _gone(pid: int) -> bool:
    """Dead: reaped already, or a zombie (it may be reaped while we look)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_limits_fire_and_sigterm_stops_the_pool_while_the_store_is_locked(
    home: Path, tmp_path: Path
) -> None:
    """Another program holds SQLite's write lock: a job's time limit still fires on time,
    SIGTERM still stops the pool promptly, and the job's TIMEOUT is settled later."""
    app = ct.make_app(home)
    marker = tmp_path / "m"
    pool = app.start(workers=1, graceful_timeout=10.0)
    try:
        pool.wait_ready(20)
        job = ct.sleeper.schedule(str(marker)).options(timeout=1).now()
        wait_for(lambda: ct.starts(marker), 10, what="the job to start")
        began = ct.starts(marker)[0]
        with stopped_holder(HOLD_SQLITE, home / "mpjobs.db"):
            worker = int(began["pid"])
            wait_for(lambda: _gone(worker), 10,
                     what="the worker to be killed at the job's time limit")  # fmt: skip
            assert time.time() - began["t"] < 1 + 2.5, "the limit fired on time"
            t0 = time.monotonic()
            pool.stop(timeout=30)
            assert time.monotonic() - t0 < 5, "SIGTERM stopped the pool promptly"
        with started(app, workers=1):  # the lock is free again: the kill note decides
            assert job.wait(15).status is JobStatus.TIMEOUT, job.error
    finally:
        pool.stop(timeout=10)


def test_a_stopped_idle_listener_does_not_freeze_its_pool(app: mpjobs.App, tmp_path: Path) -> None:
    with started(app, workers=3) as pool:
        idle = app.home.path / "procs" / f"{pool.token}.idle"

        def listener() -> int | None:
            holders = procfs.lock_holders(idle, "FLOCK") & set(pool.workers())
            return next(iter(holders), None)

        pid = wait_for(listener, 10, what="an idle worker to hold the listening turn")
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, 5,
                     what="the listener to stop")  # fmt: skip
            jobs = [tasks.touch.schedule(str(tmp_path / f"t{i}")).now() for i in range(5)]
            for job in jobs:
                assert job.wait(5).status is JobStatus.SUCCESS
        finally:
            os.kill(pid, signal.SIGCONT)
