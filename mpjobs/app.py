"""The public face: App, the @app.task decorator and the builder behind `.schedule(...)`.

An App is only a name for a home plus a registry of tasks and lifecycle tasks. It opens
nothing until it is used, so creating one at import time in every web worker is free.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from mpjobs import serialization
from mpjobs.bulk import batch_of, gc_paused, handles, pusher
from mpjobs.errors import ConfigError, HomeError
from mpjobs.home import Home, home_path
from mpjobs.job import Job, JobStatus
from mpjobs.limits import Limit
from mpjobs.observability.hooks import HookFn, Hooks, Middleware
from mpjobs.observability.joblog import JobLog
from mpjobs.options import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    DEFAULT_RETRY_BACKOFF,
    JOB_OPTIONS,
    Shape,
    check_options,
)
from mpjobs.scheduling.durations import parse_duration
from mpjobs.store import Backend, Store
from mpjobs.store.backends import open_backend
from mpjobs.store.base import NewJob
from mpjobs.store.postgres.url import STORE_ENV, redact, store_from
from mpjobs.tasks import JobBuilder, Task

if TYPE_CHECKING:
    from mpjobs.pool import Pool
    from mpjobs.scheduling.lifecycle import LifecycleTask
    from mpjobs.scheduling.schedules import Schedule
    from mpjobs.workflows import Group

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["App", "JobBuilder", "Task"]  # Task, JobBuilder: see mpjobs/tasks.py


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
        self.hooks = Hooks([JobLog()])  # run in the workers: observability/hooks.py

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
        expires: float | str | timedelta | datetime | None = None,
        rate_limit: str | None = None,
        concurrency_key: str | Callable[..., str] | None = None,
        concurrency_limit: int | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        dont_retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        soft_timeout: float | str | timedelta | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
        """Declare a task: `@app.task` or `@app.task(queue=..., max_attempts=...)`."""
        name = options.pop("name", None)
        check_options(options, JOB_OPTIONS)
        Shape.of(options, "")  # every check (limits, control) now, at the decorator

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

    def on(self, hook: str) -> Callable[[HookFn], HookFn]:
        """Register a function for one hook point: `@app.on("after_job")`.

        The hook points and what they are given: docs/observability.md."""
        return self.hooks.decorator(hook)

    def middleware(self, middlewares: Iterable[Middleware]) -> None:
        """Add `Middleware` instances, whose hooks run in this order in every worker."""
        self.hooks.extend(middlewares)

    def schedule(
        self, target: str | Callable[..., Any], *args: Any, **kwargs: Any
    ) -> JobBuilder[Any]:
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

    def push_many(
        self, builders: Iterable[JobBuilder[Any]], connection: Any = None
    ) -> list[Job[Any]]:
        """Push many jobs in one transaction: all of them are committed, or none.

        Each job is due when its builder says: now, or its `.options(delay=...)` or
        `.options(at=...)`. A bulk push of one task's jobs is faster still with
        `task.map` (no builder per job); see docs/jobs.md#bulk-pushes.

        `connection`: a psycopg connection of yours, on a PostgreSQL store: the jobs are
        written in *your* open transaction, so they commit (and workers are woken) with
        your own rows, or vanish with your rollback; mpjobs neither commits nor rolls
        back. See docs/multihost.md.
        """
        builders = list(builders)
        if _waits(builders):  # some depend on others: workflows/
            if connection is not None:
                raise ConfigError("jobs with depends_on cannot be pushed with connection=...")
            from mpjobs.workflows.links import push_linked

            return push_linked(self.store, builders)
        if not builders:
            return []
        store = self.store
        push = pusher(store, connection)
        with gc_paused():  # see mpjobs/bulk.py
            now = time.time()
            # Plain builders go as runs of alike jobs (mpjobs/bulk.py), others one by one.
            rows: Sequence[NewJob] | None = batch_of(builders, now)
            if rows is None:
                rows = [b.new_job(now) for b in builders]
            return handles(store, push(rows, now))

    def group(self, builders: Iterable[JobBuilder[Any]]) -> Group:
        """Push jobs as a group, in one transaction; see docs/workflows.md."""
        from mpjobs.workflows.groups import push_group

        return push_group(self, builders)

    def get_group(self, group_id: str) -> Group | None:
        """The group of that id, from any process; None if there is none."""
        from mpjobs.workflows.groups import get_group

        return get_group(self, group_id)

    def get_job(self, job_id: str | int) -> Job[Any] | None:
        try:
            jid = int(job_id)
        except (TypeError, ValueError):
            return None
        return Job(self.store, jid) if self.store.status_of(jid) is not None else None

    def jobs(
        self, status: JobStatus | str | None = None, queue: str | None = None, limit: int = 100
    ) -> list[Job[Any]]:
        st = None if status is None else JobStatus(status).value
        return [Job(self.store, i) for i in self.store.job_ids(st, queue, limit)]

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


def _waits(builders: list[JobBuilder[Any]]) -> bool:
    """Whether a job of `builders` depends on others (checked per push: cheap)."""
    return any("depends_on" in b._options for b in builders)
