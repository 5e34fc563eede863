"""Tasks whose outcome is hard to store or to describe: poison for a worker that records it.

Used by tests/integration/test_poison.py. Each raises or returns something that once
crashed the worker recording it (or the supervisor and leader settling it).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import mpjobs

app = mpjobs.App()

SURROGATE_NAME = b"\xff.txt".decode("utf-8", "surrogateescape")  # '\udcff.txt'


def make_app(home: Path | str) -> mpjobs.App:
    app._home_arg, app._home = str(home), None
    return app


@app.task
def whoami() -> int:
    return os.getpid()


@app.task
def surrogate_error() -> None:
    """An OSError about a file whose name is not UTF-8, as os.listdir() returns it."""
    raise OSError(f"cannot read {SURROGATE_NAME} in worker {os.getpid()}")


class _StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken")


@app.task
def str_raises() -> None:
    raise _StrRaises("unprintable")


class _NeedsTwo(Exception):
    """Pickles (as its args, one of them) but cannot be unpickled: __init__ wants two."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(a)
        self.b = b


@app.task
def unloadable_exception() -> None:
    raise _NeedsTwo("needs two", "args")


@app.task
def unpicklable_exception() -> None:
    raise ValueError("holds a lock", threading.Lock())


@app.task
def unpicklable_result() -> Any:
    return threading.Lock()


@app.task
def huge_error(chars: int) -> None:
    raise ValueError("HEAD" + "x" * chars + "TAIL")


class Poison(BaseException):
    """Not an Exception: what a careless `except Exception` in a worker would miss."""


@app.task
def base_exception() -> None:
    raise Poison(SURROGATE_NAME)


@app.task
def surrogate_source_path() -> None:
    """A traceback whose frame's file name holds a lone surrogate."""
    code = compile("raise KeyError('from a badly named file')", f"/nowhere/{SURROGATE_NAME}",
                   "exec")  # fmt: skip
    exec(code)


@app.task
def nul_error() -> None:
    raise ValueError("before\x00after")


@app.task
def big_result(nbytes: int, cap: int) -> bytes:
    """A result over the store's cap; the cap is lowered in this worker for the test."""
    from mpjobs.store import base

    base.MAX_BLOB = cap
    return b"x" * nbytes


@app.task
def record(path: str, n: int) -> None:
    """Append n to `path` in one O_APPEND write: how many times did each job run?"""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{n}\n".encode())
    finally:
        os.close(fd)


@app.task
def arm_loop_fault(flag: str) -> int:
    """Make this worker's loop crash once, at a moment it holds finished, uncommitted results.

    Patches the store's `status_of` (read by the worker before each job) in this
    process only: it raises RuntimeError (a stand-in for any bug; not a store fault a
    retry would ride out) when the worker's journal holds a finished job, once.
    """
    from mpjobs.runtime.journal import read_journal

    store_class = type(app.store)  # SQLite's or PostgreSQL's
    original = store_class.status_of
    procs = Path(app.home.path) / "procs"

    def status_of(self: Any, job_id: int) -> str | None:
        if not os.path.exists(flag):  # the pool has one worker: one journal
            for path in procs.glob("*.journal"):
                _started, done = read_journal(path)
                if done:
                    Path(flag).write_text(str(sorted(done)))
                    raise RuntimeError("injected: the worker's loop fails here")
        return original(self, job_id)

    store_class.status_of = status_of  # type: ignore[method-assign]
    return os.getpid()


def dead_owner_claim(store: Any, token: str, job_id: int) -> None:
    """Make `job_id` RUNNING under `token`, a process that never lived (no liveness file)."""
    with store._tx() as conn:
        conn.execute(
            "UPDATE jobs SET status = 'RUNNING', owner = ?, pid = 1, attempts = attempts + 1, "
            "started_at = 0 WHERE id = ?",
            (token, job_id),
        )


def poison_completion(job_id: int) -> Any:
    """An outcome as a worker of an older mpjobs would journal it: not storable as it is."""
    from mpjobs.store.base import FAILED, Completion

    return Completion(job_id, FAILED, error=f"OSError: cannot read {SURROGATE_NAME}")
