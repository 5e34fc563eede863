"""Dashboard response time with a million jobs in the store (issue 12: each < 100 ms).

    python -m benchmarks.dashboard [--jobs 1000000] [--samples 21]

Fills a scratch SQLite store directly (rows inserted in one transaction, much faster
than pushing), a history of 30 days with a small backlog: 90% SUCCESS, 4% FAILED,
1% waiting, the rest in the other states, 5 queues, 20 tasks. Then times requests
through the dashboard's ASGI app in this process (routing, the store's queries, JSON;
not the network): the overview, and pages of jobs filtered by status, queue and task,
the failures page, and the second page of a filtered listing (keyset). Prints the
median and the worst of N of each. Not a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import mpjobs

STATUSES = [("SUCCESS", 900), ("FAILED", 40), ("PERMANENTLY_FAILED", 10), ("TIMEOUT", 10),
            ("CANCELLED", 20), ("SCHEDULED", 10), ("RUNNING", 0)]  # fmt: skip
QUEUES = [f"q{i}" for i in range(5)]
TASKS = [f"tasks.t{i}" for i in range(20)]
TARGET_MS = 100.0
PATHS = {
    "overview": "/api/overview",
    "jobs_status_queue_task": "/api/jobs?status=FAILED&queue=q3&task=tasks.t7",
    "jobs_status": "/api/jobs?status=SUCCESS",
    "jobs_queue": "/api/jobs?queue=q2",
    "jobs_task": "/api/jobs?task=tasks.t11",
    "failures": "/api/failures",
    "jobs_all": "/api/jobs",
}


def fill(home: Path, n: int, seed: int = 12) -> None:
    """`n` jobs over the last 30 days, inserted as rows (the schema is the store's own)."""
    mpjobs.App(home=home).store.close()  # creates the store at the current schema
    rng = random.Random(seed)
    weights = [w for _, w in STATUSES]
    names = [s for s, _ in STATUSES]
    now = time.time()
    start = now - 30 * 86400
    conn = sqlite3.connect(home / "mpjobs.db")
    conn.execute("PRAGMA synchronous = OFF")
    payload = b"\x80\x05\x95\x10\x00\x00\x00\x00\x00\x00\x00(K\x01K\x02\x86\x94}\x94\x86\x94."

    def rows() -> Any:
        for i in range(n):
            created = start + (now - start) * i / n
            status = rng.choices(names, weights)[0]
            done = status not in ("SCHEDULED", "RUNNING")
            finished = created + rng.random() * 2 if done else None
            error = "Traceback ...\nValueError: boom" if status == "FAILED" else None
            yield (
                rng.choice(TASKS), "tasks:fn", payload, rng.choice(QUEUES), 0, status, created,
                1 if done else 0, 1, 1.0, created, finished, finished, error,
            )  # fmt: skip

    conn.executemany(
        "INSERT INTO jobs (name, func, payload, queue, priority, status, exec_at, attempts, "
        "max_attempts, retry_backoff, created_at, started_at, finished_at, error) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows(),
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


async def request(asgi: Any, path: str) -> tuple[int, bytes]:
    raw, _, query = path.partition("?")
    scope = {"type": "http", "method": "GET", "path": raw, "root_path": "", "headers": [],
             "query_string": query.encode(), "scheme": "http"}  # fmt: skip
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        else:
            out["body"] += message.get("body", b"")

    await asyncio.wait_for(asgi(scope, receive, send), 30)
    return int(out["status"]), bytes(out["body"])


def time_paths(home: Path, samples: int) -> dict[str, Any]:
    asgi = mpjobs.App(home=home).dashboard()
    results: dict[str, Any] = {}

    async def run() -> None:
        for name, path in PATHS.items():
            status, body = await request(asgi, path)  # warm: the first read pages indexes in
            assert status == 200, body[:200]
            times = []
            for _ in range(samples):
                t0 = time.perf_counter()
                status, body = await request(asgi, path)
                times.append((time.perf_counter() - t0) * 1000)
            rows = len(json.loads(body).get("jobs", [])) if name != "overview" else None
            results[name] = {"median_ms": round(statistics.median(times), 2),
                             "max_ms": round(max(times), 2), "rows": rows}  # fmt: skip
        nxt = json.loads((await request(asgi, PATHS["jobs_status_queue_task"]))[1])["next_before"]
        path = PATHS["jobs_status_queue_task"] + f"&before={nxt}"
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            await request(asgi, path)
            times.append((time.perf_counter() - t0) * 1000)
        results["jobs_second_page"] = {"median_ms": round(statistics.median(times), 2),
                                       "max_ms": round(max(times), 2)}  # fmt: skip

    asyncio.run(run())
    return results


def run(n: int, samples: int, log: Any = print) -> dict[str, float]:
    """The scenario for benchmarks.run: flat keys, medians in ms."""
    with tempfile.TemporaryDirectory(prefix="mpjobs-dash-bench-") as tmp:
        home = Path(tmp) / "home"
        t0 = time.perf_counter()
        fill(home, n)
        log(f"dashboard: {n} jobs inserted in {time.perf_counter() - t0:.1f} s")
        results = time_paths(home, samples)
    for name, r in results.items():
        verdict = "ok" if r["median_ms"] < TARGET_MS else "OVER TARGET"
        log(f"  {name:<24} median {r['median_ms']:7.2f} ms  max {r['max_ms']:7.2f} ms  {verdict}")
    out = {f"dashboard_{k}_ms": v["median_ms"] for k, v in results.items()}
    out["dashboard_jobs"] = n
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in the store")
    parser.add_argument("--samples", type=int, default=21, help="requests timed per page")
    args = parser.parse_args(argv)
    out = run(args.jobs, args.samples)
    slow = [k for k, v in out.items() if k.endswith("_ms") and v >= TARGET_MS]
    return 1 if slow else 0


if __name__ == "__main__":
    raise SystemExit(main())
