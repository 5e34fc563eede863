"""Job counters for metrics: per-process rows, written in the transactions they count.

Every count (a job pushed, started, finished) is added in the same transaction as the
write it counts, so the numbers agree with the jobs table whatever gets killed when: a
worker's finished jobs are counted with the commit of their outcomes, a killed
worker's job when its settler records it. Each process adds to rows of its own (its
token, or "push:host:pid" for a pushing process), so no row is shared by the workers:
on PostgreSQL a shared row would serialise every completion behind one row lock. A
process's rows stay when it dies (its counts must not vanish); `fold_counters` merges
the rows of processes that are gone into one row per key, so the table stays as small
as the set of keys times the live processes.

On SQLite a push writes no counter at all (`_catch_up_pushed`): its job row is the
record, and the rows above a watermark are the pushes not folded into the counters
yet. One writer at a time commits there, so no row is hot on SQLite anyway.

The duration of a finished job, for the histogram, is the time from its claim to its
recorded outcome (finished_at - started_at), which a killed worker's job has too.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mpjobs.store.base import SCHEDULED, NewJob
from mpjobs.store.rows import Conn, Rows
from mpjobs.store.sql import FINISHED_SQL

log = logging.getLogger("mpjobs.store")

# Upper bounds (seconds) of the duration histogram's buckets; the last bucket is +Inf.
# Rows hold a bucket's index, so these bounds are part of the stored data: keep them.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
PUSHED, STARTED, FINISHED = "pushed", "started", "finished"
FOLDED = "folded"  # the token of the rows of processes that are gone
WATERMARK = "watermark"  # SQLite: the row holding the last job id counted as pushed
_T = TypeVar("_T")
_token: list[object] = [0, ""]  # (pid, token) of push_token
_CHUNK = 500  # ids per statement (SQLite binds at most 32766 parameters)
CATCH_UP = 20_000  # pushes counted per transaction by a catch-up (tens of milliseconds)

_UPSERT = (
    "INSERT INTO counters (token, name, task, queue, status, bucket, n, total) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (token, name, task, queue, status, bucket) DO UPDATE SET "
    "n = counters.n + excluded.n, total = counters.total + excluded.total"
)
# Count the rows of a CTE `rows` (name, queue) as pushed by token ? (PostgreSQL's one-
# statement push, postgres/queries.py).
COUNT_PUSHED_FROM = (
    "INSERT INTO counters (token, name, task, queue, status, bucket, n, total) "
    f"SELECT ?, '{PUSHED}', name, queue, '', 0, count(*), 0 FROM {{rows}} GROUP BY name, queue "
    "ON CONFLICT (token, name, task, queue, status, bucket) DO UPDATE SET "
    "n = counters.n + excluded.n"
)
_BUCKET_SQL = (
    "CASE "
    + " ".join(f"WHEN finished_at - started_at <= {b!r} THEN {i}" for i, b in enumerate(BUCKETS))
    + f" ELSE {len(BUCKETS)} END"
)
# What a completion's UPDATE returns for `_count_finished_rows` (completions.py): the
# row's id and its counter key, the same bucket and duration `_FINISHED` computes.
FINISHED_RETURNING = (
    f"id, name, queue, status, {_BUCKET_SQL}, coalesce(finished_at - started_at, 0)"
)
_FINISHED = (
    "INSERT INTO counters (token, name, task, queue, status, bucket, n, total) "
    f"SELECT ?, '{FINISHED}', name, queue, status, {_BUCKET_SQL}, count(*), "
    "coalesce(sum(finished_at - started_at), 0) FROM jobs "
    f"WHERE id IN ({{ids}}) AND finished_at = ? AND status IN {FINISHED_SQL} "
    "GROUP BY name, queue, status, 6 "
    "ON CONFLICT (token, name, task, queue, status, bucket) DO UPDATE SET "
    "n = counters.n + excluded.n, total = counters.total + excluded.total"
)
_RELEASED = (
    "INSERT INTO counters (token, name, task, queue, status, bucket, n, total) "
    f"SELECT ?, '{STARTED}', name, queue, '', 0, -count(*), 0 FROM jobs "
    f"WHERE id IN ({{ids}}) AND status = '{SCHEDULED}' AND owner IS NULL GROUP BY name, queue "
    "ON CONFLICT (token, name, task, queue, status, bucket) DO UPDATE SET "
    "n = counters.n + excluded.n"
)


@dataclass(frozen=True, slots=True)
class CounterRow:
    """A count summed over processes: `n` events, `total` seconds (durations only)."""

    name: str  # pushed, started, finished
    task: str
    queue: str
    status: str  # a finished job's status, else ""
    bucket: int  # a finished job's duration bucket (an index of BUCKETS), else 0
    n: int
    total: float


@dataclass(frozen=True, slots=True)
class MetricCounts:
    """What the metrics read from the store in one go (observability/metrics.py)."""

    counters: list[CounterRow]
    oldest_due: dict[str, float]  # queue -> exec_at of its oldest due waiting job


def bucket_of(seconds: float) -> int:
    """The index of the histogram bucket `seconds` falls in (as the SQL's CASE computes)."""
    return next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))


