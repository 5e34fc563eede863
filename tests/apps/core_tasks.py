"""Tasks for the core tests (issue 2). Importable by workers: tests/apps is on sys.path.

`make_app(home)` re-targets the module-level app, so tasks keep stable import paths.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tasks import write_marker

import mpjobs

app = mpjobs.App()

# A worker of this app cannot boot: its import list names a module that does not exist.
bad_app = mpjobs.App(imports=["does_not_exist_module"])

not_an_app = 42


def make_app(home: Path | str) -> mpjobs.App:
    app._home_arg, app._home = str(home), None
    return app


@app.task
def record(path: str, tag: str) -> str:
    """Append `tag` to a file, so tests can see the order in which jobs ran."""
    with open(path, "a") as f:
        f.write(f"{tag}\n")
    return tag


@app.task(max_attempts=3, retry_backoff=0.2)
def flaky_timed(path: str, failures: int) -> int:
    """Log the time of each attempt to `path`; fail the first `failures` attempts."""
    with open(path, "a") as f:
        f.write(f"{time.time()}\n")
    n = len(Path(path).read_text().splitlines())
    if n <= failures:
        raise RuntimeError(f"attempt {n} fails")
    return n


class NeedsTwoArgs(Exception):
    """An exception that pickles but cannot be unpickled (its __init__ needs two args)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}-{b}")


@app.task
def fail_unloadable() -> None:
    raise NeedsTwoArgs("left", "right")


class CustomError(Exception):
    pass


@app.task
def fail_custom(message: str) -> None:
    raise CustomError(message)


@app.task
def pid_and_marker(marker: str) -> int:
    write_marker(marker, str(os.getpid()))
    return os.getpid()
