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

RELEASE_AFTER = 0.005  # a batch-mate waits at most about this long behind a slow job
LINGER = 0.05  # the steward keeps watching this long after a batch, for the next one


class BatchRest:
    """The job ids a worker has claimed but not started, watched by a steward thread.

    The main thread's per-job cost is two attribute writes (`running`, `finished`) and
    one uncontended lock (`take`): the steward never needs to be woken per job. While
    batches are in flight it looks every RELEASE_AFTER, and it sleeps when none are,
    so a worker draining tiny jobs pays a wake-up every few milliseconds, not per job
    (each wake-up of a second thread costs the main thread a GIL hand-over).
    """

    def __init__(self, publish: Callable[[list[Completion], list[int]], None]) -> None:
        """`publish(results, ids)` commits results and gives ids back, in the steward."""
        self._publish = publish
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ids: list[int] = []
        self._results: list[Completion] = []
        self._since: float | None = None  # when the running job began, while one runs
        self._active_at = 0.0  # when the last batch of several jobs was loaded
        self._watching = False  # the steward looks every RELEASE_AFTER (no need to wake it)
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- the main thread ---------------------------------------------------------------

    def load(self, ids: list[int]) -> None:
        """A new batch: `ids` are its jobs after the first, claimed and not yet begun."""
        with self._lock:
            self._ids = ids
        if not ids:
            return
        self._active_at = time.monotonic()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._steward, name="mpjobs-batch-steward", daemon=True
            )
            self._thread.start()
        elif not self._watching:
            self._wake.set()

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
        self._since = time.monotonic()

    def finished(self) -> None:
        self._since = None

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)

    # -- the steward thread ------------------------------------------------------------

    def _steward(self) -> None:
        while not self._stop:
            self._watching = True
            while not self._stop and time.monotonic() - self._active_at < LINGER:
                time.sleep(RELEASE_AFTER)
                since = self._since
                if since is not None and time.monotonic() - since >= RELEASE_AFTER:
                    with self._lock:
                        if self._since == since and (self._ids or self._results):
                            self._release_locked()
            self._watching = False
            self._wake.clear()
            if time.monotonic() - self._active_at < LINGER:
                continue  # a batch came in while we were leaving
            self._wake.wait()

    def _release_locked(self) -> None:
        ids, self._ids = self._ids, []
        results, self._results = self._results, []
        try:
            self._publish(results, ids)
        except Exception as exc:  # keep them: the main thread commits and runs them
            self._ids = ids + self._ids
            self._results = results + self._results
            log.warning("cannot give back %d claimed jobs (%s); running them here", len(ids), exc)
