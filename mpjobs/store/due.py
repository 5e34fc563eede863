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

The due check, the next due time and the claim's choice all go through `_pairs`, so
none of them reads a delayed job it does not return.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from mpjobs.store.base import SCHEDULED
from mpjobs.store.deps import WAITING_AT
from mpjobs.store.gated import GatedClaims
from mpjobs.store.rows import Conn
from mpjobs.store.sql import queue_filter

_WAITING = f"status = '{SCHEDULED}'"
# Waiting jobs with control options only: jobs_gated, ordered as jobs_ready is.
_GATED = f"gated = 1 AND status = '{SCHEDULED}'"


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
        qs = (
            f"qs(q) AS (SELECT min(queue) FROM jobs WHERE {waiting} UNION ALL SELECT "
            f"(SELECT min(queue) FROM jobs WHERE {waiting} AND queue > qs.q) "
            "FROM qs WHERE q IS NOT NULL)"
        )
        args = []
    ps = (
        f"ps(q, p) AS (SELECT q, (SELECT min(priority) FROM jobs WHERE {waiting} "
        "AND queue = qs.q) FROM qs WHERE q IS NOT NULL UNION ALL SELECT q, "
        f"(SELECT min(priority) FROM jobs WHERE {waiting} AND queue = ps.q "
        "AND priority > ps.p) FROM ps WHERE p IS NOT NULL)"
    )
    return f"WITH RECURSIVE {qs}, {ps} ", args


# Jobs of one (queue, priority) due by now, oldest first: one range of jobs_ready.
_DUE_IN_PAIR = (
    f"SELECT id, exec_at FROM jobs WHERE {_WAITING} AND queue = ? AND priority = ? "
    "AND exec_at <= ? ORDER BY exec_at, id LIMIT ?"
)
_PLAIN_DUE_IN_PAIR = _DUE_IN_PAIR.replace(" ORDER BY", " AND gated IS NULL ORDER BY")


def _in_pair(waiting: str) -> str:
    """The WHERE of one pair's waiting jobs (the pair's row of ps correlated)."""
    return f"{waiting} AND queue = ps.q AND priority = ps.p"


class DueQueries(GatedClaims):
    def _pairs(self, conn: Conn, queues: Sequence[str] | None) -> list[tuple[int, str]]:
        """(priority, queue) of every pair with waiting jobs, in claim order."""
        cte, args = pairs_cte(queues)
        rows = conn.execute(cte + "SELECT p, q FROM ps WHERE p IS NOT NULL", args).fetchall()
        return sorted((int(p), str(q)) for p, q in rows)

    def _due(
        self, conn: Conn, queues: Sequence[str] | None, now: float, want: int,
        plain_only: bool = False,
    ) -> list[tuple[int, float, int]]:
        """Up to `want` due jobs as (priority, exec_at, id), in that claim order; with
        `plain_only`, jobs without control options only (the gated claim's plain part).

        A priority's pairs are read together, each its own range of at most `want`
        entries; a lower priority is read only when the higher ones ran short.
        """
        arm = _PLAIN_DUE_IN_PAIR if plain_only else _DUE_IN_PAIR
        out: list[tuple[int, float, int]] = []
        for priority, level in itertools.groupby(self._pairs(conn, queues), lambda x: x[0]):
            arms = [q for _p, q in level]
            left = want - len(out)
            sql = " UNION ALL ".join([f"SELECT * FROM ({arm}) AS a"] * len(arms))
            args: list[Any] = [x for q in arms for x in (q, priority, now, left)]
            rows = [(float(e), int(i)) for i, e in conn.execute(sql, args)]
            if len(arms) > 1:  # each arm is in order: merge them (at most `left` each)
                rows = sorted(rows)[:left]
            out += [(priority, e, i) for e, i in rows]
            if len(out) >= want:
                break
        return out

    def _plain_due(
        self, conn: Conn, queues: list[str], now: float, limit: int
    ) -> list[tuple[int, float, int]]:
        return self._due(conn, queues, now, limit, plain_only=True)

    def _fair_share(
        self, conn: Conn, queues: Sequence[str] | None, now: float, limit: int, share: int
    ) -> int:
        """A worker's fair share of the due jobs: ready / `share` workers, at most `limit`."""
        ready = len(self._due(conn, queues, now, limit * share))
        return max(1, min(limit, -(-ready // share)))

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
        """Whether a gated job is due: the claim's probe (store/gated.py claims them)."""
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
