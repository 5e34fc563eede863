"""The SQLite connector: one WAL-mode file in the home, shared by every process.

It only moves queries. Writes happen in `BEGIN IMMEDIATE`, so a transaction takes the
write lock before it reads and two workers can never claim the same row.
`synchronous=NORMAL` in WAL mode keeps every commit through `kill -9` of any process
(only a power cut can lose the last commits), which is the durability the contract
promises, at a fraction of FULL's cost.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator

import filelock

from mpjobs.errors import StoreError
from mpjobs.home import Home, check_not_writable_by_others
from mpjobs.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION


class Connector:
    """One connection per thread and per process, over one vetted, migrated file.

    A connection is never used across fork(): a child that finds its parent's connection
    opens its own and keeps the inherited one referenced but untouched, because SQLite
    forbids closing or using a connection in a forked child.
    """

    def __init__(self, home: Home) -> None:
        self.home = home
        self.path = home.db
        self._local = threading.local()
        self._inherited: list[sqlite3.Connection] = []
        self._init()

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA cache_size = -16000")
            # Checkpoints (which fsync the database file) are the leader's job, off every
            # pusher's and worker's commit path; this higher threshold is only a safety
            # net for a home with no leader running.
            conn.execute("PRAGMA wal_autocheckpoint = 10000")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open mpjobs store {self.path}: {exc}") from exc
        return conn

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            return conn
        if conn is not None:
            self._inherited.append(conn)
        conn = self._connect()
        local.conn, local.pid = conn, os.getpid()
        local.wfd = os.open(self.home.write_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return conn

    def close(self) -> None:
        """Close this thread's connection (the next use reopens)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
            os.close(self._local.wfd)
        self._local.conn = None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, queued on an flock before SQLite's own write lock.

        SQLite's busy handler sleeps for milliseconds between retries when the write
        lock is taken; flock() instead wakes the next writer the moment the lock is
        free, which matters when workers and pushers write thousands of times a second.
        The kernel drops the flock if its holder dies.
        """
        conn = self._conn()
        wfd = self._local.wfd
        readonly = False
        fcntl.flock(wfd, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            os.pwrite(wfd, b"\0", 0)  # the doorbell: see coordination/notify.py
        except sqlite3.OperationalError as exc:
            # SQLite opens a connection read-only if the file is not writable at that
            # moment, and keeps it so: drop it, so the next use reopens once writable.
            readonly = "readonly" in str(exc)
            raise
        finally:
            fcntl.flock(wfd, fcntl.LOCK_UN)
            if readonly:
                self.close()

    # -- opening, vetting, migrating -------------------------------------------------

    def _init(self) -> None:
        """Vet the file and bring its schema up to date, under a short cross-process lock."""
        with filelock.FileLock(str(self.home.init_lock), timeout=60):
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            check_not_writable_by_others(self.path, "mpjobs store")
            conn = self._conn()
            try:
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                raise StoreError(
                    f"{self.path} is not an mpjobs store or is corrupt ({exc}); "
                    "it was left untouched. Move it away or choose another home."
                ) from exc
            if app_id != APPLICATION_ID and (app_id != 0 or tables != 0):
                raise StoreError(
                    f"{self.path} is an SQLite database of another program "
                    f"(application_id={app_id:#x}, {tables} schema objects); it was left "
                    "untouched. Choose another home."
                )
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this mpjobs "
                    f"understands ({SCHEMA_VERSION}); upgrade mpjobs."
                )
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise StoreError(f"{self.path}: cannot switch the store to WAL mode")
            if version < SCHEMA_VERSION:
                self._migrate(conn, version)

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        with self._tx():
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def checkpoint(self) -> None:
        """Copy committed WAL frames into the database without blocking anyone (PASSIVE)."""
        self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
