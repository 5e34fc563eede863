"""Tasks of the job-control tests (expires, rate_limit, concurrency_key): each leaves a
trace the test reads, a file for a side effect or O_APPEND lines of its start and end.

`make_app(home)` re-targets the module-level app, so tasks keep stable import paths.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import mpjobs

app = mpjobs.App()


def make_app(home: Path | str) -> mpjobs.App:
    app._home_arg, app._home = str(home), None
    return app


def note(log: str, what: str) -> None:
    """Append one line "what time pid" in one write (O_APPEND: lines never interleave)."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{what} {time.time():.6f} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def lines(log: Path) -> list[tuple[str, float, int]]:
    """(what, time, pid) of every line of `log`, in the order written."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        what, t, pid = line.split()
        out.append((what, float(t), int(pid)))
    return out


@app.task(max_attempts=1)
def side_effect(path: str) -> str:
    """The effect an expired job must never have: a file."""
    Path(path).write_text("ran")
    return "ran"


@app.task(max_attempts=2, retry_backoff=3.0)
def fails_first(log: str, path: str) -> str:
    """Fails its first attempt (its retry is 3 s later); a second attempt writes `path`."""
    if not Path(log).exists():
        note(log, "fail")
        raise RuntimeError("first attempt fails")
    Path(path).write_text("second attempt ran")
    return "ok"


@app.task(rate_limit="20/s", max_attempts=5, retry_backoff=0.05)  # a killed start retries at once
def rated(log: str) -> None:
    """Notes its start; rate-limited to 20 starts a second across the home."""
    note(log, "start")
    time.sleep(0.05)


@app.task(concurrency_key=lambda log, key, hold=0.3: key, concurrency_limit=2, max_attempts=5)
def slotted(log: str, key: str, hold: float = 0.3) -> None:
    """Holds one of its key's two slots for `hold` seconds, noting start and end."""
    note(log, "start")
    time.sleep(hold)
    note(log, "end")


@app.task(concurrency_key="door", concurrency_limit=1)
def hold_door(log: str, release: str) -> None:
    """Holds key "door" (limit 1) until `release` exists (bounded: 30 s)."""
    note(log, "start")
    deadline = time.monotonic() + 30
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    note(log, "end")


@app.task
def plain(log: str) -> None:
    note(log, "plain")
