"""The SQL of workflows: dependencies between jobs, their resolution, and groups.

Dialect-neutral like jobs.py (`?` placeholders, statements SQLite and PostgreSQL both
accept). Three tables (schema version 2):

- `job_deps(parent, child, done)`: one row per edge, indexed by parent. `done` is set,
  once, by the statement that resolves the edge (an `UPDATE ... WHERE done = 0`), so an
  edge is resolved exactly once however many times its parent's completion is applied.
- `job_waits(job_id, remaining, exec_at)`: a waiting child's count of parents not yet
  succeeded, and the time it was asked to run at. The child itself is SCHEDULED with
  exec_at = WAITING_AT, far in the future: no claim, has_due or ready index changes.
  The parents' successes decrement the count (`UPDATE ... RETURNING`, atomic in both
  databases); the statement that brings it to 0 makes the child due, exactly once.
- `job_groups(group_id, job_id)`: the members of a group, in push (= id) order.

Resolution runs inside the transaction that records the parents' terminal states
(completions.py, cancel and recovery in jobs.py), so no crash can separate them.
A parent that ends in any other terminal state cancels its children, which cancel
theirs: the work is bounded by the edges, each resolved once.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from mpjobs.errors import ConfigError, NotFoundError
from mpjobs.store.base import CANCELLED, SCHEDULED, SUCCESS, TERMINAL, NewJob
from mpjobs.store.rows import Conn, Rows
from mpjobs.store.sql import FINISHED_SQL, INSERT_JOB_ID, grouped_inserts, job_params

# 9999-12-31T23:59:59 UTC: "not before its dependencies", still a valid datetime.
WAITING_AT = 253402300799.0
_FAILED = TERMINAL - {SUCCESS}
CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's limits


def chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    """`ids` in slices of CHUNK, one IN (...) list each (completions.py uses it too)."""
    for i in range(0, len(ids), CHUNK):
        yield ids[i : i + CHUNK]


def marks(n: int) -> str:
    """The placeholders of an IN (...) list of `n` values."""
    return ",".join("?" * n)


class DepQueries(Rows):
    """Dependencies and groups: pushing them, resolving them, reading them."""

    # -- pushing -----------------------------------------------------------------------

    def push_linked(
        self,
        jobs: Sequence[NewJob],
        deps: Sequence[Sequence[int]],
        group_id: str | None,
        now: float,
    ) -> list[int]:
        """Insert jobs, each waiting for its `deps` (ids of jobs already stored), in one
        transaction; record them as members of `group_id` if given. Their ids, in order.

        A dependency already SUCCESS is met at once; one already failed or cancelled
        cancels the job at once, in this transaction. Every dependency must exist when
        the job is pushed, so a cycle cannot form: a job can only wait for older ones.
        """
        if len(deps) != len(jobs):
            raise ValueError("push_linked: one list of dependencies per job")
        if any(j.unique_key is not None for j in jobs):
            raise ConfigError("unique_key cannot be combined with depends_on or a group")
        with self._tx() as conn:
            status = self._lock_parents(conn, sorted({p for d in deps for p in d}))
            rows: list[NewJob] = []
            plan: list[tuple[list[int], list[int], list[int], float]] = []
            for j, parents in zip(jobs, deps, strict=True):
                ps = sorted(set(parents))
                open_ = [p for p in ps if status[p] != SUCCESS]
                failed = [p for p in open_ if status[p] in _FAILED]
                waiting = bool(open_) and not failed
                rows.append(dataclasses.replace(j, exec_at=WAITING_AT) if waiting else j)
                plan.append((ps, open_, failed, j.exec_at))
            ids = self._insert_many(conn, rows, now)
            edges: list[tuple[int, int, int]] = []
            waits: list[tuple[int, int, float]] = []
            doomed: list[tuple[int, int, str]] = []
            for child, (ps, open_, failed, at) in zip(ids, plan, strict=True):
                pending = set(open_).difference(failed)  # a set: a chord has 10,000 parents
                edges += [(p, child, int(p not in pending)) for p in ps]
                if failed:
                    doomed.append((child, failed[0], status[failed[0]]))
                elif open_:
                    waits.append((child, len(open_), at))
            if edges:
                conn.executemany(
                    "INSERT INTO job_deps (parent, child, done) VALUES (?, ?, ?)", edges
                )
            if waits:
                conn.executemany(
                    "INSERT INTO job_waits (job_id, remaining, exec_at) VALUES (?, ?, ?)", waits
                )
            if group_id is not None:
                conn.executemany(
                    "INSERT INTO job_groups (group_id, job_id) VALUES (?, ?)",
                    [(group_id, i) for i in ids],
                )
            for child, parent, st in doomed:
                self._doom(conn, child, f"dependency job {parent} ended {st}", now)
            return ids

    def _insert_many(self, conn: Conn, jobs: Sequence[NewJob], now: float) -> list[int]:
        """Insert jobs without unique keys; their ids in order. SQLite's way (the one
        writer makes a batch's rowids contiguous); PostgreSQL's store COPYs instead."""
        if len(jobs) == 1:
            return [int(conn.execute(INSERT_JOB_ID, job_params(jobs[0], now)).fetchone()[0])]
        for sql, rows in grouped_inserts(jobs, now):
            conn.executemany(sql, rows)
        end = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
        return list(range(end - len(jobs) + 1, end + 1))

    def _lock_parents(self, conn: Conn, parents: list[int]) -> dict[int, str]:
        """The parents' statuses, their rows locked until commit; NotFoundError if one
        does not exist.

        A no-op UPDATE takes the row lock on PostgreSQL (SQLite's writer lock already
        serialises), so a parent cannot finish between this read and our edges: its
        completion waits for our commit and then sees the edges.
        """
        status: dict[int, str] = {}
        for chunk in chunks(parents):
            rows = conn.execute(
                f"UPDATE jobs SET pid = pid WHERE id IN ({marks(len(chunk))}) "
                "RETURNING id, status",
                list(chunk),
            ).fetchall()
            status.update((int(r[0]), str(r[1])) for r in rows)
        missing = [p for p in parents if p not in status]
        if missing:
            raise NotFoundError(
                f"cannot depend on job {missing[0]}: no such job in this store"
                + (f" (nor {len(missing) - 1} other(s))" if len(missing) > 1 else "")
            )
        return status

    # -- resolving ---------------------------------------------------------------------

    def _resolve(self, conn: Conn, finished: Sequence[int], now: float) -> None:
        """Resolve the edges of jobs that may just have ended; a no-op for the rest.

        The common case (no job of the batch has a dependent) is a read of job_deps'
        primary key that finds nothing (see `_any_edge`). An edge is resolved only once
        its parent is terminal, and only once (done = 0 -> 1), so a completion applied
        twice releases nothing twice.
        """
        if not finished or not self._any_edge(conn, finished):
            return  # the plain fast path: a read of job_deps' primary key, no write
        frontier = list(finished)
        while frontier:
            edges: list[tuple[int, int]] = []
            for chunk in chunks(frontier):
                edges += [
                    (int(r[0]), int(r[1]))
                    for r in conn.execute(
                        "UPDATE job_deps SET done = 1 WHERE done = 0 AND parent IN "
                        f"(SELECT id FROM jobs WHERE id IN ({marks(len(chunk))}) "
                        f"AND status IN {FINISHED_SQL}) RETURNING parent, child",
                        list(chunk),
                    ).fetchall()
                ]
            if not edges:
                return
            # Rows are locked in child order, so two completions that release the same
            # children (on PostgreSQL, at once) cannot deadlock on them.
            edges.sort(key=lambda e: (e[1], e[0]))
            status = self._statuses(conn, sorted({p for p, _ in edges}))
            met = Counter(c for p, c in edges if status.get(p) == SUCCESS)
            frontier = []
            for parent, child in edges:
                st = status.get(parent, "gone")
                if st != SUCCESS and self._doom(
                    conn, child, f"dependency job {parent} ended {st}", now
                ):
                    frontier.append(child)
            for child, n in met.items():
                self._met(conn, child, n)

    def _any_edge(self, conn: Conn, ids: Sequence[int]) -> bool:
        """Whether a job of `ids` has an unresolved dependent.

        First one seek to job_deps' first row: a store that never had a workflow (or
        whose edges were all purged with their jobs) answers there, without binding the
        batch's ids. The read is in the transaction that ended the jobs, after their
        UPDATEs, so it is as exact as the probe by id: an edge pushed onto one of these
        jobs is either committed before (and seen) or waits for this commit and sees
        its parent ended (push_linked locks the parents' rows).
        """
        if conn.execute("SELECT 1 FROM job_deps LIMIT 1").fetchone() is None:
            return False
        for chunk in chunks(ids):
            row = conn.execute(
                f"SELECT 1 FROM job_deps WHERE parent IN ({marks(len(chunk))}) AND done = 0 "
                "LIMIT 1",
                list(chunk),
            ).fetchone()
            if row is not None:
                return True
        return False

    def _met(self, conn: Conn, child: int, n: int) -> None:
        """`n` more parents of `child` succeeded; the statement that reaches 0 releases it."""
        row = conn.execute(
            "UPDATE job_waits SET remaining = remaining - ? WHERE job_id = ? "
            "RETURNING remaining, exec_at",
            (n, child),
        ).fetchone()
        if row is None or int(row[0]) > 0:
            return
        conn.execute("DELETE FROM job_waits WHERE job_id = ?", (child,))
        conn.execute(
            f"UPDATE jobs SET exec_at = ? WHERE id = ? AND status = '{SCHEDULED}'",
            (float(row[1]), child),
        )

    def _doom(self, conn: Conn, child: int, why: str, now: float) -> bool:
        """Cancel a waiting child whose dependency failed; whether it was cancelled now."""
        cur = conn.execute(
            f"UPDATE jobs SET status = '{CANCELLED}', finished_at = ?, error = ? "
            f"WHERE id = ? AND status = '{SCHEDULED}'",
            (now, f"cancelled: {why}", child),
        )
        return cur.rowcount == 1

    def _statuses(self, conn: Conn, ids: Sequence[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        for chunk in chunks(ids):
            rows = conn.execute(
                f"SELECT id, status FROM jobs WHERE id IN ({marks(len(chunk))})", list(chunk)
            )
            out.update((int(r[0]), str(r[1])) for r in rows)
        return out

    # -- reading -----------------------------------------------------------------------

    def links(self, job_id: int) -> tuple[list[int], list[int]]:
        """(the jobs `job_id` depends on, the jobs that depend on it), by id."""
        conn = self._conn()
        up = conn.execute("SELECT parent FROM job_deps WHERE child = ? ORDER BY parent", (job_id,))
        parents = [int(r[0]) for r in up]
        down = conn.execute("SELECT child FROM job_deps WHERE parent = ? ORDER BY child", (job_id,))
        return parents, [int(r[0]) for r in down]

    def group_members(self, group_id: str) -> list[int]:
        """The ids of a group's members in push order; [] for an unknown group."""
        rows = self._conn().execute(
            "SELECT job_id FROM job_groups WHERE group_id = ? ORDER BY job_id", (group_id,)
        )
        return [int(r[0]) for r in rows]

    def outcomes_of(self, ids: Sequence[int]) -> list[tuple[int, str, bytes | None]]:
        """(id, status, pickled result) of each job of `ids`, in that order; missing ones
        are left out. What a chord or a chained job receives is read with this."""
        found: dict[int, tuple[int, str, bytes | None]] = {}
        conn = self._conn()
        for chunk in chunks(list(ids)):
            rows = conn.execute(
                f"SELECT id, status, result FROM jobs WHERE id IN ({marks(len(chunk))})",
                list(chunk),
            )
            for r in rows:
                found[int(r[0])] = (int(r[0]), str(r[1]), _bytes(r[2]))
        return [found[i] for i in ids if i in found]


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)

