"""Real store faults while a pool runs: a read-only home and a full disk.

Both are made with the kernel, not with mocks, in ways that hold even for root (who
ignores file permissions): `chattr +i` on the database and its WAL (an immutable inode
refuses writes to everyone), and a size-limited tmpfs mounted as the home and filled
up. Each test skips where the sandbox does not allow it (not root, no chattr, no mount).

Required: clear log lines, a supervisor that keeps running, recovery once the fault
clears, and no job half-written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import chaos_tasks as ct
import pytest
from conftest import log_lines, wait_for

import mpjobs
from mpjobs import JobStatus

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(os.geteuid() != 0, reason="making faults for real needs root"),
]


def _consistent(db: Path) -> None:
    """No job half-written: every row obeys the invariants of its status."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        bad = conn.execute(
            "SELECT id, status FROM jobs WHERE "
            "(status IN ('SUCCESS','FAILED','TIMEOUT','CANCELLED','PERMANENTLY_FAILED') "
            "  AND (finished_at IS NULL OR owner IS NOT NULL)) "
            "OR (status = 'SCHEDULED' AND owner IS NOT NULL) "
            "OR (status = 'RUNNING' AND owner IS NULL) "
            "OR (status = 'SUCCESS' AND started_at IS NULL)"
        ).fetchall()
        assert not bad, f"half-written jobs: {bad}"
    finally:
        conn.close()


def _ride_out_fault(
    app: mpjobs.App, home: Path, tmp_path: Path, logfile: Path,
    start_fault: Callable[[], None], end_fault: Callable[[], None], expect: str,
) -> None:  # fmt: skip
    """The scenario both faults share; `expect` is SQLite's word for the fault."""
    with app.start(workers=2, graceful_timeout=2.0) as pool:
        pool.wait_ready(timeout=20, workers=2)
        marker, release = tmp_path / "m", tmp_path / "r"
        job = ct.stall.schedule(str(marker), str(release)).now()
        busy = int(wait_for(lambda: ct.starts(marker), 10, what="job start")[0]["pid"])  # type: ignore[index]
        before = len(app.jobs(limit=10_000))

        start_fault()
        try:
            refused = 0
            with pytest.raises((sqlite3.OperationalError, mpjobs.StoreError)) as exc_info:
                for _ in range(200):  # a WAL with free pages may take a few more commits
                    app.push_many([ct.whoami.schedule() for _ in range(50)])
                    refused += 50
            assert expect in str(exc_info.value)
            release.touch()  # the job ends, and its worker cannot record the result
            # back-off 0.1, 0.2, 0.4, 0.8 s: the fault lasts a while
            wait_for(lambda: len(log_lines(logfile, "store call failed")) >= 4, 15,
                     what="the worker to report the failed writes")  # fmt: skip
            idle = [p for p in pool.workers() if p != busy]
            for pid in idle:  # a worker dies meanwhile: its replacement cannot boot yet
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: log_lines(logfile, "failed to boot"), 15,
                     what="a replacement worker to fail to boot")  # fmt: skip
            assert pool.is_alive(), "the supervisor keeps running through the fault"
            assert job.status is JobStatus.RUNNING
        finally:
            end_fault()

        assert job.wait(20).status is JobStatus.SUCCESS, job.error
        assert job.result() == busy, "the result kept by the worker, not a re-run"
        assert ct.whoami.schedule().now().wait(20).status is JobStatus.SUCCESS
        wait_for(lambda: len(pool.workers()) == 2, 40, home=home, what="pool back to 2 workers")
        jobs = app.jobs(limit=100_000)
        assert len(jobs) == before + refused + 1, "only acknowledged pushes exist"
        for j in jobs:
            j.wait(30)
        assert all(j.status is JobStatus.SUCCESS for j in jobs)
    _consistent(home / "mpjobs.db")
    assert log_lines(logfile, expect), "the log names the fault"


def _chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


@pytest.mark.sqlite_only  # about the SQLite file or its locks
def test_read_only_home(home: Path, tmp_path: Path, logfile: Path) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("no chattr")
    app = ct.make_app(home)
    app.store  # noqa: B018 - create the database and its WAL
    files = [home / "mpjobs.db", home / "mpjobs.db-wal"]  # not -shm: it is mmapped (SIGBUS)
    try:
        _chattr("+i", *files)
        _chattr("-i", *files)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"chattr +i unsupported here: {exc.stderr!r}")
    try:
        _ride_out_fault(app, home, tmp_path, logfile, lambda: _chattr("+i", *files),
                        lambda: _chattr("-i", *files), "disk I/O error")  # fmt: skip
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _chattr("-i", *files)


@pytest.mark.sqlite_only  # about the SQLite file or its locks
def test_disk_full(home: Path, tmp_path: Path, logfile: Path) -> None:
    home.mkdir(mode=0o700)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(home)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mount.stderr.strip()}")
    filler = home / "filler"

    def fill() -> None:
        with contextlib.suppress(OSError), open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()

    try:
        app = ct.make_app(home)
        _ride_out_fault(
            app, home, tmp_path, logfile, fill, filler.unlink, "database or disk is full"
        )
    finally:
        subprocess.run(["umount", "-l", str(home)], capture_output=True)


@pytest.mark.sqlite_only  # about the SQLite file or its locks
def test_connection_opened_while_read_only_heals(home: Path) -> None:
    """SQLite keeps a connection opened on an unwritable file read-only: the store reopens it."""
    if shutil.which("chattr") is None:
        pytest.skip("no chattr")
    ct.make_app(home)
    ct.whoami.schedule().now()  # creates the database and its WAL
    files = [home / "mpjobs.db", home / "mpjobs.db-wal"]
    outcome: list[object] = []

    def fresh_thread() -> None:  # a new thread opens a new connection
        try:
            _chattr("+i", *files)
            try:
                ct.whoami.schedule().now()
                outcome.append("pushed while read-only?")
            except sqlite3.OperationalError as exc:
                outcome.append(str(exc))
            finally:
                _chattr("-i", *files)
            outcome.append(ct.whoami.schedule().now().id)
        except BaseException as exc:
            outcome.append(exc)

    try:
        _chattr("+i", *files)
        _chattr("-i", *files)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"chattr +i unsupported here: {exc.stderr!r}")
    thread = threading.Thread(target=fresh_thread)
    thread.start()
    thread.join(30)
    assert outcome[0] == "attempt to write a readonly database", outcome
    assert outcome[1] == "2", f"the same thread pushes again once writable: {outcome}"
