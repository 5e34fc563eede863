"""The claim of jobs with a control option (expires, rate_limit, concurrency_key).

Such a job is pushed with `gated = 1`; every other job has NULL there, and the plain
claim takes only those, with the query it always had. On SQLite, when a due gated job
exists (one probe of the `jobs_gated` partial index, empty for an app that uses no
option; exact under the write lock) the claim comes here instead; on PostgreSQL the
plain claim picks its batch as ever, updates only its plain rows, and when it took
fewer than asked and gated jobs are due, fills the batch here. This claim reads the
due gated jobs a page at a time in queue order, asks control/gate.py about each, and
merges the ones it may take with the plain ones by (priority, exec_at, id), so an
option never changes the order of the queue, only whether a job may start now.

What waits is left as it is, except for a full rate window: its task's due jobs get
the window's end as their due time, so idle workers sleep until then (has_due and
next_exec_at see them as future jobs) instead of waking to find nothing claimable.
A job waiting on its key stays due; has_due asks whether its key has a free slot.

On PostgreSQL the whole gated claim runs under one transaction advisory lock
(`_exclusive("gate")`): a key's RUNNING count and a window's count are read and
raised by one claimer at a time, so two claimers never both take a key's last slot.
SQLite's claim holds the store's write lock already.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mpjobs.control import gate as gating
from mpjobs.control.expiry import expired_error
from mpjobs.control.gate import CANDIDATE_COLS, Candidate, Gate
from mpjobs.store.base import CANCELLED, RUNNING, SCHEDULED
from mpjobs.store.rows import Conn, Rows
from mpjobs.store.sql import JOB_COLS

PAGE = 64  # gated candidates read per page
MAX_PAGES = 8  # a claim reads at most PAGE * MAX_PAGES of them (bounded work per claim)
EXPIRE_BATCH = 500  # jobs the leader's sweep cancels per statement

DUE_GATED = f"gated = 1 AND status = '{SCHEDULED}' AND exec_at <= ?"
# A waiting job past its deadline: read through jobs_gated (only jobs with options).
_LATE = f"gated = 1 AND status = '{SCHEDULED}' AND expires_at <= ?"
# A due gated job some worker could start now: no key, or its key has a free slot.
_STARTABLE = (
    f"(j.concurrency_key IS NULL OR (SELECT count(*) FROM jobs r WHERE r.status = '{RUNNING}' "
    "AND r.concurrency_key = j.concurrency_key) < coalesce(j.concurrency_limit, 1))"
)


class GatedClaims(Rows):
    # Row locks on the candidates: PostgreSQL skips rows other transactions hold.
    _skip_locked = ""

    def _plain_due(
        self, conn: Conn, queues: list[str], now: float, limit: int
    ) -> list[tuple[int, float, int]]:
        """Up to `limit` due plain jobs as (priority, exec_at, id), in claim order."""
        raise NotImplementedError  # store/due.py; PostgreSQL's locks them (postgres/)

    def _claim_gated(
        self, conn: Conn, owner: str, pid: int, qsql: str, qargs: list[Any], now: float,
        limit: int,
    ) -> list[Any]:
        """Take up to `limit` due jobs, gated and plain, in queue order (see above)."""
        self._exclusive(conn, "gate")
        g = Gate(now, lambda name: self._window(conn, name), lambda key: self._running(conn, key))
        taken: list[Candidate] = []
        expired: list[Candidate] = []
        after: tuple[int, float, int] | None = None
        size = min(PAGE, limit + 4)  # a small batch reads a small first page
        for _ in range(MAX_PAGES):
            page = self._candidates(conn, qsql, qargs, now, after, g, size)
            for c in page:
                verdict = g.decide(c)
                if verdict == gating.TAKE:
                    taken.append(c)
                elif verdict == gating.EXPIRE:
                    expired.append(c)
                if len(taken) >= limit:
                    break
            if len(taken) >= limit or len(page) < size:
                break
            after, size = page[-1].order, PAGE
        plain = self._plain_due(conn, qargs, now, limit)
        merged: list[tuple[tuple[int, float, int], Candidate | None]] = [
            (c.order, c) for c in taken
        ]
        merged += [(order, None) for order in plain]
        merged.sort(key=lambda x: x[0])
        ids = [order[2] for order, _ in merged[:limit]]
        for _, cut in merged[limit:]:
            if cut is not None:
                g.untake(cut)
        rows = [] if not ids else list(conn.execute(
            f"UPDATE jobs SET status = '{RUNNING}', owner = ?, pid = ?, started_at = ?, "
            f"attempts = attempts + 1 WHERE id IN ({','.join('?' * len(ids))}) "
            f"AND status = '{SCHEDULED}' RETURNING {JOB_COLS}",
            [owner, pid, now, *ids],
        ).fetchall())
        self._settle_waits(conn, g, expired, now)  # after the takes: a deferral skips them
        return rows

    def _candidates(
        self, conn: Conn, qsql: str, qargs: list[Any], now: float,
        after: tuple[int, float, int] | None, g: Gate, size: int,
    ) -> list[Candidate]:
        """The next page of due gated jobs after `after`, less those of keys and tasks
        the claim has found full already: a crowd waiting on one key costs one page."""
        where, args = [DUE_GATED + qsql], [now, *qargs]
        if after is not None:
            where.append("(priority, exec_at, id) > (?, ?, ?)")
            args.extend(after)
        if g.full_keys:
            marks = ",".join("?" * len(g.full_keys))
            where.append(f"coalesce(concurrency_key, '') NOT IN ({marks})")
            args.extend(sorted(g.full_keys))
        if g.full_rates:
            where.append(
                f"(rate_limit IS NULL OR name NOT IN ({','.join('?' * len(g.full_rates))}))"
            )
            args.extend(sorted(g.full_rates))
        rows = conn.execute(
            f"SELECT {CANDIDATE_COLS} FROM jobs WHERE {' AND '.join(where)} "
            f"ORDER BY priority, exec_at, id LIMIT ?{self._skip_locked}",
            [*args, size],
        ).fetchall()
        return [Candidate(*r) for r in rows]

    def _settle_waits(self, conn: Conn, g: Gate, expired: Sequence[Candidate], now: float) -> None:
        """Write what the gate decided besides the takes: expiries, windows, deferrals."""
        if expired:
            self._expire(conn, [(c.id, c.expires_at or now) for c in expired], now)
        for name, start, used in g.changed_windows():
            conn.execute(
                "INSERT INTO rate_windows (name, window_start, used) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET window_start = excluded.window_start, "
                "used = excluded.used",
                (name, start, used),
            )
        for name, until in g.full_rates.items():
            conn.execute(
                f"UPDATE jobs SET exec_at = ? WHERE gated = 1 AND status = '{SCHEDULED}' "
                "AND name = ? AND rate_limit IS NOT NULL AND exec_at < ?",
                (until, name, until),
            )

    def _expire(self, conn: Conn, jobs: Sequence[tuple[int, float]], now: float) -> None:
        conn.executemany(
            f"UPDATE jobs SET status = '{CANCELLED}', finished_at = ?, error = ? "
            f"WHERE id = ? AND status = '{SCHEDULED}'",
            [(now, expired_error(at), job_id) for job_id, at in jobs],
        )

    def _window(self, conn: Conn, name: str) -> tuple[float, int] | None:
        row = conn.execute(
            "SELECT window_start, used FROM rate_windows WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else (float(row[0]), int(row[1]))

    def _running(self, conn: Conn, key: str) -> int:
        return int(conn.execute(
            f"SELECT count(*) FROM jobs WHERE status = '{RUNNING}' AND concurrency_key = ?",
            (key,),
        ).fetchone()[0])

    def _startable_gated(self, qsql: str, qargs: list[Any], now: float) -> bool:
        row = self._conn().execute(
            f"SELECT 1 FROM jobs j WHERE j.{DUE_GATED}{qsql} AND {_STARTABLE} LIMIT 1",
            [now, *qargs],
        ).fetchone()
        return row is not None

    def expire_due(self, now: float, limit: int = EXPIRE_BATCH) -> int:
        """Cancel up to `limit` waiting jobs past their deadline (the leader's sweep).

        A claim cancels the expired jobs it meets; this catches the ones no claim meets,
        in a queue no worker serves, a bounded batch per sweep. It looks first without
        writing, so an idle home's sweep neither takes the write lock nor rings.
        """
        late = self._conn().execute(f"SELECT 1 FROM jobs WHERE {_LATE} LIMIT 1", (now,)).fetchone()
        if late is None:
            return 0
        with self._tx() as conn:
            self._fence(conn)
            rows = conn.execute(
                f"SELECT id, expires_at FROM jobs WHERE {_LATE} LIMIT ?{self._skip_locked}",
                (now, limit),
            ).fetchall()
            self._expire(conn, [(int(i), float(at)) for i, at in rows], now)
            return len(rows)
