"""The trampolines: what an mpjobs worker calls to run one Django task.

A Django task's job stores the path of one of these two functions, plus the task's
`module_path` and its arguments (see results.Call). The worker imports the Django task
by that path, so every worker must be able to import the project's task modules: they
are forked from `manage.py mpjobs run` (or gunicorn's arbiter), which has called
`django.setup()`, so settings and apps are loaded once, before the fork.

Around each sync task Django's stale database connections are closed, as Django does
around a request: a worker lives long, and a connection the database dropped or one
older than CONN_MAX_AGE must not reach the next task. The task's exception is
re-raised, so mpjobs records it (traceback and pickled exception) and retries it
under its own rules; Django's `task_started` / `task_finished` signals are sent for
each attempt.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from django.db import close_old_connections

from mpjobs.contrib.django.compat import (
    TaskContext,
    TaskError,
    TaskResultStatus,
    exception_path,
    normalize_json,
    set_field,
    task_backends,
    task_finished,
    task_started,
)
from mpjobs.contrib.django.results import Call, call_of, load_task, result_of
from mpjobs.store.base import RUNNING, JobRecord, Store

__all__ = ["current_record", "run_async_task", "run_task"]

log = logging.getLogger("mpjobs.contrib.django")

_SCAN = 10_000  # more jobs than a host's workers hold RUNNING at once
_ids: dict[str, int] = {}  # token -> job id, of this process's RUNNING Django jobs
_lock = threading.Lock()


def current_record(call: Call) -> JobRecord:
    """The job this process is running `call` for.

    A worker may hold a small batch of claimed jobs (all RUNNING, all with its pid), and
    an async worker several at once, so the job is told apart by the call's token. One
    scan of the RUNNING jobs maps the tokens of all of this process's jobs to their ids;
    the next jobs of the batch then cost one read by id each, not a scan each.
    """
    store: Store = task_backends[call.alias].app.store
    pid = os.getpid()
    for _ in range(2):
        with _lock:
            job_id = _ids.pop(call.token, None)
        if job_id is not None:
            rec = store.get(job_id)
            if rec is not None and rec.status == RUNNING and rec.pid == pid:
                return rec
        _rescan(store, pid)
    raise LookupError(f"no RUNNING job of process {pid} holds this call of {call.module_path}")


def _rescan(store: Store, pid: int) -> None:
    found = {}
    for rec in store.list_jobs(RUNNING, None, _SCAN):
        call = call_of(rec) if rec.pid == pid else None
        if call is not None:
            found[call.token] = rec.id
    with _lock:
        _ids.clear()
        _ids.update(found)


def _started(task: Any, call: Call) -> Any:
    result = result_of(task, current_record(call), call)
    _send(task_started, result)
    return result


def _finished(result: Any, exc: BaseException | None = None, value: Any = None) -> None:
    from django.utils import timezone

    set_field(result, "finished_at", timezone.now())
    if exc is None:
        set_field(result, "status", TaskResultStatus.SUCCESSFUL)
        set_field(result, "_return_value", value)
    else:
        set_field(result, "status", TaskResultStatus.FAILED)
        error = TaskError(exception_class_path=exception_path(type(exc)), traceback=_tb(exc))
        set_field(result, "errors", [*result.errors, error])
    _send(task_finished, result)


def _tb(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _send(signal: Any, result: Any) -> None:
    """Send a Django task signal; a receiver that raises is logged, not the task's fault."""
    backend = type(task_backends[result.backend])
    for receiver, response in signal.send_robust(backend, task_result=result):
        if isinstance(response, Exception):
            log.error("%r receiver %r raised %r", signal, receiver, response)


def _arguments(task: Any, result: Any, args: list[Any]) -> list[Any]:
    return [TaskContext(task_result=result), *args] if task.takes_context else args


def run_task(
    alias: str, module_path: str, args: list[Any], kwargs: dict[str, Any], token: str
) -> Any:
    """Run a sync Django task; its return value is normalised to JSON types, as Django's."""
    call = Call(alias, module_path, args, kwargs, token)
    task = load_task(module_path)
    close_old_connections()
    try:
        result = _started(task, call)
        try:
            value = normalize_json(task.func(*_arguments(task, result, args), **kwargs))
        except BaseException as exc:
            _finished(result, exc)
            raise
        _finished(result, value=value)
        return value
    finally:
        close_old_connections()


async def run_async_task(
    alias: str, module_path: str, args: list[Any], kwargs: dict[str, Any], token: str
) -> Any:
    """Run an `async def` Django task on the worker's event loop.

    Django's connections are not touched here: from async code Django's ORM runs in
    its own thread (sync_to_async), where the connections live.
    """
    call = Call(alias, module_path, args, kwargs, token)
    task = load_task(module_path)
    result = _started(task, call)
    try:
        value = normalize_json(await task.func(*_arguments(task, result, args), **kwargs))
    except BaseException as exc:
        _finished(result, exc)
        raise
    _finished(result, value=value)
    return value
