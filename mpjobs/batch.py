"""A worker's batch in flight: its unstarted rest, its uncommitted results, and a steward.

A worker claims several quick jobs in one transaction, because a transaction costs far
more than a no-op job. The price is that the rest of the batch waits behind whichever
job runs now. When that job turns out not to be quick (a task that is usually fast,
called with arguments that make it slow), its batch-mates must not wait for it while
another worker sits idle. The main thread is busy running the job and cannot notice, so
a small thread of the worker watches the clock: once the running job has run for
RELEASE_AFTER, it commits the results of the batch's finished jobs (their waiters must
not wait either) and hands the rest back to SCHEDULED, attempts refunded; the doorbell
of that commit wakes an idle sibling.

The rest and the results are only ever taken under one lock, by the main thread (to
start the next job, or to commit) or by the steward, and the steward holds that lock for
the whole store write, so a job is either given back or started, never both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mpjobs.store.base import Completion

log = logging.getLogger("mpjobs.worker")

RELEASE_AFTER = 0.003  # a batch-mate waits at most about this long behind a slow job


class BatchRest:
    """The job ids a worker has claimed but not started, watched by a steward thread."""

    def __init__(self, publish: Callable[[list[Completion], list[int]], None]) -> None:
        """`publish(results, ids)` commits results and gives ids back, in the steward."""
        self._publish = publish
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ids: list[int] = []
        self._results: list[Completion] = []
        self._since: float | None = None  # when the running job began, while one runs
        self._watching = False  # the steward sleeps with a deadline (no need to wake it)
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- the main thread ---------------------------------------------------------------

    def load(self, ids: list[int]) -> None:
        with self._lock:
            self._ids = ids

    def take(self) -> int | None:
        """The next job to start, or None when the batch is done or was given back."""
        with self._lock:
            return self._ids.pop(0) if self._ids else None

    def take_all(self) -> list[int]:
        with self._lock:
            ids, self._ids = self._ids, []
            return ids

    def add_result(self, done: Completion) -> None:
        with self._lock:
            self._results.append(done)

    def results(self) -> list[Completion]:
        """Take the results to commit (the journal keeps them until that commit)."""
        with self._lock:
            out, self._results = self._results, []
            return out

    def has_results(self) -> bool:
        return bool(self._results)

    def running(self) -> None:
        """A job begins; if mates wait behind it, make sure the steward watches the clock."""
        with self._lock:
            self._since = time.monotonic()
            if not (self._ids or self._results):
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._steward, name="mpjobs-batch-steward", daemon=True
                )
                self._thread.start()
            elif not self._watching:
                self._wake.set()

    def finished(self) -> None:
        with self._lock:
            self._since = None

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)

    # -- the steward thread ------------------------------------------------------------

    def _steward(self) -> None:
        while not self._stop:
            with self._lock:
                since, waiting = self._since, bool(self._ids or self._results)
                due = None if since is None or not waiting else since + RELEASE_AFTER
                self._watching = due is not None
                if due is not None and time.monotonic() >= due:
                    self._release_locked()
                    continue
                self._wake.clear()
            self._wake.wait(None if due is None else max(0.0, due - time.monotonic()))

    def _release_locked(self) -> None:
        ids, self._ids = self._ids, []
        results, self._results = self._results, []
        try:
            self._publish(results, ids)
        except Exception as exc:  # keep them: the main thread commits and runs them
            self._ids = ids + self._ids
            self._results = results + self._results
            self._since = None
            log.warning("cannot give back %d claimed jobs (%s); running them here", len(ids), exc)
