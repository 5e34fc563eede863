"""The mpjobs app behind the web-server integration tests (gunicorn, uvicorn, multiprocessing).

Home from $MPJOBS_HOME, like a real deployment. The leader lifecycle task appends
"pid time" to $WEB_TICK_FILE on every tick, so a test can see which process ticks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import mpjobs

app = mpjobs.App()


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def slow_add(x: int, y: int, seconds: float = 0.2) -> int:
    time.sleep(seconds)
    return x + y


@app.task
def mark(directory: str, name: str) -> int:
    """Append our pid to directory/name: one line per execution of this job."""
    with open(os.path.join(directory, name), "a") as f:
        f.write(f"{os.getpid()}\n")
    return os.getpid()


@app.task(max_attempts=2, retry_backoff=0.01)
def hold_once(directory: str, name: str, seconds: float) -> int:
    """Append our pid to directory/name; the first execution then sleeps `seconds`.

    Returns how many times the job has run, so a retry after a kill returns 2.
    """
    path = os.path.join(directory, name)
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(path) as f:
        runs = len(f.read().splitlines())
    if runs == 1:
        time.sleep(seconds)
    return runs


@app.lifecycle(every=float(os.environ.get("WEB_TICK_EVERY", "0.05")), scope="leader")
def ticker() -> Iterator[None]:
    path = os.environ.get("WEB_TICK_FILE")
    while True:
        if path:
            with open(path, "a") as f:
                f.write(f"{os.getpid()} {time.time():.6f}\n")
        yield
