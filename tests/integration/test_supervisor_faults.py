"""The supervisor under its own faults: jobs that kill their worker, a store or a home it
cannot write, a stop during a back-off, and what it leaves behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boot_tasks
import chaos_tasks as ct
import psutil
import pytest
import tasks
from conftest import log_lines, started, wait_for

import mpjobs
from mpjobs import JobStatus

pytestmark = pytest.mark.timeout(90)

WAL_LIMIT = 32 * 2**20  # the journal_size_limit of store/connection.py


def test_a_job_that_exits_its_worker_is_not_a_boot_failure(
    app: mpjobs.App, logfile: Path
) -> None:
    """Five jobs in a row call os._exit(7): each worker is lost and replaced at once, with
    no boot back-off (0.5, 1, 2, 4, 8 s) before the next plain job."""
    with started(app, workers=1):
        exits = [tasks.exit_now.schedule(7).now() for _ in range(5)]
        for job in exits:
            job.wait(20)
            assert job.status is JobStatus.FAILED
            assert "worker lost" in (job.error or "") and "code 7" in (job.error or "")
        t0 = time.monotonic()
        assert tasks.add.schedule(1, 2).now().wait(20).result() == 3
        assert time.monotonic() - t0 < 3, "the next job waited for a boot back-off"
    assert not log_lines(logfile, "while booting")


def test_no_busy_loop_while_draining_after_a_failed_boot(
    home: Path, tmp_path: Path, logfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker fails to boot (a respawn is due later), then SIGTERM: the supervisor drains
    a running job without spinning on the past respawn time."""
    flag = tmp_path / "no-boot"
    monkeypatch.setenv("MPJOBS_TEST_BOOT_FLAG", str(flag))
    app = boot_tasks.make_app(home)
    marker, release = tmp_path / "m", tmp_path / "r"
    pool = app.start(workers=2, graceful_timeout=20.0)
    try:
        pool.wait_ready(20, workers=2)
        job = boot_tasks.hold.schedule(str(marker), str(release)).now()
        wait_for(marker.exists, 10, what="the job to start")
        busy = int(marker.read_text())
        flag.touch()
        (idle,) = [pid for pid in pool.workers() if pid != busy]
        os.kill(idle, signal.SIGKILL)
        wait_for(lambda: log_lines(logfile, "while booting"), 15, what="a failed boot")
        os.kill(pool.pid, signal.SIGTERM)
        wait_for(lambda: log_lines(logfile, "supervisor stopping"), 10, what="the stop to begin")
        supervisor = psutil.Process(pool.pid)
        before = sum(supervisor.cpu_times()[:2])
        window = 2.0  # a fixed window to measure CPU over (nothing waits on it)
        time.sleep(window)
        used = sum(supervisor.cpu_times()[:2]) - before
        assert used < 0.2 * window, f"the draining supervisor used {used / window:.0%} of a core"
        release.touch()
        assert job.wait(20).status is JobStatus.SUCCESS
    finally:
        release.touch()
        pool.stop(timeout=20)


RUN_AND_REPORT = """
import signal, sys
import tasks
app = tasks.make_app(sys.argv[1])
def mine(signum, frame): pass
signal.signal(signal.SIGTERM, mine)
signal.signal(signal.SIGINT, mine)
app.run(workers=1, graceful_timeout=5)
print(signal.getsignal(signal.SIGTERM) is mine, signal.getsignal(signal.SIGINT) is mine)
"""

OWN_HANDLERS = """
import signal, sys
from pathlib import Path
import tasks
from mpjobs.runtime.supervisor import Supervisor
app = tasks.make_app(sys.argv[1])
sup = Supervisor(app, workers=1, graceful_timeout=5, install_signal_handlers=False)
def mine(signum, frame):
    Path(sys.argv[2]).touch()
    sup.stop()
signal.signal(signal.SIGTERM, mine)
sup.run()
"""


