"""The SQLite connector: one WAL-mode file in the home, shared by every process.

It only moves queries. Writes happen in `BEGIN IMMEDIATE`, so a transaction takes the
write lock before it reads and two workers can never claim the same row.
`synchronous=NORMAL` in WAL mode keeps every commit through `kill -9` of any process
(only a power cut can lose the last commits), which is the durability the contract
promises, at a fraction of FULL's cost.

Two rules keep many processes honest with one file:

- **No SQLite state crosses a fork.** SQLite's locks are POSIX locks, which belong to
  a process and are not inherited, while its table of what this process has locked is
  plain memory, which is. A child that inherited an open connection and opens its own
  finds the file "already locked by us" and takes no kernel lock at all; when the last
  process that really holds one closes, SQLite checkpoints and deletes the WAL under
  the others, and their later commits vanish. So every connection of this process is
  closed before any fork (`os.register_at_fork`), and reopened on next use.
- **Every wait is bounded.** A writer queues on an flock of `write.lock`, then on
  SQLite's own write lock; both waits poll against a deadline (30 s unless the caller
  sets a budget with `lock_budget`), let signal handlers run, and end in a `StoreError`
  that names the lock and the pid holding it. One process stopped inside a transaction
  (Ctrl-Z, a debugger) then slows the home down, but cannot freeze anyone forever.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import filelock

from mpjobs.coordination.locks import describe_pids, flock_within, lock_holders
from mpjobs.errors import StoreError
from mpjobs.home import Home, check_not_writable_by_others
from mpjobs.store.rows import Rows
from mpjobs.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger("mpjobs.store")

ABORT_GRACE = 0.5  # seconds a stopping process still waits for the locks (set_wait_abort)
BUSY_MS = 100  # SQLite waits this long in C per try; we retry in Python up to the deadline
WAL_WRITE_LOCK = 120  # byte of `-shm` that SQLite's WAL write lock covers (WALINDEX_LOCK_OFFSET)
WAL_SIZE_LIMIT = 32 * 2**20  # the WAL is truncated to this after a checkpoint resets it

_CONNECTORS: weakref.WeakSet[Connector] = weakref.WeakSet()
_ABORT: list[Callable[[], bool]] = []


def set_wait_abort(predicate: Callable[[], bool] | None) -> None:
    """Make every lock wait of this process end early once `predicate()` is true.

    A worker told to stop must not sit out a 30 s wait behind a stopped process: it
    leaves its journal for whoever settles it and exits. A wait of under ABORT_GRACE is
    never cut short, so a stopping process still commits its last results through the
    ordinary contention of its siblings.
    """
    _ABORT[:] = [] if predicate is None else [predicate]


def _aborted() -> bool:
    return bool(_ABORT) and _ABORT[0]()


def _abort_after(start: float) -> Callable[[], bool]:
    return lambda: time.monotonic() - start >= ABORT_GRACE and _aborted()


class _Handle:
    """One thread's connection and its descriptor of `write.lock` (the writer queue)."""

    __slots__ = ("__weakref__", "conn", "thread", "wfd")

    def __init__(self, conn: sqlite3.Connection, wfd: int) -> None:
        self.conn: sqlite3.Connection | None = conn
        self.wfd = wfd
        self.thread = threading.get_ident()

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
            os.close(self.wfd)

    def __del__(self) -> None:
        # A thread that ended drops its handle: SQLite closes the connection as it is
        # freed, and the descriptor must go with it.
        if self.conn is not None:
            with contextlib.suppress(OSError):
                os.close(self.wfd)


def _before_fork() -> None:
    for connector in list(_CONNECTORS):
        connector._close_for_fork()


def _after_fork_in_child() -> None:
    _ABORT.clear()
    for connector in list(_CONNECTORS):
        connector._adopt_after_fork()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


