"""The SQLite store: one WAL-mode file in the home, shared by every process.

Writes happen in `BEGIN IMMEDIATE`, so a transaction takes the write lock before it reads
and two workers can never claim the same row. `synchronous=NORMAL` in WAL mode keeps
every commit through `kill -9` of any process (only a power cut can lose the last
commits), which is the durability the contract promises, at a fraction of FULL's cost.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import filelock

from mpjobs.errors import StoreError
from mpjobs.home import Home, check_not_writable_by_others
from mpjobs.store import base
from mpjobs.store.base import (
    CANCELLED,
    RUNNING,
    SCHEDULED,
    Completion,
    Decide,
    FireRule,
    JobRecord,
    NewJob,
    ProcessRecord,
    ScheduleRecord,
)
from mpjobs.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger("mpjobs.store")

_JOB_COLS = ", ".join(f.name for f in JobRecord.__dataclass_fields__.values())
_SCHED_COLS = ", ".join(ScheduleRecord.__dataclass_fields__)
_PROC_COLS = ", ".join(ProcessRecord.__dataclass_fields__)
_INSERT_JOB = (
    "INSERT INTO jobs (name, func, func_pickle, payload, queue, priority, exec_at, "
    "max_attempts, retry_backoff, timeout, memory_limit, unique_key, schedule_id, "
    "status, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'SCHEDULED',?)"
)


def _job_params(j: NewJob, now: float) -> tuple[Any, ...]:
    return (
        j.name, j.func, j.func_pickle, j.payload, j.queue, j.priority, j.exec_at,
        j.max_attempts, j.retry_backoff, j.timeout, j.memory_limit, j.unique_key,
        j.schedule_id, now,
    )  # fmt: skip


def _literal(value: object) -> str:
    """An SQL literal for a value that is the same in every row of a batch."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str) and "\x00" not in value:
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    raise ValueError(f"no SQL literal for {value!r}")


@functools.lru_cache(maxsize=64)
def _insert_for(shape: tuple[Any, ...], now: float, exec_at: float | None) -> str:
    """An INSERT with every shared column as a literal; exec_at too when given."""
    name, func, func_pickle, queue, priority, max_attempts, backoff, timeout, memory, sid = shape
    values = (name, func, func_pickle, queue, priority, max_attempts, backoff, timeout, memory)
    consts = ", ".join(_literal(v) for v in (*values, sid, now))
    at = "?" if exec_at is None else _literal(exec_at)
    return (
        "INSERT INTO jobs (payload, exec_at, name, func, func_pickle, queue, priority, "
        "max_attempts, retry_backoff, timeout, memory_limit, schedule_id, created_at, status) "
        f"VALUES (?, {at}, {consts}, 'SCHEDULED')"
    )


def _grouped_inserts(jobs: Sequence[NewJob], now: float) -> list[tuple[str, list[Any]]]:
    """Batch inserts binding only what differs per job, in push order.

    Binding 14 parameters per row costs more than SQLite's insert itself; the columns
    that are the same for a whole run of jobs (same task, same options) become literals
    of a statement that is cached and reused, and so does exec_at when a run shares it.
    """
    runs: list[tuple[Any, list[NewJob]]] = []
    last: object = object()
    for j in jobs:
        key = j.batch_key if j.batch_key is not None else id(j)
        if key != last:
            runs.append((key, []))
            last = key
        runs[-1][1].append(j)
    out: list[tuple[str, list[Any]]] = []
    for _key, run in runs:
        j = run[0]
        shape = (j.name, j.func, j.func_pickle, j.queue, j.priority, j.max_attempts,
                 j.retry_backoff, j.timeout, j.memory_limit, j.schedule_id)  # fmt: skip
        at = j.exec_at
        same_time = all(x.exec_at == at for x in run)
        try:
            sql = _insert_for(shape, now, at if same_time else None)
        except ValueError:
            out.append((_INSERT_JOB, [_job_params(x, now) for x in run]))
            continue
        if same_time:
            out.append((sql, [(x.payload,) for x in run]))
        else:
            out.append((sql, [(x.payload, x.exec_at) for x in run]))
    return out


def _without_anchor(trigger: str) -> Any:
    """A trigger spec minus its anchor: two declarations of one schedule differ only there."""
    spec = json.loads(trigger)
    return {k: v for k, v in spec.items() if k != "anchor"} if isinstance(spec, dict) else spec


def _queue_filter(queues: Sequence[str] | None) -> tuple[str, list[Any]]:
    if not queues:
        return "", []
    return f" AND queue IN ({','.join('?' * len(queues))})", list(queues)