def _ready(app: mpjobs.App, proc: subprocess.Popen[str]) -> None:
    def up() -> bool:
        assert proc.poll() is None, proc.communicate()
        return any(p.kind == "worker" for p in app.store.list_processes())

    wait_for(up, 20, what="the supervisor's worker to register")


def test_app_run_restores_the_signal_handlers_it_replaced(home: Path) -> None:
    app = tasks.make_app(home)
    proc = subprocess.Popen([sys.executable, "-c", RUN_AND_REPORT, str(home)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        _ready(app, proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.split() == ["True", "True"]


def test_install_signal_handlers_false_leaves_signals_to_the_host(
    home: Path, tmp_path: Path
) -> None:
    app = tasks.make_app(home)
    seen = tmp_path / "seen"
    proc = subprocess.Popen([sys.executable, "-c", OWN_HANDLERS, str(home), str(seen)],
                            text=True)  # fmt: skip
    try:
        _ready(app, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen.exists(), "the host's own SIGTERM handler ran"


def test_a_stopped_pool_leaves_no_files_behind(app: mpjobs.App) -> None:
    """No idle-turn files, kill notes or journals once pools have stopped, even by SIGQUIT."""
    for how in (signal.SIGTERM, signal.SIGQUIT):
        with started(app, workers=2) as pool:
            assert tasks.add.schedule(1, 1).now().wait(10).result() == 2
            os.kill(pool.pid, how)
            assert pool._wait(20)
    procs = app.home.path / "procs"
    left = sorted(p.name for p in procs.iterdir() if p.suffix in (".idle", ".killed", ".journal"))
    assert not left, f"files left behind: {left}"


@pytest.mark.sqlite_only  # about the SQLite file or its locks
def test_the_wal_is_truncated_after_checkpoints(app: mpjobs.App) -> None:
    """A burst of writes grows the WAL; the leader's checkpoints must shrink it again."""
    wal = app.home.path / "mpjobs.db-wal"
    blob = "x" * 4000
    with started(app, workers=1):
        # one transaction of ~40 MB: the WAL must hold all of it at once, so it grows
        # past the limit (and stays that large without journal_size_limit)
        app.push_many([tasks.add.schedule(blob, "") for _ in range(10_000)])
        for job in app.jobs(status="SCHEDULED", limit=1):
            job.wait(60)

        def small() -> bool:
            tasks.noop.schedule().now()  # a write after a full checkpoint resets the WAL
            return wal.stat().st_size <= WAL_LIMIT

        wait_for(small, 40, home=app.home.path, what="the WAL to be truncated")


def _chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="making faults for real needs root")
def test_supervisor_survives_a_home_it_cannot_write(
    home: Path, tmp_path: Path, logfile: Path
) -> None:
    """procs/ made immutable while a pool runs: a killed worker cannot be unlocked, removed
    or replaced, and the supervisor keeps running; once writable, all recovers."""
    if shutil.which("chattr") is None:
        pytest.skip("no chattr")
    app = ct.make_app(home)
    marker, release = tmp_path / "m", tmp_path / "r"
    with started(app, workers=2, graceful_timeout=2.0) as pool:
        job = ct.stall.schedule(str(marker), str(release)).now()
        victim = int(wait_for(lambda: ct.starts(marker), 10, what="job start")[0]["pid"])  # type: ignore[index]
        procs = home / "procs"
        locked = [procs, *procs.iterdir()]
        try:
            _chattr("+i", *locked)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"chattr +i unsupported here: {exc.stderr!r}")
        try:
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: log_lines(logfile, "failed to boot"), 15,
                     what="a replacement worker to fail to boot")  # fmt: skip
            assert pool.is_alive(), "the supervisor keeps running"
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                _chattr("-i", *locked)
        release.touch()
        assert job.wait(20).status is JobStatus.SUCCESS, job.error  # retried after the kill
        wait_for(lambda: len(pool.workers()) == 2, 40, home=home, what="pool back to 2 workers")