class Connector(Rows):
    """One connection per thread, over one vetted, migrated file, never across a fork."""

    integrity_errors = (sqlite3.IntegrityError,)
    url: str | None = None  # the store is the home's own file

    def __init__(self, home: Home) -> None:
        self.home = home
        self.path = home.db
        self._local = threading.local()
        self._handles: weakref.WeakSet[_Handle] = weakref.WeakSet()
        self._handles_lock = threading.Lock()
        # Connections of other threads that were open at a fork we could not close them
        # for: SQLite forbids using or even closing them in the child, so they are kept
        # referenced (never finalised) and never touched.
        self._inherited: list[_Handle] = []
        _CONNECTORS.add(self)
        self._init()

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False,
                timeout=BUSY_MS / 1000,
            )  # fmt: skip
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA cache_size = -16000")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            # Checkpoints (which fsync the database file) are the leader's job, off every
            # pusher's and worker's commit path; this higher threshold is only a safety
            # net for a home with no leader running.
            conn.execute("PRAGMA wal_autocheckpoint = 10000")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open mpjobs store {self.path}: {exc}") from exc
        return conn

    def _handle(self) -> _Handle:
        h: _Handle | None = getattr(self._local, "h", None)
        if h is not None and h.conn is not None:
            return h
        conn = self._connect()
        h = _Handle(conn, os.open(self.home.write_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC))
        with self._handles_lock:
            self._handles.add(h)
        self._local.h = h
        return h

    def _conn(self) -> sqlite3.Connection:
        h: _Handle | None = getattr(self._local, "h", None)
        if h is not None and h.conn is not None:
            return h.conn
        conn = self._handle().conn
        assert conn is not None
        return conn

    def close(self) -> None:
        """Close this thread's connection (the next use reopens)."""
        h: _Handle | None = getattr(self._local, "h", None)
        if h is not None:
            h.close()
        self._local.h = None

    def _close_for_fork(self) -> None:
        """Before fork(): close every connection no other live thread may be using.

        mpjobs forks only from a process with a single thread (a supervisor, the starter
        of `app.start()`, gunicorn's arbiter), so this closes them all. A connection of
        another live thread cannot be closed safely under it; it is left, with a warning,
        and the child never touches it.
        """
        live = {t.ident for t in threading.enumerate()}
        with self._handles_lock:
            handles = list(self._handles)
        me = threading.get_ident()
        for h in handles:
            if h.conn is None:
                continue
            if (h.thread == me or h.thread not in live) and not h.conn.in_transaction:
                h.close()
            else:
                log.warning(
                    "forking while a thread has the mpjobs store %s open; the child must "
                    "not use the store (SQLite state cannot cross a fork)", self.path,
                )  # fmt: skip

    def _adopt_after_fork(self) -> None:
        """In the child: keep what was inherited untouched, and start afresh."""
        self._handles_lock = threading.Lock()
        self._inherited.extend(h for h in list(self._handles) if h.conn is not None)
        self._handles = weakref.WeakSet()
        self._local = threading.local()

    # -- bounded waits ---------------------------------------------------------------

    def _too_long(self, what: str, budget: float, holders: set[int]) -> StoreError:
        stopped = " (this process is stopping)" if _aborted() else ""
        return StoreError(
            f"gave up after {budget:.1f}s waiting for {what}, held by "
            f"{describe_pids(holders - {os.getpid()})}{stopped}"
        )

    def _queue(self, wfd: int) -> None:
        """The slow path of taking the writer queue: wait for it, bounded (flock_within)."""
        budget = self._budget()
        now = time.monotonic()
        if not flock_within(wfd, now + budget, _abort_after(now)):
            raise self._too_long(
                f"the write lock {self.home.write_lock}", budget,
                lock_holders(self.home.write_lock, "FLOCK"),
            )  # fmt: skip

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, retried while another program holds SQLite's write lock.

        The first try runs at SQLite's own busy timeout (BUSY_MS), unless the caller's
        budget is shorter than that; every later try is a slice of BUSY_MS, so signal
        handlers run and the deadline is kept.
        """
        budget = self._budget()
        short = budget < BUSY_MS / 1000
        if not short:
            try:
                conn.execute("BEGIN IMMEDIATE")  # the common case: nobody else holds it
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
        now = time.monotonic()
        deadline, abort = now + budget, _abort_after(now)
        if short:
            conn.execute(f"PRAGMA busy_timeout = {max(1, int(budget * 1000))}")
        try:
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    if time.monotonic() >= deadline or abort():
                        shm = self.path.with_name(self.path.name + "-shm")
                        holders = lock_holders(shm, "POSIX", WAL_WRITE_LOCK)
                        raise self._too_long(
                            f"SQLite's write lock on {self.path}", budget, holders
                        ) from exc
        finally:
            if short:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, queued on an flock before SQLite's own write lock.

        SQLite's busy handler sleeps for milliseconds between retries when the write
        lock is taken; polling the flock (flock_within) hands it over within about a
        millisecond, which matters when workers and pushers write thousands of times a
        second. The kernel drops the flock if its holder dies. Each wait is bounded by
        the budget (per lock); when nobody holds the locks, this costs two system calls.
        """
        h = self._handle()
        conn, wfd = h.conn, h.wfd
        assert conn is not None
        readonly = False
        try:
            fcntl.flock(wfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._queue(wfd)
        try:
            self._begin(conn)
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

    def _fault(self, exc: BaseException) -> bool:
        """A full disk, a locked, read-only or damaged file: the writer keeps its outcome
        and tries again later. Anything else (an unencodable text, a blob over SQLite's
        limit, a value of the wrong type, a constraint, a bug) would fail the same way on
        every retry, so the job it belongs to is quarantined instead."""
        if isinstance(exc, sqlite3.OperationalError):
            return "too big" not in str(exc)
        return isinstance(exc, (StoreError, OSError)) or type(exc) is sqlite3.DatabaseError

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