def push_token() -> str:
    """The counters' token of this process as a pusher (pid-reuse merely merges rows)."""
    pid = os.getpid()
    if _token[0] != pid:  # first use, or a forked child
        _token[:] = [pid, f"push:{socket.gethostname()}:{pid}"]
    return str(_token[1])


def _chunks(ids: Sequence[_T]) -> list[Sequence[_T]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


class CounterQueries(Rows):
    def _count_pushed(self, conn: Conn, jobs: Sequence[NewJob]) -> None:
        if not jobs or isinstance(conn, sqlite3.Connection):
            return  # SQLite counts inserts with a trigger (schema.py): nothing to do here
        keys = Counter((j.name, j.queue) for j in jobs)
        token = push_token()
        conn.executemany(
            _UPSERT, [(token, PUSHED, t, q, "", 0, n, 0.0) for (t, q), n in keys.items()]
        )

    def _count_started(self, conn: Conn, owner: str, rows: Sequence[Any]) -> None:
        """Count claimed job rows (JobRecord column order: name 1, queue 5)."""
        if not rows:
            return
        keys = Counter([(r[1], r[5]) for r in rows])  # a list: no call per row
        conn.executemany(
            _UPSERT, [(owner, STARTED, t, q, "", 0, n, 0.0) for (t, q), n in keys.items()]
        )

    def _count_released(self, conn: Conn, owner: str, ids: Sequence[int]) -> None:
        """Jobs given back unstarted were counted as started at their claim: take back."""
        for part in _chunks(ids):
            conn.execute(_RELEASED.format(ids=",".join("?" * len(part))), [owner, *part])

    def _count_unstarted(self, conn: Conn, owner: str, task: str, queue: str) -> None:
        """A job requeued with its attempt refunded (one that never began, settled after
        its worker died, or handed back at a stop) was counted as started at its claim:
        take that back, so the started count stays the sum of the jobs' attempts."""
        conn.execute(_UPSERT, (owner, STARTED, task, queue, "", 0, -1, 0.0))

    def _count_finished_rows(self, conn: Conn, owner: str, rows: Sequence[Any]) -> None:
        """Count finished jobs from their rows as FINISHED_RETURNING gives them.

        The rows come back from the very UPDATE that finished the jobs, so these counts
        are exact without reading the jobs table again (what `_count_finished` does):
        one UPSERT per (task, queue, status, bucket), a single one for a no-op drain.
        """
        if not rows:
            return
        keys: dict[tuple[str, str, str, int], list[Any]] = {}
        for r in rows:
            key = (r[1], r[2], r[3], r[4])
            entry = keys.get(key)
            if entry is None:
                keys[key] = [1, r[5]]
            else:
                entry[0] += 1
                entry[1] += r[5]
        conn.executemany(
            _UPSERT,
            [
                (owner, FINISHED, t, q, st, b, n, float(tot))
                for (t, q, st, b), (n, tot) in keys.items()
            ],
        )

    def _count_finished(self, conn: Conn, owner: str, ids: Sequence[int], now: float) -> None:
        """Count the jobs of `ids` that this transaction finished (finished_at = now),
        from the table: for outcomes applied row by row (schedules, recovery)."""
        for part in _chunks(ids):
            sql = _FINISHED.format(ids=",".join("?" * len(part)))
            conn.execute(sql, [owner, *part, now])

    def catch_up_pushed(self) -> None:
        """SQLite: count every push not counted yet, CATCH_UP ids at a time, each chunk
        counted by a read and recorded in a short transaction.

        A bulk load of a million rows since the last catch-up, counted inside the write
        transaction, held the write lock for a second against every worker. The rows a
        chunk counts are committed and never change their task or queue, so they can be
        counted outside any lock; the transaction then records the counts only if the
        watermark has not moved meanwhile (a purge or a scrape caught up first).
        """
        conn = self._conn()
        if not _by_watermark(conn):
            return
        while True:
            start, last = _pending(conn)
            if last <= start:
                return
            top = min(last, start + CATCH_UP)
            counts = self._slow_read(functools.partial(self._count_pushed_in, start, top))
            with self._tx() as tx:
                if _pending(tx)[0] == start:
                    _record_pushed(tx, counts, top)

    def _count_pushed_in(self, start: int, top: int) -> list[Any]:
        """(task, queue, n) of the jobs with ids in (start, top]: a catch-up's read."""
        return list(self._conn().execute(_COUNT_PUSHED, (start, top)).fetchall())

    def _catch_up_pushed(self, conn: Conn, most: int | None = None) -> None:
        """SQLite: count the jobs inserted since the watermark as pushed (at most `most`
        ids of them), inside the caller's transaction; move it on.

        A push on SQLite writes no counter: another row in its commit would cost every
        push one more page (about a fifth of a single push). Its job row is the record:
        rowids only grow (purge keeps the newest row) and one writer at a time commits,
        so the rows above the watermark are exactly the pushes not counted yet. Called
        before a purge deletes rows, and by a scrape, so the pending rows stay few.
        """
        if not _by_watermark(conn):
            return
        start, last = _pending(conn)
        if last <= start:
            return
        top = last if most is None else min(last, start + most)
        _record_pushed(conn, conn.execute(_COUNT_PUSHED, (start, top)).fetchall(), top)

    def metric_counts(self, now: float) -> MetricCounts:
        conn = self._conn()
        if _by_watermark(conn):
            try:
                with self.lock_budget(0.5), self._tx() as tx:
                    self._catch_up_pushed(tx, CATCH_UP)  # the rest is read as pending
            except Exception as exc:  # a busy or read-only store: the read below is right
                log.debug("metrics: cannot fold the pending pushes now (%s)", exc)
        # One statement, so one snapshot: the rows above the watermark count as pushed.
        pending = (
            f"UNION ALL SELECT '{PUSHED}', name, queue, '', 0, 1, 0 FROM jobs WHERE id > "
            f"(SELECT coalesce(max(n), 0) FROM counters WHERE token = '{WATERMARK}') "
            if _by_watermark(conn)
            else ""
        )
        rows = [
            CounterRow(
                str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]), float(r[6])
            )
            for r in conn.execute(
                "SELECT name, task, queue, status, bucket, sum(n), sum(total) FROM ("
                "SELECT name, task, queue, status, bucket, n, total FROM counters "
                f"WHERE token != '{WATERMARK}' {pending}) AS c "
                "GROUP BY name, task, queue, status, bucket"
            )
        ]
        oldest = {
            str(q): float(t)
            for q, t in conn.execute(
                f"SELECT queue, min(exec_at) FROM jobs WHERE status = '{SCHEDULED}' "
                "AND exec_at <= ? GROUP BY queue",
                (now,),
            )
        }
        return MetricCounts(rows, oldest)

    def fold_counters(self) -> int:
        """Merge the rows of processes that are gone into FOLDED rows; the tokens merged.

        A worker's or coordinator's token is kept while the processes table has its row
        (until it is settled and forgotten, recovery may still count its jobs); a
        pusher's while its pid lives on this host (other hosts' pushers are left alone:
        their pids mean nothing here).
        """
        with self._tx() as conn:
            live = {str(r[0]) for r in conn.execute("SELECT token FROM processes")}
            tokens = [str(r[0]) for r in conn.execute("SELECT DISTINCT token FROM counters")]
            gone = [t for t in tokens if t not in (FOLDED, WATERMARK, *live) and _gone(t)]
            for part in _chunks(gone):
                marks = ",".join("?" * len(part))
                conn.execute(
                    "INSERT INTO counters (token, name, task, queue, status, bucket, n, total) "
                    f"SELECT '{FOLDED}', name, task, queue, status, bucket, sum(n), sum(total) "
                    f"FROM counters WHERE token IN ({marks}) "
                    "GROUP BY name, task, queue, status, bucket "
                    "ON CONFLICT (token, name, task, queue, status, bucket) DO UPDATE SET "
                    "n = counters.n + excluded.n, total = counters.total + excluded.total",
                    list(part),
                )
                conn.execute(f"DELETE FROM counters WHERE token IN ({marks})", list(part))
            return len(gone)


