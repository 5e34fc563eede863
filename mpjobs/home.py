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

from mpjobs.errors import HomeError, UnsafeHomeError

DB_NAME = "mpjobs.db"


@dataclass(frozen=True)
class Home:
    """Paths inside one home; constructing it creates and vets the directory."""

    path: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> Home:
        """The home, created (0700) if needed and vetted; HomeError if it cannot be."""
        path = home_path(home)
        resolved = cls(path)
        try:
            _ensure_dir(path)
            _ensure_dir(path / "procs")
            # The doorbell must exist before anyone watches it (coordination/notify.py).
            os.close(os.open(resolved.write_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            raise HomeError(f"cannot create mpjobs home {path}: {_why(exc, path)}") from exc
        return resolved

    @classmethod
    def existing(cls, home: str | os.PathLike[str] | None = None) -> Home:
        """The home as it is, creating nothing: for commands that only look or act on rows.

        A typo in `--home` must not leave a new, empty home behind and report it empty,
        so a missing home or store is a HomeError that says so.
        """
        path = home_path(home)
        try:
            st = os.stat(path)
            has_store = (path / DB_NAME).exists()
        except FileNotFoundError:
            raise HomeError(f"no mpjobs home at {path}") from None
        except OSError as exc:
            raise HomeError(f"cannot read mpjobs home {path}: {_why(exc, path)}") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise HomeError(f"mpjobs home {path} is not a directory")
        check_not_writable_by_others(path, "mpjobs home")
        if not has_store:
            raise HomeError(f"no mpjobs store in {path} (nothing has used this home yet)")
        return cls(path)

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


def home_path(home: str | os.PathLike[str] | None = None) -> Path:
    """Where a home is, without touching it: `home`, else $MPJOBS_HOME, else ./.mpjobs."""
    raw = home if home is not None else os.environ.get("MPJOBS_HOME") or ".mpjobs"
    return Path(raw).expanduser().absolute()


def _why(exc: OSError, path: Path) -> str:
    """An OSError's reason, naming the file only when it is not the home itself."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None and Path(os.fsdecode(exc.filename)) != path:
        reason += f" ({os.fsdecode(exc.filename)})"
    return reason


def _ensure_dir(path: Path) -> None:
    """Create `path` 0700, or refuse it if someone else could write to it."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError as exc:
        if not os.path.lexists(path):
            raise  # a parent we cannot look into: an OSError for the caller to explain
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
