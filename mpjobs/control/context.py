"""`mpjobs.current_job()`: the running job's id, attempt and progress reporter.

The context is a ContextVar set by the executor around the job's call, so it is right
in the worker's main thread, in every asyncio task (each has its own copy of the
context) and in the pool thread a sync job of a concurrency-N worker runs in (the
executor runs the call inside a copy of the context). Outside a job it raises: a
`None` that code forgets to check would fail later and further from the mistake.
"""

from __future__ import annotations

import contextvars
import json
import math
from typing import Any

from mpjobs.control.progress import flush_pending, writer_for
from mpjobs.errors import MpjobsError
from mpjobs.store.base import JobRecord, Store

__all__ = ["MAX_META", "JobContext", "current_job"]

MAX_META = 4096  # bytes of meta JSON: progress notes, not a place for data


class JobContext:
    """What a running job may know of itself and tell the rest of the home."""

    __slots__ = ("_owner", "_store", "attempt", "id")

    def __init__(self, job: JobRecord, store: Store | None) -> None:
        self.id = str(job.id)
        self.attempt = job.attempts  # 1 for the first attempt: the claim counts it
        self._owner = job.owner
        self._store = store

    def __repr__(self) -> str:
        return f"<mpjobs.JobContext job {self.id} attempt {self.attempt}>"

    def set_progress(self, value: float, meta: dict[str, Any] | None = None) -> None:
        """Record how far the job is (0..1 by convention, any finite number allowed),
        with an optional small JSON dict `meta` (None keeps the last one).

        Cheap and non-blocking: a background thread writes the latest value a few times
        a second at most, and the last value is written when the job ends.
        """
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"set_progress() takes a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"set_progress() takes a finite number, got {value!r}")
        text = None
        if meta is not None:
            if not isinstance(meta, dict):
                raise TypeError(f"set_progress(meta=...) takes a dict, got {type(meta).__name__}")
            try:
                text = json.dumps(meta, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"set_progress(meta=...) must be JSON-able: {exc}") from None
            if len(text.encode()) > MAX_META:
                raise ValueError(
                    f"set_progress(meta=...) is {len(text.encode())} bytes as JSON, over "
                    f"the limit of {MAX_META}; keep meta small (store data elsewhere)"
                )
        if self._store is None or self._owner is None:
            return  # run outside a worker (a test calling the executor): nowhere to write
        _progress_given[0] = True
        writer_for(self._store).submit(int(self.id), self._owner, float(value), text)

    def flush(self) -> None:
        """Wait (5 s at most) until the last progress given is in the store.

        The executor calls it as the job ends, so the last value always lands; a job
        may call it too, before telling someone else to read its progress.
        """
        if self._store is not None:
            flush_pending(self._store, int(self.id))


# What the executor sets around a job's call: the record and the store, not a context
# object, so a job that never asks costs one ContextVar set and reset, nothing more.
Running = tuple[JobRecord, "Store | None"]
_current: contextvars.ContextVar[Running | None] = contextvars.ContextVar(
    "mpjobs_current_job", default=None
)
# Whether a job of this process ever gave progress (set_progress is the only way to):
# until one has, no writer exists and `leave` has nothing to flush. A forked child may
# inherit True; then it merely asks, as every job did before this flag.
_progress_given = [False]


def current_job() -> JobContext:
    """The context of the job running in this thread or task; MpjobsError outside one."""
    running = _current.get()
    if running is None:
        raise MpjobsError(
            "mpjobs.current_job() was called outside a job: it works only in code a "
            "worker runs as a job (not at import, nor when the task is called directly)"
        )
    return JobContext(*running)


def enter(job: JobRecord, store: Store | None) -> contextvars.Token[Running | None]:
    return _current.set((job, store))


def leave(
    job: JobRecord,
    store: Store | None,
    token: contextvars.Token[Running | None],
    flush: bool = True,
) -> None:
    """The job's call is over: forget it, and land its last progress, if it gave any
    (unless `flush` is False: an event loop must not block on it, see executors.py)."""
    _current.reset(token)
    if flush and _progress_given[0] and store is not None:
        flush_pending(store, job.id)
