"""Tasks of the workflow tests (tests/integration/test_workflows.py, the chaos test and
benchmarks/workflows.py). Those that tests watch append one JSON line per start and end
to a log (one O_APPEND write each), so the order of runs is read from the jobs' own logs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import mpjobs

app = mpjobs.App()


def make_app(home: Path | str) -> mpjobs.App:
    app._home_arg, app._home = str(home), None
    return app


def _log(path: str | None, **entry: Any) -> None:
    if path:
        line = json.dumps({"pid": os.getpid(), "t": time.time(), **entry}) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def entries(path: Path | str) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


@app.task
def value(x: Any, log: str | None = None, pause: float = 0.0) -> Any:
    _log(log, tag=str(x), ev="start")
    if pause:
        time.sleep(pause)
    _log(log, tag=str(x), ev="end")
    return x


@app.task
def step(prev: Any, add: int, log: str | None = None) -> Any:
    """A chain link: the previous result comes first."""
    _log(log, tag=f"step{add}", ev="start", prev=prev)
    return prev + add


@app.task
def collect(results: list[Any], tag: str = "chord", log: str | None = None) -> list[Any]:
    """A chord: the members' results, in push order, come first."""
    _log(log, tag=tag, ev="start", n=len(results))
    _log(log, tag=tag, ev="end")
    return results


@app.task
def count(results: list[Any]) -> int:
    return len(results)


@app.task
def noop() -> None:
    return None


@app.task
def boom(why: str = "boom") -> None:
    raise RuntimeError(why)


@app.task(max_attempts=3, retry_backoff=0.0)
def flaky(log: str, fails: int) -> str:
    """Fails its first `fails` attempts (counted in its log), then succeeds."""
    n = sum(1 for e in entries(log) if e.get("tag") == "flaky")
    _log(log, tag="flaky", ev="start", n=n)
    if n < fails:
        raise RuntimeError(f"attempt {n + 1} fails")
    return "finally"


@app.task
def hang(marker: str) -> None:
    _log(marker, tag="hang", ev="start")
    time.sleep(3600)
