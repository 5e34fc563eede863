"""The public face: App, the @app.task decorator and the builder behind `.schedule(...)`.

An App is only a name for a home plus a registry of tasks and lifecycle tasks. It opens
nothing until it is used, so creating one at import time in every web worker is free.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from mpjobs import serialization
from mpjobs.errors import ConfigError, HomeError
from mpjobs.home import Home, home_path
from mpjobs.job import Job, JobStatus
from mpjobs.limits import Limit, resolve_limits
from mpjobs.options import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    DEFAULT_RETRY_BACKOFF,
    DEFAULTS,
    JOB_OPTIONS,
    SCHEDULE_OPTIONS,
    Shape,
    check_options,
)
from mpjobs.scheduling.durations import parse_duration
from mpjobs.store import Backend, Store
from mpjobs.store.backends import open_backend
from mpjobs.store.base import NewJob
from mpjobs.store.postgres.url import STORE_ENV, redact, store_from

if TYPE_CHECKING:
    from mpjobs.pool import Pool
    from mpjobs.scheduling.lifecycle import LifecycleTask
    from mpjobs.scheduling.schedules import Schedule

P = ParamSpec("P")
R = TypeVar("R")


class App:
    """Tasks and schedules bound to one home; any number of processes may share it."""

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        store: str | None = None,
        *,
        imports: Sequence[str] = (),
        result_ttl: float | str | timedelta | None = "7d",
    ) -> None:
        """`home`: this host's state directory (default $MPJOBS_HOME, else ./.mpjobs).
        `store`: None for SQLite in the home, or a `postgresql://` URL shared by hosts
        (default $MPJOBS_STORE); see docs/multihost.md.
        `imports`: modules every worker imports at boot (where lazy tasks register).
        `result_ttl`: how long finished jobs and their results are kept before the
        leader purges them; None keeps them forever."""
        self._home_arg = home
        self._declared_home = home  # never re-pointed: what `rehome` checks against
        self._home: Home | None = None
        self._store_arg = store_from(store) if store is not None else None
        self._env_store: str | None = None  # the last $MPJOBS_STORE seen, once checked
        self._backend: Backend | None = None
        self._backend_home: Home | None = None  # the home _backend was looked up for
        self.imports = list(imports)
        self.result_ttl = None if result_ttl is None else parse_duration(result_ttl)
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.lifecycles: list[LifecycleTask] = []

    def __reduce__(self) -> tuple[Any, ...]:
        return (App, (str(self.home.path), self.store_url))

    def __repr__(self) -> str:
        home = self._home_arg or os.environ.get("MPJOBS_HOME") or ".mpjobs"
        url = self.store_url
        return f"<mpjobs.App home={home}" + ("" if url is None else f" store={redact(url)}") + ">"

    @property
    def store_url(self) -> str | None:
        """The PostgreSQL URL this app uses, or None for SQLite in the home."""
        if self._store_arg is not None:
            return self._store_arg
        env = os.environ.get(STORE_ENV) or None
        if env != self._env_store:
            self._env_store = store_from(env)
        return env

    @property
    def home(self) -> Home:
        if self._home is None:
            self._home = Home.resolve(self._home_arg)
        return self._home

    @property
    def backend(self) -> Backend:
        """What this app's processes share: store, leadership, liveness, doorbell.

        Looked up once per home the app is pointed at ($MPJOBS_STORE is read then):
        every push comes this way.
        """
        home = self._home
        if home is not None and self._backend_home is home:
            return self._backend  # type: ignore[return-value]
        backend = open_backend(self.home, self.store_url)
        self._backend, self._backend_home = backend, self._home
        return backend

    @property
    def store(self) -> Store:
        return self.backend.store

    def _rehome(self, home: str | os.PathLike[str]) -> None:
        """Point the app at `home` (`mpjobs run --home`), unless it was declared elsewhere.

        An `App(home=X)` run with `--home Y` would have half its state in each: what the
        module declared at import went to X. That is refused instead of guessed.
        """
        wanted = home_path(home)
        if self._declared_home is not None:
            declared = home_path(self._declared_home)
            if declared.resolve() != wanted.resolve():
                raise HomeError(
                    f"the app is declared with home {declared} (App(home=...)) but {wanted} "
                    "was named; name one home only"
                )
        self._home_arg, self._home = str(wanted), None

    # -- declaring -------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = DEFAULT_PRIORITY,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        timeout: float | str | timedelta | None = None,
        memory_limit: int | str | None = None,
        limits: list[Limit] | None = None,
        unique_key: str | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
        """Declare a task: `@app.task` or `@app.task(queue=..., max_attempts=...)`."""
        name = options.pop("name", None)
        check_options(options, JOB_OPTIONS)
        resolve_limits(options.get("timeout"), options.get("memory_limit"), options.get("limits"))

        def wrap(f: Callable[P, R]) -> Task[P, R]:
            task = Task(self, f, name or f"{f.__module__}.{f.__qualname__}", options)
            self.tasks[task.name] = task
            return task

        return wrap(fn) if fn is not None else wrap

    def lifecycle(
        self,
        every: float | str | timedelta,
        scope: str = "leader",
        timeout: float | str | timedelta | None = None,
    ) -> Any:
        """Declare a generator as a lifecycle task: setup, one tick per yield, cleanup.

        `timeout` (scope="leader" only) is the longest its setup, a tick or its cleanup
        may run before the leader counts as frozen and gives way; by default the leader
        bound (`MPJOBS_LEADER_TIMEOUT`, 10 s). See docs/lifecycle.md.
        """
        from mpjobs.scheduling.lifecycle import LifecycleTask

        bound = None if timeout is None else parse_duration(timeout, what="lifecycle timeout")

        def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
            self.lifecycles.append(LifecycleTask(fn, parse_duration(every), scope, bound))
            return fn

        return wrap

    def schedule(self, target: str | Callable[..., Any], *args: Any, **kwargs: Any) -> JobBuilder:
        """Build a job for an import path ('pkg.mod:func') or any picklable callable."""
        if isinstance(target, Task):
            return target.schedule(*args, **kwargs)
        if isinstance(target, str):
            serialization.split_path(target)
            return JobBuilder(self, target, None, target, args, kwargs, {})
        if not callable(target):
            raise TypeError(f"cannot schedule {target!r}: not a callable or import path")
        path, pickled = serialization.callable_ref(target)
        name = getattr(target, "__qualname__", None) or repr(target)
        return JobBuilder(self, path, pickled, name, args, kwargs, {})

    # -- pushing and reading ---------------------------------------------------------

    def push_many(self, builders: Iterable[JobBuilder], connection: Any = None) -> list[Job]:
        """Push many jobs in one transaction: all of them are committed, or none.

        `connection`: a psycopg connection of yours, on a PostgreSQL store: the jobs are
        written in *your* open transaction, so they commit (and workers are woken) with
        your own rows, or vanish with your rollback; mpjobs neither commits nor rolls
        back. See docs/multihost.md.
        """
        now = time.time()
        rows = [b.new_job(now) for b in builders]
        if not rows:
            return []
        store = self.store
        if connection is not None:
            push_in = getattr(store, "push_in", None)
            if push_in is None:
                raise ConfigError(
                    "push_many(connection=...) needs a PostgreSQL store; with SQLite "
                    "every push is its own transaction"
                )
            return [Job(store, i) for i, _ in push_in(connection, rows, now)]
        return [Job(store, i) for i, _ in store.push(rows, now)]

    def get_job(self, job_id: str | int) -> Job | None:
        try:
            jid = int(job_id)
        except (TypeError, ValueError):
            return None
        return Job(self.store, jid) if self.store.status_of(jid) is not None else None

    def jobs(
        self, status: JobStatus | str | None = None, queue: str | None = None, limit: int = 100
    ) -> list[Job]:
        st = None if status is None else JobStatus(status).value
        return [Job(self.store, r.id) for r in self.store.list_jobs(st, queue, limit)]

    def schedules(self) -> list[Schedule]:
        from mpjobs.scheduling.schedules import Schedule

        return [Schedule(self, r.id) for r in self.store.list_schedules()]

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        from mpjobs.scheduling.schedules import Schedule

        return Schedule(self, schedule_id) if self.store.get_schedule(schedule_id) else None

    # -- running ---------------------------------------------------------------------

    def run(
        self, workers: int | None = None, queues: Sequence[str] | None = None, **opts: Any
    ) -> None:
        """Run a supervisor in this process until SIGTERM/SIGINT; see Supervisor for opts."""
        from mpjobs.runtime.supervisor import Supervisor

        Supervisor(self, workers=workers, queues=queues, **opts).run()

    def start(
        self, workers: int | None = None, queues: Sequence[str] | None = None, **opts: Any
    ) -> Pool:
        """Start a supervisor in a background process and return its handle."""
        from mpjobs.pool import Pool

        return Pool.start(self, workers=workers, queues=queues, **opts)

    def dashboard(self, **opts: Any) -> Any:
        """The web dashboard as an ASGI app, to mount or serve; see mpjobs.dashboard.create."""
        from mpjobs.dashboard import create

        return create(self, **opts)

    @property
    def lifespan(self) -> Any:
        """An ASGI lifespan context (Starlette/FastAPI `lifespan=app.lifespan`)."""
        from mpjobs.contrib.asgi import lifespan_for

        return lifespan_for(self)


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

    def schedule(self, *args: P.args, **kwargs: P.kwargs) -> JobBuilder:
        path, pickled = self._ref or self.ref()
        if self._shape is None:
            self._shape = Shape.of(self.options, self.name)
        return JobBuilder(
            self.app, path, pickled, self.name, args, kwargs, self.options, self._shape
        )


class JobBuilder:
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

    def options(self, **options: Any) -> JobBuilder:
        """A copy with per-job options layered over the task's (dramatiq-style lookup)."""
        check_options(options, JOB_OPTIONS | SCHEDULE_OPTIONS)
        merged = {**self._options, **options}
        resolve_limits(merged.get("timeout"), merged.get("memory_limit"), merged.get("limits"))
        b = JobBuilder(
            self.app, self.func, self.func_pickle, self.name, self.args, self.kwargs, merged
        )
        b._exec_at = self._exec_at
        return b

    def opt(self, key: str) -> Any:
        return self._options.get(key, DEFAULTS.get(key))

    def payload(self) -> bytes | None:
        if not self.args and not self.kwargs:
            return None
        return serialization.dumps((self.args, self.kwargs), f"arguments of {self.name}")

    def new_job(
        self, now: float, exec_at: float | None = None, schedule_id: str | None = None
    ) -> NewJob:
        shape = self._shape
        if shape is None:
            shape = self._shape = Shape.of(self._options, self.name)
        when = exec_at if exec_at is not None else self._exec_at
        return NewJob(
            shape.name, self.func, self.func_pickle, self.payload(), shape.queue, shape.priority,
            now if when is None else when, shape.max_attempts, shape.retry_backoff,
            shape.timeout, shape.memory_limit, shape.unique_key, schedule_id,
            batch_key=(shape, self.func, self.func_pickle, schedule_id),
        )  # fmt: skip

    def _push(self, exec_at: float) -> Job:
        now = time.time()
        store = self.app.store
        ((job_id, _created),) = store.push([self.new_job(now, exec_at)], now)
        return Job(store, job_id)

    def now(self) -> Job:
        return self._push(time.time())

    def delay(self, delay: float | str | timedelta) -> Job:
        return self._push(time.time() + parse_duration(delay, what="delay"))

    def at(self, when: datetime) -> Job:
        """Run at `when`; a naive datetime means local time."""
        if not isinstance(when, datetime):
            raise TypeError(f"at() takes a datetime, got {when!r}")
        return self._push(when.timestamp())

    def cron(self, expr: str, tz: str | None = None) -> Schedule:
        from mpjobs.scheduling.schedules import declare
        from mpjobs.scheduling.triggers import CronTrigger

        return declare(self, CronTrigger(expr, tz))

    def every(self, interval: float | str | timedelta, start: Any = None) -> Schedule:
        from mpjobs.scheduling.schedules import declare, interval_trigger

        return declare(self, interval_trigger(interval, start))

    def daily(self, hhmm: str, tz: str | None = None) -> Schedule:
        """Every day at a wall-clock time such as '16:00'."""
        from mpjobs.scheduling.durations import parse_daily_time
        from mpjobs.scheduling.schedules import declare
        from mpjobs.scheduling.triggers import DailyTrigger

        parsed = parse_daily_time(hhmm)
        if parsed is None:
            raise ValueError(f"invalid daily time {hhmm!r}: expected HH:MM")
        return declare(self, DailyTrigger(parsed[0], parsed[1], tz))
