"""Soft time limits: `SoftTimeout` raised inside a job that has run `soft_timeout` seconds.

Three ways in, one per way a job runs (see docs/jobs.md, "Soft time limits"):

- a sync job in a worker's main thread (concurrency 1): a one-shot ITIMER_REAL whose
  SIGALRM handler raises SoftTimeout. A signal interrupts a blocking sleep or read, so
  the job sees it at once. The worker's own SIGALRM use (its idle-turn wait, worker.py)
  is never active while a job runs, and puts back whatever handler it found.
- an async job: its task is cancelled, the only safe way into a coroutine; the job may
  catch `asyncio.CancelledError` to clean up. A cancellation that ends the job is
  turned into SoftTimeout, so the job's error says which limit it hit.
- a sync job in a thread of a concurrency-N worker: SoftTimeout is set as the thread's
  asynchronous exception (PyThreadState_SetAsyncExc). Python delivers it at the next
  bytecode the thread runs: a job blocked in one long C call (a `time.sleep(60)`)
  sees it only when that call returns. The hard `timeout` stays the backstop.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from mpjobs.errors import SoftTimeout

__all__ = ["ThreadAlarm", "main_thread_alarm", "soft_limited"]

T = TypeVar("T")

# The C module signal.py wraps: its getsignal() is a lookup, where signal.getsignal()
# converts the handler to an enum by raising ValueError (microseconds, on every job).
_raw_signal: Any = importlib.import_module("_signal") if hasattr(signal, "_signal") else signal


def _message(seconds: float) -> str:
    return f"soft time limit of {seconds:g} s exceeded"


class _Alarm:
    """This process's SIGALRM handler for soft limits: installed once, armed per job.

    `signal.signal()` costs more than the rest of a no-op job (it converts handlers to
    enums, by raising), so the handler stays installed between jobs and does nothing
    unless armed. The worker's idle-turn wait (worker.py) installs its own handler and
    puts this one back after, so the two never meet; `ensure` re-installs it in a
    forked child (the pid tells) and whenever someone else's handler replaced it.
    """

    armed: float | None = None  # the armed limit, seconds
    pid = 0

    @classmethod
    def on_alarm(cls, signum: int, frame: Any) -> None:
        seconds = cls.armed
        if seconds is not None:
            cls.armed = None  # raise once only: the way out must not be interrupted
            raise SoftTimeout(_message(seconds))

    @classmethod
    def ensure(cls) -> None:
        if cls.pid != os.getpid() or _raw_signal.getsignal(signal.SIGALRM) != cls.on_alarm:
            signal.signal(signal.SIGALRM, cls.on_alarm)
            cls.pid = os.getpid()


@contextmanager
def main_thread_alarm(seconds: float) -> Iterator[None]:
    """Raise SoftTimeout in this (the main) thread `seconds` from now, unless left first.

    The handler raises only while the block is armed, so an alarm that fires while the
    block is being left cannot escape into the worker's own code.
    """
    _Alarm.ensure()
    _Alarm.armed = seconds
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        try:
            _Alarm.armed = None
        finally:  # the handler raises at most once: this part always runs to the end
            signal.setitimer(signal.ITIMER_REAL, 0)


async def soft_limited(coro: Coroutine[Any, Any, T], seconds: float) -> T:
    """Await `coro` in this task; cancel the task after `seconds`, reported as SoftTimeout."""
    task = asyncio.current_task()
    fired = False

    def fire() -> None:
        nonlocal fired
        fired = True
        if task is not None:
            task.cancel("mpjobs soft_timeout")

    handle = asyncio.get_running_loop().call_later(seconds, fire)
    try:
        return await coro
    except asyncio.CancelledError:
        if fired:
            raise SoftTimeout(_message(seconds) + " (its task was cancelled)") from None
        raise
    finally:
        handle.cancel()


class ThreadAlarm:
    """Runs a sync job in a pool thread and can raise SoftTimeout into it while it runs."""

    __slots__ = ("_done", "_lock", "_tid")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tid: int | None = None
        self._done = False

    def run(self, fn: Callable[[], T]) -> T:
        """Call `fn` in this thread (the pool's), open to `fire` until it returns."""
        with self._lock:
            self._tid = threading.get_ident()
        try:
            return fn()
        finally:
            with self._lock:  # an exception set just before this is raised here, in run
                self._done = True

    def fire(self) -> None:
        """Called from the event loop at the soft limit: no effect once `fn` returned."""
        with self._lock:
            if self._tid is not None and not self._done:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._tid), ctypes.py_object(SoftTimeout)
                )
