"""Recording outcomes: completions applied row by row or in one statement, and the
quarantine of an outcome that cannot be written. Shared by claims, completions and
settling (jobs.py); what each outcome does to a schedule is asked of rules/schedules.py.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

from mpjobs.rules.schedules import max_failures_of, tally
from mpjobs.store import base
from mpjobs.store.base import PERMANENTLY_FAILED, RUNNING, SCHEDULED, STOPPED, Completion
from mpjobs.store.counters import CounterQueries
from mpjobs.store.deps import DepQueries
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
        """Apply completions; plain terminal ones in one executemany, the rest one by one.

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
                if self._fault(exc):
                    raise
                rest = plain + rest  # find the bad one(s), row by row
        for c in rest:
            self._apply(conn, owner, c, now)
        ended = [c.job_id for c in done if c.status != SCHEDULED]
        # Workflows (deps.py): in this transaction, so no crash separates a parent's
        # end from its children's release; one primary-key read when none waits.
        self._resolve(conn, ended, now)
        self._count_finished(conn, owner, ended, now)  # metrics (counters.py)

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
