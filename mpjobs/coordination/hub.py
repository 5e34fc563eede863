"""The hub behind the shared listener: one inotify fd per process, one watch per home.

Split from listener.py (the waiters' side: `listen`, `Listener`) because this is the
concurrent machinery they share: the channels of each home, who reads the fd (a lone
waiter itself, or a daemon thread while waiters overlap), and dropping all of it in a
forked child.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import select
import struct
import threading
import time
from pathlib import Path

from mpjobs.coordination import notify
from mpjobs.coordination.notify import (
    _IN_CLOEXEC,
    _IN_MODIFY,
    _IN_NONBLOCK,
    DOORBELL,
    POLL_INTERVAL,
)

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

_WATCH_MASK = _IN_MODIFY | 0x4 | 0x400 | 0x800  # and IN_ATTRIB, IN_DELETE_SELF, IN_MOVE_SELF
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_EVENT = struct.Struct("iIII")  # struct inotify_event, without its name
_JOIN_TIMEOUT = 1.0  # bound on waiting for the listener thread to leave (it takes µs)
_KEEP_IDLE = 16  # homes nobody waits on whose watch is kept for the next wait


def _inotify_fd() -> int:
    if notify._LIBC is None:
        return -1
    return int(notify._LIBC.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))


def _read_all(fd: int) -> bytes:
    chunks = []
    with contextlib.suppress(OSError):  # BlockingIOError: all read
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _poll_ms(timeout: float | None) -> int | None:
    """poll() takes whole milliseconds in a C int: round up (a wait may not end early)
    and cap at about 24 days (the caller's loop sleeps again)."""
    return None if timeout is None else min(max(0, math.ceil(timeout * 1000)), 2**31 - 1)


def _pipe() -> tuple[int, int]:
    return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class _Channel:
    """What this process knows about one home's doorbell."""

    __slots__ = (
        "changed", "directory", "doorbell", "futures", "generation", "pending", "recent",
        "seen", "users", "wd",
    )  # fmt: skip

    def __init__(self, directory: Path, lock: threading.Lock) -> None:
        self.directory = directory
        self.doorbell = directory / DOORBELL
        self.users = 0  # its waiters (kept a while with none: see _Hub.idle)
        self.generation = 0
        self.changed = threading.Condition(lock)
        self.wd = -1  # the inotify watch; -1 = the listener thread polls the doorbell's mtime
        self.futures: dict[asyncio.AbstractEventLoop, set[asyncio.Future[None]]] = {}
        self.pending: set[asyncio.AbstractEventLoop] = set()  # loops with a wake-up queued
        self.seen: tuple[int, int] | None = None  # polling: (inode, mtime) at the last look
        self.recent = True  # polling: the last look was within a clock tick of a write


class _Runner(threading.Thread):
    """The listener thread. It owns its wake-up pipe, so its stop is read by nobody else."""

    def __init__(self, hub: _Hub) -> None:
        super().__init__(name="mpjobs-listener", daemon=True)
        self.hub = hub
        self.wake_r, self.wake_w = _pipe()
        self.stopping = False
        self.closed = False

    def run(self) -> None:
        self.hub._serve(self)

    def close_fds(self) -> None:
        """Close the pipe (the caller holds the hub's lock, or is a forked child)."""
        if not self.closed:
            self.closed = True
            _close(self.wake_r, self.wake_w)


class _Hub:
    """One process's listener for every home it waits on (see the comment above)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.ifd = _inotify_fd()
        self.kick_r, self.kick_w = _pipe()  # ends a lone thread's poll when another rings
        self.channels: dict[Path, _Channel] = {}
        self.by_wd: dict[int, list[_Channel]] = {}
        self.idle: dict[Path, None] = {}  # channels without waiters, oldest first
        self.users = 0  # waiters between listen() and close()
        self.parked = 0  # threads asleep in Listener.wait (futures are counted apart)
        self.runner: _Runner | None = None
        self.lone: str | None = None  # "thread" / "loop": a lone waiter reads the fd itself

    # -- joining and leaving (any thread; the caller holds no lock) ---------------------

    def join(self, directory: Path) -> _Channel:
        """Count a waiter in and return its home's channel."""
        with self.lock:
            self.users += 1
            self.idle.pop(directory, None)
            channel = self.channels.get(directory)
            if channel is None:
                channel = self.channels[directory] = _Channel(directory, self.lock)
                self._watch(channel)
            channel.users += 1
            if channel.wd < 0 and self.runner is not None:
                self._nudge(self.runner)  # it may sleep without a timeout: poll this too
            start = self.runner is None and (self.users > 1 or channel.wd < 0)
        if start:
            self.start_runner()
        return channel

    def leave(self, channel: _Channel) -> None:
        """Count a waiter out. A home nobody waits on keeps its watch for the next wait,
        up to _KEEP_IDLE homes (a process that waits on many homes in turn does not
        collect watches). The last waiter of all stops the thread and waits until it is
        gone, so that a caller that forks next finds only its own threads."""
        with self.lock:
            self.users -= 1
            channel.users -= 1
            if channel.users == 0 and self.channels.get(channel.directory) is channel:
                self.idle[channel.directory] = None
                if len(self.idle) > _KEEP_IDLE:
                    oldest = next(iter(self.idle))
                    del self.idle[oldest]
                    self._drop(self.channels[oldest])
            runner = self.runner
            if self.users > 0 or runner is None:
                return
            self.runner = None
            runner.stopping = True
            self._nudge(runner)
        runner.join(_JOIN_TIMEOUT)

    @staticmethod
    def _nudge(runner: _Runner) -> None:
        """Wake the listener thread to look at its state again (the lock is held)."""
        if not runner.closed:
            with contextlib.suppress(OSError):
                os.write(runner.wake_w, b"x")

    def start_runner(self) -> bool:
        """Make sure the listener thread runs; False if no thread could be started."""
        with self.lock:
            if self.runner is not None:
                return True
            runner = self.runner = _Runner(self)
        try:
            runner.start()
        except RuntimeError:  # no thread to be had: waiters fall back to a short poll
            with self.lock:
                if self.runner is runner:
                    self.runner = None
                runner.close_fds()
            return False
        return True

    def may_read_alone(self, channel: _Channel) -> bool:
        """Whether the one waiter of this process may read the fd itself (lock held)."""
        return self.runner is None and self.users == 1 and self.lone is None and channel.wd >= 0

    def _drop(self, channel: _Channel) -> None:
        """Forget a home nobody waits on (the lock is held)."""
        if self.channels.get(channel.directory) is channel:
            del self.channels[channel.directory]
        sharing = self.by_wd.get(channel.wd)
        if sharing is None or channel not in sharing:
            return
        sharing.remove(channel)
        if not sharing:  # another path to the same file keeps the watch
            del self.by_wd[channel.wd]
            if notify._LIBC is not None and self.ifd >= 0:
                notify._LIBC.inotify_rm_watch(self.ifd, channel.wd)

    def _watch(self, channel: _Channel) -> bool:
        """(Re)attach the inotify watch of a channel; the caller holds the lock."""
        if self.ifd < 0 or notify._LIBC is None:
            return False
        path = os.fsencode(channel.doorbell)
        wd = int(notify._LIBC.inotify_add_watch(self.ifd, path, _WATCH_MASK))
        if wd < 0:
            return False
        if channel.wd != wd:
            if channel in self.by_wd.get(channel.wd, ()):
                self.by_wd[channel.wd].remove(channel)
            channel.wd = wd
            self.by_wd.setdefault(wd, []).append(channel)
        return True

    # -- reading rings (the listener thread, or a lone waiter) -------------------------

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
                polled = [c for c in self.channels.values() if c.wd < 0 and c.users > 0]
            # No lock of ours is held while the thread sleeps.
            ready = {fd for fd, _ in poller.poll(_poll_ms(POLL_INTERVAL) if polled else None)}
            if runner.wake_r in ready:
                _read_all(runner.wake_r)
            rang = self._poll(polled) if polled else set()
            if self.ifd in ready:
                rang |= self._events(_read_all(self.ifd))
            if rang:
                self._ring(rang)

    def read_alone(self, timeout: float | None) -> None:
        """A lone thread's sleep: poll the fd itself, pass on what it reads."""
        poller = select.poll()
        poller.register(self.ifd, select.POLLIN)
        poller.register(self.kick_r, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(_poll_ms(timeout))}
        with self.lock:
            self.lone = None  # from here on, what it reads wakes it through the generation
        if self.kick_r in ready:
            _read_all(self.kick_r)
        if self.ifd in ready:
            self.read_rings()

    def read_rings(self) -> None:
        """Read what inotify holds and wake the waiters of every home that rang."""
        rang = self._events(_read_all(self.ifd))
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
                elif mask & ~_IN_MODIFY:  # unlinked, moved or chmod: perhaps a new file
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
                if self.channels.get(channel.directory) is not channel:
                    continue  # its last waiter left meanwhile
                if look != channel.seen or channel.recent or self._watch(channel):
                    rang.add(channel)
                channel.seen, channel.recent = look, recent
        return rang

    def _ring(self, rang: set[_Channel]) -> None:
        wake: list[tuple[_Channel, asyncio.AbstractEventLoop]] = []
        with self.lock:
            if self.lone == "thread":  # it sleeps in poll(), not on the Condition
                with contextlib.suppress(OSError):
                    os.write(self.kick_w, b"x")
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
        the lock is replaced and the descriptors closed; the child's first waiter builds
        a new listener. (asyncio itself drops the running loop in a forked child, so no
        future of the parent's loops is awaited here.)
        """
        self.lock = threading.Lock()
        if self.runner is not None:
            self.runner.close_fds()
            self.runner = None
        _close(self.ifd, self.kick_r, self.kick_w)
        self.ifd = self.kick_r = self.kick_w = -1


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


