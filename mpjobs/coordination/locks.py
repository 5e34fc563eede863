"""flock-based locks that the kernel releases when their holder dies.

Two rules shape this module. Lock files are never deleted while someone may hold them
(deleting one lets two processes each lock "the same" path), and a lock is never carried
across a fork: an flock belongs to the open file, so a forked child that kept the
descriptor would keep the lock alive after its parent died. Every lock we take is
registered here and closed in the child right after any os.fork().

Why not `filelock`, a runtime dependency? Its Unix lock polls with sleeps instead of
blocking in the kernel, so a waiter learns of the holder's death only at its next poll.
Leadership, liveness and the idle turn need a waiter woken the instant the holder dies,
so they use `FileLock` here. Where a short poll is fine, mpjobs uses `filelock` and its
timeouts: creating, vetting and migrating the store (`init.lock`, store/connection.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

_HELD: set[int] = set()

# A bounded wait polls: Linux has no timed flock(), and a blocking flock() can only be
# left through a signal handler that raises. The first retries come quickly, since most
# waits are for a transaction of a few hundred microseconds; the cap keeps a long wait
# cheap (a thousand wake-ups a second at most) while still handing over within ~1 ms.
POLL_FIRST = 0.00002
POLL_CAP = 0.001


def _close_held_in_child() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


class FileLock:
    """An exclusive flock on one path, held until `release()` or process death."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; with blocking=True the kernel wakes us the moment it is free.

        A blocking acquire waits in the kernel for as long as the holder keeps the lock,
        so callers that block use it only where a signal handler of theirs can end the
        wait by raising (the campaign for leadership, an idle worker's turn).
        """
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # Registered before flock(): if another thread forks while we wait, the child
        # must not keep a copy of an fd that is about to hold the lock.
        _HELD.add(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BaseException as exc:
            _HELD.discard(fd)
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                return False
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            _HELD.discard(fd)
            os.close(fd)


def flock_within(
    fd: int, deadline: float, abort: Callable[[], bool] | None = None
) -> bool:
    """Take an exclusive flock on `fd` by the monotonic `deadline`; False if we could not.

    Polls with a short back-off instead of blocking in the kernel, so the wait is bounded
    and a signal handler runs (and `abort` is asked) between tries: a process stopped
    while it holds the lock (SIGSTOP, a debugger) cannot hold anyone else forever.
    """
    delay = POLL_FIRST
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        now = time.monotonic()
        if now >= deadline or (abort is not None and abort()):
            return False
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, POLL_CAP)


def lock_holders(path: Path, kind: str | None = None, start: int | None = None) -> set[int]:
    """Pids that hold a lock on `path`, from the kernel's own table (`/proc/locks`).

    `kind` is "FLOCK", "POSIX" or "OFDLCK"; `start` picks a byte range's first byte (for
    SQLite's locks, which are byte ranges of one file). Used to name who holds a lock we
    waited too long for; empty where /proc is missing.
    """
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    ident = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    holders: set[int] = set()
    for line in lines:
        parts = line.split()
        if len(parts) < 8 or parts[1] == "->":  # "->" marks a waiter, not a holder
            continue
        lock_kind, pid, where, first = parts[1], parts[4], parts[5], parts[6]
        if (kind is not None and lock_kind != kind) or (start is not None and first != str(start)):
            continue
        try:
            major, minor, ino = where.split(":")
            if (int(major, 16), int(minor, 16), int(ino)) == ident:
                holders.add(int(pid))
        except ValueError:
            continue
    return holders


def describe_pids(pids: set[int]) -> str:
    """ "pid 42 (python -m myapp)" for an error message; "an unknown process" when none."""
    if not pids:
        return "an unknown process"
    out = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = " ".join(f.read().replace(b"\0", b" ").decode(errors="replace").split())
        except OSError:
            cmd = ""
        out.append(f"pid {pid}" + (f" ({cmd[:80]})" if cmd else ""))
    return ", ".join(out)


class LivenessLock:
    """Proof that a process is alive: a lock on a file named by its unique token.

    A pid can be reused after death; a token never is. The file is locked under a
    temporary name and only then renamed into place, so a checker never sees the final
    name unlocked while its owner is still starting.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: FileLock | None = None

    def acquire(self) -> None:
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        lock = FileLock(tmp)
        lock.acquire(blocking=False)
        os.rename(tmp, self.path)
        lock.path = self.path
        self._lock = lock

    def watch(self, on_lost: Callable[[str], None]) -> None:
        """An flock is held until this process dies or releases it: nothing to watch."""

    def renew(self) -> bool:
        return False

    def release(self) -> None:
        """Release at a clean exit; the file goes too, since its token is never used again."""
        lock, self._lock = self._lock, None
        if lock is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            lock.release()


def is_alive(path: Path) -> bool:
    """True while the process that owns the liveness file at `path` is alive.

    A dead owner's file is removed once we hold its lock: the token is unique, so no
    process will ever lock that name again, and a concurrent checker that opened it
    still reaches the same verdict.
    """
    try:
        # Read-only is enough for flock(), and works on a home that became read-only.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        with contextlib.suppress(OSError):  # gone already, or a read-only home
            os.unlink(path)
        return False
    finally:
        os.close(fd)
