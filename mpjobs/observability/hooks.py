"""Hook points in a worker, in dramatiq's middleware manner.

User code and mpjobs' own features (the job log lines, joblog.py) plug in the same way:
a `Middleware` subclass overrides the methods it needs (the base's are no-ops), or a
plain function is registered for one hook with `@app.on("after_job")`. Hooks are
registered when the app module is imported, in the process that starts the pool, so
every forked worker has them; they run in the worker, around each job it runs:

    before_job(job)             the job is about to run
    after_job(job, outcome)     it ran: outcome.status, .result or .error, .duration
    on_failure(job, outcome)    it failed for good (FAILED, TIMEOUT, PERMANENTLY_FAILED)
    on_retry(job, outcome)      it failed and runs again at outcome.retry_at
    on_worker_start(worker)     a worker booted, before its first job
    on_worker_stop(worker)      a worker stops (not called when it is killed)

A hook is isolated: one that raises is logged with its traceback on `mpjobs.hooks` and
changes nothing else, neither the job's outcome nor the other hooks, nor the worker.
Hooks run in the worker's loop thread; in a worker with concurrency N they run on its
event loop, so a hook that blocks delays the other jobs in flight.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mpjobs import serialization
from mpjobs.errors import ConfigError
from mpjobs.store.base import SCHEDULED, SUCCESS, Completion, JobRecord

log = logging.getLogger("mpjobs.hooks")
_INFO = logging.INFO
_JOBS_LOG = logging.getLogger("mpjobs.jobs")  # the built-in job log's (joblog.py)

JOB_HOOKS = ("before_job", "after_job", "on_failure", "on_retry")
WORKER_HOOKS = ("on_worker_start", "on_worker_stop")
HOOKS = JOB_HOOKS + WORKER_HOOKS
HookFn = TypeVar("HookFn", bound=Callable[..., None])


@dataclass(frozen=True, slots=True)
class JobInfo:
    """The job a hook is called for."""

    id: int
    task: str
    queue: str
    attempt: int  # 1 for the first run
    max_attempts: int
    schedule_id: str | None

    @classmethod
    def of(cls, job: JobRecord) -> JobInfo:
        return cls(job.id, job.name, job.queue, job.attempts, job.max_attempts, job.schedule_id)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended. `result` and `exception` are unpickled on first use only."""

    status: str  # the job's new status: SUCCESS, FAILED, TIMEOUT, ... or SCHEDULED (a retry)
    duration: float  # seconds the function ran
    error: str | None  # the traceback text of a failure
    retry_at: float | None  # a retry's time (epoch seconds)
    completion: Completion = field(repr=False)

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS

    @property
    def will_retry(self) -> bool:
        return self.status == SCHEDULED

    @property
    def result(self) -> Any:
        """What the function returned (None unless it succeeded)."""
        blob = self.completion.result
        return None if blob is None else serialization.loads(blob)

    @property
    def exception(self) -> BaseException | None:
        """The exception it raised, when that could be pickled and loaded again."""
        blob = self.completion.exc
        return None if blob is None else serialization.loads(blob)

    @classmethod
    def of(cls, done: Completion, duration: float) -> Outcome:
        retry_at = done.exec_at if done.status == SCHEDULED else None
        return cls(done.status, duration, done.error, retry_at, done)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """The worker a hook runs in."""

    pid: int
    slot: int
    token: str
    queues: list[str] | None
    concurrency: int

    @classmethod
    def of(cls, worker: Any) -> WorkerInfo:
        """Of a runtime.worker.Worker (not imported: the runtime depends on us, not back)."""
        return cls(os.getpid(), worker.slot, worker.token, worker.queues, worker.concurrency)


class Middleware:
    """Override the hooks you need; each one here does nothing."""

    def before_job(self, job: JobInfo) -> None:
        """The job is about to run."""

    def after_job(self, job: JobInfo, outcome: Outcome) -> None:
        """The job ran (whatever its outcome)."""

    def on_failure(self, job: JobInfo, outcome: Outcome) -> None:
        """The job failed and will not run again."""

    def on_retry(self, job: JobInfo, outcome: Outcome) -> None:
        """The job failed and runs again at `outcome.retry_at`."""

    def on_worker_start(self, worker: WorkerInfo) -> None:
        """A worker booted."""

    def on_worker_stop(self, worker: WorkerInfo) -> None:
        """A worker stops."""


