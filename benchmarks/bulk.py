"""Bulk push against the insert limit: bare executemany vs push_many vs task.map.

    python -m benchmarks.bulk                # 100,000 jobs per method per round, 5 rounds
    python -m benchmarks.bulk --quick        # 20,000 jobs, 3 rounds
    python -m benchmarks.bulk --postgres     # also on a throwaway PostgreSQL server
    python -m benchmarks.run --only bulk [--quick]

In one run, interleaved round by round (the machine is shared and noisy, so every method
sees the same load), each in a store of its own that grows over the rounds:

- bare: `executemany` of prebuilt rows into a plain job table of the usual shape (11
  columns, one partial index of ready jobs, the store's pragmas: WAL, synchronous=NORMAL,
  the same autocheckpoint), in one BEGIN IMMEDIATE ... COMMIT. The rows hold the task
  name, import path and pickled arguments mpjobs stores, pickled beforehand: the bare
  figure is the insert alone, what a hand-written loader would reach, and the limit
  the issue measures against.
- push_many: `app.push_many([item.schedule(i) for i in range(n)])`, building the
  builders included (a caller pays for them), and the call alone.
- map: `item.map(args)` with args = [(i,), ...], prebuilt as a caller's data would be.

Each rate is all the jobs of all rounds over the time of all rounds; the ratio is to
bare. On SQLite every store is checkpointed between rounds, untimed (in a pool the
leader checkpoints, off the pushers' commits): a checkpoint falls on whichever commit
crosses the WAL threshold, and timing it made one method or another slow by chance. On
PostgreSQL, bare is COPY of the prebuilt rows into the same plain table (its fastest
loader), and the server is durable (fsync on).
"""

from __future__ import annotations

import argparse
import functools
import os
import pickle
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mpjobs

app = mpjobs.App()


@app.task
def item(i: int) -> int:
    return i


