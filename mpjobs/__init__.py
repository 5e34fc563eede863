"""mpjobs: background and scheduled jobs across many processes on one host.

No broker and no server: processes coordinate through one state directory that holds
an SQLite job store and lock files.
"""

from mpjobs.app import App, JobBuilder, Task
from mpjobs.errors import (
    ConfigError,
    HomeError,
    JobCancelledError,
    JobFailedError,
    JobNotCompletedError,
    MpjobsError,
    NotFoundError,
    SerializationError,
    StoreError,
    UnsafeHomeError,
    WaitTimeout,
)
from mpjobs.job import Job, JobStatus
from mpjobs.limits import Limit
from mpjobs.observability.hooks import JobInfo, Middleware, Outcome, WorkerInfo
from mpjobs.pool import Pool
from mpjobs.scheduling.schedules import Schedule
from mpjobs.workflows import Group

__version__ = "0.1.0"

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
    "Schedule",
    "SerializationError",
    "StoreError",
    "Task",
    "UnsafeHomeError",
    "WaitTimeout",
    "WorkerInfo",
    "__version__",
]
