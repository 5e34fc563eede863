"""The operator's reads and bulk writes: keyset pages of jobs, one job's every column,
purging by filter, and the last hour's outcomes per minute.

Written once for SQLite and PostgreSQL, like jobs.py: `?` placeholders and statements
both accept. Every read is bounded by an index (schema version 2): a page of jobs walks
newest first and stops after `limit` rows, so it costs the same with a thousand jobs or
with millions; the per-minute counts read only the last hour of finished_at.

The indexes a status filter walks are partial, one per finished status (`WHERE status =
'FAILED'`, on id), not one on (status, id): SQLite would take such an index for the
claim (`status = 'SCHEDULED'`) instead of jobs_ready and sort the backlog on every
claim, and a partial index costs a job one entry, written when it finishes. So the
status is spelled into the SQL (a partial index serves only a query naming its very
literal, as in sql.py), and several statuses are one bounded query each, merged.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from typing import Any

from mpjobs.store.base import RUNNING, JobFilter, JobRecord, JobStatus
from mpjobs.store.rows import Rows
from mpjobs.store.sql import JOB_COLS, expired_rows

_STATUSES = {s.value for s in JobStatus}


def status_sql(statuses: tuple[str, ...]) -> str:
    """`status = 'X'` or `status IN ('X', 'Y')`, spelled; only known statuses (no quoting)."""
    bad = sorted(set(statuses) - _STATUSES)
    if bad:
        raise ValueError(f"unknown job status {bad[0]!r}")
    if len(statuses) == 1:
        return f"status = '{statuses[0]}'"
    return "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"


def filter_sql(where: JobFilter) -> tuple[list[str], list[Any]]:
    """The WHERE terms (and their arguments) of a filter; statuses spelled, the rest bound."""
    terms: list[str] = []
    args: list[Any] = []
    if where.statuses:
        terms.append(status_sql(where.statuses))
    if where.queue is not None:
        terms.append("queue = ?")
        args.append(where.queue)
    if where.name is not None:
        terms.append("name = ?")
        args.append(where.name)
    return terms, args


class ListingQueries(Rows):
    def job_page(self, where: JobFilter, before_id: int | None, limit: int) -> list[JobRecord]:
        statuses = tuple(dict.fromkeys(where.statuses))
        if len(statuses) > 1:  # each walks its own index; the newest `limit` of all of them
            pages = [
                self._page(dataclasses.replace(where, statuses=(s,)), before_id, limit)
                for s in statuses
            ]
            return heapq.nlargest(limit, itertools.chain(*pages), key=lambda r: r.id)
        return self._page(where, before_id, limit)

    def _page(self, where: JobFilter, before_id: int | None, limit: int) -> list[JobRecord]:
        terms, args = filter_sql(where)
        if where.statuses == (RUNNING,):
            # Few rows (one per busy worker), so read them all from jobs_running and sort
            # here: with ORDER BY id the planner walks the table backwards instead.
            sql = f"SELECT {JOB_COLS} FROM jobs WHERE {' AND '.join(terms)}"
            rows = [JobRecord(*r) for r in self._conn().execute(sql, args)]
            rows = [r for r in rows if before_id is None or r.id < before_id]
            return sorted(rows, key=lambda r: -r.id)[:limit]
        if before_id is not None:
            terms.append("id < ?")
            args.append(before_id)
        cond = " AND ".join(terms) or "TRUE"
        sql = f"SELECT {JOB_COLS} FROM jobs WHERE {cond} ORDER BY id DESC LIMIT ?"
        return [JobRecord(*r) for r in self._conn().execute(sql, [*args, limit])]

    def list_jobs(
        self, status: str | None, queue: str | None, limit: int, schedule_id: str | None = None
    ) -> list[JobRecord]:
        """Newest first; a status's jobs are a page of its own index (see job_page)."""
        if status is not None and schedule_id is None:
            return self.job_page(JobFilter((status,), queue), None, limit)
        where, args = ["TRUE"], []
        if status is not None:
            where.append(status_sql((status,)))
        if queue is not None:
            where.append("queue = ?")
            args.append(queue)
        if schedule_id is not None:
            where.append("schedule_id = ?")
            args.append(schedule_id)
        sql = f"SELECT {JOB_COLS} FROM jobs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"
        return [JobRecord(*r) for r in self._conn().execute(sql, [*args, limit])]

    def job_ids(self, status: str | None, queue: str | None, limit: int) -> list[int]:
        """The ids of `list_jobs`, newest first, for handles that read the rest fresh.

        A page of a finished status walks its index and reads each row only for its
        queue, so no page of 100 decodes 100 whole rows: a third of the cost, 0.2-0.3 ms
        against 0.5-0.9 ms with two million finished jobs.
        """
        if status is None or status == RUNNING:
            return [r.id for r in self.list_jobs(status, queue, limit)]
        terms, args = filter_sql(JobFilter((status,), queue))
        sql = f"SELECT id FROM jobs WHERE {' AND '.join(terms)} ORDER BY id DESC LIMIT ?"
        return [int(r[0]) for r in self._conn().execute(sql, [*args, limit])]

    def job_row(self, job_id: int) -> dict[str, object] | None:
        cur = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,))
        row = cur.fetchone()
        if row is None:
            return None
        names = [d[0] for d in getattr(cur, "description", None) or ()]
        return dict(zip(names, row, strict=True))

    def purge_matching(self, where: JobFilter, before: float, chunk: int = 2000) -> int:
        """Delete finished jobs that match and finished before `before`, in short chunks.

        As `purge`: the newest row is always kept, so a job id is never handed out twice.
        """
        terms, args = filter_sql(where)
        cond = "".join(f" AND {t}" for t in terms)
        total = 0
        while True:
            with self._tx() as conn:
                n = conn.execute(
                    f"DELETE FROM jobs WHERE id IN ({expired_rows(cond)} LIMIT ?)",
                    [before, *args, chunk],
                ).rowcount
            total += n
            if n < chunk:
                return total

    def finished_per_minute(self, since: float) -> list[tuple[int, str, int]]:
        # Integer division of a whole second truncates in both dialects (a CAST of the
        # float itself rounds on PostgreSQL but truncates on SQLite).
        sql = (
            "SELECT CAST(finished_at AS BIGINT) / 60 AS minute, status, count(*) FROM jobs "
            "WHERE finished_at >= ? GROUP BY minute, status"
        )
        return [(int(m), str(s), int(n)) for m, s, n in self._conn().execute(sql, (since,))]
