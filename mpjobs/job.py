"""The Job handle: a cheap, picklable reference to one row of the store.

A handle holds only the home and the id, and reads everything fresh, so any process can
hold one and they never disagree. Waiting sleeps on the home's change notifications,
through one listener per process, instead of polling the store.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from mpjobs import serialization
from mpjobs.coordination.notify import deadline_left
from mpjobs.coordination.processes import poke_supervisor_of
from mpjobs.errors import (
    JobCancelledError,
    JobFailedError,
    JobNotCompletedError,
    MpjobsError,
    NotFoundError,
    WaitTimeout,
)
from mpjobs.home import Home
from mpjobs.scheduling.triggers import CronTrigger, trigger_from_spec
from mpjobs.store.backend import Doorbell, Listener
from mpjobs.store.backends import open_backend
from mpjobs.store.base import JobRecord, JobStatus, Store
from mpjobs.store.postgres.url import redact

if TYPE_CHECKING:
    from mpjobs.scheduling.schedules import Schedule
    from mpjobs.tasks import JobBuilder

__all__ = ["Job", "JobStatus"]

R = TypeVar("R")

# The Schedule handle of a job's schedule, made from (store, schedule id). Set once by
# mpjobs/__init__.py: scheduling/schedules.py imports this module (Schedule.jobs() makes
# Jobs), so this module must not import it back, not even in a function body.
schedule_handle: Callable[[Store, str], Schedule] | None = None


def _reopen(home: str, job_id: str, url: str | None = None) -> Job[Any]:
    return Job(open_backend(Home.resolve(home), url).store, job_id)


def _aware(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, tz=timezone.utc)


class Job(Generic[R]):
    """A handle to one job. Equal handles name the same job in the same home.

    `Job[R]` is typed by what the task returns (`Task[P, R].schedule(...).now()`), so
    `result()` is known to return R; a handle got by id (`app.get_job`) is `Job[Any]`.
    """

    __slots__ = ("_store", "id")

    def __init__(self, store: Store, job_id: int | str) -> None:
        self._store = store
        self.id = str(job_id)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (str(self._store.home.path), self.id, self._store.url))

    def _key(self) -> tuple[str, object, str | None]:
        return (self.id, self._store.home.path, self._store.url)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _where(self) -> str:
        url = self._store.url
        return str(self._store.home.path) if url is None else redact(url)

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.status.value}>"

    # -- reading ---------------------------------------------------------------------

    def _record(self) -> JobRecord:
        rec = self._store.get(int(self.id))
        if rec is None:
            raise NotFoundError(f"job {self.id} no longer exists in {self._where()}")
        return rec

    @property
    def status(self) -> JobStatus:
        status = self._store.status_of(int(self.id))
        if status is None:
            raise NotFoundError(f"job {self.id} no longer exists in {self._where()}")
        return JobStatus(status)

    @property
    def name(self) -> str:
        return self._record().name

    @property
    def exec_at(self) -> datetime:
        return datetime.fromtimestamp(self._record().exec_at, tz=timezone.utc)

    @property
    def attempts(self) -> int:
        return self._record().attempts

    @property
    def queue(self) -> str:
        return self._record().queue

    @property
    def priority(self) -> int:
        return self._record().priority

    @property
    def unique_key(self) -> str | None:
        return self._record().unique_key

    @property
    def error(self) -> str | None:
        return self._record().error

    @property
    def schedule_id(self) -> str | None:
        return self._record().schedule_id

    @property
    def created_at(self) -> datetime:
        """When the job was pushed (an aware UTC datetime)."""
        return datetime.fromtimestamp(self._record().created_at, tz=timezone.utc)

    @property
    def started_at(self) -> datetime | None:
        """When its latest attempt started, None before the first (aware, UTC)."""
        return _aware(self._record().started_at)

    @property
    def finished_at(self) -> datetime | None:
        """When it reached a terminal state, None until then (aware, UTC)."""
        return _aware(self._record().finished_at)

    def _call(self) -> tuple[Any, ...]:
        """(args, kwargs[, control]) unpickled here: they are the caller's own data."""
        payload = self._record().payload
        return tuple(serialization.loads(payload)) if payload else ((), {})

    @property
    def args(self) -> tuple[Any, ...]:
        """The positional arguments the job was pushed with (unpickled in this process)."""
        return tuple(self._call()[0])

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments the job was pushed with (unpickled in this process)."""
        return dict(self._call()[1])

    @property
    def progress(self) -> float | None:
        """The last value its job gave `current_job().set_progress()`, read fresh."""
        got = self._store.progress_of(int(self.id))
        return None if got is None else got[0]

    @property
    def meta(self) -> dict[str, Any] | None:
        """The last `meta` its job gave `set_progress()`, read fresh (a JSON dict)."""
        got = self._store.progress_of(int(self.id))
        return None if got is None else got[1]

    @property
    def schedule(self) -> Schedule | None:
        """The Schedule that fired this job; None for a one-off job or a removed schedule."""
        sid = self.schedule_id
        if sid is None or self._store.get_schedule(sid) is None or schedule_handle is None:
            return None
        return schedule_handle(self._store, sid)

    @property
    def cron_expression(self) -> str | None:
        """The cron string of the schedule that fired it (Jobber's field); None for a
        one-off job, an interval schedule, or a schedule removed since."""
        sid = self.schedule_id
        rec = None if sid is None else self._store.get_schedule(sid)
        if rec is None:
            return None
        trigger = trigger_from_spec(json.loads(rec.trigger))
        return trigger.expr if isinstance(trigger, CronTrigger) else None

    def is_done(self) -> bool:
        return self.status.is_terminal

    # -- waiting ---------------------------------------------------------------------

    def _doorbell(self) -> Doorbell:
        """The home's change notification, from its backend (the one of this store)."""
        return open_backend(self._store.home, self._store.url).doorbell

    def _sleeps(
        self, listener: Listener, timeout: float | None
    ) -> Iterator[tuple[int, float | None]]:
        """Until done, yield (the doorbell's generation, seconds left) to sleep on.

        The one waiting loop behind `wait` and `wait_async`, which differ only in how
        they sleep. The generation is read before the status, so a commit that lands
        after the check has moved it and the sleep returns at once: no lost wake-up.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seen = listener.generation()
            if self.is_done():
                return
            left = deadline_left(deadline)
            if left == 0:
                raise WaitTimeout(f"job {self.id} not done after {timeout} s")
            yield seen, left

    def wait(self, timeout: float | None = None) -> Job[R]:
        """Block until the job is in a terminal state; raise WaitTimeout after `timeout` s.

        All waiters of a process share one listener (the backend's doorbell), so an idle
        waiter costs a sleeping thread or future, not an inotify instance or a poll.
        """
        if not self.is_done():
            with self._doorbell().listen() as listener:
                for seen, left in self._sleeps(listener, timeout):
                    listener.wait(seen, left)
        return self

    async def wait_async(self, timeout: float | None = None) -> Job[R]:
        """`wait` for asyncio code: sleeps on the event loop, never blocks it."""
        if not self.is_done():
            with self._doorbell().listen() as listener:
                for seen, left in self._sleeps(listener, timeout):
                    await listener.wait_async(seen, left)
        return self

    # -- outcome ---------------------------------------------------------------------

    def result(self) -> R:
        """Its return value once SUCCESS; raises for any other state (see docs/jobs.md)."""
        rec = self._record()
        status = JobStatus(self._store.status_of(int(self.id)) or rec.status)
        if status is JobStatus.SUCCESS:
            return cast(R, None if rec.result is None else serialization.loads(rec.result))
        if status is JobStatus.CANCELLED:
            raise JobCancelledError(f"job {self.id} was cancelled")
        if not status.is_terminal:
            raise JobNotCompletedError(f"job {self.id} is {status.value}, not done")
        original: BaseException | None = None
        if rec.exc is not None:
            try:
                loaded = serialization.loads(rec.exc)
                original = loaded if isinstance(loaded, BaseException) else None
            except Exception:
                original = None
        last = (rec.error or "").strip().splitlines()
        raise JobFailedError(
            f"job {self.id} ({rec.name}) ended {status.value}: {last[-1] if last else ''}",
            status=status.value,
            original=original,
            remote_traceback=rec.error,
        ) from original

    # -- control ---------------------------------------------------------------------

    def cancel(self, terminate: bool = False) -> bool:
        """Cancel a waiting job; with terminate=True also stop a running one.

        A running job is stopped by its supervisor, which kills and replaces the worker:
        only the parent of a process can signal it without racing pid reuse.
        """
        done, owner = self._store.cancel(int(self.id), terminate, time.time())
        if owner is not None:
            poke_supervisor_of(open_backend(self._store.home, self._store.url), owner)
        return done

    async def cancel_async(self, terminate: bool = False) -> bool:
        return await asyncio.to_thread(self.cancel, terminate)

    # -- workflows -------------------------------------------------------------------

    def then(self, builder: JobBuilder[Any]) -> Job[Any]:
        """Push `builder`'s job to run after this one succeeds, with its result as first
        argument (a chain: `a.then(b).then(c)`); see docs/workflows.md."""
        return builder.after(self)  # the builder side knows workflows (no import cycle)

    def retry(self) -> Job[R]:
        """Queue a finished job again with fresh attempts, as `mpjobs jobs retry` does.

        Raises MpjobsError if the job is not finished (a waiting or running job needs
        no retry), and StoreError if another live job has taken its unique key since.
        """
        if not self._store.retry(int(self.id), time.time()):
            raise MpjobsError(
                f"cannot retry job {self.id}: it is {self.status.value}, not finished"
            )
        return self
