"""Session advisory locks: liveness and leadership that end the moment a session ends.

A lock of this kind belongs to a server session, and the server frees it as soon as
that session ends: at once when the process dies on a live host (the kernel closes the
socket), and within the keepalive bound (`dead_after()`) when its host vanishes or is
cut off. Each lock therefore has a session of its own, on a dedicated connection that
nothing else uses, and its holder watches that session: a holder whose session is gone
no longer holds the lock, and must stop acting on it (`SessionLock.watch`).

Waits here are Python loops over `select()` on the socket, with libpq's non-blocking
calls, rather than one blocking call in C: signal handlers run (a candidate's SIGTERM
ends its campaign), and a server that stopped answering is noticed by a deadline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import pq

from mpjobs.errors import StoreError
from mpjobs.store.postgres.connection import advisory_key, connect, dead_after
from mpjobs.store.postgres.url import StoreUrl

log = logging.getLogger("mpjobs.store")

PING_EVERY = 1.0  # how often a holder checks its session (at most; a short bound checks more)
# A check waits this share of the bound for its answer. With PING_EVERY, a holder cut off
# from the server notices within about a quarter of the bound, while the server ends its
# session only after two thirds of it (connection.keepalive_settings): the holder has
# stopped before another host can take over its jobs.
PING_SHARE = 1 / 6


class SessionLost(StoreError):
    """The dedicated session of a lock ended, or stopped answering in time (`silent`).

    A session that ended (the server restarted and closed it) may be taken again at
    once; one that went silent means the server cannot be reached, and by the time a
    new connection could tell, the server may have ended the old session and another
    host taken over: its holder stops at once instead.
    """

    def __init__(self, message: str, silent: bool = False) -> None:
        super().__init__(message)
        self.silent = silent


def ping_every() -> float:
    """How often a holder checks its session."""
    return min(PING_EVERY, dead_after() / 10)


def bounded_query(conn: psycopg.Connection[Any], sql: str, timeout: float | None) -> Any:
    """Run `sql` on `conn`'s socket and return its first value, within `timeout` s.

    None means no bound (a campaign's wait for the leader lock). SessionLost if the
    session breaks or does not answer in time; the connection is then closed, which
    ends the session on the server (and cancels a pending lock wait).
    """
    pg = conn.pgconn
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        pg.send_query(sql.encode())
        while pg.flush():
            _wait(pg.socket, deadline, write=True)
        while True:
            pg.consume_input()
            if not pg.is_busy():
                break
            _wait(pg.socket, deadline)
        value: Any = None
        failed: str | None = None
        while (res := pg.get_result()) is not None:
            if res.status == pq.ExecStatus.TUPLES_OK and res.ntuples:
                raw = res.get_value(0, 0)
                value = None if raw is None else raw.decode()
            elif res.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                failed = (res.error_message or b"").decode(errors="replace").strip()
        if failed is not None:
            raise SessionLost(f"the session refused {sql!r}: {failed}")
        return value
    except psycopg.Error as exc:
        _close(conn)
        raise SessionLost(f"the session ended: {str(exc).strip()}") from exc
    except BaseException:
        _close(conn)
        raise


def _wait(fd: int, deadline: float | None, write: bool = False) -> None:
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise SessionLost("no answer from the server in time", silent=True)
        slice_ = 0.2 if left is None else min(0.2, left)  # signal handlers run in between
        r, w, x = select.select([] if write else [fd], [fd] if write else [], [fd], slice_)
        if r or w or x:
            return


def _close(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(Exception):
        conn.close()


class SessionLock:
    """A session advisory lock on a dedicated connection: `name` within the app's schema.

    `acquire(blocking=True)` waits in the server's lock queue, so the server hands the
    lock over the moment its holder's session ends; `watch(on_lost)` has a thread check
    the session every PING_EVERY s (each check bounded by `dead_after()` / 3) and call
    `on_lost(reason)` once if it ended. The interface of coordination/locks.FileLock, so
    the election logic can use either.
    """

    def __init__(self, target: StoreUrl, name: str, purpose: str) -> None:
        self.target = target
        self.name = name
        self.purpose = purpose
        self.key = advisory_key(target.schema, name)
        self._conn: psycopg.Connection[Any] | None = None
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the watcher and the owner never query at once

    @property
    def held(self) -> bool:
        return self._conn is not None

    @property
    def connection(self) -> psycopg.Connection[Any] | None:
        return self._conn

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; False if `blocking` is off and another session holds it."""
        conn = connect(self.target, self.purpose, search_path=False)
        try:
            if blocking:
                bounded_query(conn, f"SELECT pg_advisory_lock({self.key})", None)
                got = True
            else:
                got = bounded_query(
                    conn, f"SELECT pg_try_advisory_lock({self.key})", dead_after() * PING_SHARE
                ) == "t"
        except BaseException:
            _close(conn)
            raise
        if not got:
            _close(conn)
            return False
        self._conn = conn
        self._stop.clear()  # held again (after a release): watchable again
        return True

    def release(self) -> None:
        """Give the lock up: ending the session frees it, and any lock it held."""
        self._stop.set()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            _close(conn)

    def ping(self, timeout: float | None = None) -> None:
        """Raise SessionLost unless the session answers within `timeout` s (default: a
        third of the bound)."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise SessionLost("the lock was released")
            bound = dead_after() * PING_SHARE if timeout is None else timeout
            bounded_query(conn, "SELECT 1", bound)

    def watch(self, on_lost: Callable[[SessionLost], None]) -> None:
        """Check the session from a daemon thread; call `on_lost(why)` once it is gone.

        One watcher at a time; `on_lost` may call `watch` again (a lock taken back), and
        the new thread replaces the one that called it.
        """
        current = self._watcher
        if current is not None and current.is_alive() and current is not threading.current_thread():
            return
        pid = os.getpid()

        def run() -> None:
            every = ping_every()
            while not self._stop.wait(every) and self._watcher is threading.current_thread():
                if os.getpid() != pid:  # pragma: no cover - threads do not cross a fork
                    return
                try:
                    self.ping()
                except SessionLost as exc:
                    if not self._stop.is_set():
                        on_lost(exc)
                    return
                except Exception:  # a bug of ours: keep watching
                    log.exception("cannot check the session of %s", self.name)

        self._watcher = threading.Thread(
            target=run, name=f"mpjobs-session-{self.purpose}", daemon=True
        )
        self._watcher.start()


def is_free(conn: Any, key: int) -> bool:
    """Whether no session holds lock `key` (a transaction lock, released at once)."""
    row = conn.execute("SELECT pg_try_advisory_xact_lock(?)", (key,)).fetchone()
    return bool(row[0])
