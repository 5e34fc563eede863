"""The leader's slow chores, in a thread of its own: checkpoints, the purge, the census.

The leader's loop fires schedules on time, so nothing slow may run in it. Three chores
are slow on a big store, and none holds a lock anyone waits for long:

- A checkpoint copies the WAL's pages into the database file and fsyncs it: 25-35 ms
  after a burst of commits on a store of three million rows, a delay for every
  schedule due meanwhile. It is PASSIVE, so it blocks no reader or writer.
- The purge of finished jobs past `result_ttl`, about once a minute (PURGE_EVERY), in
  transactions of 2,000 rows. On SQLite it first counts the pushes since the last one
  for the metrics (store/counters.py): a second of reading after a bulk load of a
  million jobs, in chunks, each recorded by a short transaction.
- The census (store/census.py) counts the queues too deep to count live: a quarter of
  a second for a million waiting jobs, a plain read. It takes at most CENSUS_SHARE of
  the time: after a census of d seconds the next waits max(CENSUS_EVERY, d / share).

sqlite3 and psycopg release the GIL while SQLite or the server works, so the loop
turns meanwhile. The long reads (the census's counts, a catch-up's counting) run in a
second thread at the lowest CPU priority (Linux gives each thread its own nice value),
so on a busy host they use the CPU the workers leave idle; the writes stay in this one,
at normal priority: a lock holder descheduled for a niced share of the CPU would keep
every worker waiting for the write lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from mpjobs.store.base import Store

log = logging.getLogger("mpjobs.coordinator")

CHECKPOINT_EVERY = 5.0  # seconds between checkpoints (each fsyncs, so not too often)
PURGE_EVERY = 60.0  # seconds between purges of expired finished jobs (the first at once)
CENSUS_EVERY = 5.0  # seconds between two censuses at least
CENSUS_SHARE = 0.02  # the most of its time the thread spends counting
WRITE_BUDGET = 1.0  # seconds a chore's write waits for the store's locks


class Housekeeping:
    """Started by the leader once it leads; stopped (not waited for long) at its exit."""

    def __init__(self, store: Store, result_ttl: float | None) -> None:
        self._store = store
        self._ttl = result_ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mpjobs-chores", daemon=True)
        self._reader = ThreadPoolExecutor(
            1, thread_name_prefix="mpjobs-chores-read", initializer=_lowest_priority
        )
        store.slow_reads = lambda read: self._reader.submit(read).result()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """A chore under way cannot be interrupted; the process's exit ends it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._store.slow_reads = None  # the store's other users read in place again
        self._reader.shutdown(wait=False)

    def _run(self) -> None:
        now = time.monotonic()
        next_census, next_checkpoint = now, now + CHECKPOINT_EVERY
        next_purge = now if self._ttl is not None else float("inf")
        while not self._stop.wait(
            max(0.0, min(next_census, next_checkpoint, next_purge) - now)
        ):
            now = time.monotonic()
            if now >= next_purge:
                self._chore("purge", self._purge)
                next_purge = time.monotonic() + PURGE_EVERY
            if now >= next_checkpoint:
                self._chore("checkpoint", self._store.checkpoint)
                next_checkpoint = time.monotonic() + CHECKPOINT_EVERY
            if now >= next_census:
                began = time.monotonic()
                self._chore("queue census", self._census)
                took = time.monotonic() - began
                next_census = time.monotonic() + max(CENSUS_EVERY, took / CENSUS_SHARE)
            now = time.monotonic()

    def _purge(self) -> None:
        with self._store.lock_budget(WRITE_BUDGET):
            self._store.purge(time.time() - (self._ttl or 0.0))

    def _census(self) -> None:
        with self._store.lock_budget(WRITE_BUDGET):
            self._store.take_census(time.time())

    @staticmethod
    def _chore(what: str, call: Callable[[], object]) -> None:
        try:
            call()
        except Exception as exc:  # a busy, full or unreachable store: the next turn
            log.warning("leader: the %s failed (%s); trying again later", what, exc)


def _lowest_priority() -> None:
    """Nice 19 for this thread alone (Linux: a thread id is a PRIO_PROCESS target), the
    reader's: it takes no lock, so its slowness holds no one up."""
    with contextlib.suppress(AttributeError, OSError):  # elsewhere: the share bounds it
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
