"""What the query modules need of a connector, whichever database is under it.

The SQL of jobs, completions and schedules (jobs.py, completions.py, schedules.py) is
written once, for SQLite and PostgreSQL alike: `?` placeholders (the PostgreSQL
connector rewrites them), plain table names (its `search_path` names the app's schema),
and statements both dialects accept. Where the two must differ, the query modules call
one of the hooks below, and each connector answers for its database:

- `_claim_plan` and `_claim_rows`: SQLite's writer lock already serialises claims, so
  its claim reads which (queue, priority) pairs have due jobs before it takes the lock
  (the plan) and holds the lock only for the picks; PostgreSQL takes rows with `FOR
  UPDATE SKIP LOCKED`, so concurrent claimers never wait on each other, and needs no
  plan. Each answers None when due jobs with control options exist (claimed by
  store/gated.py).
- `_exclusive`: a read-then-write transaction (cancel, declare a schedule) that SQLite
  serialises by its one writer needs a transaction lock on PostgreSQL.
- `_owner_gone`: settling a dead owner's jobs; on PostgreSQL an owner whose session
  was lost may come back (a server restart), so the settlement holds its lock.
- `_fence`: the leader's writes check that it still leads (an epoch on PostgreSQL; on
  SQLite the kernel's flock already makes two leaders impossible).
- `_insert_fired`: a schedule's fire becomes a job at most once, even between two
  overlapping leaders (a unique key on PostgreSQL).
- `_fault`: whether a failed write failed because of the store (try again later) or
  because of what it was given (quarantine the job instead).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from mpjobs.errors import StoreError
from mpjobs.store.base import NewJob
from mpjobs.store.sql import insert_of

_R = TypeVar("_R")

LOCK_TIMEOUT = 30.0  # the default bound of one write's wait for the locks ($MPJOBS_LOCK_TIMEOUT)


@functools.cache
def lock_timeout() -> float:
    """The default bound of a write's wait: $MPJOBS_LOCK_TIMEOUT seconds, else 30."""
    raw = os.environ.get("MPJOBS_LOCK_TIMEOUT")
    if raw is None:
        return LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise StoreError(f"MPJOBS_LOCK_TIMEOUT must be a number of seconds > 0, got {raw!r}")
    return value


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """The slice of a DB-API connection the queries use (sqlite3's, or a psycopg wrapper)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...


class Rows:
    """The base of every query module: the hooks a connector fills in (see above)."""

    # Errors a unique index raises: a live job already has this unique key.
    integrity_errors: tuple[type[Exception], ...] = ()
    _local: threading.local  # the connector's per-thread state
    # How to run a long read that no lock depends on (a census, counting a bulk load's
    # pushes): the leader runs them at the lowest CPU priority (runtime/housekeeping.py).
    slow_reads: Callable[[Callable[[], Any]], Any] | None = None

    def _slow_read(self, read: Callable[[], _R]) -> _R:
        """`read()`, the way `slow_reads` says; it must use its own thread's connection."""
        return read() if self.slow_reads is None else self.slow_reads(read)

    @contextlib.contextmanager
    def lock_budget(self, seconds: float) -> Iterator[None]:
        """Writes of this thread inside the block wait at most `seconds` for the locks.

        The supervisor uses a short budget so that its watchdog and signal handling
        never stall behind another process's transaction: a write that cannot be made
        now is retried on a later turn of its loop.
        """
        old = getattr(self._local, "budget", None)
        self._local.budget = seconds
        try:
            yield
        finally:
            self._local.budget = old

    def _budget(self) -> float:
        budget: float | None = getattr(self._local, "budget", None)
        return lock_timeout() if budget is None else budget

    def _tx(self) -> contextlib.AbstractContextManager[Conn]:
        """One write transaction, committed when the block ends, rolled back if it raises."""
        raise NotImplementedError

    def _conn(self) -> Conn:
        """This thread's connection, for reads outside a transaction."""
        raise NotImplementedError

    def _fault(self, exc: BaseException) -> bool:
        """True when a write failed because of the store's state (retry later)."""
        raise NotImplementedError

    def _claim_plan(self, queues: Sequence[str] | None, now: float) -> Any:
        """What a claim reads before its transaction, outside every lock."""
        raise NotImplementedError

    def _claim_rows(
        self, conn: Conn, owner: str, pid: int, queues: list[str], now: float, limit: int,
        share: int, plan: Any,
    ) -> list[Any] | None:
        raise NotImplementedError

    def _exclusive(self, conn: Conn, what: str) -> None:
        """Serialise this transaction with every other one that names `what`."""

    def _owner_gone(self, conn: Conn, owner: str) -> None:
        """Raise OwnerAlive unless `owner` may be settled now (PostgreSQL: unless it has
        come back, or its session is still closing)."""

    def _fence(self, conn: Conn) -> None:
        """Refuse a leader's write once this process no longer leads."""

    def _insert_fired(self, conn: Conn, job: NewJob, now: float) -> int | None:
        """Insert one job a schedule fired; its id, or None if that fire is already a job."""
        sql, params = insert_of(job, now)
        return int(conn.execute(sql + " RETURNING id", params).fetchone()[0])
