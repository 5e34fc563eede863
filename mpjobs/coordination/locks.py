"""flock-based locks that the kernel releases when their holder dies.

Two rules shape this module. Lock files are never deleted while someone may hold them
(deleting one lets two processes each lock "the same" path), and a lock is never carried
across a fork: an flock belongs to the open file, so a forked child that kept the
descriptor would keep the lock alive after its parent died. Every lock we take is
registered here and closed in the child right after any os.fork().
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

_HELD: set[int] = set()


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
        """Take the lock; with blocking=True the kernel wakes us the moment it is free."""
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
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return False
    finally:
        os.close(fd)
