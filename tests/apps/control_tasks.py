"""Tasks for the job-control tests (issue 13: retry_on, Retry, soft_timeout, progress).

Each task records its attempts in a marker file (one JSON line per attempt: pid, time,
attempt), so the tests wait on files and the store, never on sleeps. A task that must
be held still waits for a release file the test creates.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import mpjobs
from mpjobs.control.progress import writer_for

app = mpjobs.App()


def make_app(home: Path | str) -> mpjobs.App:
    app._home_arg, app._home = str(home), None
    return app


def mark(marker: str, **extra: object) -> int:
    """Append this attempt to `marker` (one O_APPEND write); return its attempt number."""
    attempt = mpjobs.current_job().attempt
    line = json.dumps({"pid": os.getpid(), "t": time.time(), "attempt": attempt, **extra})
    fd = os.open(marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
    return attempt


def lines(marker: Path | str) -> list[dict[str, object]]:
    path = Path(marker)
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def hold(release: str, limit: float = 60.0) -> None:
    """Wait for the test's release file (bounded: a lost test must not hang a worker)."""
    deadline = time.monotonic() + limit
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)


class Unpicklable(ConnectionError):
    """A ConnectionError that cannot be pickled (it holds a lock)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.lock = threading.Lock()


# -- retry_on / dont_retry_on / Retry ---------------------------------------------------


@app.task(retry_on=(ConnectionError, TimeoutError), max_attempts=3, retry_backoff=0.01)
def flaky(marker: str) -> str:
    """Fails once with a *subclass* of ConnectionError that cannot be pickled."""
    if mark(marker) == 1:
        raise Unpicklable("upstream refused")
    return "ok"


@app.task(retry_on=(ConnectionError,), max_attempts=3, retry_backoff=0.01)
def wrong_error(marker: str) -> None:
    mark(marker)
    raise ValueError("a bug, not a flaky network")


@app.task(dont_retry_on=(KeyError,), max_attempts=3, retry_backoff=0.01)
def no_such_key(marker: str) -> None:
    mark(marker)
    raise KeyError("missing")


@app.task(retry_on=(ConnectionError,), max_attempts=3, retry_backoff=0.01)
def killed_once(marker: str, release: str) -> str:
    """Attempt 1 waits to be SIGKILLed with its worker; attempt 2 succeeds."""
    if mark(marker) == 1:
        hold(release)
        raise ConnectionError("should have been killed")
    return "recovered"


@app.task(retry_on=(ConnectionError,), max_attempts=2, retry_backoff=30)
def asks_retry(marker: str) -> None:
    """Asks for a retry in 1 s (not the 30 s backoff), on each of its 2 attempts."""
    n = mark(marker)
    raise mpjobs.Retry(f"upstream busy (attempt {n})", delay="1s")


# -- soft_timeout -----------------------------------------------------------------------


@app.task(soft_timeout=0.5, timeout=20)
def soft_catch(marker: str) -> str:
    mark(marker)
    try:
        time.sleep(30)
    except mpjobs.SoftTimeout:
        return "cleaned up"
    return "slept"


@app.task(soft_timeout="500ms", timeout=2)
def soft_ignore(marker: str) -> str:
    mark(marker)
    try:
        time.sleep(30)
    except mpjobs.SoftTimeout:
        mark(marker, soft=True)
        time.sleep(30)  # ignores it: the hard limit must end this
    return "slept"


@app.task(soft_timeout=0.5, timeout=20)
def soft_threaded(marker: str) -> str:
    """Short sleeps: a job in a pool thread sees SoftTimeout between two C calls."""
    mark(marker)
    try:
        for _ in range(3000):
            time.sleep(0.01)
    except mpjobs.SoftTimeout:
        return "thread cleaned up"
    return "slept"


@app.task(soft_timeout=0.5, timeout=20)
async def soft_async_catch(marker: str) -> str:
    mark(marker)
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        return "async cleaned up"
    return "slept"


@app.task(soft_timeout=0.5, timeout=20)
async def soft_async_raise(marker: str) -> str:
    mark(marker)
    await asyncio.sleep(30)
    return "slept"


# -- progress -------------------------------------------------------------------------


@app.task
def progress_steps(marker: str, release: str) -> str:
    """Reports 0.5 with meta, says so in its marker, and waits for the test to look."""
    ctx = mpjobs.current_job()
    ctx.set_progress(0.5, meta={"step": "halfway", "rows": 500})
    ctx.flush()  # written now: the marker below then means "readable in the store"
    mark(marker, at=0.5)
    hold(release)
    ctx.set_progress(1.0)
    return ctx.id


@app.task
def progress_storm(n: int) -> dict[str, float]:
    """n set_progress calls in a tight loop: how long they took, how many writes."""
    ctx = mpjobs.current_job()
    writer = writer_for(ctx._store)  # type: ignore[arg-type]
    before = writer.writes
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        ctx.set_progress(i / n, meta={"i": i} if i % 1000 == 0 else None)
    took = time.perf_counter() - t0
    ctx.flush()
    return {"took": took, "writes": writer.writes - before}


@app.task
def add(a: int, b: int = 0) -> int:
    return a + b


@app.task
def outside() -> str:
    return "not a job"


@app.task
async def progress_async(value: float) -> str:
    ctx = mpjobs.current_job()
    await asyncio.sleep(0)
    ctx.set_progress(value, meta={"async": True})
    return ctx.id
