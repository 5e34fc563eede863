"""Recording outcomes: completions applied row by row or in one statement, and the
quarantine of an outcome that cannot be written. Shared by claims, completions and
settling (jobs.py); what each outcome does to a schedule is asked of rules/schedules.py.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from mpjobs.rules.schedules import max_failures_of, tally
from mpjobs.store import base
from mpjobs.store.base import PERMANENTLY_FAILED, RUNNING, SCHEDULED, STOPPED, Completion
from mpjobs.store.counters import FINISHED_RETURNING, CounterQueries
from mpjobs.store.deps import DepQueries, chunks, marks
from mpjobs.store.rows import Conn

log = logging.getLogger("mpjobs.store")


@contextlib.contextmanager
def _savepoint(conn: Conn) -> Iterator[None]:
    """Undo only this block if it raises, keeping the rest of the transaction."""
    conn.execute("SAVEPOINT outcome")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK TO outcome")
        conn.execute("RELEASE outcome")
        raise
    conn.execute("RELEASE outcome")


class CompletionQueries(DepQueries, CounterQueries):
    def _complete_many(
        self, conn: Conn, owner: str, done: Sequence[Completion], now: float
    ) -> None:
        """Apply completions; plain terminal ones in a statement per status, the rest one
        by one; count them finished in the same transaction (metrics, counters.py).

        A completion that cannot be written never fails the batch: the batch is retried
        row by row and that one job is quarantined (see `_apply`).
        """
        plain = [c for c in done if c.schedule_id is None and c.status != SCHEDULED]
        rest = [] if len(plain) == len(done) else [
            c for c in done if c.schedule_id is not None or c.status == SCHEDULED
        ]
        if plain:
            # In a savepoint: PostgreSQL aborts the whole transaction on a failed
            # statement. Applying the rows again one by one changes none of those
            # already applied, since each update requires the job to be RUNNING still.
            try:
                with _savepoint(conn):
                    rows = self._finish_plain(conn, owner, plain, now)
            except Exception as exc:
                if self._fault(exc):
                    raise
                rest = plain + rest  # find the bad one(s), row by row
            else:
                self._count_finished_rows(conn, owner, rows)  # the rows it finished
        for c in rest:
            self._apply(conn, owner, c, now)
        ended = [c.job_id for c in done if c.status != SCHEDULED]
        # Workflows (deps.py): in this transaction, so no crash separates a parent's
        # end from its children's release; one read of an empty table when none waits.
        self._resolve(conn, ended, now)
        if rest:  # counted from the table: a schedule's outcome may change the status
            self._count_finished(conn, owner, [c.job_id for c in rest if c.status != SCHEDULED],
                                 now)  # fmt: skip

    def _finish_plain(
        self, conn: Conn, owner: str, plain: Sequence[Completion], now: float
    ) -> list[Any]:
        """Record terminal outcomes of jobs `owner` still runs; the finished rows, as
        `_count_finished_rows` takes them.

        One UPDATE per status and chunk of ids, whose RETURNING says exactly which jobs
        this transaction finished (a job cancelled or settled meanwhile is not among
        them), so counting them needs no second read of the jobs table. Results,
        exceptions and errors follow in one executemany, for those jobs only: a no-op
        job has none. ValueError if an outcome cannot be stored (see base.storable).
        """
        if len({c.job_id for c in plain}) < len(plain):  # a job completed twice: the
            plain = list({c.job_id: c for c in reversed(plain)}.values())  # first counts
        safe = [base.storable(c) for c in plain]
        statuses = {c.status for c in safe}
        by_status = (
            {safe[0].status: [c.job_id for c in safe]}
            if len(statuses) == 1
            else {st: [c.job_id for c in safe if c.status == st] for st in statuses}
        )
        data = {
            c.job_id: (c.result, c.exc, c.error)
            for c in safe
            if c.result is not None or c.exc is not None or c.error is not None
        }
        rows: list[Any] = []
        for status, ids in by_status.items():
            for part in chunks(ids):
                rows += conn.execute(
                    f"UPDATE jobs SET status = ?, result = NULL, exc = NULL, error = NULL, "
                    f"finished_at = ?, owner = NULL, pid = NULL WHERE id IN ({marks(len(part))}) "
                    f"AND status = '{RUNNING}' AND owner = ? RETURNING {FINISHED_RETURNING}",
                    [status, now, *part, owner],
                ).fetchall()
        if data:
            conn.executemany(
                "UPDATE jobs SET result = ?, exc = ?, error = ? WHERE id = ?",
                [(*data[r[0]], r[0]) for r in rows if r[0] in data],
            )
        return rows

    def _apply(self, conn: Conn, owner: str, c: Completion, now: float) -> Completion:
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
            if self._fault(exc):
                raise
            q = base.quarantined(c, exc)
            log.error("job %s: %s", c.job_id, q.error.splitlines()[0] if q.error else exc)
            self._complete(conn, owner, q, now)
            return q

    def _complete(self, conn: Conn, owner: str, c: Completion, now: float) -> bool:
        """Apply a completion if `owner` still runs the job; keep a schedule's failure count."""
        if c.status == SCHEDULED:
            again = conn.execute(
                f"UPDATE jobs SET status = '{SCHEDULED}', exec_at = ?, owner = NULL, pid = NULL, "
                "started_at = NULL, error = ?, exc = ?, attempts = attempts - ? "
                f"WHERE id = ? AND status = '{RUNNING}' AND owner = ? RETURNING name, queue",
                (c.exec_at, c.error, c.exc, int(c.refund_attempt), c.job_id, owner),
            ).fetchone()
            if again is not None and c.refund_attempt:  # its start is taken back too
                self._count_unstarted(conn, owner, str(again[0]), str(again[1]))
            return again is not None
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

    def _count_schedule_outcome(self, conn: Conn, sid: str, c: Completion) -> None:
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
