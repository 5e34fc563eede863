"""A throwaway PostgreSQL server for the test suite and the benchmarks.

Why a harness of our own rather than pgserver's PostgresServer: the PostgreSQL backend is tested
over TCP (and across a network namespace, see tests/netns.py), and PostgresServer listens on no
TCP port. We only borrow the server binaries the `pgserver` wheel bundles (PostgreSQL 16), so a
plain `pip install -e '.[dev]'` is enough to run the PostgreSQL tests; a system PostgreSQL is the
fallback.

    cluster = PgCluster(tmp_path / "pg")   # not started
    cluster.start()                        # initdb if needed, then start on 0.0.0.0:<free port>
    psycopg.connect(cluster.url())         # "postgresql://postgres@127.0.0.1:PORT/postgres"
    cluster.restart()                      # pg_ctl restart -m fast; returns once it accepts again
    cluster.stop()                         # idempotent

`cluster_for_session()` gives one started cluster per process, stopped at exit.

initdb and postgres refuse to run as root, and tests here run as root: then every server command
runs as the unprivileged system user `mpjobs-pg` (created on first use), which owns the data
directory. Authentication is `trust` everywhere: these servers hold test data only.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "PG_USER",
    "SYSTEM_USER",
    "PgCluster",
    "cluster_for_session",
    "find_bindir",
    "pg_unavailable",
    "require_pg",
]

# The database superuser initdb creates (not a system account).
PG_USER = "postgres"
# The system account the server runs as when we are root (initdb/postgres refuse root).
SYSTEM_USER = "mpjobs-pg"
# How long start/restart/stop may take before we give up with the log tail.
READY_TIMEOUT = 30.0
# A unix socket path is limited to 107 bytes; past this the socket goes to a short dir in /tmp.
_MAX_SOCKET_DIR = 80
_REQUIRED = ("initdb", "pg_ctl", "postgres", "pg_isready")
# Where Debian/Ubuntu put each PostgreSQL major version's server binaries (<version>/bin).
SYSTEM_ROOT = Path("/usr/lib/postgresql")


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _REQUIRED)


def _version_key(path: Path) -> tuple[int, ...]:
    """`/usr/lib/postgresql/16/bin` -> (16,), so 16 sorts above 9.6."""
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres.

    Order: the pgserver wheel (a known PostgreSQL 16, installed by the dev extra), then the
    highest /usr/lib/postgresql/*/bin, then `pg_config --bindir`. The pgserver package is only
    located, not imported: importing it runs platformdirs set-up we do not need.
    """
    looked: list[str] = []
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "pginstall" / "bin"
            if _has_binaries(candidate):
                return candidate
            looked.append(str(candidate))
    else:
        looked.append("the pgserver package (not installed)")
    system = sorted(SYSTEM_ROOT.glob("*/bin"), key=_version_key, reverse=True)
    for candidate in system:
        if _has_binaries(candidate):
            return candidate
    looked.append(f"{SYSTEM_ROOT}/*/bin")
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _has_binaries(Path(out)):
            return Path(out)
        looked.append(f"pg_config --bindir ({out or 'failed'})")
    else:
        looked.append("pg_config on PATH (absent)")
    raise RuntimeError(
        "no PostgreSQL server binaries (" + ", ".join(_REQUIRED) + ") found; looked in: "
        + "; ".join(looked)
        + ". Install the dev extra (pgserver wheel) or a postgresql package."
    )


def pg_unavailable() -> str | None:
    """None if a cluster can be started here, else why not (for a skip message)."""
    try:
        find_bindir()
    except RuntimeError as exc:
        return str(exc)
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed (pip install -e '.[dev]')"
    return None


