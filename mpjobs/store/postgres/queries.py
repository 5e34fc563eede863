"""The statements PostgreSQL runs differently: pushes, claims and schedule fires.

Everything else is the shared SQL of store/jobs.py, completions.py and schedules.py.

- A single push is one statement in autocommit (insert, notify and commit in one round
  trip); a batch is COPY into ids taken from the sequence first, so `push_many` streams
  rows instead of binding them one statement at a time.
- A claim picks rows in a MATERIALIZED CTE with `FOR UPDATE SKIP LOCKED`: concurrent
  claimers skip each other's rows instead of queueing, and the fence keeps the planner
  from re-evaluating the pick for more rows than the LIMIT (as Oban's notes explain).
- A fire inserts with ON CONFLICT DO NOTHING on (schedule, fire time), so even two
  overlapping leaders cannot fire one schedule twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from mpjobs.store.base import LIVE, RUNNING, SCHEDULED, NewJob
from mpjobs.store.batch import Batch
from mpjobs.store.counters import COUNT_PUSHED_FROM, CounterQueries, push_token
from mpjobs.store.due import DueQueries
from mpjobs.store.postgres.connection import PgConn, PgConnector, pg_sql
from mpjobs.store.postgres.copytext import COPY_RUN_COLS, runs_text
from mpjobs.store.sql import (
    INSERT_GATED,
    INSERT_JOB,
    LIVE_SQL,
    PLAIN_COLS,
    gate_params,
    insert_of,
    job_params,
    queue_filter,
)

_COPY_COLS = (
    "id, name, func, func_pickle, payload, queue, priority, exec_at, max_attempts, "
    "retry_backoff, timeout, memory_limit, unique_key, schedule_id, status, created_at"
)
_GATE_COPY_COLS = ", expires_at, concurrency_key, concurrency_limit, rate_limit, rate_period, gated"
# The pushed counter rides in the same statement (a data-modifying CTE always runs).
_ONE = (
    "WITH j AS ({} RETURNING id, name, queue), "
    f"c AS ({COUNT_PUSHED_FROM.format(rows='j')}) SELECT id, pg_notify(?, ?) FROM j"
)
_INSERT_ONE = pg_sql(_ONE.format(INSERT_JOB))
_INSERT_ONE_GATED = pg_sql(_ONE.format(INSERT_GATED))
_UNIQUE = (
    "{} ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL "
    f"AND status IN {LIVE_SQL} DO NOTHING RETURNING id"
)
_INSERT_UNIQUE = pg_sql(_UNIQUE.format(INSERT_JOB))
_INSERT_UNIQUE_GATED = pg_sql(_UNIQUE.format(INSERT_GATED))
_LIVE_WITH_KEY = pg_sql(f"SELECT id FROM jobs WHERE unique_key = ? AND status IN {LIVE_SQL}")
_INSERT_FIRED = pg_sql(
    "INSERT INTO jobs (name, func, func_pickle, payload, queue, priority, exec_at, "
    "max_attempts, retry_backoff, timeout, memory_limit, unique_key, schedule_id, "
    "status, created_at, fired_for, expires_at, concurrency_key, concurrency_limit, "
    "rate_limit, rate_period, gated) VALUES "
    f"(?,?,?,?,?,?,?,?,?,?,?,?,?,'{SCHEDULED}',?,?,?,?,?,?,?,?) "
    "ON CONFLICT (schedule_id, fired_for) WHERE fired_for IS NOT NULL DO NOTHING RETURNING id"
)
assert len(LIVE) == 2


class PgQueries(DueQueries, PgConnector, CounterQueries):
    _skip_locked = " FOR UPDATE SKIP LOCKED"  # the gated claim's row locks (store/gated.py)

    def push(self, jobs: Sequence[NewJob], now: float) -> list[tuple[int, bool]]:
        """Insert jobs in one transaction; for a live duplicate unique_key, return its id."""
        if len(jobs) == 1 and jobs[0].unique_key is None:
            # One statement in autocommit is its own transaction: insert, notify, commit.
            raw = self._raw()
            j = jobs[0]
            if j.gated:
                sql, params = _INSERT_ONE_GATED, insert_of(j, now)[1]
            else:
                sql, params = _INSERT_ONE, job_params(j, now)
            row = raw.execute(
                sql, (*params, push_token(), self.channel, self.host_id)
            ).fetchone()
            self._ring()
            assert row is not None
            return [(int(row[0]), True)]
        with self._tx() as conn:
            return self._push_rows(conn, jobs, now)

    def push_in(
        self, user: psycopg.Connection[Any], jobs: Sequence[NewJob], now: float
    ) -> list[tuple[int, bool]]:
        """`push`, on the caller's connection and inside the caller's transaction.

        The jobs commit or roll back with the caller's own rows (the transactional
        outbox pattern). The app's schema is put first on the search path only for these
        statements, then the caller's path is restored; the notification is sent with
        the caller's commit, to every host, this one included.
        """
        idle = user.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if idle and not user.autocommit:
            # The caller's transaction has not begun yet (Django's atomic() before its
            # first query): begin it, or transaction() below would open and COMMIT one
            # of its own, and the jobs would outlive the caller's rollback.
            user.execute("SELECT 1")
        with user.transaction():  # a savepoint in the caller's transaction, or one of its own
            old = user.execute("SELECT current_setting('search_path')").fetchone()
            user.execute("SELECT set_config('search_path', %s, true)", (self.target.schema,))
            try:
                out = self._push_rows(PgConn(user), jobs, now)
                user.execute("SELECT pg_notify(%s, 'tx')", (self.channel,))
            finally:
                user.execute(
                    "SELECT set_config('search_path', %s, true)", (old[0] if old else "",)
                )
        return out

    def _push_rows(
        self, conn: PgConn, jobs: Sequence[NewJob], now: float
    ) -> list[tuple[int, bool]]:
        """The body of a batch push, in the transaction given: rows, then their counts."""
        if isinstance(jobs, Batch):  # plain jobs in runs (store/batch.py)
            out = [(i, True) for i in self._copy(conn, jobs, now)]
            self._count_pushed(conn, jobs.templates())
            return out
        if all(j.unique_key is None for j in jobs):
            out = [(i, True) for i in self._copy(conn, jobs, now)]
        else:
            out = [self._push_unique(conn, j, now) for j in jobs]
        self._count_pushed(conn, [j for j, (_, new) in zip(jobs, out, strict=True) if new])
        return out

    def _copy(self, conn: PgConn, jobs: Sequence[NewJob], now: float) -> list[int]:
        """COPY the jobs in, with ids drawn from the sequence first (push order = id order)."""
        raw = conn.raw
        ids = [
            r[0]
            for r in raw.execute(
                "SELECT nextval('jobs_id_seq') FROM generate_series(1, %s)", (len(jobs),)
            ).fetchall()
        ]
        ids.sort()
        if isinstance(jobs, Batch):
            self._copy_runs(raw, ids, jobs, now)
            return [int(i) for i in ids]
        if any(j.gated for j in jobs):
            self._copy_gated(raw, ids, jobs, now)
            return [int(i) for i in ids]
        with raw.cursor().copy(f"COPY jobs ({_COPY_COLS}) FROM STDIN") as copy:
            write = copy.write_row
            for i, j in zip(ids, jobs, strict=True):
                write((i, j.name, j.func, j.func_pickle, j.payload, j.queue, j.priority,
                       j.exec_at, j.max_attempts, j.retry_backoff, j.timeout, j.memory_limit,
                       None, j.schedule_id, SCHEDULED, now))  # fmt: skip
        return [int(i) for i in ids]

    def _copy_runs(
        self, raw: psycopg.Connection[Any], ids: list[Any], batch: Batch, now: float
    ) -> None:
        """COPY a Batch as text made a run at a time (postgres/copytext.py)."""
        with raw.cursor().copy(f"COPY jobs ({COPY_RUN_COLS}) FROM STDIN") as copy:
            for text in runs_text(ids, batch, now):
                copy.write(text)

    def _copy_gated(
        self, raw: psycopg.Connection[Any], ids: list[Any], jobs: Sequence[NewJob], now: float
    ) -> None:
        """COPY a batch holding jobs with control options, with their columns too."""
        cols = _COPY_COLS + _GATE_COPY_COLS
        with raw.cursor().copy(f"COPY jobs ({cols}) FROM STDIN") as copy:
            for i, j in zip(ids, jobs, strict=True):
                copy.write_row((i, j.name, j.func, j.func_pickle, j.payload, j.queue,
                                j.priority, j.exec_at, j.max_attempts, j.retry_backoff,
                                j.timeout, j.memory_limit, None, j.schedule_id, SCHEDULED,
                                now, *gate_params(j), 1 if j.gated else None))  # fmt: skip

    def _push_unique(self, conn: PgConn, j: NewJob, now: float) -> tuple[int, bool]:
        """Insert unless a live job holds the key; then that job's id (the key's owner)."""
        raw = conn.raw
        while True:
            if j.gated:
                row = raw.execute(_INSERT_UNIQUE_GATED, insert_of(j, now)[1]).fetchone()
            else:
                row = raw.execute(_INSERT_UNIQUE, job_params(j, now)).fetchone()
            if row is not None:
                return int(row[0]), True
            if j.unique_key is None:  # pragma: no cover - only keyed jobs conflict
                raise AssertionError("a job without a unique key conflicted")
            live = raw.execute(_LIVE_WITH_KEY, (j.unique_key,)).fetchone()
            if live is not None:  # else it finished in between: insert again
                return int(live[0]), False

    def _claim_plan(self, queues: Sequence[str] | None, now: float) -> Any:
        """Nothing: PostgreSQL's claim is one statement, its rows locked as it picks."""
        return None

    def _claim_rows(
        self, conn: Any, owner: str, pid: int, queues: list[str], now: float, limit: int,
        share: int, plan: Any,
    ) -> list[Any] | None:
        """The claim of before job control: it picks the first `limit` due jobs as ever,
        and updates only the plain ones among them (a filter in the pick made the planner
        misjudge it, twice the cost). A gated job picked stays locked and SCHEDULED; a
        claim that took fewer than `limit` probes for due gated jobs and, if there are
        some, takes the rest of its batch through the gated claim, in queue order."""
        qsql, qargs = queue_filter(queues)
        if limit > 1 and share > 1:
            limit = self._fair_share(conn, queues, now, limit, share)
        rows = list(conn.execute(
            "WITH picked AS MATERIALIZED (SELECT id, gated FROM jobs "
            f"WHERE status = '{SCHEDULED}' AND exec_at <= ?{qsql} "
            "ORDER BY priority, exec_at, id LIMIT ? FOR UPDATE SKIP LOCKED) "
            f"UPDATE jobs SET status = '{RUNNING}', owner = ?, pid = ?, started_at = ?, "
            "attempts = jobs.attempts + 1 FROM picked "
            "WHERE jobs.id = picked.id AND picked.gated IS NULL "
            f"RETURNING {', '.join('jobs.' + c for c in PLAIN_COLS.split(', '))}",
            [now, *qargs, limit, owner, pid, now],
        ).fetchall())
        if len(rows) < limit and self._gated_due(conn, queues, now):
            rows += self._claim_gated(conn, owner, pid, qsql, qargs, now, limit - len(rows))
        return rows

    def _plain_due(
        self, conn: Any, queues: list[str], now: float, limit: int
    ) -> list[tuple[int, float, int]]:
        """The gated claim's plain part, row-locked: concurrent claimers skip these rows
        (a UNION of due.py's per-pair reads cannot take row locks)."""
        qsql, qargs = queue_filter(queues)
        rows = conn.execute(
            f"SELECT priority, exec_at, id FROM jobs WHERE status = '{SCHEDULED}' "
            f"AND gated IS NULL AND exec_at <= ?{qsql} ORDER BY priority, exec_at, id "
            "LIMIT ? FOR UPDATE SKIP LOCKED",
            [now, *qargs, limit],
        ).fetchall()
        return [(int(p), float(e), int(i)) for p, e, i in rows]

    def _insert_fired(self, conn: Any, job: NewJob, now: float) -> int | None:
        row = conn.raw.execute(
            _INSERT_FIRED,
            (*job_params(job, now), job.fired_for, *gate_params(job), 1 if job.gated else None),
        ).fetchone()
        return None if row is None else int(row[0])
