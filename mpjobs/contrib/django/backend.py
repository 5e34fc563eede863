"""`MpjobsBackend`: Django's Tasks framework, run by an mpjobs pool.

A Django task becomes one mpjobs job whose function is the small trampoline of
`runner.py`, given the task's import path (`module_path`) and its arguments: so the
workers run the code they have installed, and the result id Django hands out is the
mpjobs job id. Django's fields map onto mpjobs' as follows:

- `queue_name` is the mpjobs queue; `QUEUES` (Django's setting) lists the names allowed.
- `priority` runs larger-first from -100 to 100 in Django and lower-first in mpjobs, so
  the job's priority is its negation (mpjobs takes any int: nothing is squeezed).
- `run_after` is the job's due time.
- `mpjobs={...}` on the task (`@task(mpjobs=...)` or `task.using(mpjobs=...)`) is
  passed to `JobBuilder.options(...)` as it is, over the backend's `job_options`:
  whatever option mpjobs takes is reachable, checked by mpjobs itself, at declaration.

Enqueuing inside the caller's transaction (`enqueue_in_transaction`, PostgreSQL store
on Django's own database) writes the job on Django's connection, so it commits or
rolls back with the caller's rows; see docs/django.md.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from django.core.exceptions import ImproperlyConfigured

from mpjobs.contrib.django import registry, results
from mpjobs.contrib.django.compat import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    set_field,
    task_enqueued,
)
from mpjobs.contrib.django.results import RUN_ASYNC, RUN_SYNC, Call
from mpjobs.errors import MpjobsError
from mpjobs.scheduling.durations import parse_duration
from mpjobs.store.postgres.url import store_from

if TYPE_CHECKING:
    from mpjobs.app import App, JobBuilder

__all__ = ["BackendSettings", "MpjobsBackend", "MpjobsTask", "with_options"]

T = TypeVar("T")

# Django's own fields say these; an `mpjobs={...}` entry for them would contradict it.
_DJANGO_OWNED = {"queue": "queue_name", "priority": "priority"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class MpjobsTask(Task):  # type: ignore[misc]
    """Django's Task plus `mpjobs`: mpjobs job options (max_attempts, timeout, ...).

    The backend's `task_class`, so `@task(mpjobs={...})` (the decorator passes extra
    keywords to it) and `task.using(mpjobs={...})` both reach it.
    """

    mpjobs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def using(self, *, mpjobs: Mapping[str, Any] | None = None, **changes: Any) -> Any:
        """Django's `using(...)`, plus `mpjobs={...}` layered over this task's options."""
        task = super().using(**changes)
        if mpjobs:
            task = dataclasses.replace(task, mpjobs={**self.mpjobs, **mpjobs})
        return task


def with_options(task: Any, **options: Any) -> Any:
    """`task` with mpjobs options layered over its own: `with_options(t, timeout=30)`."""
    if not isinstance(task, MpjobsTask):
        raise TypeError(f"{task!r} is not a task of an MpjobsBackend")
    return dataclasses.replace(task, mpjobs={**task.mpjobs, **options})


@dataclasses.dataclass(frozen=True)
class BackendSettings:
    """A backend's OPTIONS, checked once, when Django builds the backend."""

    home: str | None = None
    store: str | None = None
    result_ttl: Any = "7d"
    job_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    enqueue_in_transaction: bool = False
    database: str = "default"

    @classmethod
    def parse(cls, alias: str, options: Mapping[str, Any]) -> BackendSettings:
        if not isinstance(options, Mapping):
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS'] must be a dict")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS']: unknown option(s) {unknown}; "
                f"expected some of {sorted(known)}"
            )
        settings = cls(**options)
        for name in ("home", "store"):
            value = getattr(settings, name)
            if value is not None and not isinstance(value, str):
                raise ImproperlyConfigured(
                    f"TASKS[{alias!r}]['OPTIONS'][{name!r}] must be a string, got {value!r}"
                )
        where = f"TASKS[{alias!r}]['OPTIONS']"
        if not isinstance(settings.job_options, Mapping):
            raise ImproperlyConfigured(f"{where}['job_options'] must be a dict")
        if not isinstance(settings.enqueue_in_transaction, bool):
            raise ImproperlyConfigured(f"{where}['enqueue_in_transaction'] must be True or False")
        if not isinstance(settings.database, str):
            raise ImproperlyConfigured(f"{where}['database'] must be a Django database alias")
        if settings.store is not None:
            try:
                store_from(settings.store)
            except (MpjobsError, ValueError) as exc:
                raise ImproperlyConfigured(f"{where}['store']: {exc}") from None
        if settings.result_ttl is not None:
            try:
                parse_duration(settings.result_ttl, what="result_ttl")
            except (TypeError, ValueError) as exc:
                raise ImproperlyConfigured(f"{where}['result_ttl']: {exc}") from None
        return settings


