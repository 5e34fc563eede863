"""The job rows: pushing, claiming, settling, cancelling, reading.

The SQL of jobs is here and in completions.py (recording outcomes) and sql.py (shared
fragments); the rules (retry or not, when, what a dead owner's job becomes) arrive
as ready Completions or as a function that makes them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from mpjobs.errors import StoreError
from mpjobs.store import base
from mpjobs.store.base import (
    CANCELLED,
    RUNNING,
    SCHEDULED,
    Completion,
    Decide,
    JobRecord,
    NewJob,
)
from mpjobs.store.completions import CompletionQueries
from mpjobs.store.due import DueQueries
from mpjobs.store.rows import Conn
from mpjobs.store.sql import (
    FINISHED_SQL,
    INSERT_JOB_ID,
    JOB_COLS,
    LIVE_SQL,
    expired_rows,
    grouped_inserts,
    insert_of,
    job_params,
    queue_filter,
)


class JobQueries(DueQueries, CompletionQueries):
    def push(self, jobs: Sequence[NewJob], now: float) -> list[tuple[int, bool]]:
        """Insert jobs in one transaction; for a live duplicate unique_key, return its id."""
        with self._tx() as conn:
            # A Batch (store/batch.py) holds plain jobs only: not read job by job.
            if getattr(jobs, "plain", False) or all(j.unique_key is None for j in jobs):
                self._count_pushed(conn, jobs)
                if len(jobs) == 1:
                    if jobs[0].gated:
                        sql, params = insert_of(jobs[0], now)
                        cur = conn.execute(sql + " RETURNING id", params)
                    else:
                        cur = conn.execute(INSERT_JOB_ID, job_params(jobs[0], now))
                    return [(int(cur.fetchone()[0]), True)]
                for sql, rows in grouped_inserts(jobs, now):
                    conn.executemany(sql, rows)
                # Rowids are max+1 and we hold the write lock: this batch is contiguous.
                end = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
                n = len(jobs)
                return list(zip(range(end - n + 1, end + 1), [True] * n, strict=True))
            out: list[tuple[int, bool]] = []
            for j in jobs:
                try:
                    sql, params = insert_of(j, now)
                    cur = conn.execute(sql + " RETURNING id", params)
                    out.append((int(cur.fetchone()[0]), True))
                except self.integrity_errors:
                    row = conn.execute(
                        f"SELECT id FROM jobs WHERE unique_key = ? AND status IN {LIVE_SQL}",
                        (j.unique_key,),
                    ).fetchone()
                    out.append((int(row[0]), False))
            self._count_pushed(conn, [j for j, (_, new) in zip(jobs, out, strict=True) if new])
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
        qsql, qargs = queue_filter(queues)
        plan = self._claim_plan(queues, now)
        with self._tx() as conn:
            self._complete_many(conn, owner, done, now)
            rows = self._claim_rows(
                conn, owner, pid, list(queues or ()), now, limit, share, plan
            )
            if rows is None:  # due jobs with control options: the claim of store/gated.py
                if limit > 1 and share > 1:
                    limit = self._fair_share(conn, queues, now, limit, share)
                rows = self._claim_gated(conn, owner, pid, qsql, qargs, now, limit)
            self._count_started(conn, owner, rows)
        jobs = [JobRecord(*r) for r in rows]
        jobs.sort(key=lambda j: (j.priority, j.exec_at, j.id))
        return jobs

    def _claim_plan(self, queues: Sequence[str] | None, now: float) -> Any:
        """SQLite: the due pairs, read before the write lock (a WAL read waits for no one).

        The walk of the pairs is most of a claim's reading on a store with many delayed
        jobs (one seek per queue and pair), and it needs no lock: read under the writer
        lock it held every other claimer back for it. A pair that became due since
        this read is left to the next claim, as a job pushed a moment later would be;
        a pair emptied since by another worker gives nothing. None of it loses a job: a
        claim that took nothing sends its worker back to `has_due`.
        """
        return self._levels(self._conn(), queues, now)

    def _claim_rows(
        self, conn: Conn, owner: str, pid: int, queues: list[str], now: float, limit: int,
        share: int, plan: Any,
    ) -> list[Any] | None:
        """SQLite's claim: its one writer at a time makes select-then-update race-free.

        A probe for due gated jobs first (None: there are some, store/gated.py claims
        them); under the write lock the probe is exact, so when it found none, the due
        jobs of due.py are all plain (the picks of the plan's pairs take due jobs only).
        Their count up to `limit * share` is the fair share.
        """
        if self._gated_due(conn, queues, now):
            return None
        levels: list[tuple[int, list[str]]] = plan
        if limit > 1 and share > 1:
            limit = self._share_of(conn, levels, now, limit, share)
        return self._claim_due(conn, owner, pid, levels, now, limit)

    def complete(self, owner: str, done: Sequence[Completion], now: float) -> None:
        with self._tx() as conn:
            self._complete_many(conn, owner, done, now)

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
            self._count_released(conn, owner, job_ids)

    def recover(
        self, owner: str, decide: Decide, now: float
    ) -> list[tuple[JobRecord, Completion]]:
        """Settle every job a dead `owner` still holds, each as `decide` says."""
        with self._tx() as conn:
            self._fence(conn)
            self._owner_gone(conn, owner)
            rows = [
                JobRecord(*r)
                for r in conn.execute(
                    f"SELECT {JOB_COLS} FROM jobs WHERE owner = ? AND status = '{RUNNING}' "
                    "ORDER BY id",
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
            self._resolve(conn, [job.id for job, _ in settled], now)  # deps.py
            self._count_finished(conn, owner, [job.id for job in rows], now)
            conn.execute(
                "UPDATE jobs SET owner = NULL, pid = NULL WHERE owner = ? AND status = ?",
                (owner, CANCELLED),
            )
            return settled

    def get(self, job_id: int) -> JobRecord | None:
        row = self._conn().execute(f"SELECT {JOB_COLS} FROM jobs WHERE id = ?", (job_id,))
        r = row.fetchone()
        return JobRecord(*r) if r else None

    def status_of(self, job_id: int) -> str | None:
        r = self._conn().execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if r is None else str(r[0])

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
            # Conditional on what was read: on PostgreSQL the job may have moved since.
            cur = conn.execute(
                f"UPDATE jobs SET status = '{CANCELLED}', finished_at = ?, error = ?, owner = ? "
                "WHERE id = ? AND status = ? AND coalesce(owner, '') = ?",
                (now, "cancelled while running" if running else "cancelled",
                 owner if running else None, job_id, status, owner or ""),
            )  # fmt: skip
            if cur.rowcount != 1:
                return False, None
            self._resolve(conn, [job_id], now)  # its dependents are cancelled (deps.py)
            return True, owner if running else None

    def retry(self, job_id: int, now: float) -> bool:
        """Put a finished job back in the queue with a fresh set of attempts.

        Refused with a StoreError (an MpjobsError) when another live job has taken the
        job's unique key since: two live jobs with one key is what the key forbids.
        Its expiry is cleared: a retry asked for by a person means now (control/expiry.py).
        """
        try:
            with self._tx() as conn:
                cur = conn.execute(
                    f"UPDATE jobs SET status = '{SCHEDULED}', exec_at = ?, attempts = 0, "
                    "owner = NULL, pid = NULL, result = NULL, exc = NULL, error = NULL, "
                    "started_at = NULL, finished_at = NULL, expires_at = NULL "
                    f"WHERE id = ? AND status IN {FINISHED_SQL}",
                    (now, job_id),
                )
                return cur.rowcount == 1
        except self.integrity_errors as exc:
            row = self._conn().execute("SELECT unique_key FROM jobs WHERE id = ?", (job_id,))
            key = row.fetchone()
            raise StoreError(
                f"cannot retry job {job_id}: another job with its unique key "
                f"{key[0] if key else None!r} is waiting or running"
            ) from exc

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

    def next_exec_at(self, queues: Sequence[str] | None) -> float | None:
        """When the next job falls due; a gated job due already (waiting on its key) is
        left out, or an idle worker would wake at once, again and again."""
        first = self._first_due_at(queues, plain_only=False)
        now = time.time()
        if first is None or first > now:
            return first  # the common case: one seek per (queue, priority), as before
        # Due, yet has_due found nothing startable: gated jobs waiting on a key.
        plain = self._first_due_at(queues, plain_only=True)
        gated = self._next_gated(queues, now)
        return min((t for t in (plain, gated) if t is not None), default=None)

    def purge(self, before: float, chunk: int = 2000) -> int:
        """Delete jobs that finished before `before`, in short transactions.

        In chunks (see sql.expired_rows), so workers never wait long for the write lock.
        """
        total = 0
        self.catch_up_pushed()  # in short transactions: each below has only a few left
        while True:
            with self._tx() as conn:
                self._fence(conn)
                self._catch_up_pushed(conn)  # count rows as pushed before they go
                n = conn.execute(
                    f"DELETE FROM jobs WHERE id IN ({expired_rows()} LIMIT ?)",
                    (before, chunk),
                ).rowcount
            total += n
            if n < chunk:
                self.fold_counters()  # the counter rows of processes gone (counters.py)
                return total
