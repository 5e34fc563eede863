"""Running one job: the executor seam, with a one-at-a-time and an asyncio executor.

A worker's loop (claim, journal, commit) does not care how a job's function is called;
an executor does only that: load the function and its arguments, call it, turn what it
returned or raised into a `Completion`, and tell the supervisor when a limited job
starts and ends (the "S"/"E" lines of the report pipe, see supervisor.py). Nothing here
touches the store or the journal, so the rules of exactly-one-terminal-state stay in
the worker loops (worker.py for one job at a time, inflight.py for N at once).

- `SerialExecutor` runs one job at a time in the worker's main thread; a coroutine
  function's coroutine runs to completion on a private event loop. This is the
  executor of a worker with concurrency 1, unchanged from before the seam.
- `AsyncExecutor` runs jobs as tasks of one event loop, up to the worker's concurrency
  at once. Sync functions run in a thread pool of the same size, so that one blocking
  call does not stall the loop. An async job over its time limit has its task
  cancelled; the supervisor kills the worker only if the job has not finished GRACE
  seconds later (the task did not yield, or swallowed the cancellation).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mpjobs import serialization
from mpjobs.control import context, progress
from mpjobs.control.soft import ThreadAlarm, main_thread_alarm, soft_limited
from mpjobs.control.spec import Control
from mpjobs.observability.hooks import Hooks
from mpjobs.rules import outcomes
from mpjobs.store.base import SUCCESS, TIMEOUT, Completion, JobRecord, Store

GRACE = 1.5  # seconds an async job has to finish once its task is cancelled at its limit

Report = Callable[[str], None]


@dataclass
class Stats:
    """Recent run times, which the one-at-a-time loop sizes its batches by, and a count."""

    avg: float = 0.001
    durations: dict[str, float] = field(default_factory=dict)  # per task name
    jobs_done: int = 0

    def record(self, name: str, took: float) -> None:
        self.avg = 0.8 * self.avg + 0.2 * took
        self.durations[name] = 0.5 * self.durations.get(name, took) + 0.5 * took
        self.jobs_done += 1


def _load(job: JobRecord) -> tuple[Callable[..., Any], Any, Any, Control | None]:
    """The job's function, positional and keyword arguments, and control options."""
    fn = serialization.load_callable(job.func, job.func_pickle)
    if not job.payload:
        return fn, (), {}, None
    call = serialization.loads(job.payload)  # (args, kwargs[, control]): see control/spec.py
    return fn, call[0], call[1], Control(*call[2]) if len(call) > 2 else None


def _soft(control: Control | None) -> float | None:
    return None if control is None else control.soft_timeout


def _failed(job: JobRecord, exc: BaseException, control: Control | None = None) -> Completion:
    done = outcomes.from_exception(job, exc, time.time(), control)
    done.schedule_id = job.schedule_id
    return done


def _limited(job: JobRecord) -> bool:
    return job.timeout is not None or job.memory_limit is not None


def _start_line(job: JobRecord, grace: float = 0.0) -> str:
    """The report that makes the supervisor watch `job` (its deadline is timeout + grace)."""
    extra = f" {grace:g}" if grace else ""
    return f"S {os.getpid()} {job.id} {job.timeout or 0} {job.memory_limit or 0}{extra}\n"


class SerialExecutor:
    """One job at a time, in the calling thread; the supervisor enforces its limits."""

    concurrency = 1

    def __init__(self, report: Report, stats: Stats, store: Store | None = None) -> None:
        self.report = report
        self.stats = stats
        self.hooks = Hooks()  # the worker sets the app's (observability/hooks.py)
        self.store = store  # where current_job().set_progress() writes
        self._loop: asyncio.AbstractEventLoop | None = None

    def execute(self, job: JobRecord) -> Completion:
        """Run one job. This is the no-op drain's per-job path: what a plain job does not
        need (hooks nobody listens to, a soft limit, an await) costs it a test, no call."""
        hooks = self.hooks
        silent = hooks.silent()  # no hook is called for a success (hooks.py)
        if not silent:
            hooks.before(job)
        limited = job.timeout is not None or job.memory_limit is not None  # _limited
        if limited:
            self.report(_start_line(job))
        t0 = time.perf_counter()
        control: Control | None = None
        token = context.enter(job, self.store)
        try:
            fn, args, kwargs, control = _load(job)
            if control is None or control.soft_timeout is None:
                value = fn(*args, **kwargs)
            elif inspect.iscoroutinefunction(fn):
                value = soft_limited(fn(*args, **kwargs), control.soft_timeout)
            else:
                with main_thread_alarm(control.soft_timeout):
                    value = fn(*args, **kwargs)
            if value is not None and inspect.isawaitable(value):
                value = self._event_loop().run_until_complete(value)
            done = outcomes.success(job, value)
        except BaseException as exc:  # SystemExit from a job is a failure of that job
            done = _failed(job, exc, control)
        finally:
            context.leave(job, self.store, token)
            if limited:
                self.report(f"E {os.getpid()} {job.id}\n")
        took = time.perf_counter() - t0
        self.stats.record(job.name, took)
        if not silent or done.status != SUCCESS:
            hooks.after(job, done, took)
        return done

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        return self._loop

    def close(self) -> None:
        """Nothing to wait for: a job of this executor has ended when `execute` returns."""


