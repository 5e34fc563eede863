"""The reads of due jobs, as index seeks whatever the size of the backlog.

A store with history holds millions of waiting jobs that are not due (reminders for
tomorrow) next to the few that are. jobs_ready is ordered (queue, priority, exec_at), so
within one (queue, priority) the due jobs come first and a read of them stops at the
first job not due; across priorities no order of the index puts every due job first
(priority 0's delayed jobs sit between priority 0's due jobs and priority 1's). So each
read here first lists the (queue, priority) pairs that have waiting jobs, by a skip
scan in one recursive statement (one seek per pair, in SQLite and PostgreSQL alike), and
then reads each pair's due jobs by a seek of its own. A home has a handful of queues and
priorities; the cost is that handful of seeks, never the backlog.

The due check, the next due time, the claim's pick and its fair share all go through
this walk (`pairs_cte`), so none of them reads a delayed job it does not return.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from mpjobs.store.base import RUNNING, SCHEDULED
from mpjobs.store.deps import WAITING_AT
from mpjobs.store.gated import GatedClaims
from mpjobs.store.rows import Conn
from mpjobs.store.sql import PLAIN_COLS, queue_filter

_WAITING = f"status = '{SCHEDULED}'"
# Waiting jobs with control options only: jobs_gated, ordered as jobs_ready is.
_GATED = f"gated = 1 AND status = '{SCHEDULED}'"


def queue_walk(waiting: str = _WAITING) -> str:
    """A recursive CTE qs(q): every queue with rows matching `waiting`, one seek each
    (a skip scan of the index led by queue); a row with q NULL ends the walk."""
    return (
        f"qs(q) AS (SELECT min(queue) FROM jobs WHERE {waiting} UNION ALL SELECT "
        f"(SELECT min(queue) FROM jobs WHERE {waiting} AND queue > qs.q) "
        "FROM qs WHERE q IS NOT NULL)"
    )


def pairs_cte(queues: Sequence[str] | None, waiting: str = _WAITING) -> tuple[str, list[Any]]:
    """A `WITH RECURSIVE` naming ps(q, p): every (queue, priority) with waiting jobs
    (those that match `waiting`, the WHERE of jobs_ready or of jobs_gated).

    Rows with p NULL end each queue's walk; the caller filters them out. With `queues`
    the walk starts from those (no seek for the rest); without, it finds the queues too.
    """
    if queues:
        qs = "qs(q) AS (VALUES " + ", ".join(["(CAST(? AS TEXT))"] * len(queues)) + ")"
        args: list[Any] = list(queues)
    else:
        qs, args = queue_walk(waiting), []
    ps = (
        f"ps(q, p) AS (SELECT q, (SELECT min(priority) FROM jobs WHERE {waiting} "
        "AND queue = qs.q) FROM qs WHERE q IS NOT NULL UNION ALL SELECT q, "
        f"(SELECT min(priority) FROM jobs WHERE {waiting} AND queue = ps.q "
        "AND priority > ps.p) FROM ps WHERE p IS NOT NULL)"
    )
    return f"WITH RECURSIVE {qs}, {ps} ", args


# The due jobs of one (queue, priority), oldest first: one range of jobs_ready.
_DUE_RANGE = (
    f"FROM jobs WHERE {_WAITING} AND queue = ? AND priority = ? AND exec_at <= ?"
)


def _pick(
    priority: int, queues: list[str], now: float, n: int, what: str
) -> tuple[str, list[Any]]:
    """The first `n` due jobs of one priority over `queues` (`what`: the column to
    select), oldest first: one range of jobs_ready per queue; several are merged, each
    read at most `n` entries deep, so the sort is of a bounded few rows."""
    arm = f"SELECT {what}, exec_at, id AS i {_DUE_RANGE} ORDER BY exec_at, id LIMIT ?"
    args: list[Any] = [x for q in queues for x in (q, priority, now, n)]
    if len(queues) == 1:
        return f"SELECT {what} FROM ({arm}) AS a", args
    union = " UNION ALL ".join([f"SELECT * FROM ({arm}) AS a"] * len(queues))
    return f"SELECT {what} FROM ({union}) AS u ORDER BY exec_at, i LIMIT ?", [*args, n]


def _in_pair(waiting: str) -> str:
    """The WHERE of one pair's waiting jobs (the pair's row of ps correlated)."""
    return f"{waiting} AND queue = ps.q AND priority = ps.p"


class DueQueries(GatedClaims):
    def _pairs(
        self, conn: Conn, queues: Sequence[str] | None, now: float
    ) -> list[tuple[int, str]]:
        """(priority, queue) of every pair with a due job, in claim order.

        One more seek per pair (its first due entry) leaves out the pairs that hold only
        delayed jobs, so the picks that follow have an arm only for a pair with work: a
        home of a million reminders spread over its queues claims as an empty one does.
        """
        cte, args = pairs_cte(queues)
        rows = conn.execute(
            cte + "SELECT p, q FROM ps WHERE p IS NOT NULL AND EXISTS (SELECT 1 FROM jobs "
            f"WHERE {_in_pair(_WAITING)} AND exec_at <= ?)",
            [*args, now],
        ).fetchall()
        return sorted((int(p), str(q)) for p, q in rows)

    def _plain_due(
        self, conn: Conn, queues: list[str], now: float, limit: int
    ) -> list[tuple[int, float, int]]:
        """Up to `limit` due jobs without control options, as (priority, exec_at, id) in
        claim order: the plain part of the gated claim, merged there with its picks.

        A priority's pairs are read together, each its own range of at most `limit`
        entries; a lower priority is read only when the higher ones ran short.
        """
        arm = f"SELECT id, exec_at {_DUE_RANGE} AND gated IS NULL ORDER BY exec_at, id LIMIT ?"
        out: list[tuple[int, float, int]] = []
        for priority, queues_at in self._levels(conn, queues, now):
            left = limit - len(out)
            sql = " UNION ALL ".join([f"SELECT * FROM ({arm}) AS a"] * len(queues_at))
            args: list[Any] = [x for q in queues_at for x in (q, priority, now, left)]
            rows = [(float(e), int(i)) for i, e in conn.execute(sql, args)]
            if len(queues_at) > 1:  # each arm is in order: merge them (at most `left` each)
                rows = sorted(rows)[:left]
            out += [(priority, e, i) for e, i in rows]
            if len(out) >= limit:
                break
        return out

    def _levels(
        self, conn: Conn, queues: Sequence[str] | None, now: float
    ) -> list[tuple[int, list[str]]]:
        """The due pairs grouped by priority, in claim order: [(priority, [queue, ...])]."""
        pairs = self._pairs(conn, queues, now)
        return [
            (priority, [q for _p, q in level])
            for priority, level in itertools.groupby(pairs, lambda x: x[0])
        ]

    def _fair_share(
        self, conn: Conn, queues: Sequence[str] | None, now: float, limit: int, share: int
    ) -> int:
        """A worker's fair share of the due jobs: ready / `share` workers, at most `limit`."""
        return self._share_of(conn, self._levels(conn, queues, now), now, limit, share)

    def _share_of(
        self, conn: Conn, levels: list[tuple[int, list[str]]], now: float, limit: int,
        share: int,
    ) -> int:
        """The fair share, the due jobs of `levels` counted up to `limit * share` in SQL,
        a priority at a time."""
        want, ready = limit * share, 0
        for priority, queues_at in levels:
            sql, args = _pick(priority, queues_at, now, want - ready, "1")
            ready += int(conn.execute(f"SELECT count(*) FROM ({sql}) AS d", args).fetchone()[0])
            if ready >= want:
                break
        return max(1, min(limit, -(-ready // share)))

    def _claim_due(
        self, conn: Conn, owner: str, pid: int, levels: list[tuple[int, list[str]]],
        now: float, limit: int,
    ) -> list[Any]:
        """Take up to `limit` due jobs of `levels` (all plain: the caller has checked),
        in claim order.

        Each priority's pick is a subquery of the UPDATE, so no id travels through
        Python: a claim costs what the single UPDATE of one index range did before.
        """
        rows: list[Any] = []
        for priority, queues_at in levels:
            pick, args = _pick(priority, queues_at, now, limit - len(rows), "id")
            rows += conn.execute(
                f"UPDATE jobs SET status = '{RUNNING}', owner = ?, pid = ?, started_at = ?, "
                f"attempts = attempts + 1 WHERE id IN ({pick}) RETURNING {PLAIN_COLS}",
                [owner, pid, now, *args],
            ).fetchall()
            if len(rows) >= limit:
                break
        return rows

    def has_due(self, queues: Sequence[str] | None, now: float) -> bool:
        """A read-only check, so idle workers woken together do not all queue for the lock."""
        cte, args = pairs_cte(queues)
        plain = self._conn().execute(
            cte + "SELECT 1 FROM ps WHERE p IS NOT NULL AND EXISTS (SELECT 1 FROM jobs WHERE "
            f"{_in_pair(_WAITING)} AND exec_at <= ? AND gated IS NULL) LIMIT 1",
            [*args, now],
        ).fetchone()
        if plain is not None:
            return True
        return self._startable_gated(*queue_filter(queues), now)

    def _first_due_at(self, queues: Sequence[str] | None, plain_only: bool) -> float | None:
        """The earliest exec_at of a waiting job (of a plain one: `plain_only`), left out
        a job waiting for others (deps.py), which is not due at its placeholder time."""
        cte, args = pairs_cte(queues)
        plain = " AND gated IS NULL" if plain_only else ""
        r = self._conn().execute(
            cte + f"SELECT min((SELECT min(exec_at) FROM jobs WHERE {_in_pair(_WAITING)} "
            f"AND exec_at < {WAITING_AT!r}{plain})) FROM ps WHERE p IS NOT NULL",
            args,
        ).fetchone()
        return None if r is None or r[0] is None else float(r[0])


    def _gated_due(self, conn: Conn, queues: Sequence[str] | None, now: float) -> bool:
        """Whether a gated job is due: the claim's probe (store/gated.py claims them).

        Most homes have no job with control options waiting: the first entry of
        jobs_gated says so at once, before the walk of its pairs."""
        first = conn.execute(f"SELECT min(queue) FROM jobs WHERE {_GATED}").fetchone()
        if first is None or first[0] is None:
            return False
        cte, args = pairs_cte(queues, _GATED)
        row = conn.execute(
            cte + "SELECT 1 FROM ps WHERE p IS NOT NULL AND EXISTS (SELECT 1 FROM jobs WHERE "
            f"{_in_pair(_GATED)} AND exec_at <= ?) LIMIT 1",
            [*args, now],
        ).fetchone()
        return row is not None

    def _next_gated(self, queues: Sequence[str] | None, now: float) -> float | None:
        """The soonest due time of a gated job not yet due (the due ones wait on a key,
        and the end of a job's wait for a key is a commit, which rings the doorbell)."""
        cte, args = pairs_cte(queues, _GATED)
        r = self._conn().execute(
            cte + f"SELECT min((SELECT min(exec_at) FROM jobs WHERE {_in_pair(_GATED)} "
            "AND exec_at > ?)) FROM ps WHERE p IS NOT NULL",
            [*args, now],
        ).fetchone()
        return None if r is None or r[0] is None else float(r[0])
