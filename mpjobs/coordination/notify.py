"""Wake-ups on store changes without a poll loop.

After every commit the store writes one byte to `write.lock` in the home (the "doorbell",
a file it already has open), and inotify reports that write to everyone watching the
file. So a push from any process wakes idle workers and waiters at once, for the cost
of one pwrite(). The doorbell rings only after COMMIT has returned, when the commit is
visible to every new reader; SQLite's own write to the `-wal` file comes before that
point, so watching it would wake readers too early and, at times, for nothing.

Where inotify is missing (not Linux) or exhausted (EMFILE), a short poll stands in.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import select
import struct
import threading
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
        if self._fd < 0:
            return
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass

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


# -- the process's shared listener -------------------------------------------------------
#
# A Watcher costs one inotify instance, and the kernel allows 128 per user by default:
# past that, every further waiter polled the store every 50 ms, so 10,000 idle waiters
# in one process burnt a core. Job.wait()/wait_async() therefore share one listener per
# process: one inotify fd (one watch per home), read by one daemon thread that runs only
# while somebody waits. Each ring bumps the home's generation and wakes every waiter of
# that home: threads through a Condition, each event loop through one callback that
# resolves all of that loop's futures. A waiter records the generation *before* it
# checks its job, then sleeps until the generation moves, so a ring that lands between
# its check and its sleep is never lost.

_WATCH_MASK = _IN_MODIFY | 0x00000004 | 0x00000400 | 0x00000800  # + ATTRIB, DELETE_SELF, MOVE_SELF
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_EVENT = struct.Struct("iIII")  # struct inotify_event without its name
_JOIN_TIMEOUT = 1.0  # bound on waiting for the listener thread to leave (it takes µs)


def _inotify_fd() -> int:
    if _LIBC is None:
        return -1
    return int(_LIBC.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))


def _read_all(fd: int) -> bytes:
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except (BlockingIOError, OSError):
        pass
    return b"".join(chunks)


class _Channel:
    """What this process knows about one home's doorbell."""

    __slots__ = ("changed", "doorbell", "futures", "generation", "pending", "recent", "seen", "wd")

    def __init__(self, doorbell: Path, lock: threading.Lock) -> None:
        self.doorbell = doorbell
        self.generation = 0
        self.changed = threading.Condition(lock)
        self.wd = -1  # the inotify watch; -1 = the listener polls the doorbell's mtime
        self.futures: dict[asyncio.AbstractEventLoop, set[asyncio.Future[None]]] = {}
        self.pending: set[asyncio.AbstractEventLoop] = set()  # loops with a wake queued
        self.seen: tuple[int, int] | None = None  # polling: (inode, mtime) at the last look
        self.recent = True  # polling: the last look was within a clock tick of a write


class _Runner(threading.Thread):
    """The listener thread. It owns its wake-up pipe, so a stop is never read by another."""

    def __init__(self, hub: _Hub) -> None:
        super().__init__(name="mpjobs-doorbell", daemon=True)
        self.hub = hub
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.stopping = False
        self.closed = False

    def run(self) -> None:
        self.hub._serve(self)

    def close_fds(self) -> None:
        """Close the pipe (the caller holds the hub's lock, or is a forked child)."""
        if not self.closed:
            self.closed = True
            for fd in (self.wake_r, self.wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)


