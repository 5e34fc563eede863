"""The SQLite-plus-files backend: an SQLite file, flocks and inotify, all in the home.

Split by concern (connection.py, jobs.py, schedules.py) so each file has one reason to
change; `SqliteStore` is their sum. `SqliteBackend` composes it with the file-based
pieces of coordination/ (leader.py, locks.py, notify.py), which stay where they are:
this module only presents them through the seam (backend.py).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mpjobs.coordination import leader, listener, notify
from mpjobs.coordination.locks import LivenessLock, is_alive
from mpjobs.errors import StoreError
from mpjobs.home import Home
from mpjobs.store import backend, base
from mpjobs.store.census import CensusQueries
from mpjobs.store.connection import Connector, set_wait_abort
from mpjobs.store.jobs import JobQueries
from mpjobs.store.listing import ListingQueries
from mpjobs.store.progress import ProgressQueries
from mpjobs.store.schedules import ProcessQueries, ScheduleQueries


class SqliteStore(
    JobQueries, ProgressQueries, ListingQueries, CensusQueries, ScheduleQueries, ProcessQueries,
    Connector,
    base.Store,
):
    """A `Store` over one SQLite file in the home (see connection.py for the rules)."""


class FileLiveness:
    """Liveness as a flock on `procs/<token>.lock`: free exactly when its holder is dead."""

    __slots__ = ("home",)

    def __init__(self, home: Home) -> None:
        self.home = home

    def hold(self, token: str) -> LivenessLock:
        lock = LivenessLock(self.home.proc_lock(token))
        lock.acquire()
        return lock

    def alive(self, token: str) -> bool:
        return is_alive(self.home.proc_lock(token))


class FileDoorbell:
    """The doorbell as `write.lock` in the home (rung in Connector._tx) and inotify on it."""

    __slots__ = ("home",)

    def __init__(self, home: Home) -> None:
        self.home = home

    def watcher(self) -> notify.Watcher:
        return notify.Watcher(self.home.path)

    def listen(self) -> listener.Listener:
        return listener.listen(self.home.path)


class SqliteBackend:
    """The backend of a home on this host: SQLite for rows, files for the rest.

    Cheap to make: it opens the store only on first use, so a process that only asks
    who is alive or leads never vets or migrates the database.
    """

    def __init__(self, home: Home) -> None:
        self._home = home
        self._store: SqliteStore | None = None
        self._liveness = FileLiveness(home)
        self._doorbell = FileDoorbell(home)

    @property
    def home(self) -> Home:
        return self._home

    @property
    def store(self) -> SqliteStore:
        store = self._store  # every push comes this way: one attribute read when open
        if store is None:
            store = self._store = open_store(self._home)
        return store

    @property
    def liveness(self) -> FileLiveness:
        return self._liveness

    @property
    def doorbell(self) -> FileDoorbell:
        return self._doorbell

    def leadership(self, token: str) -> leader.Leadership:
        return leader.Leadership(self._home, token)

    def current_leader(self) -> dict[str, Any] | None:
        return leader.current_leader(self._home)

    def silent_leader(self, timeout: float) -> leader.Beat | None:
        return leader.stale_leader(self._home, timeout)

    def settle_grace(self, token: str) -> float:
        return 0.0  # a lock of this backend is free only once its holder is dead

    @property
    def unavailable(self) -> tuple[type[Exception], ...]:
        return _UNAVAILABLE

    def abort_waits_when(self, predicate: Callable[[], bool] | None) -> None:
        set_wait_abort(predicate)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _conforms(b: SqliteBackend) -> backend.Backend:
    """Never called: mypy checks here that SqliteBackend provides the whole seam."""
    return b


_UNAVAILABLE: tuple[type[Exception], ...] = (sqlite3.OperationalError, StoreError)
_STORES: dict[Path, SqliteStore] = {}
_STORES_LOCK = threading.Lock()


def _reset_lock_in_child() -> None:
    global _STORES_LOCK
    _STORES_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def open_store(home: Home) -> SqliteStore:
    """One store object per home per process, so handles and apps share connections."""
    store = _STORES.get(home.path)
    if store is not None:
        return store
    with _STORES_LOCK:
        store = _STORES.get(home.path)
        if store is None:
            store = _STORES[home.path] = SqliteStore(home)
        return store
