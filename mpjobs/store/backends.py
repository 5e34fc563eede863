"""Which backend a home uses: `open_backend(home, store)`, the one place that picks one.

`store` None means SQLite in the home (sqlite.py); a `postgresql://` URL means the
PostgreSQL backend (postgres/), imported only then, so psycopg stays an optional extra.
Kept apart from the package's `__init__`, which holds only the protocols and records:
importing those must not import a backend.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from mpjobs.errors import ConfigError
from mpjobs.home import Home
from mpjobs.store.backend import Backend
from mpjobs.store.sqlite import SqliteBackend

_BACKENDS: dict[tuple[Path, str | None], Backend] = {}
_LOCK = threading.Lock()


def _reset_lock_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def open_backend(home: Home, store: str | None = None) -> Backend:
    """The backend of `home` and `store`, one object per pair per process (shared by its
    apps and job handles; it holds no descriptor of its own, so it may cross a fork)."""
    key = (home.path, store)
    found = _BACKENDS.get(key)  # every push comes this way: no lock once open
    if found is not None:
        return found
    with _LOCK:
        found = _BACKENDS.get(key)
        if found is None:
            found = SqliteBackend(home) if store is None else _postgres(home, store)
            _BACKENDS[key] = found
        return found


def close_backends() -> None:
    """Close every backend this process opened (connections, relays): at shutdown or
    between tests; using one again later opens it afresh."""
    with _LOCK:
        found = list(_BACKENDS.values())
        _BACKENDS.clear()
    for backend in found:
        backend.close()


def _postgres(home: Home, store: str) -> Backend:
    try:
        from mpjobs.store.postgres.backend import PgBackend
    except ImportError as exc:
        raise ConfigError(
            f"the store {store.split('@')[-1]!r} needs PostgreSQL support: "
            f"pip install 'mpjobs[postgres]' ({exc})"
        ) from exc
    return PgBackend(home, store)