class Hooks:
    """The hooks of one App: the built-in middleware first, then the user's, in order.

    Only overridden methods are kept, per hook, so a worker with no user hook pays one
    empty-list test per hook point, and the job log's own check of its logger's level.
    """

    def __init__(self, middlewares: Iterable[Middleware] = ()) -> None:
        self._fns: dict[str, list[Callable[..., None]]] = {name: [] for name in HOOKS}
        self._only_log = True
        self._success_free = True  # no before_job nor after_job hook (see `silent`)
        self.middlewares: list[Middleware] = []
        self.extend(middlewares)

    def extend(self, middlewares: Iterable[Middleware]) -> None:
        if isinstance(middlewares, Middleware):
            raise ConfigError("app.middleware() takes a list of middleware, not one")
        for mw in middlewares:
            self.add(mw)

    def decorator(self, name: str) -> Callable[[HookFn], HookFn]:
        self._check_name(name)

        def register(fn: HookFn) -> HookFn:
            self.on(name, fn)
            return fn

        return register

    def add(self, mw: Middleware) -> None:
        if not isinstance(mw, Middleware):
            raise ConfigError(
                f"a middleware must be an instance of mpjobs.Middleware, not {type(mw).__name__}"
            )
        self.middlewares.append(mw)
        for name in HOOKS:
            fn = getattr(type(mw), name)
            if fn is not getattr(Middleware, name):
                self._fns[name].append(getattr(mw, name))
        self._only_log = self._is_only_log()
        self._success_free = not (self._fns["before_job"] or self._fns["after_job"])

    def _is_only_log(self) -> bool:
        return all(
            getattr(getattr(fn, "__self__", None), "quiet_below_info", False)
            for fns in self._fns.values() for fn in fns
        )  # fmt: skip

    def on(self, name: str, fn: Callable[..., None]) -> None:
        self._check_name(name)
        if not callable(fn):
            raise ConfigError(f"a hook must be callable, got {fn!r}")
        self._fns[name].append(fn)
        self._only_log = False
        self._success_free = not (self._fns["before_job"] or self._fns["after_job"])

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in HOOKS:
            raise ConfigError(f"no hook named {name!r}; expected one of {', '.join(HOOKS)}")

    # -- called by the executors and the worker ----------------------------------------

    def silent(self) -> bool:
        """Whether a job that succeeds calls no hook at all: none is registered for
        before_job or after_job, or only the built-in job log with its INFO lines off.

        The executors ask once per job and then skip both hook points for a success,
        which is the no-op drain's case; a failure or retry always goes to `after`.
        """
        return self._success_free or (self._only_log and not _JOBS_LOG.isEnabledFor(_INFO))

    def _quiet(self) -> bool:
        """Only the built-in job log is registered and its INFO lines are off: then a job
        that succeeds gives it nothing to write, and no JobInfo need be made (the no-op
        drain's per-job cost)."""
        return self._only_log and not _JOBS_LOG.isEnabledFor(_INFO)

    def before(self, job: JobRecord) -> None:
        fns = self._fns["before_job"]
        if fns and not self._quiet():
            info = JobInfo.of(job)
            for fn in fns:
                _call("before_job", fn, info)

    def after(self, job: JobRecord, done: Completion, took: float) -> None:
        after = self._fns["after_job"]
        extra = self._fns["on_retry" if done.status == SCHEDULED else "on_failure"]
        if done.status == SUCCESS or not extra:
            extra = []
            if self._quiet():
                return
        if after or extra:
            info, outcome = JobInfo.of(job), Outcome.of(done, took)
            for fn in after:
                _call("after_job", fn, info, outcome)
            for fn in extra:
                _call("on_retry" if outcome.will_retry else "on_failure", fn, info, outcome)

    def worker(self, name: str, worker: WorkerInfo) -> None:
        for fn in self._fns[name]:
            _call(name, fn, worker)


def _call(name: str, fn: Callable[..., None], *args: Any) -> None:
    """Run one hook; whatever it raises is logged, never passed on."""
    try:
        fn(*args)
    except (Exception, SystemExit):
        log.exception("hook %s %s raised; ignored", name, getattr(fn, "__qualname__", fn))
