"""Task (a registered function) and JobBuilder (a job not yet pushed), typed end to end.

`Task[P, R]` keeps the function's parameters and return type, so `add.schedule(1, 2)`
is checked against `add`'s signature and `.now().result()` is known to return what
`add` returns (`JobBuilder[R]` -> `Job[R]`). They live apart from App (mpjobs/app.py)
so that module stays one reason to change; `mpjobs.app.Task` and `mpjobs.app.JobBuilder`
are the same classes, so code and pickles that name them there keep working.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from mpjobs import serialization
from mpjobs.errors import ConfigError
from mpjobs.job import Job
from mpjobs.options import (
    DEFAULTS,
    JOB_OPTIONS,
    SCHEDULE_OPTIONS,
    TIMING_OPTIONS,
    WORKFLOW_OPTIONS,
    Shape,
    check_options,
    check_timing,
)
from mpjobs.scheduling.durations import parse_duration
from mpjobs.store.base import NewJob

if TYPE_CHECKING:
    from mpjobs.app import App
    from mpjobs.scheduling.schedules import Schedule

__all__ = ["JobBuilder", "Task"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Task(Generic[P, R]):
    """A function registered with an App. Calling it runs it here, as if undecorated."""

    def __init__(self, app: App, fn: Callable[P, R], name: str, options: dict[str, Any]) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.options = options
        self._ref: tuple[str | None, bytes | None] | None = None
        self._shape: Shape | None = None
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<mpjobs.Task {self.name}>"

    def ref(self) -> tuple[str | None, bytes | None]:
        """How workers find this task: its import path, else its pickled function (cached)."""
        if self._ref is None:
            module, qualname = self.fn.__module__, self.fn.__qualname__
            path = f"{module}:{qualname}"
            try:
                found = module != "__main__" and serialization.resolve_path(path) is self
            except Exception:
                found = False
            self._ref = (path, None) if found else serialization.callable_ref(self.fn)
        return self._ref

    @overload
    def schedule(
        self: Task[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> JobBuilder[T]: ...

    @overload
    def schedule(self, *args: P.args, **kwargs: P.kwargs) -> JobBuilder[R]: ...

    def schedule(self, *args: P.args, **kwargs: P.kwargs) -> JobBuilder[Any]:
        """A job of this task with these arguments (checked against its signature).

        An async task's job results in what its coroutine returns, so its builder is
        typed by that (`JobBuilder[T]` for `async def f() -> T`), not by the coroutine.
        """
        path, pickled = self._ref or self.ref()
        if self._shape is None:
            self._shape = Shape.of(self.options, self.name)
        return JobBuilder(
            self.app, path, pickled, self.name, args, kwargs, self.options, self._shape
        )

    @overload
    def map(
        self: Task[P, Coroutine[Any, Any, T]],
        items: Iterable[tuple[Any, ...]],
        *,
        kwargs: Mapping[str, Any] | None = None,
        connection: Any = None,
        **options: Any,
    ) -> list[Job[T]]: ...

    @overload
    def map(
        self,
        items: Iterable[tuple[Any, ...]],
        *,
        kwargs: Mapping[str, Any] | None = None,
        connection: Any = None,
        **options: Any,
    ) -> list[Job[R]]: ...

    def map(
        self,
        items: Iterable[tuple[Any, ...]],
        *,
        kwargs: Mapping[str, Any] | None = None,
        connection: Any = None,
        **options: Any,
    ) -> list[Job[Any]]:
        """Push one job per item in one transaction, all committed or none: the bulk push.

        Each item is the tuple of one job's positional arguments (`(x,)` for one);
        `kwargs` are keyword arguments every job gets. `options` are those of
        `.options()`, for all the jobs, `delay=` and `at=` included. No builder is made
        per job: only the arguments are pickled; see docs/jobs.md#bulk-pushes.
        `connection`: a psycopg connection of yours (PostgreSQL), as for `push_many`.
        """
        from mpjobs.bulk import push_map

        return push_map(self, items, kwargs, options, connection)


class JobBuilder(Generic[R]):
    """A job not yet pushed: choose when with now/delay/at, or make it recurring."""

    __slots__ = ("_exec_at", "_options", "_shape", "app", "args", "func", "func_pickle",
                 "kwargs", "name")  # fmt: skip

    def __init__(
        self,
        app: App,
        func: str | None,
        func_pickle: bytes | None,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        shape: Shape | None = None,
    ) -> None:
        self.app = app
        self.func = func
        self.func_pickle = func_pickle
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self._options = options  # shared with the task: never mutated
        self._shape = shape
        self._exec_at: float | None = None

    def options(self, **options: Any) -> JobBuilder[R]:
        """A copy with per-job options layered over the task's (dramatiq-style lookup).

        `delay=` (seconds, "5m", timedelta) or `at=` (a datetime; also `exec_at=`) say
        when the job is due, for `push_many` and `.now()`: the delay counts from the push.
        """
        timing = None
        if not TIMING_OPTIONS.isdisjoint(options):
            timing = check_timing(options)
            options = {k: v for k, v in options.items() if k not in TIMING_OPTIONS}
        check_options(options, JOB_OPTIONS | SCHEDULE_OPTIONS | WORKFLOW_OPTIONS)
        merged = {**self._options, **options}
        if timing is not None:  # stored parsed: {"delay": seconds} or {"at": timestamp}
            merged.pop("delay", None)
            merged.pop("at", None)
            merged.update(timing)
        shape = Shape.of(merged, self.name)  # checks the merged options now, not at push
        b: JobBuilder[R] = JobBuilder(
            self.app,
            self.func,
            self.func_pickle,
            self.name,
            self.args,
            self.kwargs,
            merged,
            shape,
        )
        b._exec_at = self._exec_at
        return b

    def with_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> JobBuilder[R]:
        """A copy with other arguments, the same options and timing (for `task.map`)."""
        b: JobBuilder[R] = JobBuilder(
            self.app, self.func, self.func_pickle, self.name, args, kwargs, self._options,
            self._shape,
        )  # fmt: skip
        b._exec_at = self._exec_at
        return b

    def opt(self, key: str) -> Any:
        return self._options.get(key, DEFAULTS.get(key))

    def _shape_of(self) -> Shape:
        shape = self._shape
        if shape is None:
            shape = self._shape = Shape.of(self._options, self.name)
        return shape

    def payload(self) -> bytes | None:
        """The pickled arguments; a job with control options carries them third."""
        control = self._shape_of().control
        what = f"arguments of {self.name}"
        if control is not None:  # a plain tuple: it unpickles faster than the dataclass
            return serialization.dumps((self.args, self.kwargs, control.astuple()), what)
        if not self.args and not self.kwargs:
            return None
        return serialization.dumps((self.args, self.kwargs), what)

    def due(self, now: float) -> float:
        """When this job is due if pushed at `now`: its own time (`_exec_at`, set by
        integrations), else its `at=` or `delay=` option, else now."""
        if self._exec_at is not None:
            return self._exec_at
        o = self._options
        if "at" in o:
            return float(o["at"])
        if "delay" in o:
            return now + float(o["delay"])
        return now

    def new_job(
        self, now: float, exec_at: float | None = None, schedule_id: str | None = None
    ) -> NewJob:
        shape = self._shape_of()
        due = exec_at if exec_at is not None else self.due(now)
        job = NewJob(
            shape.name, self.func, self.func_pickle, self.payload(), shape.queue, shape.priority,
            due, shape.max_attempts, shape.retry_backoff,
            shape.timeout, shape.memory_limit, shape.unique_key, schedule_id,
            batch_key=(shape, self.func, self.func_pickle, schedule_id),
        )  # fmt: skip
        if shape.gates is not None:  # expires, rate_limit, concurrency_key (control/)
            (job.expires_at, job.concurrency_key, job.concurrency_limit, job.rate_limit,
             job.rate_period) = shape.gates.columns(due, self.args, self.kwargs)  # fmt: skip
        return job

    def _push(self, exec_at: float | None) -> Job[R]:
        if "depends_on" in self._options:  # waits for other jobs: workflows/links.py
            from mpjobs.workflows.links import push_linked

            return push_linked(self.app.store, [self], exec_at=exec_at)[0]
        now = time.time()
        store = self.app.store
        ((job_id, _created),) = store.push([self.new_job(now, exec_at)], now)
        return Job(store, job_id)

    def now(self) -> Job[R]:
        """Push it now; it is due now, or when its `delay=`/`at=` option says."""
        return self._push(None)

    def after(self, job: Job[Any]) -> Job[R]:
        """`job.then(this)`: run after `job` succeeds, with its result as first argument."""
        from mpjobs.workflows.groups import then

        return then(job, self)

    def delay(self, delay: float | str | timedelta) -> Job[R]:
        return self._push(time.time() + parse_duration(delay, what="delay"))

    def at(self, when: datetime) -> Job[R]:
        """Run at `when`; a naive datetime means local time."""
        if not isinstance(when, datetime):
            raise TypeError(f"at() takes a datetime, got {when!r}")
        return self._push(when.timestamp())

    def _recurring(self) -> None:
        """A schedule decides when its jobs are due: a job's own timing is refused."""
        if self._exec_at is not None or "delay" in self._options or "at" in self._options:
            raise ConfigError(
                f"{self.name}: delay= and at= are for one job; a schedule's trigger says "
                "when its jobs run (use .every(..., start=...) to start later)"
            )

    def cron(self, expr: str, tz: str | None = None) -> Schedule:
        from mpjobs.scheduling.schedules import declare
        from mpjobs.scheduling.triggers import CronTrigger

        self._recurring()
        return declare(self, CronTrigger(expr, tz))

    def every(self, interval: float | str | timedelta, start: Any = None) -> Schedule:
        from mpjobs.scheduling.schedules import declare, interval_trigger

        self._recurring()
        return declare(self, interval_trigger(interval, start))

    def daily(self, hhmm: str, tz: str | None = None) -> Schedule:
        """Every day at a wall-clock time such as '16:00'."""
        from mpjobs.scheduling.durations import parse_daily_time
        from mpjobs.scheduling.schedules import declare
        from mpjobs.scheduling.triggers import DailyTrigger

        self._recurring()
        parsed = parse_daily_time(hhmm)
        if parsed is None:
            raise ValueError(f"invalid daily time {hhmm!r}: expected HH:MM")
        return declare(self, DailyTrigger(parsed[0], parsed[1], tz))
