"""Tasks for workers with concurrency N: async jobs that sleep, meet, hang or block.

Every task the tests observe from outside appends a JSON line to a marker file first
(one O_APPEND write: pid, job tag, time), so tests wait on files, never on sleeps.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import chaos_tasks

import mpjobs

app = mpjobs.App()

BARRIER_PATIENCE = 30.0  # a barrier nobody else reaches fails the job instead of hanging


def make_app(home: Path | str) -> mpjobs.App:
    app._home_arg, app._home = str(home), None
    return app


def mark(marker: str | None, **extra: object) -> None:
    chaos_tasks._mark(marker, **extra)


def marks(marker: Path | str) -> list[dict[str, object]]:
    return chaos_tasks.starts(marker)  # type: ignore[return-value]


def _arrivals(directory: str) -> int:
    return len(os.listdir(directory))


@app.task
async def nap(seconds: float) -> None:
    """What the benchmark runs: one await of asyncio.sleep."""
    await asyncio.sleep(seconds)


@app.task
async def arecord(directory: str, n: int, pause: float = 0.0) -> int:
    """Append `n` to this process's log (one O_APPEND write), then sleep `pause` on the loop."""
    chaos_tasks.log_execution(directory, n)
    if pause:
        await asyncio.sleep(pause)
    return n


@app.task
async def meet(directory: str, n: int, total: int, marker: str) -> int:
    """Arrive at a barrier of `total` jobs (a file each) and leave once all have arrived."""
    mark(marker, n=n, what="start")
    Path(directory, str(n)).touch()
    deadline = time.monotonic() + BARRIER_PATIENCE
    while _arrivals(directory) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {_arrivals(directory)} of {total} arrived")
        await asyncio.sleep(0.005)
    mark(marker, n=n, what="end")
    return os.getpid()


@app.task
def meet_sync(directory: str, n: int, total: int, marker: str) -> int:
    """The same barrier for a plain function (it runs in the worker's thread pool)."""
    mark(marker, n=n, what="start")
    Path(directory, str(n)).touch()
    deadline = time.monotonic() + BARRIER_PATIENCE
    while _arrivals(directory) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {_arrivals(directory)} of {total} arrived")
        time.sleep(0.005)
    mark(marker, n=n, what="end")
    return os.getpid()


@app.task
async def hang(marker: str, tag: str = "") -> str:
    """Await forever (yielding to the loop): a time limit cancels it cleanly."""
    mark(marker, tag=tag)
    await asyncio.sleep(3600)
    return "woke up"


@app.task
async def wait_file(marker: str, release: str, tag: str = "") -> int:
    """Await until `release` exists (polling on the loop); returns the worker's pid."""
    mark(marker, tag=tag)
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return os.getpid()


@app.task
async def block(marker: str) -> str:
    """Block the event loop in a C call: only killing the worker stops it."""
    mark(marker)
    time.sleep(3600)
    return "woke up"


@app.task
async def flaky(marker: str) -> int:
    """Fail the first attempt, succeed the next: a retry the same worker may claim again."""
    first = not marks(marker)
    mark(marker)
    if first:
        raise RuntimeError("first attempt fails")
    return os.getpid()


CHUNK = 20 * 1024**2
CAP = 2 * 1024**3


@app.task
async def hog(total: int, marker: str) -> int:
    """Allocate up to `total` bytes (capped) in 20 MB steps, yielding to the loop between."""
    mark(marker)
    held = []
    for _ in range(min(total, CAP) // CHUNK):
        held.append(b"\1" * CHUNK)
        await asyncio.sleep(0.002)
    return len(held)