_COUNT_PUSHED = (
    "SELECT name, queue, count(*) FROM jobs WHERE id > ? AND id <= ? GROUP BY name, queue"
)


def _pending(conn: Conn) -> tuple[int, int]:
    """(the watermark, the newest job id): the ids between are the pushes not counted."""
    row = conn.execute(f"SELECT n FROM counters WHERE token = '{WATERMARK}'").fetchone()
    last = conn.execute("SELECT max(id) FROM jobs").fetchone()[0]
    return (0 if row is None else int(row[0])), (0 if last is None else int(last))


def _record_pushed(conn: Conn, counts: Sequence[Any], top: int) -> None:
    """Add counted pushes, (task, queue, n) rows, to the folded counters; watermark = top."""
    conn.executemany(
        _UPSERT, [(FOLDED, PUSHED, str(t), str(q), "", 0, int(n), 0.0) for t, q, n in counts]
    )
    conn.execute(
        "INSERT INTO counters (token, name, task, queue, status, bucket, n, total) "
        f"VALUES ('{WATERMARK}', '{PUSHED}', '', '', '', 0, ?, 0) "
        "ON CONFLICT (token, name, task, queue, status, bucket) DO UPDATE SET n = excluded.n",
        (top,),
    )


def _by_watermark(conn: Conn) -> bool:
    """Whether pushes are counted from the job rows (SQLite; see `_catch_up_pushed`)."""
    return isinstance(conn, sqlite3.Connection)


def _gone(token: str) -> bool:
    """Whether a token's process is known to be gone (see `fold_counters`)."""
    if not token.startswith("push:"):
        return True  # a process token not in the live list
    _, host, pid = token.rsplit(":", 2) if token.count(":") >= 2 else ("", "", "")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
