"""Wake-ups on store changes without a poll loop.

After every commit the store writes one byte to `write.lock` in the home (the "doorbell",
a file it already has open), and inotify reports that write to everyone watching the
file. So a push from any process wakes idle workers and waiters at once, for the cost
of one pwrite(). The doorbell rings only after COMMIT has returned, when the commit is
visible to every new reader; SQLite's own write to the `-wal` file comes before that
point, so watching it would wake readers too early and, at times, for nothing.

Two ways to listen: a `Watcher` is one inotify instance for one waiting thread (idle
workers, `Pool.wait_ready`); `listener.listen()` shares the process's one listener
between all its job waiters, in any thread or event loop.
Where inotify is missing (not Linux) or exhausted (EMFILE), a short poll stands in.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import select
import time
from pathlib import Path

POLL_INTERVAL = 0.05
DOORBELL = "write.lock"
_IN_MODIFY = 0x00000002
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.inotify_init1  # noqa: B018 - probe for the symbol
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()


class Watcher:
    """A readable fd that becomes ready when anything in the home is written.

    One Watcher serves one waiting thread: events are consumed by whoever reads them,
    so sharing one between threads would let one thread steal another's wake-up.
    """

    def __init__(self, directory: Path) -> None:
        self._fd = -1
        if _LIBC is None:
            return
        fd = _LIBC.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return
        if _LIBC.inotify_add_watch(fd, os.fsencode(directory / DOORBELL), _IN_MODIFY) < 0:
            os.close(fd)
            return
        self._fd = fd

    @property
    def polling(self) -> bool:
        """True when no kernel notification is available and waits fall back to polling."""
        return self._fd < 0

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> None:
        if self._fd >= 0:
            drain_pipe(self._fd)

    def wait(self, timeout: float | None, extra: tuple[int, ...] = ()) -> list[int]:
        """Block until a change, one of `extra` fds is readable, or `timeout` passes.

        Returns the ready fds (our own fd included); an empty list means the time ran out.
        Callers re-check their condition after every return: a wake-up is a hint.
        """
        fds = list(extra)
        if self._fd >= 0:
            fds.append(self._fd)
        elif timeout is None or timeout > POLL_INTERVAL:
            timeout = POLL_INTERVAL
        if timeout is not None and timeout < 0:
            timeout = 0
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return []
        if self._fd in ready:
            self.drain()
        elif self._fd < 0 and not ready:
            return [-1]
        return ready

    async def wait_async(self, timeout: float | None) -> None:
        """The event-loop version of `wait`, without a thread."""
        loop = asyncio.get_running_loop()
        if self._fd < 0:
            await asyncio.sleep(POLL_INTERVAL if timeout is None else min(timeout, POLL_INTERVAL))
            return
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_reader(self._fd, ready)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            loop.remove_reader(self._fd)
        self.drain()

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

def drain_pipe(fd: int) -> None:
    """Read and drop everything waiting on a non-blocking fd (a wake pipe, an inotify fd).

    A wake-up is only a hint to look again, so its bytes mean nothing; reading them all
    keeps the next select() from returning at once for a wake-up already handled. The fd
    must be non-blocking (every wake pipe is made by `os.pipe2(O_NONBLOCK)`), or the last
    read would block instead of raising BlockingIOError.
    """
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 65536):
            pass


def deadline_left(deadline: float | None) -> float | None:
    """Seconds until a monotonic deadline (None = forever), never negative."""
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
