"""A job row seen as Django's `TaskResult`: one mapping, for the web side and the worker.

mpjobs has seven statuses and Django four. SCHEDULED is READY (waiting, or waiting to
be retried), RUNNING is RUNNING, SUCCESS is SUCCESSFUL, and every other terminal state
(FAILED, TIMEOUT, CANCELLED, PERMANENTLY_FAILED) is FAILED, with the reason in
`errors`. mpjobs keeps the latest attempt's error and worker only, so `errors` holds at
most one entry and `worker_ids` names the latest worker once per attempt (Django's
`attempts` is the length of that list, so it is mpjobs' attempt count).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from django.utils.module_loading import import_string

from mpjobs import serialization
from mpjobs.contrib.django.compat import (
    Task,
    TaskError,
    TaskResult,
    TaskResultStatus,
    exception_path,
    set_field,
)
from mpjobs.errors import JobCancelledError, JobFailedError
from mpjobs.store.base import CANCELLED, RUNNING, SCHEDULED, SUCCESS, JobRecord

__all__ = ["RUN_ASYNC", "RUN_SYNC", "Call", "call_of", "load_task", "result_of"]

# The trampolines every Django task's job calls (mpjobs/contrib/django/runner.py).
RUN_SYNC = "mpjobs.contrib.django.runner:run_task"
RUN_ASYNC = "mpjobs.contrib.django.runner:run_async_task"

READY = TaskResultStatus.READY
_STATUS = {
    SCHEDULED: TaskResultStatus.READY,
    RUNNING: TaskResultStatus.RUNNING,
    SUCCESS: TaskResultStatus.SUCCESSFUL,
}


@dataclass(frozen=True)
class Call:
    """What a trampoline is given: which backend and task, with what, and a token.

    The token is unique per enqueue: it is how a running trampoline finds its own job
    among the jobs its process has claimed (see runner.current_record).
    """

    alias: str
    module_path: str
    args: list[Any]
    kwargs: dict[str, Any]
    token: str

    def as_args(self) -> tuple[Any, ...]:
        return (self.alias, self.module_path, self.args, self.kwargs, self.token)


def is_async(task: Any) -> bool:
    return inspect.iscoroutinefunction(task.func)


def call_of(rec: JobRecord | None) -> Call | None:
    """The Django call a job row holds, or None for a job that is not a Django task's."""
    if rec is None or rec.func not in (RUN_SYNC, RUN_ASYNC) or not rec.payload:
        return None
    args, _kwargs = serialization.loads(rec.payload)
    return Call(*args)


def load_task(module_path: str) -> Any:
    """The Django Task named by its `module_path`, as a worker or a reader imports it."""
    task = import_string(module_path)
    if not isinstance(task, Task):
        raise TypeError(f"{module_path!r} is a {type(task).__name__}, not a Django task")
    return task


def _when(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, tz=timezone.utc)


def errors_of(rec: JobRecord) -> list[Any]:
    """The job's latest error as Django's TaskError; a failed end always has one."""
    status = _STATUS.get(rec.status)
    if rec.error is None and status is not None:
        return []
    path = None
    if rec.exc is not None:
        try:
            exc = serialization.loads(rec.exc)
            path = exception_path(type(exc)) if isinstance(exc, BaseException) else None
        except Exception:  # the exception's class cannot be imported here: say mpjobs'
            path = None
    if path is None:
        path = exception_path(JobCancelledError if rec.status == CANCELLED else JobFailedError)
    text = rec.error or f"the job ended {rec.status}"
    return [TaskError(exception_class_path=path, traceback=text)]


def result_of(task: Any, rec: JobRecord, call: Call) -> Any:
    """Django's TaskResult for the job `rec` of `task`, as it stands in the store."""
    if task.priority != -rec.priority or task.queue_name != rec.queue:
        # As the job was pushed (task.using(...)), without validating again: it exists.
        task = copy.copy(task)
        set_field(task, "priority", max(-100, min(100, -rec.priority)))
        set_field(task, "queue_name", rec.queue)
    status = _STATUS.get(rec.status, TaskResultStatus.FAILED)
    result = TaskResult(
        task=task, id=str(rec.id), status=status, enqueued_at=_when(rec.created_at),
        started_at=_when(rec.started_at), finished_at=_when(rec.finished_at),
        last_attempted_at=_when(rec.started_at), args=call.args, kwargs=call.kwargs,
        backend=call.alias, errors=errors_of(rec),
        worker_ids=[rec.owner or "mpjobs"] * rec.attempts,
    )  # fmt: skip
    if rec.status == SUCCESS and rec.result is not None:
        set_field(result, "_return_value", serialization.loads(rec.result))
    return result
