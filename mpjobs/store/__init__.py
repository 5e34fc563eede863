"""Storage, kept apart from job logic: the rest of mpjobs talks to the `Store` protocol only."""

from mpjobs.store.base import Completion, JobRecord, NewJob, ProcessRecord, ScheduleRecord, Store

__all__ = ["Completion", "JobRecord", "NewJob", "ProcessRecord", "ScheduleRecord", "Store"]
