"""Storage and coordination behind one seam: the rest of mpjobs sees only the protocols.

`mpjobs.store.backends.open_backend(home)` is the one place that picks a backend for a
home (today always SQLite-plus-files, sqlite.py); code outside this package uses the
`Backend` and `Store` protocols and never imports a concrete class.
"""

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

__all__ = [
    "Backend",
    "Completion",
    "JobRecord",
    "JobStatus",
    "NewJob",
    "ProcessRecord",
    "ScheduleRecord",
    "Store",
]
