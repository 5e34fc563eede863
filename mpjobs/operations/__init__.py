"""The operator's views and actions, shared by the CLI (`mpjobs jobs ...`) and the
dashboard, so both show and do the same things (views.py, actions.py)."""

from mpjobs.operations.actions import (
    SCHEDULE_ACTIONS,
    Tally,
    cancel_matching,
    cancel_one,
    purge,
    retry_matching,
    retry_one,
    schedule_action,
)
from mpjobs.operations.safe_pickle import describe, safe_loads
from mpjobs.operations.views import (
    FAILURES,
    job_detail,
    job_page,
    overview,
    schedules,
    status_data,
)

__all__ = [
    "FAILURES",
    "SCHEDULE_ACTIONS",
    "Tally",
    "cancel_matching",
    "cancel_one",
    "describe",
    "job_detail",
    "job_page",
    "overview",
    "purge",
    "retry_matching",
    "retry_one",
    "safe_loads",
    "schedule_action",
    "schedules",
    "status_data",
]