class _Hub:
    """One process's listener for every home it waits on (see the comment above)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.ifd = _inotify_fd()
        self.channels: dict[Path, _Channel] = {}
        self.by_wd: dict[int, list[_Channel]] = {}
        self.users = 0
        self.parked = 0  # threads asleep in Listener.wait (futures are counted apart)
        self.runner: _Runner | None = None

    # -- joining and leaving (any thread) ----------------------------------------------

    def join(self, directory: Path) -> tuple[_Channel, bool]:
        """Count a waiter in and return its home's channel; False = no listener thread."""
        start = None
        with self.lock:
            self.users += 1
            channel = self.channels.get(directory)
            if channel is None:
                channel = self.channels[directory] = _Channel(directory / DOORBELL, self.lock)
                self._watch(channel)
            if self.runner is None:
                start = self.runner = _Runner(self)
        if start is not None:
            try:
                start.start()
            except RuntimeError:  # no thread to be had: waiters fall back to a short poll
                with self.lock:
                    if self.runner is start:
                        self.runner = None
                    start.close_fds()
                return channel, False
        return channel, True

    def leave(self) -> None:
        """Count a waiter out; the last one stops the thread and waits until it is gone,
        so a caller that forks next finds the threads it started."""
        with self.lock:
            self.users -= 1
            runner = self.runner
            if self.users > 0 or runner is None:
                return
            self.runner = None
            runner.stopping = True
            if not runner.closed:
                with contextlib.suppress(OSError):
                    os.write(runner.wake_w, b"x")
        if runner is not threading.current_thread() and runner.ident is not None:
            runner.join(_JOIN_TIMEOUT)

    def _watch(self, channel: _Channel) -> bool:
        """(Re)attach the inotify watch of a channel; the caller holds the lock."""
        if self.ifd < 0 or _LIBC is None:
            return False
        wd = int(_LIBC.inotify_add_watch(self.ifd, os.fsencode(channel.doorbell), _WATCH_MASK))
        if wd < 0:
            return False
        if channel.wd != wd:
            if channel in self.by_wd.get(channel.wd, ()):
                self.by_wd[channel.wd].remove(channel)
            channel.wd = wd
            self.by_wd.setdefault(wd, []).append(channel)
        return True

    # -- the listener thread -----------------------------------------------------------

    def _serve(self, runner: _Runner) -> None:
        poller = select.poll()
        poller.register(runner.wake_r, select.POLLIN)
        if self.ifd >= 0:
            poller.register(self.ifd, select.POLLIN)
        while True:
            with self.lock:
                if runner.stopping:
                    runner.close_fds()
                    return
                polled = [c for c in self.channels.values() if c.wd < 0]
            # No lock of ours is held while the thread sleeps.
            ready = {fd for fd, _ in poller.poll(POLL_INTERVAL * 1000 if polled else None)}
            rang: set[_Channel] = set()
            if runner.wake_r in ready:
                _read_all(runner.wake_r)
            if self.ifd in ready:
                rang |= self._events(_read_all(self.ifd))
            if polled:
                rang |= self._poll(polled)
            if rang:
                self._ring(rang)

    def _events(self, data: bytes) -> set[_Channel]:
        rang: set[_Channel] = set()
        with self.lock:
            off = 0
            while off + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, off)
                off += _EVENT.size + length
                if mask & _IN_Q_OVERFLOW:  # events were lost: everybody re-checks
                    rang.update(self.channels.values())
                    continue
                channels = list(self.by_wd.get(wd, ()))
                rang.update(channels)
                if mask & _IN_IGNORED:  # the watch is gone: poll until it can come back
                    self.by_wd.pop(wd, None)
                    for channel in channels:
                        channel.wd = -1
                elif mask & ~_IN_MODIFY:  # unlinked, moved or chmod: maybe a new file
                    for channel in channels:
                        self._watch(channel)
        return rang

    def _poll(self, polled: list[_Channel]) -> set[_Channel]:
        """Where inotify is missing, a doorbell's new mtime is the ring.

        The kernel stamps mtime with a coarse clock, so two writes within one tick
        (milliseconds; a second on some file systems) look alike: a look taken that
        close to the stamp counts as a ring at the next look too.
        """
        rang: set[_Channel] = set()
        for channel in polled:
            try:
                st = os.stat(channel.doorbell)
                look: tuple[int, int] | None = (st.st_ino, st.st_mtime_ns)
                tick = 2_000_000_000 if st.st_mtime_ns % 1_000_000_000 == 0 else 50_000_000
                recent = abs(time.time_ns() - st.st_mtime_ns) < tick
            except OSError:
                look, recent = None, False
            with self.lock:
                if look != channel.seen or channel.recent or self._watch(channel):
                    rang.add(channel)
                channel.seen, channel.recent = look, recent
        return rang

    def _ring(self, rang: set[_Channel]) -> None:
        wake: list[tuple[_Channel, asyncio.AbstractEventLoop]] = []
        with self.lock:
            for channel in rang:
                channel.generation += 1
                channel.changed.notify_all()
                for loop, futures in channel.futures.items():
                    if futures and loop not in channel.pending:
                        channel.pending.add(loop)
                        wake.append((channel, loop))
        for channel, loop in wake:  # one callback per event loop, outside our lock
            try:
                loop.call_soon_threadsafe(self._wake_loop, channel, loop)
            except RuntimeError:  # the loop is closed: its futures will never be awaited
                with self.lock:
                    channel.futures.pop(loop, None)
                    channel.pending.discard(loop)

    def _wake_loop(self, channel: _Channel, loop: asyncio.AbstractEventLoop) -> None:
        """Runs in `loop`: resolve every future of this loop waiting on `channel`."""
        with self.lock:
            channel.pending.discard(loop)
            futures = channel.futures.pop(loop, ())
        for fut in futures:
            if not fut.done():
                fut.set_result(None)

    # -- after a fork ------------------------------------------------------------------

    def abandon(self) -> None:
        """In a forked child: let go of the parent's listener without using its state.

        The thread does not exist here and the lock may have been held at the fork, so
        the lock is replaced and the descriptors are closed; the child's first waiter
        builds a new listener. (asyncio itself drops the running loop in a forked
        child, so no future of the parent's loops can be awaited here.)
        """
        self.lock = threading.Lock()
        if self.runner is not None:
            self.runner.close_fds()
            self.runner = None
        if self.ifd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.ifd)
            self.ifd = -1


