"""Which backend a home uses: `open_backend(home)`, the one place that picks one.

Today every home uses SQLite-plus-files (sqlite.py). A second backend (PostgreSQL) is
chosen here, from what the home says, so that every process of the home picks the same.
Kept apart from the package's `__init__`, which holds only the protocols and records:
importing those must not import a backend.
"""

from __future__ import annotations

from mpjobs.home import Home
from mpjobs.store.backend import Backend
from mpjobs.store.sqlite import open_sqlite_backend


def open_backend(home: Home) -> Backend:
    """The backend of `home`, one object per home per process."""
    return open_sqlite_backend(home)
