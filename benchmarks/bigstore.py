"""A store with the history of a busy app: the hot queries and the pool on it (issue 15).

    python -m benchmarks.bigstore            # 2M finished, 1M delayed, 100k ready
    python -m benchmarks.bigstore --quick    # a tenth of that

The store is made by SQLite itself (a recursive INSERT of the rows push() and the
completions write) in a fresh home: finished jobs (a quarter of them the history of a
schedule "lag"), delayed jobs due tomorrow, and ready jobs, across 5 queues and 3
priorities. Then:

1. each hot query of the store API, median of 100 calls (microseconds): the claim (10
   jobs, given back after each timed call), the claim with a fair share of 4, the due
   check, the next due time, a schedule's live count, a purge of nothing, the queue
   depths (after a census, as the leader takes it: its time is reported too), a page
   of `app.jobs(status=..., queue=..., limit=100)`, and `get_job`;
2. with the ready jobs gone (2M finished and 1M delayed left): an idle pool's push-to-
   start latency, a 50 ms schedule's fire lag, and a drain of 60,000 no-op jobs against
   the same drain on an empty store run right before it (three such pairs; the median
   of their ratios).

`make bench` runs it as the "bigstore" scenario of benchmarks.run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mpjobs
from benchmarks import tasks
from benchmarks.run import (
    pct,
    pool_of,
    reader,
    schedule_lags,
    start_latencies,
    wait_until,
)

QUEUES, PRIORITIES = 5, 3
FULL = {"finished": 2_000_000, "delayed": 1_000_000, "ready": 100_000, "drain": 60_000}
DRAIN_ROUNDS = 3
QUICK = {"finished": 200_000, "delayed": 100_000, "ready": 10_000, "drain": 10_000}

_ROWS = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT ?) "
    "INSERT INTO jobs (name, func, queue, priority, status, exec_at, attempts, max_attempts, "
    "retry_backoff, schedule_id, created_at, started_at, finished_at) "
    "SELECT 'benchmarks.tasks.noop', 'benchmarks.tasks:noop', 'q' || (x % 5), x % 3, ?, "
    "?, ?, 1, 1.0, CASE WHEN ? AND x % 4 = 0 THEN 'lag' END, ?, ?, ? FROM c"
)


def build(db: Path, sizes: dict[str, int], now: float) -> None:
    """Insert the history, the delayed jobs and the ready jobs (ready ones last)."""
    conn = reader(db)
    conn.execute("BEGIN IMMEDIATE")
    day = 86400.0
    # finished a day ago (inside a week's result_ttl), one in fifty FAILED
    for status, share in (("SUCCESS", 49), ("FAILED", 1)):
        n = sizes["finished"] * share // 50
        at = now - day
        conn.execute(_ROWS, (n, status, at, 1, 1, at, at, at))
    conn.execute(_ROWS, (sizes["delayed"], "SCHEDULED", now + day, 0, 0, now, None, None))
    conn.execute(_ROWS, (sizes["ready"], "SCHEDULED", now - 1, 0, 0, now, None, None))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def median_us(call: Callable[[], object], n: int = 100) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e6, 1)


def hot_queries(app: mpjobs.App) -> dict[str, float]:
    """Microseconds (median of 100) of each hot query on the store as built."""
    store = app.store
    now = time.time()

    def claims(share: int, queues: list[str] | None = None) -> float:
        """The claim alone, timed; its jobs given back (untimed) after each call."""
        times = []
        for _ in range(100):
            t0 = time.perf_counter()
            jobs = store.claim("bench", 1, queues, 10, now, share=share)
            times.append(time.perf_counter() - t0)
            store.release("bench", [j.id for j in jobs])
        return round(statistics.median(times) * 1e6, 1)

    t0 = time.perf_counter()
    store.take_census(now)  # what the leader does in its thread: the depths read it
    census_ms = (time.perf_counter() - t0) * 1e3
    out = {
        "claim_10": claims(1),
        "claim_10_one_queue": claims(1, ["q3"]),
        "claim_fair_share_4": claims(4),
        "has_due": median_us(lambda: store.has_due(None, now)),
        "has_due_none_due": median_us(lambda: store.has_due(None, now - 3600)),
        "next_exec_at": median_us(lambda: store.next_exec_at(None)),
        "schedule_active_count": median_us(lambda: store.active_count("lag")),
        "purge_of_nothing": median_us(lambda: store.purge(now - 7 * 86400)),
        "queue_depths": median_us(store.queue_depths, 10),
        "jobs_success_q1": median_us(lambda: app.jobs(status="SUCCESS", queue="q1")),
        "jobs_failed_q1": median_us(lambda: app.jobs(status="FAILED", queue="q1")),
        "get_job": median_us(lambda: app.get_job(12345)),
    }
    return {**{f"bigstore_{k}_us": v for k, v in out.items()},
            "bigstore_census_ms": round(census_ms, 1)}  # fmt: skip


def _drain(app: mpjobs.App, db: Path, n: int, first: int) -> float:
    """Push n no-op jobs to `app` and drain them on 2 workers; jobs/s from the store."""
    last = app.push_many([tasks.noop.schedule() for _ in range(n)])[-1]
    conn = reader(db)
    status = "SELECT status FROM jobs WHERE id = ?"
    with pool_of(app, 2):
        wait_until(lambda: conn.execute(status, (last.id,)).fetchone()[0] == "SUCCESS",
                   300, "the drain", 0.01)  # fmt: skip
    n_done, t0, t1 = conn.execute(
        "SELECT count(*), min(started_at), max(finished_at) FROM jobs "
        "WHERE id >= ? AND status = 'SUCCESS'",
        (first,),
    ).fetchone()
    conn.close()
    return float(n_done) / (t1 - t0)


def run(tmp: Path, quick: bool, log: Callable[[str], None] = print) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    home = tmp / "bigstore"
    home.mkdir(mode=0o700)
    app = tasks.rehome(tasks.app, home)
    db = home / "mpjobs.db"
    app.store  # noqa: B018 - create the schema
    t0 = time.perf_counter()
    build(db, sizes, time.time())
    log(f"bigstore: {sum(sizes[k] for k in ('finished', 'delayed', 'ready')):,} rows "
        f"in {time.perf_counter() - t0:.0f}s")  # fmt: skip
    out: dict[str, Any] = {f"bigstore_{k}": v for k, v in sizes.items()}
    out.update(hot_queries(app))
    # The pool on 2M finished and 1M delayed: the ready jobs go first.
    conn = reader(db)
    conn.execute(
        "DELETE FROM jobs WHERE status = 'SCHEDULED' AND exec_at < ?", (time.time(),)
    )
    conn.close()
    samples = 50 if quick else 200
    with pool_of(app, 2):
        lats = start_latencies(app, samples)
        lags = schedule_lags(app, home, 0.05, 2.0 if quick else 6.0)
    out["bigstore_start_latency_p50_ms"] = round(pct(lats, 50), 3)
    out["bigstore_start_latency_p99_ms"] = round(pct(lats, 99), 3)
    out["bigstore_schedule_lag_p50_ms"] = round(pct(lags, 50), 3)
    out["bigstore_schedule_lag_p99_ms"] = round(pct(lags, 99), 3)
    # The drain, each round the same drain on an empty store right before it (the same
    # machine load): the ratio is the median of the rounds' ratios, so one burst of
    # another process's work on this 2-core machine does not decide it.
    ref_rates, rates = [], []
    for r in range(DRAIN_ROUNDS):
        ref = tmp / f"bigstore-ref{r}"
        ref.mkdir(mode=0o700)
        ref_app = tasks.rehome(tasks.app, ref)
        ref_rates.append(_drain(ref_app, ref / "mpjobs.db", sizes["drain"], 1))
        app = tasks.rehome(tasks.app, home)
        top = int(reader(db).execute("SELECT max(id) FROM jobs").fetchone()[0])
        rates.append(_drain(app, db, sizes["drain"], top + 1))
    ratios = [big / ref for big, ref in zip(rates, ref_rates, strict=True)]
    ref_rate, rate = statistics.median(ref_rates), statistics.median(rates)
    out["bigstore_drain_jobs_per_s_empty_ref"] = round(ref_rate)
    out["bigstore_drain_jobs_per_s"] = round(rate)
    out["bigstore_drain_vs_empty"] = round(statistics.median(ratios), 2)
    out["bigstore_drain_vs_empty_rounds"] = [round(r, 2) for r in ratios]
    log(f"bigstore: drained {sizes['drain']} at {rate:.0f}/s (empty store {ref_rate:.0f}/s)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(tmp), args.quick), indent=2))


if __name__ == "__main__":
    main()