def _check_queues(alias: str, queues: Any) -> None:
    for q in queues:
        if not isinstance(q, str) or not q:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['QUEUES'] must hold non-empty strings, got {q!r}"
            )


class MpjobsBackend(BaseTaskBackend):  # type: ignore[misc]
    """Django's task backend whose workers are an mpjobs pool (`manage.py mpjobs run`)."""

    task_class = MpjobsTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        _check_queues(alias, self.queues)
        self.settings = BackendSettings.parse(alias, self.options)
        self._probe: JobBuilder[Any] | None = None

    @property
    def app(self) -> App:
        """The mpjobs App of this alias: one per process, made on first use."""
        return registry.app_for(self.alias, self.settings)

    # -- declaring -------------------------------------------------------------------

    def validate_task(self, task: Any) -> None:
        super().validate_task(task)
        self.job_options(task)

    def job_options(self, task: Any) -> dict[str, Any]:
        """The task's mpjobs options over the backend's, checked by mpjobs itself."""
        opts = {**self.settings.job_options, **getattr(task, "mpjobs", {})}
        for ours, theirs in _DJANGO_OWNED.items():
            if ours in opts:
                raise InvalidTask(
                    f"mpjobs option {ours!r} of {task.module_path}: use Django's {theirs!r} instead"
                )
        if opts:
            if self._probe is None:
                self._probe = self.app.schedule(RUN_SYNC)
            try:
                self._probe.options(**opts)
            except (TypeError, ValueError) as exc:
                raise InvalidTask(f"mpjobs options of {task.module_path}: {exc}") from exc
        return opts

    # -- enqueuing -------------------------------------------------------------------

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        now = datetime.now(timezone.utc)
        result = TaskResult(
            task=task, id="", status=results.READY, enqueued_at=now, started_at=None,
            finished_at=None, last_attempted_at=None, args=args, kwargs=kwargs,
            backend=self.alias, errors=[], worker_ids=[],
        )  # fmt: skip
        # Pushed with the arguments as Django normalised them (tuples become lists), so
        # the worker sees what a Django backend promises, whichever way they were given.
        call = Call(self.alias, task.module_path, result.args, result.kwargs, uuid.uuid4().hex)
        builder = self.app.schedule(
            RUN_ASYNC if results.is_async(task) else RUN_SYNC, *call.as_args()
        ).options(
            name=task.module_path, queue=task.queue_name, priority=-task.priority,
            **self.job_options(task),
        )  # fmt: skip
        set_field(result, "id", self._push(builder, task.run_after))
        task_enqueued.send(type(self), task_result=result)
        return result

    def _push(self, builder: JobBuilder[Any], run_after: datetime | None) -> str:
        connection = self._transaction_connection()
        if connection is not None:
            if run_after is not None:
                builder._exec_at = run_after.timestamp()  # push_many honours a builder's due time
            (job,) = self.app.push_many([builder], connection=connection)
            return job.id
        return (builder.now() if run_after is None else builder.at(run_after)).id

    def _transaction_connection(self) -> Any:
        """Django's psycopg connection while it is inside `atomic()`, if so configured."""
        if not self.settings.enqueue_in_transaction:
            return None
        from django.db import connections

        conn = connections[self.settings.database]
        if not conn.in_atomic_block:
            return None  # autocommit: the push commits at once either way
        if conn.vendor != "postgresql" or self.app.store_url is None:
            raise ImproperlyConfigured(
                f"TASKS[{self.alias!r}]: enqueue_in_transaction needs a PostgreSQL store "
                f"and Django's database {self.settings.database!r} on PostgreSQL (psycopg 3)"
            )
        conn.ensure_connection()
        raw = conn.connection
        if raw.info.transaction_status == 0:  # IDLE: atomic() has sent nothing yet
            # psycopg would make the push's transaction block a transaction of its own
            # and commit it; a first statement opens Django's, and the push nests in it.
            raw.execute("SELECT 1")
        return raw

    # -- reading ---------------------------------------------------------------------

    def get_result(self, result_id: str) -> TaskResult:
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        rec = self.app.store.get(job_id)
        call = results.call_of(rec)
        if rec is None or call is None:
            raise TaskResultDoesNotExist(result_id)
        return results.result_of(results.load_task(call.module_path), rec, call)
