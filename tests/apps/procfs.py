"""What the kernel says about locks and processes, for tests that check fork safety.

SQLite takes POSIX (fcntl) locks on `mpjobs.db-shm` for every open WAL connection.
Those locks belong to a process, not to a descriptor, and are not inherited by fork(),
so a process whose connection took no kernel lock has SQLite state that crossed a fork.
`/proc/locks` is the kernel's own list of every lock and its holder's pid.
"""

from __future__ import annotations

import os
from pathlib import Path


def _inode(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return os.major(st.st_dev), os.minor(st.st_dev), st.st_ino


def lock_holders(path: Path, kind: str | None = None) -> set[int]:
    """Pids holding a lock on `path` (kind: "POSIX", "FLOCK", "OFDLCK" or None for any)."""
    ident = _inode(path)
    if ident is None:
        return set()
    holders: set[int] = set()
    with open("/proc/locks") as f:
        for line in f:
            parts = line.split()
            if parts and parts[1] == "->":  # a waiter, shown under the lock it waits for
                continue
            if len(parts) < 6:
                continue
            lock_kind, pid, where = parts[1], parts[4], parts[5]
            if kind is not None and lock_kind != kind:
                continue
            major, minor, ino = where.split(":")
            if (int(major, 16), int(minor, 16), int(ino)) == ident:
                holders.add(int(pid))
    return holders


def has_open(pid: int, path: Path) -> bool:
    """True if process `pid` has `path` open (by any descriptor)."""
    target = os.path.realpath(path)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False
