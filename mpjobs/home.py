"""The state directory ("home") that every process of one system shares.

Everything that coordinates processes lives here: the SQLite store, the leader lock and
one liveness lock per process. The home is the security boundary too: workers unpickle
what is in the store, so anyone who can write here can run code as the workers' user.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from mpjobs.errors import UnsafeHomeError

DB_NAME = "mpjobs.db"


@dataclass(frozen=True)
class Home:
    """Paths inside one home; constructing it creates and vets the directory."""

    path: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> Home:
        raw = home if home is not None else os.environ.get("MPJOBS_HOME") or ".mpjobs"
        path = Path(raw).expanduser().absolute()
        _ensure_dir(path)
        _ensure_dir(path / "procs")
        resolved = cls(path)
        # The doorbell must exist before anyone watches it (coordination/notify.py).
        os.close(os.open(resolved.write_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        return resolved

    @property
    def db(self) -> Path:
        return self.path / DB_NAME

    @property
    def leader_lock(self) -> Path:
        return self.path / "leader.lock"

    @property
    def leader_info(self) -> Path:
        return self.path / "leader.json"

    @property
    def pool_lock(self) -> Path:
        return self.path / "pool.lock"

    @property
    def init_lock(self) -> Path:
        return self.path / "init.lock"

    def proc_lock(self, token: str) -> Path:
        return self.path / "procs" / f"{token}.lock"

    def journal(self, token: str) -> Path:
        return self.path / "procs" / f"{token}.journal"

    def kill_note(self, token: str) -> Path:
        return self.path / "procs" / f"{token}.killed"

    @property
    def write_lock(self) -> Path:
        return self.path / "write.lock"


def _ensure_dir(path: Path) -> None:
    """Create `path` 0700, or refuse it if someone else could write to it."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError as exc:
        raise UnsafeHomeError(f"mpjobs home {path} exists and is not a directory") from exc
    check_not_writable_by_others(path, "mpjobs home")


def check_not_writable_by_others(path: Path, what: str) -> None:
    """Refuse a file or directory that group or other users can write, or that we do not own.

    Pickles in the store run code when loaded, so write access for anyone else is code
    execution as us.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeHomeError(
            f"{what} {path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            f"mpjobs stores pickles there, which run code when loaded. "
            f"Fix it with: chmod go-w {path}"
        )
    if st.st_uid != os.getuid():
        raise UnsafeHomeError(
            f"{what} {path} is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
        )