def require_pg() -> None:
    """Skip the calling test when PostgreSQL is unavailable, but fail it under CI.

    CI must run the PostgreSQL tests: a silent skip there would hide a broken install.
    """
    import pytest

    reason = pg_unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but PostgreSQL is unavailable: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port nobody listens on now (the server may still lose a race; start() retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


_user_lock = threading.Lock()


def _ensure_system_user() -> pwd.struct_passwd:
    """The unprivileged account to run the server as, created if missing.

    Parallel test processes may race to create it: a file lock serialises them, and a failed
    useradd is forgiven when the account exists afterwards.
    """
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SYSTEM_USER)
    with _user_lock, open(os.path.join(tempfile.gettempdir(), ".mpjobs-pg-useradd.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(SYSTEM_USER)
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        done = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            capture_output=True, text=True, timeout=30,
        )
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise RuntimeError(
                f"could not create system user {SYSTEM_USER}: {done.stderr.strip()}"
            ) from None


def _make_traversable(path: Path) -> None:
    """Let any user pass through `path` and its ancestors (o+x), e.g. pytest's 0700 tmp dirs."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            p.chmod(mode | stat.S_IXOTH)


def _remove_at_exit(path: Path) -> None:
    """Remove `path` when this process exits; a forked child's exit leaves it alone."""
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (ours or, as root, another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PgCluster:
    """One PostgreSQL server with its data directory under `base_dir`.

    Listens on every IPv4/IPv6 address (so a network namespace can reach it) on a free port,
    and on a unix socket in `socket_dir`. fsync is off unless asked for: tests need speed, not
    crash durability of the machine; benchmarks pass fsync=True for honest figures.
    `settings` adds or overrides server settings (`-c name=value`).
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        fsync: bool = False,
        settings: Mapping[str, str] | None = None,
        bindir: Path | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self._root = self.base_dir  # where the server's own files are: see _prepare_dirs
        self.fsync = fsync
        self.settings: dict[str, str] = dict(settings or {})
        self._bindir = bindir
        self._port: int | None = None
        self._socket_dir: Path | None = None
        self._own_socket_dir = False
        self._lock = threading.RLock()

    # -- facts -------------------------------------------------------------------------------

    @property
    def datadir(self) -> Path:
        return self._root / "data"

    @property
    def log_path(self) -> Path:
        return self._root / "postgres.log"

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the cluster has not been started")
        return self._port

    @property
    def socket_dir(self) -> Path:
        """The directory of the unix socket (pass as host= to connect through it)."""
        if self._socket_dir is None:
            raise RuntimeError("the cluster has not been started")
        return self._socket_dir

    @property
    def pid(self) -> int:
        """The postmaster's pid (a new one after restart())."""
        pid = self._read_pid()
        if pid is None:
            raise RuntimeError(f"the cluster in {self.datadir} is not running")
        return pid

    @property
    def running(self) -> bool:
        pid = self._read_pid()
        return pid is not None and pid_alive(pid)

    def url(self, dbname: str = "postgres", host: str = "127.0.0.1") -> str:
        """A libpq URL for `dbname`; `host` may be an address or a socket directory (a path)."""
        if host.startswith("/"):
            return f"postgresql://{PG_USER}@/{dbname}?host={quote(host, safe='/')}&port={self.port}"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"postgresql://{PG_USER}@{host}:{self.port}/{dbname}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """initdb unless the data directory holds a cluster, then start and wait until ready."""
        with self._lock:
            if self.running:
                return
            self._prepare_dirs()
            if not (self.datadir / "PG_VERSION").exists():
                self._initdb()
            self._write_hba()
            last = ""
            for attempt in range(5):
                # Keep the port across stop()/start(): a test that takes the server away and
                # brings it back expects the URLs it handed out to work again.
                if self._port is None or attempt > 0:
                    self._port = free_port()
                done = self._pg_ctl(["start", "-l", str(self.log_path), "-o", self._options()])
                if done.returncode == 0:
                    self._wait_accepting("start")
                    return
                last = self._failure("pg_ctl start", done)
                if "could not bind" not in self.log_tail(50) and "in use" not in last:
                    break
            raise RuntimeError(last)

    def restart(self, mode: str = "fast") -> None:
        """Restart (pg_ctl restart -m MODE): sessions are ended, data stays; returns when ready."""
        with self._lock:
            done = self._pg_ctl(
                ["restart", "-m", mode, "-l", str(self.log_path), "-o", self._options()]
            )
            if done.returncode != 0:
                raise RuntimeError(self._failure("pg_ctl restart", done))
            self._wait_accepting("restart")

    def stop(self) -> None:
        """Stop the server; nothing to do if it is not running. Escalates to SIGKILL if stuck."""
        with self._lock:
            if self.running:
                done = self._pg_ctl(["stop", "-m", "fast"])
                if done.returncode != 0 and self.running:
                    self._pg_ctl(["stop", "-m", "immediate"])
                pid = self._read_pid()
                if pid is not None and self.running:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            if self._own_socket_dir and self._socket_dir is not None:
                shutil.rmtree(self._socket_dir, ignore_errors=True)
                self._socket_dir = None
                self._own_socket_dir = False

    def create_database(self, name: str) -> str:
        """CREATE DATABASE name; returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(dbname=name)

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PgCluster({self.base_dir}, port={self._port})"

    # -- internals ---------------------------------------------------------------------------

    def _run_as(self) -> pwd.struct_passwd | None:
        return _ensure_system_user() if os.geteuid() == 0 else None

    def _prepare_dirs(self) -> None:
        """Data dir, log and socket dir owned by the server's user, reachable through /tmp.

        Run as root, the server runs as its own user, who must pass through every directory
        above its data. Under pytest's tmp_path that cannot last: each pytest session that
        starts takes o+x off /tmp/pytest-of-root again, and a server of another session
        then fails on its next file open. So its files go in a directory of their own in
        /tmp, linked from `base_dir`, and removed when the process that made it exits.
        """
        self.base_dir.mkdir(parents=True, exist_ok=True)
        user = self._run_as()
        if user is not None and self._root == self.base_dir:
            self._root = Path(tempfile.mkdtemp(prefix="mpjpg-"))
            self._root.chmod(0o711)
            with contextlib.suppress(OSError):
                (self.base_dir / "server").symlink_to(self._root)
            _remove_at_exit(self._root)
        self.datadir.mkdir(exist_ok=True)
        self.datadir.chmod(0o700)
        self.log_path.touch()
        socket_dir = self._root / "sock"
        if len(str(socket_dir)) <= _MAX_SOCKET_DIR:
            socket_dir.mkdir(exist_ok=True)
            self._own_socket_dir = False
        else:
            socket_dir = Path(tempfile.mkdtemp(prefix="mpjpg-"))
            self._own_socket_dir = True
        self._socket_dir = socket_dir
        if user is not None:
            for path in (self.datadir, self.log_path, socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
            _make_traversable(self._root)
            _make_traversable(socket_dir)
            _make_traversable(self.bindir)

    def _initdb(self) -> None:
        cmd = [
            str(self.bindir / "initdb"), "-D", str(self.datadir), "--auth=trust",
            "-U", PG_USER, "--encoding=UTF8", "--no-locale", "--no-instructions",
        ]
        if not self.fsync:
            cmd.append("--no-sync")  # the same trade as fsync=off, and most of initdb's time
        done = self._run(cmd, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(self._failure("initdb", done))

    def _write_hba(self) -> None:
        """Trust from anywhere: a namespace's 10.x address must get in; tests hold no secrets."""
        (self.datadir / "pg_hba.conf").write_text(
            "# written by tests/pgharness.py\n"
            "local all all trust\n"
            "host all all 0.0.0.0/0 trust\n"
            "host all all ::/0 trust\n"
        )

    def _options(self) -> str:
        settings = {
            "listen_addresses": "*",
            "max_connections": "300",
            "fsync": "on" if self.fsync else "off",
            "full_page_writes": "on" if self.fsync else "off",
            **self.settings,
        }
        parts = ["-p", str(self.port), "-k", shlex.quote(str(self.socket_dir))]
        for name, value in settings.items():
            parts += ["-c", shlex.quote(f"{name}={value}")]
        return " ".join(parts)

    def _pg_ctl(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w"]
        cmd += ["-t", str(int(READY_TIMEOUT))]
        return self._run([*cmd, *args], timeout=READY_TIMEOUT + 30)

    def _run(self, cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a server command, as the unprivileged user when we are root.

        Output goes to a file, not a pipe: the postmaster that pg_ctl leaves behind inherits
        pg_ctl's descriptors until it redirects them, and a pipe held open by it would make
        reading pg_ctl's output wait for the server's exit.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        uid: int | None = None
        gid: int | None = None
        groups: list[int] | None = None
        user = self._run_as()
        if user is not None:
            env["HOME"] = str(self.base_dir)
            env["USER"] = env["LOGNAME"] = user.pw_name
            uid, gid, groups = user.pw_uid, user.pw_gid, []
        with tempfile.TemporaryFile("w+") as out:
            try:
                rc = subprocess.run(
                    list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    cwd=str(self.base_dir), env=env, timeout=timeout, check=False,
                    user=uid, group=gid, extra_groups=groups,
                ).returncode
            except subprocess.TimeoutExpired:
                rc = -1
            out.seek(0)
            return subprocess.CompletedProcess(list(cmd), rc, out.read(), "")

    def _wait_accepting(self, what: str) -> None:
        """Bounded wait until the server takes connections over TCP (pg_ctl -w reads a file)."""
        deadline = time.monotonic() + READY_TIMEOUT
        isready = [
            str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
            "-U", PG_USER, "-d", "postgres", "-t", "2",
        ]
        while time.monotonic() < deadline:
            done = subprocess.run(isready, capture_output=True, text=True, timeout=10, check=False)
            if done.returncode == 0:
                return
            # bounded poll: the server has no notification we could wait on
            time.sleep(0.05)
        raise RuntimeError(
            f"PostgreSQL did not accept connections within {READY_TIMEOUT:.0f}s after {what} "
            f"(port {self.port}); server log tail:\n{self.log_tail()}"
        )

    def _read_pid(self) -> int | None:
        try:
            first = (self.datadir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def _failure(self, what: str, done: subprocess.CompletedProcess[str]) -> str:
        return (
            f"{what} failed (exit {done.returncode}) with binaries from {self.bindir}:\n"
            f"{done.stdout.strip()}\nserver log tail:\n{self.log_tail()}"
        )


_session: PgCluster | None = None
_session_lock = threading.Lock()


def cluster_for_session() -> PgCluster:
    """This process's shared cluster, started on first call, stopped (and removed) at exit.

    A forked child inherits the object and may use the server, but only the process that
    created it stops it: the child's atexit must not pull the server from under its parent.
    """
    global _session
    with _session_lock:
        if _session is not None and _session.running:
            return _session
        base = Path(tempfile.mkdtemp(prefix="mpjobs-pg-"))
        cluster = PgCluster(base)
        cluster.start()
        _session = cluster
        owner = os.getpid()

        def _stop() -> None:
            if os.getpid() != owner:
                return
            with contextlib.suppress(Exception):
                cluster.stop()
            shutil.rmtree(base, ignore_errors=True)

        atexit.register(_stop)
        return cluster
