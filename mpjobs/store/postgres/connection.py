"""The PostgreSQL connector: one connection per thread, never across a fork, every wait bounded.

It only moves queries, like the SQLite connector (store/connection.py), and follows
the same rules, for the reasons particular to a socket:

- **No connection crosses a fork.** A child that used its parent's socket would mix
  its queries into the parent's session, and a child that closed it properly would
  end the parent's session (libpq says goodbye on the socket). So right after a fork
  the child points every inherited socket's descriptor at /dev/null (`dup2`): the
  parent's session is untouched, the child holds no reference to it (a parent's death
  ends its session, and its advisory locks, at once), and the inherited objects are
  kept referenced and never used, so nothing ever writes to the descriptor number.
- **Every wait is bounded, and a lost server is noticed.** Connections carry TCP
  keepalives and `tcp_user_timeout` on both ends (the server's side as session
  settings), so a host that vanishes is detected within `dead_after()` seconds; a
  transaction's waits for row locks are bounded by `lock_timeout`; connecting by
  `connect_timeout`. A connection that broke is dropped, and the next use reconnects.

Each commit sends one NOTIFY (PostgreSQL folds a transaction's notifications into one)
carrying this host's id, so other hosts' relays (relay.py) ring their local doorbells,
and rings this host's doorbell file directly.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from mpjobs.errors import StoreError
from mpjobs.home import Home
from mpjobs.scheduling.durations import duration_from_env
from mpjobs.store.postgres.url import StoreUrl
from mpjobs.store.rows import Cursor, Rows

log = logging.getLogger("mpjobs.store")

DEAD_AFTER = 15.0  # seconds of silence after which a peer counts as gone ($MPJOBS_PG_TIMEOUT)
DEAD_AFTER_ENV = "MPJOBS_PG_TIMEOUT"
CONNECT_TIMEOUT = 5  # seconds for one connection attempt (libpq's connect_timeout)

# Inherited connections, referenced for ever in a child (see the module's docstring).
_INHERITED: list[object] = []
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()  # every psycopg connection of this process
_LIVE_LOCK = threading.Lock()


@functools.cache
def dead_after() -> float:
    """Seconds after which a silent peer (host, server) counts as gone: $MPJOBS_PG_TIMEOUT.

    Every host of a store should agree on it. It bounds: how long a cut-off host's
    jobs stay RUNNING before another host recovers them (the server's keepalives end
    the cut-off session), and how long a cut-off worker goes on running its job.
    """
    return duration_from_env(DEAD_AFTER_ENV, DEAD_AFTER, 3, 3600)


def keepalive_settings(bound: float) -> dict[str, int]:
    """TCP keepalive settings that declare a silent peer dead within `bound` seconds.

    idle + interval * count stays under two thirds of the bound, and tcp_user_timeout
    (unacknowledged data, the other way a connection hangs) matches it, so the server
    has ended a cut-off session by the time the bound is up.
    """
    idle = max(1, int(bound / 3))
    interval = max(1, int(bound / 9))
    return {
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": 3,
        "tcp_user_timeout": int(bound * 1000 * 2 / 3),
    }


def connect(target: StoreUrl, purpose: str, search_path: bool = True) -> psycopg.Connection[Any]:
    """A new autocommit connection to `target`, with keepalives on both ends.

    The server-side settings (`-c tcp_keepalives_idle=...`) are per session, so they
    need no change to the server's configuration. The password comes from the URL,
    PGPASSWORD or ~/.pgpass (libpq's own rules) and is never logged: errors name the
    URL without it.
    """
    ka = keepalive_settings(dead_after())
    server = " ".join(f"-c tcp_{k}={v}" if k != "tcp_user_timeout" else f"-c {k}={v}"
                      for k, v in ka.items())  # fmt: skip
    server += " -c synchronous_commit=on"
    if search_path:
        server += f" -c search_path={target.schema}"
    params: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "keepalives": 1,
                              "application_name": f"mpjobs {purpose} {os.getpid()}",
                              "options": server, **ka}  # fmt: skip
    try:
        conn = psycopg.connect(target.dsn, autocommit=True, **params)
    except psycopg.Error as exc:
        why = _first_line(exc)
        raise StoreError(f"cannot connect to the store {target.redacted}: {why}") from exc
    with _LIVE_LOCK:
        _LIVE.add(conn)
    return conn


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _neutralise_in_child() -> None:
    """After fork, in the child: detach from every inherited session (see the docstring)."""
    global _LIVE_LOCK
    _LIVE_LOCK = threading.Lock()
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for conn in list(_LIVE):
            with contextlib.suppress(Exception):
                fd = conn.pgconn.socket
                if fd >= 0:
                    os.dup2(devnull, fd)
            _INHERITED.append(conn)
    finally:
        os.close(devnull)
    _LIVE.clear()


os.register_at_fork(after_in_child=_neutralise_in_child)


def advisory_key(schema: str, name: str) -> int:
    """A 64-bit advisory lock key for `name` within the app's schema.

    Hashed, so tokens of any length map to one key, and keys of two apps sharing a
    database (or of other programs' advisory locks) practically never meet.
    """
    digest = hashlib.blake2b(f"mpjobs\0{schema}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@functools.lru_cache(maxsize=1024)
def pg_sql(sql: str) -> str:
    """The query modules' `?` placeholders as psycopg's `%s` (their SQL has no `%`)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConn:
    """A connection as the query modules see it: sqlite3's `execute`/`executemany`."""

    __slots__ = ("raw",)

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        return self.raw.execute(pg_sql(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        cur = self.raw.cursor()
        cur.executemany(pg_sql(sql), parameters)
        return cur


_UNAVAILABLE_PG = (psycopg.OperationalError, pg_errors.TransactionRollback,
                   pg_errors.LockNotAvailable, pg_errors.QueryCanceled)  # fmt: skip


class PgConnector(Rows):
    """One connection per thread to the app's schema (vetted and migrated by schema.py
    before the first one is made)."""

    integrity_errors = (pg_errors.UniqueViolation,)

    def __init__(self, home: Home, target: StoreUrl, host_id: str) -> None:
        self.home = home
        self.target = target
        self.url: str | None = target.url
        self.host_id = host_id
        self._local = threading.local()
        self._all: weakref.WeakSet[Any] = weakref.WeakSet()  # every thread's connection
        self._pid = os.getpid()
        self.fence_epoch: int | None = None  # set while this process leads (leadership.py)
        channel = f"mpjobs_{target.schema}"
        self.channel = channel
        self._notify_commit = f"NOTIFY {channel}, '{host_id}'; COMMIT"

    # -- connections -----------------------------------------------------------------

    def _raw(self) -> psycopg.Connection[Any]:
        if self._pid != os.getpid():  # a child: everything inherited is off limits
            self._pid = os.getpid()
            self._local = threading.local()
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        conn = self._local.conn = connect(self.target, "store")
        self._local.wrapper = PgConn(conn)
        self._all.add(conn)
        return conn

    def _conn(self) -> PgConn:
        self._raw()
        wrapper: PgConn = self._local.wrapper
        return wrapper

    def close(self) -> None:
        """Close this thread's connection (the next use reopens)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close_all(self) -> None:
        """Close every thread's connection: at shutdown, once no thread uses the store."""
        for conn in list(self._all):
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()

    # -- bounded waits ---------------------------------------------------------------

    def _budget_ms(self) -> int:
        return max(1, int(self._budget() * 1000))

    @contextlib.contextmanager
    def _tx(self) -> Iterator[PgConn]:
        """A write transaction; its commit carries one NOTIFY and rings the local doorbell.

        The lock_timeout bounds every wait for a row or advisory lock inside it, so a
        stopped process holding a lock slows others down but cannot freeze them.
        """
        raw = self._raw()
        wrapper: PgConn = self._local.wrapper
        try:
            raw.execute(f"BEGIN; SET LOCAL lock_timeout = {self._budget_ms()}")
            try:
                yield wrapper
            except BaseException:
                if not raw.broken and raw.info.transaction_status != 0:
                    with contextlib.suppress(psycopg.Error):
                        raw.execute("ROLLBACK")
                raise
            raw.execute(self._notify_commit)
        except psycopg.OperationalError as exc:
            if raw.broken:
                log.warning("store %s: connection lost (%s); reconnecting on next use",
                            self.target.redacted, _first_line(exc))  # fmt: skip
            raise
        self._ring()

    def _ring(self) -> None:
        """Wake this host's idle workers and waiters (the local doorbell, as on SQLite)."""
        fd: int | None = getattr(self._local, "bell", None)
        if fd is None:
            fd = self._local.bell = os.open(
                self.home.write_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        os.pwrite(fd, b"\0", 0)

    # -- hooks of the query modules (rows.py) -----------------------------------------

    def _fault(self, exc: BaseException) -> bool:
        """A lost connection, a lock wait that ran out, a deadlock, a full disk: try again
        later. A value the server refuses (bad encoding, too large) would fail every time."""
        return isinstance(exc, (*_UNAVAILABLE_PG, StoreError, OSError, pg_errors.DiskFull,
                                pg_errors.InsufficientResources))  # fmt: skip

    def _exclusive(self, conn: Any, what: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (advisory_key(self.target.schema, what),))

    def _fence(self, conn: Any) -> None:
        """A leader's write goes through only while its epoch is the current one.

        FOR SHARE waits for a new leader's epoch bump to commit, so a stale leader's
        transaction either commits before the new one leads or sees the new epoch.
        """
        epoch = self.fence_epoch
        if epoch is None:
            return
        row = conn.execute("SELECT epoch FROM leader WHERE id = 1 FOR SHARE").fetchone()
        if row is None or int(row[0]) != epoch:
            raise StoreError(
                f"this process no longer leads (its epoch {epoch}, the store's "
                f"{None if row is None else row[0]}); its leader write was refused"
            )

    def checkpoint(self) -> None:
        """Nothing to do: the server checkpoints its own write-ahead log."""


UNAVAILABLE: tuple[type[Exception], ...] = (*_UNAVAILABLE_PG, StoreError)
