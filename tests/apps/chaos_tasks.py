"""Tasks that misbehave on purpose: hang, spin, allocate, fork. Used by the limits,
recovery, disk-fault and chaos tests, and by benchmarks/recovery_limits.py.

Every task that the tests must observe from outside writes a marker file first (its
pid and start time), so tests wait on files rather than on sleeps.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import time
from pathlib import Path

import mpjobs

app = mpjobs.App()

CHUNK = 20 * 1024**2  # allocate in 20 MB steps so the 50 Hz sampler sees the growth
CAP = 2 * 1024**3  # never allocate more than 2 GiB, whatever the test asks


def make_app(home: Path | str) -> mpjobs.App:
    app._home_arg, app._home = str(home), None
    return app


def _mark(marker: str | None, **extra: object) -> None:
    """Append one JSON line per attempt: {"pid": ..., "t": ...} (one write, O_APPEND)."""
    if marker:
        _append(marker, json.dumps({"pid": os.getpid(), "t": time.time(), **extra}) + "\n")


def _append(path: str, line: str) -> None:
    """One O_APPEND write, so lines of many processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def starts(marker: Path | str) -> list[dict[str, float]]:
    """Every attempt a task recorded in `marker`, oldest first."""
    path = Path(marker)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- time ------------------------------------------------------------------------------


@app.task
def sleeper(marker: str | None = None) -> str:
    """Stuck in time.sleep (a C call that releases the GIL)."""
    _mark(marker)
    time.sleep(3600)
    return "woke up"


@app.task
def spinner(marker: str | None = None) -> int:
    """A pure-Python busy loop."""
    _mark(marker)
    n = 0
    while True:
        n += 1


@app.task
def regex_bomb(marker: str | None = None) -> bool:
    """Catastrophic backtracking: one C call that holds the GIL for hours."""
    _mark(marker)
    return re.match(r"(a+)+$", "a" * 40 + "b") is not None


@app.task
def nap(seconds: float, marker: str | None = None) -> float:
    _mark(marker)
    time.sleep(seconds)
    return seconds


# -- memory ----------------------------------------------------------------------------


def _allocate(total: int, pace: float = 0.0) -> int:
    """Touch `total` bytes in CHUNK steps (b'\\1' * n writes every page)."""
    held = []
    size = 0
    while size < min(total, CAP):
        held.append(b"\1" * CHUNK)
        size += CHUNK
        if pace:
            time.sleep(pace)
    return size


@app.task
def hog(total: int, marker: str | None = None, pace: float = 0.0) -> int:
    """Allocate `total` bytes progressively in this process; returns if never stopped."""
    _mark(marker)
    return _allocate(total, pace)


def _child_hog(total: int, pids: str, pace: float) -> None:
    with open(pids, "a") as f:
        f.write(f"{os.getpid()}\n")
    _allocate(total, pace)
    time.sleep(3600)  # a child that outlives its work must still be killed with the tree


@app.task
def hog_in_child(
    total: int, how: str, pids: str, marker: str | None = None, pace: float = 0.0
) -> str:
    """Allocate in a child process (`how` = "multiprocessing" or "fork"); record its pid."""
    _mark(marker)
    if how == "multiprocessing":
        p = multiprocessing.get_context("fork").Process(target=_child_hog, args=(total, pids, pace))
        p.start()
        _record_pid(pids, p.pid)
        p.join()
        return f"child exited {p.exitcode}"
    pid = os.fork()
    if pid == 0:
        try:
            _child_hog(total, pids, pace)
        finally:
            os._exit(0)
    _record_pid(pids, pid)
    os.waitpid(pid, 0)
    return "child exited"


def _record_pid(pids: str, pid: int | None) -> None:
    """The parent notes its child too, at once: a child forked from a large worker
    counts the pages it shares with it (RSS), so the tree can cross a limit, and be
    killed, before the child has written its own line."""
    _append(pids, f"{pid}\n")


# -- recovery and chaos ----------------------------------------------------------------


@app.task(max_attempts=3, retry_backoff=0.01)
def stall(marker: str, release: str, timeout: float = 60.0) -> int:
    """Write a marker line (one per attempt), then wait for `release` to exist."""
    _mark(marker)
    deadline = time.monotonic() + timeout
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.005)
    return os.getpid()


def log_execution(directory: str, n: int) -> None:
    """Append `n` to this process's own log in `directory` (O_APPEND, one write)."""
    _append(f"{directory}/{os.getpid()}.log", f"{n}\n")


@app.task(max_attempts=25, retry_backoff=0.01)
def record(directory: str, n: int, pause: float = 0.0) -> int:
    """Append `n` to this process's own log (O_APPEND, one write): counts executions.

    The record is written first and `pause` follows it, so a kill in the middle of the
    job leaves a record and its retry writes a second one: a re-execution is visible.
    """
    log_execution(directory, n)
    if pause:
        time.sleep(pause)
    return n


def executions(directory: Path | str) -> list[int]:
    """Every `n` that `record` logged, across all processes, with repeats."""
    out: list[int] = []
    for log in Path(directory).glob("*.log"):
        out += [int(x) for x in log.read_text().split()]
    return out


_LEAKED: list[bytes] = []


@app.task
def leak(size: int) -> int:
    """Keep `size` more bytes alive in this worker for good; returns the worker's pid."""
    _LEAKED.append(b"\1" * size)
    return os.getpid()


@app.task
def whoami() -> int:
    return os.getpid()
