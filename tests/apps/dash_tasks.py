"""Tasks for the dashboard and CLI-action tests (tests/browser, test_dashboard_api.py).

`make_app(home)` re-targets the module-level app, so tasks keep stable import paths.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tasks import write_marker

import mpjobs

app = mpjobs.App()


def make_app(home: Path | str) -> mpjobs.App:
    app._home_arg, app._home = str(home), None
    return app


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@app.task
def fail_once(flag: str) -> str:
    """Fail the first time (leaving the flag file), succeed every time after."""
    if not Path(flag).exists():
        write_marker(flag, "failed once")
        raise RuntimeError(f"first attempt fails (flag {flag})")
    return "second time lucky"


@app.task
def hold(started: str, release: str) -> str:
    """Say it started, then run until the release file appears (bounded: 60 s)."""
    write_marker(started, "started")
    gate = threading.Event()
    for _ in range(6000):
        if Path(release).exists() or gate.wait(0.01):
            break
    return "released"


class WritesFile:
    """An argument whose unpickling would create a file: what a viewer must never run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


@app.task
def takes(value: object) -> None:
    return None
