"""Tasks and a starter script for the fork-safety tests (tests/integration/test_fork_safety.py).

Run as a script, this module is the *starter* of a pool: it opens the store, starts a
pool with `app.start()`, pushes one job that holds until released, prints the job's id
once the job runs, and then waits to be killed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import tasks

import mpjobs

app = mpjobs.App()


def make_app(home: Path | str) -> mpjobs.App:
    app._home_arg, app._home = str(home), None
    return app


@app.task
def hold(marks: str, release: str, timeout: float = 60.0) -> str:
    """Append one line per execution to `marks` (one write), then wait for `release`."""
    fd = os.open(marks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return tasks.wait_released(release, timeout)


def executions(marks: Path) -> int:
    return len(marks.read_text().splitlines()) if marks.exists() else 0


if __name__ == "__main__":
    home, marks, release = sys.argv[1:4]
    make_app(home)
    pool = app.start(workers=1, graceful_timeout=30.0)
    pool.wait_ready(timeout=20)
    job = hold.schedule(marks, release).now()
    deadline = time.monotonic() + 20
    while executions(Path(marks)) == 0:
        if time.monotonic() > deadline:
            sys.exit("the job never started")
        time.sleep(0.01)
    print(f"{job.id} {pool.pid}", flush=True)
    while True:  # keep the store open until killed
        time.sleep(60)
