"""Queue depths that cost a few seeks, however deep the queues are.

An exact count of a queue's waiting jobs reads one index entry per job: a quarter of a
second for the million reminders of a busy home, on every `mpjobs status`, dashboard
refresh and metrics scrape. So a depth is counted live only up to DEPTH_CAP (one bounded
walk of jobs_ready per queue, about 80 µs); a queue deeper than that shows the figure of
the last *census*, an exact count the leader takes in a thread of its own (a count of a
million entries must not hold up its schedules) and keeps in the `depths` table. The
figure is then marked estimated, with the time it was counted: a count of a million
jobs that is a few seconds old is what an operator can use, and what Oban's and
Sidekiq's dashboards show too. A queue that fell below the cap is exact again at once.

Running jobs are as many as the pools' slots, so they are always counted exactly.
"""

from __future__ import annotations

from mpjobs.store.base import RUNNING, SCHEDULED, Depths
from mpjobs.store.due import queue_walk
from mpjobs.store.rows import Rows

DEPTH_CAP = 500  # waiting jobs a queue's live count reads at most
_WAITING = f"status = '{SCHEDULED}'"
# Every queue with waiting jobs, and its count up to the cap + 1 (so "more" shows).
_LIVE = (
    f"WITH RECURSIVE {queue_walk(_WAITING)} SELECT q, (SELECT count(*) FROM (SELECT 1 FROM "
    f"jobs WHERE {_WAITING} AND queue = qs.q LIMIT {DEPTH_CAP + 1}) AS w) "
    "FROM qs WHERE q IS NOT NULL"
)
_RUNNING = f"SELECT queue, count(*) FROM jobs WHERE status = '{RUNNING}' GROUP BY queue"
_EXACT = f"SELECT count(*) FROM jobs WHERE {_WAITING} AND queue = ?"


class CensusQueries(Rows):
    def depths(self) -> Depths:
        conn = self._conn()
        counts: dict[str, dict[str, int]] = {}
        deep: list[str] = []
        for queue, n in conn.execute(_LIVE):
            counts[str(queue)] = {SCHEDULED: int(n)}
            if int(n) > DEPTH_CAP:
                deep.append(str(queue))
        estimated: dict[str, float | None] = {}
        if deep:
            census = {
                str(q): (int(n), float(at))
                for q, n, at in conn.execute("SELECT queue, waiting, counted_at FROM depths")
            }
            for queue in deep:
                n, at = census.get(queue, (0, 0.0))
                if n > DEPTH_CAP:
                    counts[queue][SCHEDULED] = n
                    estimated[queue] = at
                else:  # not counted yet, or it grew since the census
                    estimated[queue] = None
        for queue, n in conn.execute(_RUNNING):
            counts.setdefault(str(queue), {})[RUNNING] = int(n)
        return Depths(counts, estimated)

    def queue_depths(self) -> dict[str, dict[str, int]]:
        return self.depths().counts

    def _count_deep(self, now: float) -> list[tuple[str, int, float]]:
        """(queue, waiting, now) of each queue deeper than the cap: the census's read."""
        conn = self._conn()
        deep = [str(q) for q, n in conn.execute(_LIVE) if int(n) > DEPTH_CAP]
        return [(q, int(conn.execute(_EXACT, (q,)).fetchone()[0]), now) for q in deep]

    def take_census(self, now: float) -> int:
        """Count the waiting jobs of every queue deeper than DEPTH_CAP exactly, and
        record them (forgetting the queues that are shallow again); how many counted.

        Each count is a read outside any transaction (a WAL reader blocks no writer);
        only the few rows of the result are written.
        """
        rows = self._slow_read(lambda: self._count_deep(now))
        conn = self._conn()
        if not rows and conn.execute("SELECT 1 FROM depths LIMIT 1").fetchone() is None:
            return 0  # nothing deep, nothing recorded: no write (a commit wakes the pools)
        with self._tx() as tx:
            tx.execute("DELETE FROM depths")
            if rows:
                tx.executemany(
                    "INSERT INTO depths (queue, waiting, counted_at) VALUES (?, ?, ?)", rows
                )
        return len(rows)