class SqliteStore(base.Store):
    """A `Store` over one SQLite file, with one connection per thread and per process.

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

    # -- jobs ------------------------------------------------------------------------

    def push(self, jobs: Sequence[NewJob], now: float) -> list[tuple[int, bool]]:
        """Insert jobs in one transaction; for a live duplicate unique_key, return its id."""
        with self._tx() as conn:
            if all(j.unique_key is None for j in jobs):
                if len(jobs) == 1:
                    cur = conn.execute(_INSERT_JOB, _job_params(jobs[0], now))
                    return [(int(cur.lastrowid or 0), True)]
                for sql, rows in _grouped_inserts(jobs, now):
                    conn.executemany(sql, rows)
                # Rowids are max+1 and we hold the write lock: this batch is contiguous.
                end = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
                return [(i, True) for i in range(end - len(jobs) + 1, end + 1)]
            out: list[tuple[int, bool]] = []
            for j in jobs:
                try:
                    cur = conn.execute(_INSERT_JOB, _job_params(j, now))
                    out.append((int(cur.lastrowid or 0), True))
                except sqlite3.IntegrityError:
                    row = conn.execute(
                        "SELECT id FROM jobs WHERE unique_key = ? AND status IN "
                        "('SCHEDULED', 'RUNNING')",
                        (j.unique_key,),
                    ).fetchone()
                    out.append((int(row[0]), False))
            return out

    def claim(
        self,
        owner: str,
        pid: int,
        queues: Sequence[str] | None,
        limit: int,
        now: float,
        done: Sequence[Completion] = (),
        share: int = 1,
    ) -> list[JobRecord]:
        """Record the last batch's results, then take up to `limit` due jobs, in one commit.

        Claimed jobs are RUNNING and charged an attempt at once; a worker that stops
        before starting some of them gives them back with the attempt refunded. A worker
        takes at most its fair share (ready jobs / `share` workers), so a short queue is
        spread over idle workers instead of waiting in one worker's batch.
        """
        qsql, qargs = _queue_filter(queues)
        with self._tx() as conn:
            self._complete_many(conn, owner, done, now)
            if limit > 1 and share > 1:
                ready = conn.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE status = 'SCHEDULED' "
                    f"AND exec_at <= ?{qsql} LIMIT ?)",
                    [now, *qargs, limit * share],
                ).fetchone()[0]
                limit = max(1, min(limit, -(-ready // share)))
            rows = conn.execute(
                "UPDATE jobs SET status = 'RUNNING', owner = ?, pid = ?, started_at = ?, "
                "attempts = attempts + 1 WHERE id IN (SELECT id FROM jobs "
                f"WHERE status = 'SCHEDULED' AND exec_at <= ?{qsql} "
                f"ORDER BY priority, exec_at, id LIMIT ?) RETURNING {_JOB_COLS}",
                [owner, pid, now, now, *qargs, limit],
            ).fetchall()
        jobs = [JobRecord(*r) for r in rows]
        jobs.sort(key=lambda j: (j.priority, j.exec_at, j.id))
        return jobs

    def complete(self, owner: str, done: Sequence[Completion], now: float) -> None:
        with self._tx() as conn:
            self._complete_many(conn, owner, done, now)

    def _complete_many(
        self, conn: sqlite3.Connection, owner: str, done: Sequence[Completion], now: float
    ) -> None:
        """Apply completions; plain terminal ones in one executemany, the rest one by one."""
        plain = [
            (c.status, c.result, c.exc, c.error, now, c.job_id, owner)
            for c in done
            if c.schedule_id is None and c.status != SCHEDULED
        ]
        if plain:
            conn.executemany(
                "UPDATE jobs SET status = ?, result = ?, exc = ?, error = ?, finished_at = ?, "
                "owner = NULL, pid = NULL WHERE id = ? AND status = 'RUNNING' AND owner = ?",
                plain,
            )
        if len(plain) < len(done):
            for c in done:
                if c.schedule_id is not None or c.status == SCHEDULED:
                    self._complete(conn, owner, c, now)

    def _complete(self, conn: sqlite3.Connection, owner: str, c: Completion, now: float) -> bool:
        """Apply a completion if `owner` still runs the job; keep a schedule's failure count."""
        if c.status == SCHEDULED:
            cur = conn.execute(
                "UPDATE jobs SET status = 'SCHEDULED', exec_at = ?, owner = NULL, pid = NULL, "
                "started_at = NULL, error = ?, exc = ?, attempts = attempts - ? "
                "WHERE id = ? AND status = 'RUNNING' AND owner = ?",
                (c.exec_at, c.error, c.exc, int(c.refund_attempt), c.job_id, owner),
            )
            return cur.rowcount == 1
        row = conn.execute(
            "UPDATE jobs SET status = ?, result = ?, exc = ?, error = ?, finished_at = ?, "
            "owner = NULL, pid = NULL WHERE id = ? AND status = 'RUNNING' AND owner = ? "
            "RETURNING schedule_id",
            (c.status, c.result, c.exc, c.error, now, c.job_id, owner),
        ).fetchone()
        if row is None:
            return False
        if row[0] is not None:
            self._count_schedule_outcome(conn, row[0], c)
        return True

    def _count_schedule_outcome(self, conn: sqlite3.Connection, sid: str, c: Completion) -> None:
        if c.status == base.SUCCESS:
            conn.execute("UPDATE schedules SET failures = 0 WHERE id = ?", (sid,))
            return
        if c.status not in (base.FAILED, base.TIMEOUT):
            return
        row = conn.execute(
            "UPDATE schedules SET failures = failures + 1 WHERE id = ? "
            "RETURNING failures, json_extract(options, '$.max_failures')",
            (sid,),
        ).fetchone()
        if row is not None and row[1] is not None and row[0] >= row[1]:
            conn.execute(
                "UPDATE schedules SET state = 'stopped', next_run_time = NULL WHERE id = ?",
                (sid,),
            )
            conn.execute(
                "UPDATE jobs SET status = 'PERMANENTLY_FAILED', error = coalesce(error, '') || ? "
                "WHERE id = ?",
                (f"\nschedule {sid!r} stopped after {row[0]} consecutive failures", c.job_id),
            )

    def release(self, owner: str, job_ids: Sequence[int]) -> None:
        """Give back claimed jobs that were never started, refunding their attempt."""
        if not job_ids:
            return
        with self._tx() as conn:
            conn.executemany(
                "UPDATE jobs SET status = 'SCHEDULED', owner = NULL, pid = NULL, "
                "started_at = NULL, attempts = attempts - 1 "
                "WHERE id = ? AND owner = ? AND status = 'RUNNING'",
                [(i, owner) for i in job_ids],
            )

    def recover(
        self, owner: str, decide: Decide, now: float
    ) -> list[tuple[JobRecord, Completion]]:
        """Settle every job a dead `owner` still holds, each as `decide` says."""
        with self._tx() as conn:
            rows = [
                JobRecord(*r)
                for r in conn.execute(
                    f"SELECT {_JOB_COLS} FROM jobs WHERE owner = ? AND status = 'RUNNING'",
                    (owner,),
                )
            ]
            settled = [(job, decide(job)) for job in rows]
            for _job, c in settled:
                self._complete(conn, owner, c, now)
            conn.execute(
                "UPDATE jobs SET owner = NULL, pid = NULL WHERE owner = ? AND status = ?",
                (owner, CANCELLED),
            )
            return settled

    def get(self, job_id: int) -> JobRecord | None:
        row = self._conn().execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?", (job_id,))
        r = row.fetchone()
        return JobRecord(*r) if r else None

    def status_of(self, job_id: int) -> str | None:
        r = self._conn().execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if r is None else str(r[0])

    def list_jobs(
        self, status: str | None, queue: str | None, limit: int, schedule_id: str | None = None
    ) -> list[JobRecord]:
        where, args = ["1"], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if queue is not None:
            where.append("queue = ?")
            args.append(queue)
        if schedule_id is not None:
            where.append("schedule_id = ?")
            args.append(schedule_id)
        sql = f"SELECT {_JOB_COLS} FROM jobs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"
        return [JobRecord(*r) for r in self._conn().execute(sql, [*args, limit])]

    def cancel(self, job_id: int, terminate: bool, now: float) -> tuple[bool, str | None]:
        """Cancel a waiting job, or with `terminate` a running one; return (done, owner to kill)."""
        with self._tx() as conn:
            r = conn.execute("SELECT status, owner FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if r is None:
                return False, None
            status, owner = r
            running = status == RUNNING
            if status not in (SCHEDULED, RUNNING) or (running and not terminate):
                return False, None
            conn.execute(
                "UPDATE jobs SET status = 'CANCELLED', finished_at = ?, error = ?, owner = ? "
                "WHERE id = ?",
                (now, "cancelled while running" if running else "cancelled",
                 owner if running else None, job_id),
            )  # fmt: skip
            return True, owner if running else None

    def retry(self, job_id: int, now: float) -> bool:
        """Put a finished job back in the queue with a fresh set of attempts."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = 'SCHEDULED', exec_at = ?, attempts = 0, owner = NULL, "
                "pid = NULL, result = NULL, exc = NULL, error = NULL, started_at = NULL, "
                "finished_at = NULL WHERE id = ? AND status IN "
                "('FAILED', 'TIMEOUT', 'CANCELLED', 'PERMANENTLY_FAILED', 'SUCCESS')",
                (now, job_id),
            )
            return cur.rowcount == 1

    def running_owners(self) -> list[str]:
        sql = "SELECT DISTINCT owner FROM jobs WHERE status = 'RUNNING'"
        return [r[0] for r in self._conn().execute(sql)]

    def kill_requests(self, owners: Sequence[str]) -> list[tuple[int, str]]:
        if not owners:
            return []
        sql = (
            "SELECT id, owner FROM jobs WHERE status = 'CANCELLED' AND owner IS NOT NULL "
            f"AND owner IN ({','.join('?' * len(owners))})"
        )
        return [(int(r[0]), str(r[1])) for r in self._conn().execute(sql, list(owners))]

    def clear_owner(self, job_id: int) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE jobs SET owner = NULL WHERE id = ? AND status != 'RUNNING'", (job_id,)
            )

    def has_due(self, queues: Sequence[str] | None, now: float) -> bool:
        """A read-only check, so idle workers woken together do not all queue for the lock."""
        qsql, qargs = _queue_filter(queues)
        return (
            self._conn()
            .execute(
                f"SELECT 1 FROM jobs WHERE status = 'SCHEDULED' AND exec_at <= ?{qsql} LIMIT 1",
                [now, *qargs],
            )
            .fetchone()
            is not None
        )

    def next_exec_at(self, queues: Sequence[str] | None) -> float | None:
        qsql, qargs = _queue_filter(queues)
        r = (
            self._conn()
            .execute(f"SELECT min(exec_at) FROM jobs WHERE status = 'SCHEDULED'{qsql}", qargs)
            .fetchone()
        )
        return None if r is None or r[0] is None else float(r[0])

    def queue_depths(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        sql = (
            "SELECT queue, status, count(*) FROM jobs "
            "WHERE status IN ('SCHEDULED', 'RUNNING') GROUP BY queue, status"
        )
        for queue, status, n in self._conn().execute(sql):
            out.setdefault(queue, {})[status] = int(n)
        return out

    def purge(self, before: float, chunk: int = 2000) -> int:
        """Delete jobs that finished before `before`, in short transactions.

        Oldest first by id, in chunks, so workers never wait long for the write lock;
        the newest row is always kept, so a rowid (a job id) is never handed out twice.
        """
        total = 0
        while True:
            with self._tx() as conn:
                n = conn.execute(
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at < ? "
                    "AND status NOT IN ('SCHEDULED', 'RUNNING') "
                    "AND id < (SELECT max(id) FROM jobs) ORDER BY id LIMIT ?)",
                    (before, chunk),
                ).rowcount
            total += n
            if n < chunk:
                return total

    # -- schedules -------------------------------------------------------------------

    def upsert_schedule(self, rec: ScheduleRecord, trigger_changed: bool = False) -> ScheduleRecord:
        """Declare a schedule; re-declaring the same id updates it and keeps its state.

        The next fire time is kept unless the trigger itself changed, so every process
        declaring the same schedule at import time does not push its next run around.
        """
        with self._tx() as conn:
            old = conn.execute(
                f"SELECT {_SCHED_COLS} FROM schedules WHERE id = ?", (rec.id,)
            ).fetchone()
            if old is None:
                conn.execute(
                    f"INSERT INTO schedules ({_SCHED_COLS}) VALUES ({','.join('?' * 12)})",
                    tuple(getattr(rec, f) for f in ScheduleRecord.__dataclass_fields__),
                )
                return rec
            prev = ScheduleRecord(*old)
            if not trigger_changed and _without_anchor(prev.trigger) == _without_anchor(
                rec.trigger
            ):
                rec.trigger = prev.trigger  # a concurrent declaration: keep the first one's phase
            keep_time = prev.trigger == rec.trigger and not trigger_changed
            rec.next_run_time = prev.next_run_time if keep_time else rec.next_run_time
            rec.state, rec.failures, rec.created_at = prev.state, prev.failures, prev.created_at
            if rec.state != "active":
                rec.next_run_time = prev.next_run_time
            conn.execute(
                "UPDATE schedules SET name = ?, func = ?, func_pickle = ?, payload = ?, "
                "trigger = ?, options = ?, next_run_time = ?, updated_at = ? WHERE id = ?",
                (rec.name, rec.func, rec.func_pickle, rec.payload, rec.trigger, rec.options,
                 rec.next_run_time, rec.updated_at, rec.id),
            )  # fmt: skip
            return rec

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        r = (
            self._conn()
            .execute(f"SELECT {_SCHED_COLS} FROM schedules WHERE id = ?", (schedule_id,))
            .fetchone()
        )
        return ScheduleRecord(*r) if r else None

    def list_schedules(self) -> list[ScheduleRecord]:
        sql = f"SELECT {_SCHED_COLS} FROM schedules ORDER BY id"
        return [ScheduleRecord(*r) for r in self._conn().execute(sql)]

    def update_schedule(self, schedule_id: str, **fields: object) -> bool:
        allowed = {"state", "next_run_time", "trigger", "failures", "updated_at", "options"}
        if not fields or not set(fields) <= allowed:
            raise ValueError(f"cannot update schedule fields {sorted(set(fields) - allowed)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as conn:
            cur = conn.execute(
                f"UPDATE schedules SET {sets} WHERE id = ?", [*fields.values(), schedule_id]
            )
            return cur.rowcount == 1

    def remove_schedule(self, schedule_id: str) -> bool:
        with self._tx() as conn:
            return conn.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount == 1

    def fire_due(self, now: float, rule: FireRule) -> list[int]:
        """Turn every due fire into jobs and advance the schedule, in one transaction.

        Because the jobs and the new next_run_time commit together, a leader killed at
        any instant leaves either both or neither: each fire yields exactly one job.
        """
        ids: list[int] = []
        with self._tx() as conn:
            due = [
                ScheduleRecord(*r)
                for r in conn.execute(
                    f"SELECT {_SCHED_COLS} FROM schedules "
                    "WHERE state = 'active' AND next_run_time <= ?",
                    (now,),
                )
            ]
            for rec in due:
                try:
                    jobs, next_time = rule(rec, now, self._active_count(conn, rec.id))
                except Exception:
                    # One broken schedule (say, a corrupt trigger) must not stop the
                    # others from firing: log it and look at it again in a minute.
                    log.exception("schedule %r cannot be fired; retrying in 60 s", rec.id)
                    jobs, next_time = [], now + 60.0
                for j in jobs:
                    ids.append(int(conn.execute(_INSERT_JOB, _job_params(j, now)).lastrowid or 0))
                conn.execute(
                    "UPDATE schedules SET next_run_time = ? WHERE id = ?", (next_time, rec.id)
                )
        return ids

    def checkpoint(self) -> None:
        """Copy committed WAL frames into the database without blocking anyone (PASSIVE)."""
        self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def next_fire_time(self) -> float | None:
        r = (
            self._conn()
            .execute("SELECT min(next_run_time) FROM schedules WHERE state = 'active'")
            .fetchone()
        )
        return None if r is None or r[0] is None else float(r[0])

    @staticmethod
    def _active_count(conn: sqlite3.Connection, schedule_id: str) -> int:
        r = conn.execute(
            "SELECT count(*) FROM jobs WHERE schedule_id = ? "
            "AND status IN ('SCHEDULED', 'RUNNING')",
            (schedule_id,),
        ).fetchone()
        return int(r[0])

    def active_count(self, schedule_id: str) -> int:
        return self._active_count(self._conn(), schedule_id)

    # -- processes -------------------------------------------------------------------

    def register_process(self, rec: ProcessRecord) -> None:
        with self._tx() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO processes ({_PROC_COLS}) VALUES (?,?,?,?,?,?)",
                (rec.token, rec.kind, rec.pid, rec.parent, rec.started_at, rec.info),
            )

    def unregister_process(self, token: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM processes WHERE token = ?", (token,))

    def list_processes(self) -> list[ProcessRecord]:
        sql = f"SELECT {_PROC_COLS} FROM processes ORDER BY started_at"
        return [ProcessRecord(*r) for r in self._conn().execute(sql)]


_STORES: dict[Path, SqliteStore] = {}
_STORES_LOCK = threading.Lock()


def _reset_lock_in_child() -> None:
    global _STORES_LOCK
    _STORES_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def open_store(home: Home) -> SqliteStore:
    """One store object per home per process, so handles and apps share connections."""
    with _STORES_LOCK:
        store = _STORES.get(home.path)
        if store is None:
            store = _STORES[home.path] = SqliteStore(home)
        return store
