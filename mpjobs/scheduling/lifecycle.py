"""Lifecycle tasks: a generator's setup, one tick per yield, and its cleanup.

Each task runs in a thread of its own in the process that hosts it (the leader for
scope "leader", every worker for scope "worker"), so a slow tick delays neither other
lifecycle tasks nor schedule firing. Ticks are due at start + k·every, measured from a
fixed start, so they do not drift by the time each tick takes; a tick that overruns
skips the slots it missed rather than firing them in a burst.

The runner also knows how long each task's user code (setup, a tick, cleanup) has been
running, so a leader can tell a tick that hangs from one that is merely slow and give
way (see docs/leadership.md): a thread stuck in user code cannot be stopped any other way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mpjobs.backoff import Backoff

log = logging.getLogger("mpjobs.lifecycle")

RESTART_BACKOFF = (1.0, 60.0)


@dataclass(frozen=True)
class LifecycleTask:
    fn: Callable[[], Any]
    every: float
    scope: str
    timeout: float | None = None  # leader scope: longest a tick may run; None = the bound

    def __post_init__(self) -> None:
        if self.scope not in ("leader", "worker"):
            raise ValueError(f"lifecycle scope must be 'leader' or 'worker', got {self.scope!r}")
        if not (inspect.isgeneratorfunction(self.fn) or inspect.isasyncgenfunction(self.fn)):
            raise TypeError(
                f"lifecycle task {self.name} must be a generator function (setup; yield per tick; "
                "cleanup) or an async generator function"
            )
        if self.every <= 0:
            raise ValueError(f"lifecycle task {self.name}: every must be positive")
        if self.timeout is not None:
            if self.scope != "leader":
                raise ValueError(
                    f"lifecycle task {self.name}: timeout applies to scope='leader' only"
                )
            if self.timeout <= 0:
                raise ValueError(f"lifecycle task {self.name}: timeout must be positive")

    @property
    def name(self) -> str:
        return f"{getattr(self.fn, '__module__', '?')}.{getattr(self.fn, '__qualname__', self.fn)}"


class _Stepper:
    """Drives a sync or async generator with the same three calls."""

    def __init__(self, task: LifecycleTask) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        if inspect.isasyncgenfunction(task.fn):
            self._loop = asyncio.new_event_loop()
            self._agen = task.fn()
        else:
            self._gen = task.fn()

    def step(self) -> bool:
        """Advance to the next yield; False when the generator finished on its own."""
        try:
            if self._loop is not None:
                self._loop.run_until_complete(self._agen.__anext__())
            else:
                next(self._gen)
        except (StopIteration, StopAsyncIteration):
            return False
        return True

    def close(self) -> None:
        try:
            if self._loop is not None:
                self._loop.run_until_complete(self._agen.aclose())
            else:
                self._gen.close()
        finally:
            if self._loop is not None:
                self._loop.close()


class LifecycleRunner:
    """Runs a set of lifecycle tasks until `stop()`, which runs their cleanup."""

    def __init__(self, tasks: list[LifecycleTask], default_timeout: float | None = None) -> None:
        self.tasks = tasks
        self.default_timeout = default_timeout
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # task index -> time.monotonic() when its user code now running was entered
        self._busy: dict[int, float] = {}

    def overdue(self) -> list[tuple[LifecycleTask, float, float]]:
        """(task, seconds its setup/tick/cleanup has run, its bound) for each one past it."""
        now = time.monotonic()
        out = []
        for i, since in dict(self._busy).items():  # a copy: the threads change it
            task = self.tasks[i]
            bound = task.timeout if task.timeout is not None else self.default_timeout
            if bound is not None and now - since > bound:
                out.append((task, now - since, bound))
        return out

    def start(self) -> None:
        for i, task in enumerate(self.tasks):
            t = threading.Thread(
                target=self._supervise,
                args=(i, task),
                name=f"mpjobs-lifecycle:{task.name}",
                daemon=True,
            )
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop every task and wait for its cleanup; False if one is still running."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        ended = not any(t.is_alive() for t in self._threads)
        self._threads.clear()
        return ended

    def _supervise(self, i: int, task: LifecycleTask) -> None:
        """Run the task; if it raises, log, clean up, back off and start it again."""
        backoff = Backoff(*RESTART_BACKOFF)
        while not self._stop.is_set():
            try:
                self._live(i, task)
                return
            except Exception:
                wait = backoff.next()
                log.exception("lifecycle task %s failed; restarting in %.0fs", task.name, wait)
            if self._stop.wait(wait):
                return

    def _user(self, i: int, call: Callable[[], Any]) -> Any:
        """Run user code of task `i`, noting since when, for `overdue()`."""
        self._busy[i] = time.monotonic()
        try:
            return call()
        finally:
            self._busy.pop(i, None)

    def _live(self, i: int, task: LifecycleTask) -> None:
        stepper = _Stepper(task)
        try:
            if not self._user(i, stepper.step):
                return
            start = time.monotonic()
            k = 1
            while True:
                now = time.monotonic()
                due = start + k * task.every
                if due < now:  # overran: skip the missed slots, keep the phase
                    k = math.floor((now - start) / task.every) + 1
                    due = start + k * task.every
                if self._stop.wait(due - now):
                    return
                if not self._user(i, stepper.step):
                    return
                k += 1
        finally:
            self._user(i, stepper.close)
