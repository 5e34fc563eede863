"""What the kernel says about locks and processes, for tests that check fork safety.

SQLite takes POSIX (fcntl) locks on `mpjobs.db-shm` for every open WAL connection.
Those locks belong to a process, not to a descriptor, and are not inherited by fork(),
so a process whose connection took no kernel lock has SQLite state that crossed a fork.
`/proc/locks` is the kernel's own list of every lock and its holder's pid.
"""

from __future__ import annotations

import os
from pathlib import Path

from mpjobs.coordination import locks


def lock_holders(path: Path, kind: str | None = None) -> set[int]:
    """Pids holding a lock on `path` (kind: "POSIX", "FLOCK", "OFDLCK" or None for any)."""
    return locks.lock_holders(path, kind)


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
