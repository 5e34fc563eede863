"""The throttled progress writer: `set_progress` costs the job a dict store, not a write.

One daemon thread per worker process, made on the first `set_progress` there (never
before a fork: a forked child that calls it gets its own, the pid tells). A call only
records the latest (value, meta) of its job; the thread writes what is pending, then
waits INTERVAL before the next round, so a job calling it in a tight loop costs at
most 1/INTERVAL store writes a second and is never blocked by a slow store. When a
job ends, the executor flushes it (`flush`), so its last value always lands while
the job is still RUNNING and owned (the only state in which the store accepts it).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from mpjobs.store.base import Store

__all__ = ["INTERVAL", "ProgressWriter", "flush_pending", "pending", "writer_for"]

INTERVAL = 0.25  # seconds between two rounds of writes: at most 4 writes/s per job
FLUSH_WAIT = 5.0  # the longest a job's end waits for its last value to be written

log = logging.getLogger("mpjobs.progress")

Pending = tuple[str, float | None, str | None]  # owner, value, meta JSON (None: keep)


class _WriterThread(threading.Thread):
    """The writer's thread. It may be running when this process forks (a process that
    ran a job inline, then starts a pool): the child never uses it or its lock, since
    `writer_for` makes a new writer in a new pid, so it does not make forking unsafe."""

    mpjobs_fork_safe = True  # read by coordination/listener.py's check before a fork


class ProgressWriter:
    """The latest progress of each job, written by one thread at a bounded rate."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes = 0  # how many store writes were made (tests, benchmarks)
        self._cond = threading.Condition()
        self._pending: dict[int, Pending] = {}
        self._busy: set[int] = set()  # being written now
        self._hurry = False
        self._thread = _WriterThread(target=self._run, name="mpjobs-progress", daemon=True)
        self._thread.start()

    def submit(self, job_id: int, owner: str, value: float | None, meta: str | None) -> None:
        with self._cond:
            old = self._pending.get(job_id)
            if meta is None and old is not None:
                meta = old[2]  # a meta not yet written is not lost by a later value
            was_idle = not self._pending
            self._pending[job_id] = (owner, value, meta)
            if was_idle:
                self._cond.notify()

    def holds(self, job_id: int) -> bool:
        with self._cond:
            return job_id in self._pending or job_id in self._busy

    def flush(self, job_id: int) -> None:
        """Wait (bounded) until the job's last submitted value is written."""
        deadline = time.monotonic() + FLUSH_WAIT
        with self._cond:
            if job_id not in self._pending and job_id not in self._busy:
                return
            self._hurry = True
            self._cond.notify_all()
            while job_id in self._pending or job_id in self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("job %s: its last progress was not written in time", job_id)
                    self._pending.pop(job_id, None)
                    return
                self._cond.wait(left)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                batch, self._pending = self._pending, {}
                self._busy = set(batch)
            for job_id, (owner, value, meta) in batch.items():
                try:
                    self.store.set_progress(job_id, owner, value, meta)
                    self.writes += 1
                except Exception:  # a progress report is never worth failing a job for
                    log.warning("job %s: progress not recorded", job_id, exc_info=True)
            with self._cond:
                self._busy = set()
                self._cond.notify_all()
                # The throttle: new values only replace pending ones until the next
                # round is due; a flush (a job ending) cuts the wait short.
                next_at = time.monotonic() + INTERVAL
                while not self._hurry:
                    left = next_at - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                self._hurry = False


_writers: dict[int, ProgressWriter] = {}  # by id(store): a worker has one store
_writers_pid = 0
_writers_lock = threading.Lock()


def writer_for(store: Store) -> ProgressWriter:
    """This process's writer for `store`, made on first use (a fork's child makes its own)."""
    global _writers_pid
    w = _writers.get(id(store))
    if w is not None and w.store is store and _writers_pid == os.getpid():
        return w
    with _writers_lock:
        if _writers_pid != os.getpid():
            _writers.clear()  # the parent's threads did not cross the fork
            _writers_pid = os.getpid()
        w = _writers.get(id(store))
        if w is None or w.store is not store:
            w = _writers[id(store)] = ProgressWriter(store)
        return w


def _writer_of(store: Store) -> ProgressWriter | None:
    if not _writers:  # the usual case: no job of this process ever gave progress
        return None
    w = _writers.get(id(store))
    return w if w is not None and w.store is store and _writers_pid == os.getpid() else None


def pending(store: Store, job_id: int) -> bool:
    """Whether the job has progress not yet written (never blocks)."""
    w = _writer_of(store)
    return w is not None and w.holds(job_id)


def flush_pending(store: Store, job_id: int) -> None:
    """Land the job's last progress, if it gave any here; free when nothing was given
    (the end of every job calls this: no writer, or none for this store, returns at once)."""
    w = _writer_of(store)
    if w is not None:
        w.flush(job_id)