BARE_DDL = (
    "CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT NOT NULL, func TEXT, payload BLOB, "
    "queue TEXT NOT NULL, priority INTEGER NOT NULL, status TEXT NOT NULL, exec_at REAL NOT NULL, "
    "attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL, created_at REAL NOT NULL)",
    "CREATE INDEX jobs_ready ON jobs(priority, exec_at) WHERE status = 'SCHEDULED'",
)
BARE_INSERT = (
    "INSERT INTO jobs (name, func, payload, queue, priority, status, exec_at, max_attempts, "
    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def bare_table(path: Path) -> sqlite3.Connection:
    """The plain job table, with the pragmas mpjobs' store runs with (connection.py)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "temp_store = MEMORY",
                   "cache_size = -16000", "wal_autocheckpoint = 10000"):  # fmt: skip
        conn.execute(f"PRAGMA {pragma}")
    for ddl in BARE_DDL:
        conn.execute(ddl)
    return conn


BULK_WAYS = ("push_many", "map")


Bare = tuple[Callable[[list[tuple[Any, ...]]], None], Callable[[], None]]


def sqlite_bare(root: Path) -> Bare:
    """Bare SQLite: one executemany of the prebuilt rows, in BEGIN IMMEDIATE ... COMMIT;
    and its checkpoint between rounds."""
    conn = bare_table(root / "bare.db")

    def insert(rows: list[tuple[Any, ...]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(BARE_INSERT, rows)
        conn.execute("COMMIT")

    return insert, lambda: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def postgres_bare(url: str) -> Bare:
    """Bare PostgreSQL: COPY of the prebuilt rows into the plain table, one transaction
    (the fastest a hand-written loader gets; executemany is far slower there)."""
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    conn.execute("DROP SCHEMA IF EXISTS bulk_bare CASCADE")
    conn.execute("CREATE SCHEMA bulk_bare")
    conn.execute("SET search_path TO bulk_bare")
    for ddl in BARE_DDL:
        conn.execute(ddl.replace("id INTEGER PRIMARY KEY", "id BIGSERIAL PRIMARY KEY")
                     .replace("BLOB", "BYTEA").replace(" REAL", " DOUBLE PRECISION"))  # fmt: skip
    cols = BARE_INSERT.split("(", 1)[1].split(")", 1)[0]

    def insert(rows: list[tuple[Any, ...]]) -> None:
        with conn.transaction(), conn.cursor().copy(f"COPY jobs ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    return insert, lambda: None


def _rehome(home: Path, store: str | None) -> None:
    app._home_arg, app._home = str(home), None
    app._store_arg = store
    app._backend = None
    app._backend_home = None


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(n: int, rounds: int, root: Path, log: Callable[[str], None] = print,
        url: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The three methods, `rounds` times each, interleaved; rates and ratios to bare.

    `url`: a PostgreSQL server (a schema of it for each method); None: SQLite, a home
    (or a file) for each."""
    from benchmarks.postgres import with_schema

    args = [(i,) for i in range(n)]
    path = item.ref()[0]
    bare, bare_checkpoint = sqlite_bare(root) if url is None else postgres_bare(url)
    stores = {k: None if url is None else with_schema(url, f"bulk_{k}") for k in BULK_WAYS}
    store = stores.get
    mapping = hasattr(item, "map")  # not before task.map existed: the "before" figures
    times: dict[str, list[float]] = {"bare": [], "push_many": [], "push_many_call": [],
                                     "map": []}  # fmt: skip
    homes = {}
    for name in BULK_WAYS:
        homes[name] = root / name
        homes[name].mkdir(mode=0o700)
        _rehome(homes[name], store(name))
        item.schedule(0).now()  # open (and on PostgreSQL, create) the store
    for r in range(rounds):
        now = time.time()
        rows = [(item.name, path, pickle.dumps((a, {}), 5), "default", 0, "SCHEDULED", now, 1,
                 now) for a in args]  # fmt: skip
        times["bare"].append(_timed(functools.partial(bare, rows)))
        del rows
        _rehome(homes["push_many"], store("push_many"))
        t0 = time.perf_counter()
        builders = [item.schedule(i) for i in range(n)]
        t1 = time.perf_counter()
        app.push_many(builders)
        t2 = time.perf_counter()
        times["push_many"].append(t2 - t0)
        times["push_many_call"].append(t2 - t1)
        del builders
        if mapping:
            _rehome(homes["map"], store("map"))
            times["map"].append(_timed(lambda: item.map(args)))
        if url is None:  # untimed, as the leader does it in a pool: every round starts
            bare_checkpoint()  # with an empty WAL, so none pays a checkpoint of the last
            for name in BULK_WAYS:
                _rehome(homes[name], None)
                app.store.checkpoint()
        log(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {n / v[-1]:,.0f}/s" for k, v in times.items() if v))  # fmt: skip
    where = "sqlite" if url is None else "postgres"
    out: dict[str, Any] = {}
    for k, v in times.items():
        if v:
            out[f"bulk_{where}_{k}_per_s"] = round(n * len(v) / sum(v))
    base = out.get(f"bulk_{where}_bare_per_s")
    if base:
        for k in ("push_many", "push_many_call", "map")[: 3 if mapping else 2]:
            out[f"bulk_{where}_{k}_vs_bare"] = round(out[f"bulk_{where}_{k}_per_s"] / base, 2)
    out[f"bulk_{where}_jobs_per_round"] = n
    out[f"bulk_{where}_rounds"] = rounds
    return out


def postgres(n: int, rounds: int, root: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The same on a throwaway PostgreSQL server (tests/pgharness.py, fsync on)."""
    from benchmarks.postgres import server

    with server() as (cluster, info):
        log(f"PostgreSQL {info.get('version')}")
        return run(n, rounds, root, log, cluster.url())


def table(out: dict[str, Any]) -> str:
    lines = []
    for where in ("sqlite", "postgres"):
        for k in ("bare", "push_many", "push_many_call", "map"):
            rate = out.get(f"bulk_{where}_{k}_per_s")
            if rate is None:
                continue
            ratio = out.get(f"bulk_{where}_{k}_vs_bare")
            tail = "" if ratio is None else f"  {ratio:.2f}x bare"
            lines.append(f"{where:8s} {k:15s} {rate:>10,} jobs/s{tail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bulk", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="jobs per method per round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    a = parser.parse_args(argv)
    n = a.n or (20_000 if a.quick else 100_000)
    rounds = a.rounds or (3 if a.quick else 5)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mpjobs-bulk-") as tmp:
        os.chmod(tmp, 0o700)
        out.update(run(n, rounds, Path(tmp)))
        if a.postgres:
            print(table(out), flush=True)
        if a.postgres:
            pg_root = Path(tmp) / "pg"
            pg_root.mkdir(mode=0o700)
            out.update(postgres(n, rounds, pg_root))
    print()
    print(table(out))
    print(f"load average {[round(x, 2) for x in os.getloadavg()]}")


if __name__ == "__main__":
    from benchmarks import bulk  # this module by its import path: `item` is found by it

    bulk.main()
