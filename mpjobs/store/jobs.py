"""The job rows: pushing, claiming, recording outcomes, settling, reading.

All SQL about jobs is here; the rules (retry or not, when) arrive as ready Completions.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from mpjobs.errors import StoreError
from mpjobs.rules.schedules import max_failures_of, tally
from mpjobs.store import base
from mpjobs.store.base import (
    CANCELLED,
    PERMANENTLY_FAILED,
    RUNNING,
    SCHEDULED,
    STOPPED,
    TERMINAL,
    Completion,
    Decide,
    JobRecord,
    NewJob,
)
from mpjobs.store.connection import Connector

log = logging.getLogger("mpjobs.store")

_JOB_COLS = ", ".join(f.name for f in JobRecord.__dataclass_fields__.values())
_INSERT_JOB = (
    "INSERT INTO jobs (name, func, func_pickle, payload, queue, priority, exec_at, "
    "max_attempts, retry_backoff, timeout, memory_limit, unique_key, schedule_id, "
    f"status, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'{SCHEDULED}',?)"
)
# Statuses are spelled into the SQL (from base's constants, once, here), not bound:
# SQLite uses a partial index (schema.py) only for a query whose WHERE names the same
# literal, and the claim and completion statements are the hot path.
_LIVE = f"('{SCHEDULED}', '{RUNNING}')"
_FINISHED = "(" + ", ".join(f"'{s}'" for s in sorted(TERMINAL)) + ")"



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
        f"VALUES (?, {at}, {consts}, '{SCHEDULED}')"
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


def _store_fault(exc: BaseException) -> bool:
    """True when a write failed because of the state of the store, not what it was given.

    A full disk, a locked, read-only or damaged file: the writer keeps its outcome and
    tries again later, so the error propagates. Anything else (an unencodable text, a
    blob over SQLite's limit, a value of the wrong type, a constraint, a bug) would fail
    the same way on every retry, so the job it belongs to is quarantined instead.
    """
    if isinstance(exc, sqlite3.OperationalError):
        return "too big" not in str(exc)
    return isinstance(exc, (StoreError, OSError)) or type(exc) is sqlite3.DatabaseError


@contextlib.contextmanager
def _savepoint(conn: sqlite3.Connection) -> Iterator[None]:
    """Undo only this block if it raises, keeping the rest of the transaction."""
    conn.execute("SAVEPOINT outcome")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK TO outcome")
        conn.execute("RELEASE outcome")
        raise
    conn.execute("RELEASE outcome")


def _queue_filter(queues: Sequence[str] | None) -> tuple[str, list[Any]]:
    if not queues:
        return "", []
    return f" AND queue IN ({','.join('?' * len(queues))})", list(queues)


class JobQueries(Connector):
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
                        f"SELECT id FROM jobs WHERE unique_key = ? AND status IN {_LIVE}",
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
                    f"SELECT count(*) FROM (SELECT 1 FROM jobs WHERE status = '{SCHEDULED}' "
                    f"AND exec_at <= ?{qsql} LIMIT ?)",
                    [now, *qargs, limit * share],
                ).fetchone()[0]
                limit = max(1, min(limit, -(-ready // share)))
            rows = conn.execute(
                f"UPDATE jobs SET status = '{RUNNING}', owner = ?, pid = ?, started_at = ?, "
                "attempts = attempts + 1 WHERE id IN (SELECT id FROM jobs "
                f"WHERE status = '{SCHEDULED}' AND exec_at <= ?{qsql} "
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
        """Apply completions; plain terminal ones in one executemany, the rest one by one.

        A completion that cannot be written never fails the batch: the batch is retried
        row by row and that one job is quarantined (see `_apply`).
        """
        plain = [c for c in done if c.schedule_id is None and c.status != SCHEDULED]
        rest = [] if len(plain) == len(done) else [
            c for c in done if c.schedule_id is not None or c.status == SCHEDULED
        ]
        if plain:
            # No savepoint needed: a failed row was not applied (SQLite undoes a failed
            # statement), and applying the rows again one by one changes none of those
            # already applied, since each update requires the job to be RUNNING still.
            try:
                conn.executemany(
                    "UPDATE jobs SET status = ?, result = ?, exc = ?, error = ?, "
                    "finished_at = ?, owner = NULL, pid = NULL "
                    f"WHERE id = ? AND status = '{RUNNING}' AND owner = ?",
                    [
                        (c.status, c.result, c.exc, c.error, now, c.job_id, owner)
                        for c in map(base.storable, plain)
                    ],
                )
            except Exception as exc:
                if _store_fault(exc):
                    raise
                rest = plain + rest  # find the bad one(s), row by row
        for c in rest:
            self._apply(conn, owner, c, now)

    def _apply(
        self, conn: sqlite3.Connection, owner: str, c: Completion, now: float
    ) -> Completion:
        """Apply one completion, or quarantine its job if it cannot be written; the one applied.

        The completion is written in a savepoint; if its data cannot be stored, that is
        undone and the job ends FAILED with an error saying why, instead. Retrying would
        fail the same way, and raising would fail every other job of the transaction and,
        in a settler, stop it from ever settling this owner: a crash loop.
        """
        try:
            with _savepoint(conn):
                safe = base.storable(c)
                self._complete(conn, owner, safe, now)
            return safe
        except Exception as exc:
            if _store_fault(exc):
                raise
            q = base.quarantined(c, exc)
            log.error("job %s: %s", c.job_id, q.error.splitlines()[0] if q.error else exc)
            self._complete(conn, owner, q, now)
            return q

    def _complete(self, conn: sqlite3.Connection, owner: str, c: Completion, now: float) -> bool:
        """Apply a completion if `owner` still runs the job; keep a schedule's failure count."""
        if c.status == SCHEDULED:
            cur = conn.execute(
                f"UPDATE jobs SET status = '{SCHEDULED}', exec_at = ?, owner = NULL, pid = NULL, "
                "started_at = NULL, error = ?, exc = ?, attempts = attempts - ? "
                f"WHERE id = ? AND status = '{RUNNING}' AND owner = ?",
                (c.exec_at, c.error, c.exc, int(c.refund_attempt), c.job_id, owner),
            )
            return cur.rowcount == 1
        row = conn.execute(
            "UPDATE jobs SET status = ?, result = ?, exc = ?, error = ?, finished_at = ?, "
            f"owner = NULL, pid = NULL WHERE id = ? AND status = '{RUNNING}' AND owner = ? "
            "RETURNING schedule_id",
            (c.status, c.result, c.exc, c.error, now, c.job_id, owner),
        ).fetchone()
        if row is None:
            return False
        if row[0] is not None:
            self._count_schedule_outcome(conn, row[0], c)
        return True

    def _count_schedule_outcome(self, conn: sqlite3.Connection, sid: str, c: Completion) -> None:
        """Apply what the max_failures rule (rules/schedules.py) says of this outcome."""
        row = conn.execute("SELECT failures, options FROM schedules WHERE id = ?", (sid,))
        found = row.fetchone()
        if found is None:  # the schedule was removed meanwhile
            return
        t = tally(sid, c.status, int(found[0]), max_failures_of(found[1]))
        if t is None:
            return
        if not t.stop:
            conn.execute("UPDATE schedules SET failures = ? WHERE id = ?", (t.failures, sid))
            return
        conn.execute(
            f"UPDATE schedules SET failures = ?, state = '{STOPPED}', next_run_time = NULL "
            "WHERE id = ?",
            (t.failures, sid),
        )
        conn.execute(
            f"UPDATE jobs SET status = '{PERMANENTLY_FAILED}', error = coalesce(error, '') || ? "
            "WHERE id = ?",
            (t.note, c.job_id),
        )

    def release(self, owner: str, job_ids: Sequence[int]) -> None:
        """Give back claimed jobs that were never started, refunding their attempt."""
        if not job_ids:
            return
        with self._tx() as conn:
            conn.executemany(
                f"UPDATE jobs SET status = '{SCHEDULED}', owner = NULL, pid = NULL, "
                "started_at = NULL, attempts = attempts - 1 "
                f"WHERE id = ? AND owner = ? AND status = '{RUNNING}'",
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
                    f"SELECT {_JOB_COLS} FROM jobs WHERE owner = ? AND status = '{RUNNING}'",
                    (owner,),
                )
            ]
            settled: list[tuple[JobRecord, Completion]] = []
            for job in rows:
                try:
                    c = decide(job)
                except Exception as exc:  # one job's bad record must not stop the rest
                    c = base.quarantined(Completion(job.id, base.FAILED), exc, "cannot settle")
                settled.append((job, self._apply(conn, owner, c, now)))
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
                f"UPDATE jobs SET status = '{CANCELLED}', finished_at = ?, error = ?, owner = ? "
                "WHERE id = ?",
                (now, "cancelled while running" if running else "cancelled",
                 owner if running else None, job_id),
            )  # fmt: skip
            return True, owner if running else None

    def retry(self, job_id: int, now: float) -> bool:
        """Put a finished job back in the queue with a fresh set of attempts.

        Refused with a StoreError (an MpjobsError) when another live job has taken the
        job's unique key since: two live jobs with one key is what the key forbids.
        """
        with self._tx() as conn:
            try:
                cur = conn.execute(
                    f"UPDATE jobs SET status = '{SCHEDULED}', exec_at = ?, attempts = 0, "
                    "owner = NULL, pid = NULL, result = NULL, exc = NULL, error = NULL, "
                    f"started_at = NULL, finished_at = NULL WHERE id = ? AND status IN {_FINISHED}",
                    (now, job_id),
                )
            except sqlite3.IntegrityError as exc:
                key = conn.execute("SELECT unique_key FROM jobs WHERE id = ?", (job_id,))
                row = key.fetchone()
                raise StoreError(
                    f"cannot retry job {job_id}: another job with its unique key "
                    f"{row[0] if row else None!r} is waiting or running"
                ) from exc
            return cur.rowcount == 1

    def running_owners(self) -> list[str]:
        sql = f"SELECT DISTINCT owner FROM jobs WHERE status = '{RUNNING}'"
        return [r[0] for r in self._conn().execute(sql)]

    def kill_requests(self, owners: Sequence[str]) -> list[tuple[int, str]]:
        if not owners:
            return []
        sql = (
            f"SELECT id, owner FROM jobs WHERE status = '{CANCELLED}' AND owner IS NOT NULL "
            f"AND owner IN ({','.join('?' * len(owners))})"
        )
        return [(int(r[0]), str(r[1])) for r in self._conn().execute(sql, list(owners))]

    def clear_owner(self, job_id: int) -> None:
        with self._tx() as conn:
            conn.execute(
                f"UPDATE jobs SET owner = NULL WHERE id = ? AND status != '{RUNNING}'", (job_id,)
            )

    def has_due(self, queues: Sequence[str] | None, now: float) -> bool:
        """A read-only check, so idle workers woken together do not all queue for the lock."""
        qsql, qargs = _queue_filter(queues)
        return (
            self._conn()
            .execute(
                f"SELECT 1 FROM jobs WHERE status = '{SCHEDULED}' AND exec_at <= ?{qsql} LIMIT 1",
                [now, *qargs],
            )
            .fetchone()
            is not None
        )

    def next_exec_at(self, queues: Sequence[str] | None) -> float | None:
        qsql, qargs = _queue_filter(queues)
        r = (
            self._conn()
            .execute(f"SELECT min(exec_at) FROM jobs WHERE status = '{SCHEDULED}'{qsql}", qargs)
            .fetchone()
        )
        return None if r is None or r[0] is None else float(r[0])

    def queue_depths(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        sql = (
            "SELECT queue, status, count(*) FROM jobs "
            f"WHERE status IN {_LIVE} GROUP BY queue, status"
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
                    f"AND status NOT IN {_LIVE} "
                    "AND id < (SELECT max(id) FROM jobs) ORDER BY id LIMIT ?)",
                    (before, chunk),
                ).rowcount
            total += n
            if n < chunk:
                return total