_HUB: _Hub | None = None
_HUB_LOCK = threading.Lock()


def _current_hub() -> _Hub:
    global _HUB
    with _HUB_LOCK:
        if _HUB is None:
            _HUB = _Hub()
        return _HUB


def _forget_hub_in_child() -> None:
    global _HUB, _HUB_LOCK
    _HUB_LOCK = threading.Lock()
    hub, _HUB = _HUB, None
    if hub is not None:
        hub.abandon()


os.register_at_fork(after_in_child=_forget_hub_in_child)


class Listener:
    """One waiter's share of the process's listener for one home (a context manager).

    Usage: `seen = listener.generation()`, then check your condition, then
    `listener.wait(seen, timeout)`: it returns when the home was written after `seen`
    was read (or at the timeout; or spuriously), never sleeping through such a write.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = Path(directory)
        self._hub = _current_hub()
        self._channel, self._served = self._hub.join(self._directory)

    def generation(self) -> int:
        return self._channel.generation

    def _moved(self) -> bool:
        """True once after a fork: the listener was rebuilt, the caller must re-check."""
        if self._hub.pid == os.getpid():
            return False
        self._hub = _current_hub()
        self._channel, self._served = self._hub.join(self._directory)
        return True

    def _cap(self, timeout: float | None) -> float | None:
        if self._served:
            return timeout
        return POLL_INTERVAL if timeout is None else min(timeout, POLL_INTERVAL)

    def wait(self, seen: int, timeout: float | None) -> None:
        """Sleep until the generation is no longer `seen`, or `timeout` passes."""
        if self._moved():
            return
        hub, channel = self._hub, self._channel
        with channel.changed:
            if channel.generation == seen:
                hub.parked += 1
                try:
                    channel.changed.wait(self._cap(timeout))
                finally:
                    hub.parked -= 1

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
        timeout = self._cap(timeout)
        timer = None if timeout is None else loop.call_later(timeout, _settle, fut)
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            with hub.lock:
                futures = channel.futures.get(loop)
                if futures is not None:
                    futures.discard(fut)
                    if not futures:
                        del channel.futures[loop]

    def close(self) -> None:
        hub, self._served = self._hub, False
        hub.leave()

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
    hub = _HUB
    if hub is None:
        return 0
    with hub.lock:
        return hub.parked + sum(len(f) for c in hub.channels.values() for f in c.futures.values())


def foreign_thread_count() -> int:
    """Threads other than the caller and mpjobs' listener thread.

    The listener holds no lock of its own while it sleeps and a forked child drops it
    (`_forget_hub_in_child`), so it does not make a fork unsafe; any other thread might.
    """
    me = threading.current_thread()
    return sum(1 for t in threading.enumerate() if t is not me and not isinstance(t, _Runner))


def safe_to_fork() -> bool:
    """True when no thread but the caller (and the listener) runs in this process."""
    return foreign_thread_count() == 0


def deadline_left(deadline: float | None) -> float | None:
    """Seconds until a monotonic deadline (None = forever), never negative."""
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