class AsyncExecutor:
    """Up to `concurrency` jobs at once on the running event loop.

    `execute` must be awaited on that loop, one task per job. Sync functions get a
    thread of a pool of `concurrency` threads; their time limit cannot be enforced by
    cancelling (a thread cannot be interrupted), so the supervisor kills the worker at
    the deadline itself, as for a one-at-a-time worker.
    """

    def __init__(
        self, concurrency: int, report: Report, stats: Stats, store: Store | None = None
    ) -> None:
        self.concurrency = concurrency
        self.report = report
        self.stats = stats
        self.hooks = Hooks()  # the worker sets the app's (observability/hooks.py)
        self.store = store  # where current_job().set_progress() writes
        self._threads: ThreadPoolExecutor | None = None

    async def execute(self, job: JobRecord) -> Completion:
        self.hooks.before(job)
        limited = _limited(job)
        reported = False
        expired = False
        timer: asyncio.TimerHandle | None = None
        soft_timer: asyncio.TimerHandle | None = None
        control: Control | None = None
        t0 = time.perf_counter()
        token = context.enter(job, self.store)  # this task's own copy of the context
        try:
            fn, args, kwargs, control = _load(job)
            soft = _soft(control)
            is_async = inspect.iscoroutinefunction(fn)
            if limited:
                self.report(_start_line(job, GRACE if is_async and job.timeout else 0.0))
                reported = True
            if is_async:
                task = asyncio.current_task()
                if job.timeout is not None and task is not None:

                    def expire() -> None:
                        nonlocal expired
                        expired = True
                        task.cancel()

                    timer = asyncio.get_running_loop().call_later(job.timeout, expire)
                coro = fn(*args, **kwargs)
                value = await (coro if soft is None else soft_limited(coro, soft))
            else:
                loop = asyncio.get_running_loop()
                call = functools.partial(fn, *args, **kwargs)
                if soft is not None:  # see control/soft.py: an exception set in its thread
                    alarm = ThreadAlarm()
                    call = functools.partial(alarm.run, call)
                    soft_timer = loop.call_later(soft, alarm.fire)
                call = functools.partial(contextvars.copy_context().run, call)
                value = await loop.run_in_executor(self._pool(), call)
                if inspect.isawaitable(value):
                    value = await value
            done = self._timed_out(job) if expired else outcomes.success(job, value)
        except asyncio.CancelledError as exc:
            done = self._timed_out(job) if expired else _failed(job, exc, control)
        except BaseException as exc:  # SystemExit from a job is a failure of that job
            done = self._timed_out(job) if expired else _failed(job, exc, control)
        finally:
            for handle in (timer, soft_timer):
                if handle is not None:
                    handle.cancel()
            context.leave(job, self.store, token, flush=False)
            if self.store is not None and progress.pending(self.store, job.id):
                # its last progress lands before its outcome, without blocking the loop
                await asyncio.to_thread(progress.flush_pending, self.store, job.id)
            if reported:
                self.report(f"E {os.getpid()} {job.id}\n")
        took = time.perf_counter() - t0
        self.stats.record(job.name, took)
        self.hooks.after(job, done, took)
        return done

    def _timed_out(self, job: JobRecord) -> Completion:
        reason = f"time limit of {job.timeout:g} s exceeded (its task was cancelled)"
        return outcomes.failure(job, reason, time.time(), status=TIMEOUT)

    def _pool(self) -> ThreadPoolExecutor:
        """Made on first use, in the worker: no thread exists before the fork."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="mpjobs-job")
        return self._threads

    def close(self) -> None:
        """The worker loop has seen every job end, so no thread is busy: do not wait."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
