"""The process's shared listener: one inotify watch for every job waiter of a process.

`Job.wait()` and `wait_async()` used to open an inotify instance each; past the per-user
limit of 128 the rest polled the store, so 10,000 idle waiters used a full core. Here
all waiters of a home share one watch: whoever reads a wake-up bumps that home's
generation and wakes every waiter (threads through a Condition, each event loop through
one `call_soon_threadsafe`). A waiter alone in its process reads the fd itself; a
daemon thread starts only when two waiters overlap and stops with the last, so a
process that waited can still fork. Without inotify, one 50 ms check of the doorbell
file serves the whole process. Kept apart from notify.py (the doorbell and the
one-thread `Watcher`) because it is a small concurrent program of its own.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

# -- the process's shared listener -------------------------------------------------------
#
# A Watcher costs one inotify instance, and the kernel allows 128 per user by default:
# past that, every further waiter polled the store every 50 ms, so 10,000 idle waiters
# in one process burnt a core. Job.wait()/wait_async() therefore share one listener per
# process: one inotify fd, with one watch per home. Whoever reads a ring from it bumps
# that home's generation and wakes every waiter of the home: threads through a
# Condition, each event loop through one callback that resolves all of its futures.
# A lone waiter reads the fd itself (a thread in poll(), a coroutine through its loop's
# add_reader), so the common "push, wait" costs no thread; as soon as two waiters
# overlap, a daemon thread reads it for all of them until the last one leaves. A waiter
# records the generation *before* it checks its job, then sleeps until the generation
# moves, so a ring that lands between its check and its sleep is never lost.
from mpjobs.coordination import hub
from mpjobs.coordination.hub import _current_hub, _Runner
from mpjobs.coordination.notify import (
    POLL_INTERVAL,
)


def _capped(timeout: float | None) -> float:
    return POLL_INTERVAL if timeout is None else min(timeout, POLL_INTERVAL)


def _longest(timeout: float | None) -> float | None:
    """A lock's wait has a ceiling (`threading.TIMEOUT_MAX`); the caller's loop sleeps again."""
    return None if timeout is None else min(timeout, threading.TIMEOUT_MAX)


class Listener:
    """One waiter's share of the process's listener for one home (a context manager).

    Usage: `seen = listener.generation()`, then check your condition, then
    `listener.wait(seen, timeout)`: it returns once the home was written after `seen`
    was read, or at the timeout, or spuriously, but never sleeps through such a write.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = Path(directory)
        self._hub = _current_hub()
        self._channel = self._hub.join(self._directory)

    def generation(self) -> int:
        return self._channel.generation

    def _moved(self) -> bool:
        """True once after a fork: the listener was rebuilt, the caller must re-check."""
        if self._hub.pid == os.getpid():
            return False
        self._hub = _current_hub()
        self._channel = self._hub.join(self._directory)
        return True

    def wait(self, seen: int, timeout: float | None) -> None:
        """Sleep until the generation is no longer `seen`, or `timeout` passes."""
        if self._moved():
            return
        hub, channel = self._hub, self._channel
        with channel.changed:
            if channel.generation != seen:
                return
            alone = hub.may_read_alone(channel)
            if alone:
                hub.lone = "thread"
            hub.parked += 1
        try:
            if alone:
                hub.read_alone(timeout)
            else:
                served = hub.runner is not None or hub.start_runner()
                with channel.changed:
                    if channel.generation == seen:
                        channel.changed.wait(_longest(timeout if served else _capped(timeout)))
        finally:
            with hub.lock:
                hub.parked -= 1
                if alone:
                    hub.lone = None

    async def wait_async(self, seen: int, timeout: float | None) -> None:
        """`wait` on the running event loop, without a thread of its own."""
        if self._moved():
            return
        hub, channel = self._hub, self._channel
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with hub.lock:
            if channel.generation != seen:
                return
            channel.futures.setdefault(loop, set()).add(fut)
            alone = hub.may_read_alone(channel)
            if alone:
                hub.lone = "loop"
        if alone:
            try:
                loop.add_reader(hub.ifd, hub.read_rings)
            except NotImplementedError:  # a loop without add_reader: the thread reads
                alone = False
                with hub.lock:
                    hub.lone = None
        if not alone and hub.runner is None and not hub.start_runner():
            timeout = _capped(timeout)
        timer = None if timeout is None else loop.call_later(timeout, _settle, fut)
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            if alone:
                loop.remove_reader(hub.ifd)
            with hub.lock:
                if alone:
                    hub.lone = None
                futures = channel.futures.get(loop)
                if futures is not None:
                    futures.discard(fut)
                    if not futures:
                        del channel.futures[loop]

    def close(self) -> None:
        self._hub.leave(self._channel)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def listen(directory: Path) -> Listener:
    """Share this process's one listener on `directory`'s doorbell (see `Listener`)."""
    return Listener(directory)


def parked() -> int:
    """How many waiters of this process sleep in the listener now (for tests)."""
    current = hub._HUB
    if current is None:
        return 0
    with current.lock:
        futures = sum(len(f) for c in current.channels.values() for f in c.futures.values())
        return current.parked + futures


def foreign_thread_count() -> int:
    """Threads other than the caller, mpjobs' listener thread and its relay thread.

    The listener thread holds no lock of ours while it sleeps, and a forked child drops
    it (`_forget_hub_in_child`), so it does not make a fork unsafe; the PostgreSQL
    relay (store/postgres/relay.py) and the progress writer (control/progress.py), both marked
    `mpjobs_fork_safe`, neither. Any other
    thread may.
    """
    return len(foreign_thread_names())


def foreign_thread_names() -> list[str]:
    """The names of the threads `foreign_thread_count` counts (for error messages)."""
    me = threading.current_thread()
    return [
        t.name for t in threading.enumerate()
        if t is not me and not isinstance(t, _Runner) and not getattr(t, "mpjobs_fork_safe", False)
    ]  # fmt: skip


def safe_to_fork() -> bool:
    """True when no thread but the caller (and the listener) runs in this process."""
    return foreign_thread_count() == 0

