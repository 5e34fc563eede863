"""Which backend a home uses: `open_backend(home)`, the one place that picks one.

Today every home uses SQLite-plus-files (sqlite.py). A second backend (PostgreSQL) is
chosen here, from what the home says, so that every process of the home picks the same.
Kept apart from the package's `__init__`, which holds only the protocols and records:
importing those must not import a backend.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from mpjobs.home import Home
from mpjobs.store.backend import Backend
from mpjobs.store.sqlite import SqliteBackend

_BACKENDS: dict[Path, Backend] = {}
_LOCK = threading.Lock()


def _reset_lock_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def open_backend(home: Home) -> Backend:
    """The backend of `home`, one object per home per process (shared by its apps and
    job handles; it holds no descriptor of its own, so it may cross a fork)."""
    found = _BACKENDS.get(home.path)  # every push comes this way: no lock once open
    if found is not None:
        return found
    with _LOCK:
        return _BACKENDS.setdefault(home.path, SqliteBackend(home))
