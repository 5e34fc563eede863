"""Storage and coordination behind one seam: the rest of mpjobs sees only the protocols.

`open_backend(home)` is the one place that picks a backend for a home (today always
SQLite-plus-files, sqlite.py); code outside this package uses the `Backend` and `Store`
protocols and never imports a concrete class.
"""

from mpjobs.home import Home
from mpjobs.store.backend import Backend
from mpjobs.store.base import (
    Completion,
    JobRecord,
    JobStatus,
    NewJob,
    ProcessRecord,
    ScheduleRecord,
    Store,
)
from mpjobs.store.sqlite import open_sqlite_backend


def open_backend(home: Home) -> Backend:
    """The backend of `home`, one object per home per process."""
    return open_sqlite_backend(home)


__all__ = [
    "Backend",
    "Completion",
    "JobRecord",
    "JobStatus",
    "NewJob",
    "ProcessRecord",
    "ScheduleRecord",
    "Store",
    "open_backend",
]
