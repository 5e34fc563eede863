"""No SQLite state crosses a fork: every pool process takes its own kernel locks.

SQLite's POSIX locks belong to a process and are not inherited, while its table of what
the process has locked is plain memory, which is. A pool forked from a process that had
the store open used to hold no kernel lock on `mpjobs.db-shm` at all, so the last
process that did hold one could checkpoint and delete the WAL under the pool, and the
pool's later commits vanished.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import fork_tasks
import procfs
import psutil
import pytest
from conftest import started, wait_for

import mpjobs
from mpjobs import JobStatus

pytestmark = pytest.mark.timeout(90)


def _pool_pids(pool: mpjobs.Pool) -> list[int]:
    coordinator = pool.coordinator()
    return [pool.pid, *pool.workers(), *([coordinator] if coordinator else [])]


@pytest.mark.sqlite_only  # about the SQLite file or its locks
def test_every_pool_process_holds_its_own_sqlite_locks(home: Path) -> None:
    """/proc/locks: a process with the store's -shm open holds a POSIX lock on it."""
    app = fork_tasks.make_app(home)
    import tasks

    tasks.make_app(home)
    tasks.add.schedule(1, 2).now()  # the starter has the store open and has written to it
    shm = home / "mpjobs.db-shm"
    with started(app, workers=2) as pool:
        job = tasks.add.schedule(2, 3).now()  # the supervisor has used the store, too
        assert job.wait(10).result() == 5
        wait_for(pool.coordinator, 10, home=home, what="the coordinator to register")
        pids = _pool_pids(pool)
        assert len(pids) == 4

        def all_open() -> bool:
            # workers and the coordinator keep their connection; the supervisor opens
            # its own on its next store access (it closes it before every fork)
            return all(procfs.has_open(pid, shm) for pid in pids[1:])

        wait_for(all_open, 10, what="the coordinator and workers to open the store")
        holders = procfs.lock_holders(shm, "POSIX")
        opened = [pid for pid in pids if procfs.has_open(pid, shm)]
        missing = [pid for pid in opened if pid not in holders]
        assert not missing, f"pool processes {missing} use the store without kernel locks"
        assert os.getpid() in holders  # and the starter still holds its own


def _run(code: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


PUSH = """
import sys, fork_tasks
app = fork_tasks.make_app(sys.argv[1])
print(fork_tasks.hold.schedule(sys.argv[2], sys.argv[3]).now().id)
"""
STATUS = """
import sys, mpjobs
app = mpjobs.App(home=sys.argv[1])
print(" ".join(app.get_job(i).status.value for i in sys.argv[2:]))
"""


def test_commit_survives_the_death_of_the_pools_starter(home: Path, tmp_path: Path) -> None:
    """The repro of issue 9, item 1, end to end, with nothing of ours holding the store.

    The starter of app.start() is SIGKILLed while a job runs; the pool drains (it SIGTERMs
    itself when its starter dies); a short-lived client pushes one job and exits; the
    running job then finishes. Its SUCCESS must be in the store, and a new pool must not
    run it again.
    """
    marks, release = tmp_path / "marks", tmp_path / "release"
    starter = subprocess.Popen(
        [sys.executable, fork_tasks.__file__, str(home), str(marks), str(release)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert starter.stdout is not None
        job_id, pool_pid = starter.stdout.readline().split()
        supervisor = psutil.Process(int(pool_pid))
        starter.send_signal(signal.SIGKILL)
        starter.wait(10)
        # the pool notices its starter's death and drains: the job keeps running
        other_marks = tmp_path / "other"
        other_id = _run(PUSH, str(home), str(other_marks), str(release)).strip()
        release.touch()
        supervisor.wait(30)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(5)
    assert fork_tasks.executions(marks) == 1
    assert _run(STATUS, str(home), job_id, other_id).split() == ["SUCCESS", "SCHEDULED"]
    app = fork_tasks.make_app(home)
    with started(app, workers=1):
        other = app.get_job(other_id)
        assert other is not None
        other.wait(20)
        assert other.status is JobStatus.SUCCESS
    assert fork_tasks.executions(marks) == 1, "the finished job ran again"
    assert fork_tasks.executions(other_marks) == 1
