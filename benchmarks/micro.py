"""Micro-benchmarks behind the optimisation proposals in docs/performance.md.

    python -m benchmarks.micro

Each line times one way of doing a hot-path step against a real store (the schema
mpjobs creates), and the same step done differently, in the same process.
"""

from __future__ import annotations

import fcntl
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import tasks
from mpjobs.store import sql as sq


def timeit(label: str, fn: Callable[[], object], n: int, per: int = 1) -> float:
    fn()  # warm
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    us = (time.perf_counter() - t0) / (n * per) * 1e6
    print(f"  {us:9.2f} us/job  {1e6 / us:>10,.0f} /s   {label}")
    return us


def fresh(tmp: Path, name: str, autoincrement: bool = True) -> tuple[object, sqlite3.Connection]:
    home = tmp / name
    home.mkdir(mode=0o700)
    app = tasks.rehome(tasks.app, home)
    store = app.store
    conn = sqlite3.connect(home / "mpjobs.db", isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    if not autoincrement:  # the same table, rowid without AUTOINCREMENT
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'jobs'").fetchone()[0]
        idx = [r[0] for r in conn.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = 'jobs' AND type = 'index' "
            "AND sql IS NOT NULL")]  # fmt: skip
        conn.execute("DROP TABLE jobs")
        conn.execute(sql.replace("AUTOINCREMENT", ""))
        for s in idx:
            conn.execute(s)
    return store, conn


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mpjobs-micro-") as d:
        tmp = Path(d)
        now = time.time()
        nj = tasks.noop.schedule().new_job(now)
        params = sq.job_params(nj, now)

        print("push, one job per transaction:")
        store, conn = fresh(tmp, "a")
        n = 5000
        timeit("noop.schedule().now()  (the public API)", lambda: tasks.noop.schedule().now(), n)
        timeit("store.push([job])  (flock + BEGIN IMMEDIATE + INSERT + COMMIT)",
               lambda: store.push([nj], now), n)  # type: ignore[attr-defined]  # fmt: skip
        wfd = store._local.wfd  # type: ignore[attr-defined]

        def raw(c: sqlite3.Connection, lock: bool) -> Callable[[], None]:
            def go() -> None:
                if lock:
                    fcntl.flock(wfd, fcntl.LOCK_EX)
                c.execute("BEGIN IMMEDIATE")
                c.execute(sq.INSERT_JOB, params)
                c.execute("COMMIT")
                if lock:
                    fcntl.flock(wfd, fcntl.LOCK_UN)

            return go

        timeit("raw sqlite3: flock + BEGIN IMMEDIATE + INSERT + COMMIT", raw(conn, True), n)
        timeit("raw sqlite3: without the flock", raw(conn, False), n)
        _, conn_b = fresh(tmp, "b", autoincrement=False)
        timeit("raw sqlite3: without flock, table without AUTOINCREMENT", raw(conn_b, False), n)
        timeit("Python only: noop.schedule().new_job(now) + job_params",
               lambda: sq.job_params(tasks.noop.schedule().new_job(now), now), n)  # fmt: skip

        print("push_many, 10,000 jobs per transaction:")
        b = 10_000
        store, conn = fresh(tmp, "c")
        app = tasks.app
        timeit("app.push_many([noop.schedule() ...])  (the public API)",
               lambda: app.push_many([tasks.noop.schedule() for _ in range(b)]), 5, b)  # fmt: skip
        jobs = [tasks.noop.schedule().new_job(now) for _ in range(b)]
        timeit("store.push(prebuilt NewJobs)", lambda: store.push(jobs, now), 5, b)  # type: ignore[attr-defined]
        rows = [params] * b

        def many(c: sqlite3.Connection) -> Callable[[], None]:
            def go() -> None:
                c.execute("BEGIN IMMEDIATE")
                c.executemany(sq.INSERT_JOB, rows)
                c.execute("COMMIT")

            return go

        timeit("raw executemany of prebuilt tuples", many(conn), 5, b)
        _, conn_d = fresh(tmp, "d", autoincrement=False)
        timeit("raw executemany, table without AUTOINCREMENT", many(conn_d), 5, b)
        timeit("Python only: builders", lambda: [tasks.noop.schedule() for _ in range(b)], 5, b)
        builders = [tasks.noop.schedule() for _ in range(b)]
        timeit("Python only: builder.new_job(now) + job_params",
               lambda: [sq.job_params(x.new_job(now), now) for x in builders], 5, b)  # fmt: skip

        print("worker: claim 64 + complete 64 (one transaction each way, no-op jobs):")
        store, conn = fresh(tmp, "e")
        store.push([nj] * 200_000, now)  # type: ignore[attr-defined]
        from mpjobs.store.base import SUCCESS, Completion

        def claim_complete() -> None:
            got = store.claim("w", 1, None, 64, time.time())  # type: ignore[attr-defined]
            store.complete("w", [Completion(j.id, SUCCESS) for j in got], time.time())  # type: ignore[attr-defined]

        timeit("store.claim(64) then store.complete(64 Completions)", claim_complete, 200, 64)
        cols = "id, name, func, func_pickle, payload, timeout, memory_limit, attempts"

        def lean() -> None:
            t = time.time()
            conn.execute("BEGIN IMMEDIATE")
            got = conn.execute(
                "UPDATE jobs SET status = 'RUNNING', owner = ?, pid = ?, started_at = ?, "
                "attempts = attempts + 1 WHERE id IN (SELECT id FROM jobs WHERE status = "
                f"'SCHEDULED' AND exec_at <= ? ORDER BY priority, exec_at, id LIMIT 64) "
                f"RETURNING {cols}", ("w", 1, t, t),
            ).fetchall()  # fmt: skip
            conn.execute("COMMIT")
            ids = ",".join(str(r[0]) for r in got)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE jobs SET status = 'SUCCESS', finished_at = ?, owner = NULL, pid = NULL "
                f"WHERE id IN ({ids}) AND status = 'RUNNING' AND owner = ?", (t, "w"),
            )  # fmt: skip
            conn.execute("COMMIT")

        timeit("lean: RETURNING 8 columns as tuples; one UPDATE ... id IN (...) for results",
               lean, 200, 64)  # fmt: skip


if __name__ == "__main__":
    main()
