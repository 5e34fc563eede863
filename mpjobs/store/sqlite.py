"""The SQLite store: the connector plus the job, schedule and process queries.

Split by concern (connection.py, jobs.py, schedules.py) so each file has one reason to
change; `SqliteStore` is their sum and the one `Store` implementation today.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from mpjobs.home import Home
from mpjobs.store import base
from mpjobs.store.jobs import JobQueries
from mpjobs.store.schedules import ProcessQueries, ScheduleQueries


class SqliteStore(JobQueries, ScheduleQueries, ProcessQueries, base.Store):
    """A `Store` over one SQLite file in the home (see connection.py for the rules)."""

_STORES: dict[Path, SqliteStore] = {}
_STORES_LOCK = threading.Lock()


def _reset_lock_in_child() -> None:
    global _STORES_LOCK
    _STORES_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def open_store(home: Home) -> SqliteStore:
    """One store object per home per process, so handles and apps share connections."""
    with _STORES_LOCK:
        store = _STORES.get(home.path)
        if store is None:
            store = _STORES[home.path] = SqliteStore(home)
        return store
