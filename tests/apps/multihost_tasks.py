"""Tasks for the multi-host tests (tests/integration/test_multihost.py).

Two "hosts" are two homes on one store: the test process and its `app.start()` pool
use home A (through `make_app`), and host B is `python -m mpjobs run
multihost_tasks:app --home B` in a subprocess (possibly inside a network namespace),
where `--home` re-points this very module-level app. So every task keeps one import
path whichever host runs it, and a task can tell which host it runs on from its app.

Each task appends one JSON line per event to a log file (one `write` with O_APPEND, so
lines of concurrent processes never interleave): "start" when an attempt begins and
"end" just before it returns. The tests read the log to see which host ran which
attempt, with which pid, and whether any job finished twice; they wait on those files
and on the store, never on sleeps.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tasks import wait_released

import mpjobs

app = mpjobs.App()


def make_app(home: Path | str) -> mpjobs.App:
    """Point the module-level app at `home` (the test process's host)."""
    app._home_arg, app._home = str(home), None
    return app


def record(log: str, event: str, n: int) -> None:
    """Append {"event", "n", "pid", "home", "t"} to `log` in one O_APPEND write."""
    line = json.dumps(
        {"event": event, "n": n, "pid": os.getpid(), "home": str(app.home.path), "t": time.time()}
    )
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def events(log: Path | str) -> list[dict[str, Any]]:
    """Every event recorded in `log`, oldest first (a torn last line is skipped)."""
    path = Path(log)
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written right now
            continue
    return out


@app.task(max_attempts=3, retry_backoff=0.01)
def hold(n: int, log: str, release: str, timeout: float = 60.0) -> int:
    """Record a start, wait until the file `release` exists, record the end.

    A job that stays RUNNING as long as the test wants, so a test can kill or cut off
    the host running it mid-attempt. `timeout` bounds the wait: a test that fails never
    leaves a job blocked for ever.
    """
    record(log, "start", n)
    wait_released(release, timeout)
    record(log, "end", n)
    return n


@app.task(max_attempts=3, retry_backoff=0.01)
def short(n: int, log: str, pause: float = 0.005) -> int:
    """A short job of a stream: start, a few milliseconds of work, end."""
    record(log, "start", n)
    time.sleep(pause)
    record(log, "end", n)
    return n


@app.task
def ping(n: int) -> int:
    """Returns at once: for wake-up latency."""
    return n
