"""The leader's census of deep queues, in a thread of its own.

A queue deeper than the live count's cap shows the last census's exact figure
(store/census.py says why). A census of a million waiting jobs reads for a quarter of a
second; in the leader's loop it would hold up every schedule due meanwhile, so it runs
beside the loop, as a reader that blocks no writer (sqlite3 and psycopg release the GIL
while the server or the library counts). It takes at most CENSUS_SHARE of the time:
after a census of d seconds the next waits max(CENSUS_EVERY, d / CENSUS_SHARE). And
the thread runs at the lowest CPU priority (Linux gives each thread its own nice value),
so on a busy host it counts with the CPU the workers leave idle, not theirs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from mpjobs.store.base import Store

log = logging.getLogger("mpjobs.coordinator")

CENSUS_EVERY = 5.0  # seconds between two censuses at least
CENSUS_SHARE = 0.02  # the most of its time the thread spends counting
WRITE_BUDGET = 1.0  # seconds the census's small write waits for the store's locks


class Census:
    """Started by the leader once it leads; stopped (not waited for long) at its exit."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mpjobs-census", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """A count under way cannot be interrupted; the process's exit ends it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        _lowest_priority()
        wait = 0.0
        while not self._stop.wait(wait):
            began = time.monotonic()
            try:
                with self._store.lock_budget(WRITE_BUDGET):
                    self._store.take_census(time.time())
            except Exception as exc:  # a busy, full or unreachable store: the next one
                log.warning("leader: the queue census failed (%s); trying again later", exc)
            wait = max(CENSUS_EVERY, (time.monotonic() - began) / CENSUS_SHARE)


def _lowest_priority() -> None:
    """Nice 19 for this thread alone (Linux: a thread id is a PRIO_PROCESS target)."""
    with contextlib.suppress(AttributeError, OSError):  # elsewhere: the share bounds it
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
