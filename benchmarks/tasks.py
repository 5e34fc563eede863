"""Tasks the benchmarks push. Workers import them by path (`benchmarks.tasks:...`).

`rehome(home)` points the module-level apps at a scenario's fresh home before a pool is
started, so every task keeps one stable import path.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import mpjobs

app = mpjobs.App()
# A separate app for the failover scenario, so its leader lifecycle task runs only there.
failover_app = mpjobs.App()


def rehome(target: mpjobs.App, home: str | Path) -> mpjobs.App:
    target._home_arg, target._home = str(home), None
    return target


@app.task
def noop() -> None:
    return None


@app.task
async def nap(seconds: float) -> None:
    """The async_drain scenario's job: one await of asyncio.sleep."""
    await asyncio.sleep(seconds)


@app.task
def progress_noop() -> None:
    """A no-op that reports its progress once: the cost of set_progress."""
    mpjobs.current_job().set_progress(1.0)


@app.task
def sleeper(marker: str, seconds: float) -> None:
    """The scale scenario's watched job: note that it runs, then sleep."""
    Path(marker).touch()
    time.sleep(seconds)


@app.task
def stamp() -> float:
    """The wall-clock time at which the job started running."""
    return time.time()


@app.task(max_attempts=2, retry_backoff=0.0)
def hang_once(marker: str) -> float:
    """First attempt: create `marker` and hang until killed. Retry: return its start time."""
    now = time.time()
    if os.path.exists(marker):
        return now
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)
    return now


@failover_app.lifecycle(every="1h", scope="leader")
def leader_marker() -> Iterator[None]:
    """Setup runs the moment a process becomes leader: append (time, pid) to a file."""
    path = os.environ.get("MPJOBS_BENCH_LEADER_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{time.time()!r} {os.getpid()}\n")
    while True:
        yield
