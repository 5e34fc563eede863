"""mpjobs: background and scheduled jobs across many processes on one host.

No broker and no server: processes coordinate through one state directory that holds
an SQLite job store and lock files.
"""

from mpjobs import job as _job
from mpjobs.app import App, JobBuilder, Task
from mpjobs.control.context import current_job
from mpjobs.errors import (
    ConfigError,
    HomeError,
    JobCancelledError,
    JobFailedError,
    JobNotCompletedError,
    MpjobsError,
    NotFoundError,
    Retry,
    SerializationError,
    SoftTimeout,
    StoreError,
    UnsafeHomeError,
    WaitTimeout,
)
from mpjobs.job import Job, JobStatus
from mpjobs.limits import Limit
from mpjobs.observability.hooks import JobInfo, Middleware, Outcome, WorkerInfo
from mpjobs.pool import Pool
from mpjobs.scheduling.schedules import Schedule
from mpjobs.store.base import Store as _Store
from mpjobs.workflows import Group

__version__ = "0.1.0"


def _schedule_handle(store: _Store, schedule_id: str) -> Schedule:
    return Schedule(App(str(store.home.path), store.url), schedule_id)


_job.schedule_handle = _schedule_handle  # Job.schedule: see the note in mpjobs/job.py

__all__ = [
    "App",
    "ConfigError",
    "Group",
    "HomeError",
    "Job",
    "JobBuilder",
    "JobCancelledError",
    "JobFailedError",
    "JobInfo",
    "JobNotCompletedError",
    "JobStatus",
    "Limit",
    "Middleware",
    "MpjobsError",
    "NotFoundError",
    "Outcome",
    "Pool",
    "Retry",
    "Schedule",
    "SerializationError",
    "SoftTimeout",
    "StoreError",
    "Task",
    "UnsafeHomeError",
    "WaitTimeout",
    "WorkerInfo",
    "__version__",
    "current_job",
]
