"""Tasks the integration tests push. Importable by workers because tests/apps is on sys.path.

`make_app(home)` re-targets the module-level app, so tasks keep stable import paths.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import mpjobs

app = mpjobs.App()


def write_marker(path: str | Path, text: str) -> None:
    """Write a marker atomically: a test that sees the file must never read it empty."""
    tmp = Path(f"{path}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_app(home: Path | str) -> mpjobs.App:
    app._home_arg, app._home = str(home), None
    return app


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def noop() -> None:
    return None


@app.task
async def async_double(x: int) -> int:
    await asyncio.sleep(0.001)
    return x * 2


@app.task
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@app.task(max_attempts=3, retry_backoff=0.01)
def flaky(counter: str, failures: int) -> str:
    """Fails `failures` times (counted in a file), then succeeds."""
    path = Path(counter)
    n = int(path.read_text()) if path.exists() else 0
    path.write_text(str(n + 1))
    if n < failures:
        raise RuntimeError(f"attempt {n + 1} fails")
    return f"ok after {n + 1}"


@app.task
def touch(path: str, text: str = "") -> int:
    """Append one line to a file: lets tests count executions across processes."""
    with open(path, "a") as f:
        f.write(f"{text or os.getpid()}\n")
    return os.getpid()


@app.task
def block(marker: str, release: str, timeout: float = 60.0) -> str:
    """Signal start by creating `marker`, then wait until `release` exists."""
    write_marker(marker, str(os.getpid()))
    return wait_released(release, timeout)


def wait_released(release: str | Path, timeout: float = 60.0) -> str:
    """Wait until `release` exists (a file the test creates): a job that holds until told."""
    deadline = time.monotonic() + timeout
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.005)
    return "released"


@app.task
def maybe_block(marker: str | None, release: str | None) -> None:
    """Quick, unless given a marker: then `block` (one task, fast or slow by its arguments)."""
    if marker is not None and release is not None:
        block(marker, release)


@app.task
def hang(marker: str) -> None:
    """Signal start, then never return."""
    write_marker(marker, str(os.getpid()))
    while True:
        time.sleep(1)


@app.task
def exit_now(code: int) -> None:
    """Leave the worker process at once, as a job calling os._exit() or crashing in C would."""
    os._exit(code)


@app.task
def getpid() -> int:
    return os.getpid()
