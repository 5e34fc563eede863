"""`make bench`: mpjobs scenarios, with huey measured side by side in the same run.

    python -m benchmarks.run            # the full run (about 2 minutes on 2 cores)
    python -m benchmarks.run --quick    # shorter, for development
    python -m benchmarks.run --only drain,latency

Prints a table and writes benchmarks/latest.json (temp file + rename). Every scenario
gets a fresh home in a temporary directory, and every pool is stopped at its end. The
method of each scenario is described in docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pickle
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

import mpjobs
from benchmarks import tasks
from mpjobs.coordination.leader import current_leader

ROOT = Path(__file__).resolve().parent.parent
LATEST = Path(__file__).resolve().parent / "latest.json"
ASYNC_CONCURRENCY = 100
ASYNC_SLEEP = 0.1
POLL = 0.01  # the drain observers poll a count every 10 ms, the same for both systems


@dataclass(frozen=True)
class Config:
    drain_n: int = 20_000
    huey_n: int = 20_000
    huey_nosync_n: int = 10_000
    push_n: int = 20_000
    push_many_n: int = 200_000
    push_many_batch: int = 10_000
    latency_samples: int = 200
    schedule_every: float = 0.05
    schedule_for: float = 6.0
    kills: int = 20
    failovers: int = 20
    idle_for: float = 10.0
    idle_waiters_n: int = 10_000
    backlog_n: int = 1_000_000
    backlog_drain_n: int = 60_000  # long enough (about 1.5 s) that load spikes average out
    async_n: int = 10_000  # jobs of 0.1 s on 2 workers of concurrency ASYNC_CONCURRENCY
    async_serial_n: int = 200  # the same jobs on 2 workers of concurrency 1
    dashboard_n: int = 1_000_000  # jobs in the store the dashboard's pages are timed on


QUICK = Config(
    drain_n=5_000, huey_n=2_000, huey_nosync_n=2_000, push_n=5_000, push_many_n=50_000,
    latency_samples=50, schedule_for=2.0, kills=5, failovers=5, idle_for=3.0,
    backlog_n=200_000, backlog_drain_n=5_000, async_serial_n=100, dashboard_n=200_000,
)  # fmt: skip


# -- helpers -------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """The p-th percentile, linear between closest ranks (statistics' 'inclusive')."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def wait_until(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.001) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def reader(db: Path) -> sqlite3.Connection:
    """A plain read connection for the observer (WAL: it never blocks the writers)."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def measure_drain(remaining: Callable[[], int], n: int, timeout: float) -> dict[str, float]:
    """Observe a drain by polling `remaining()`; the same method for mpjobs and huey.

    t0 is the first poll that sees fewer than n jobs left (consumption has started),
    t1 the first poll that sees none; the rate is the jobs consumed between them.
    """
    deadline = time.monotonic() + timeout
    while True:
        left, t0 = remaining(), time.perf_counter()
        if left < n:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("the drain never started")
        time.sleep(POLL / 10)
    left0 = left
    while left > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"drain not finished after {timeout} s ({left} left)")
        time.sleep(POLL)
        left, t1 = remaining(), time.perf_counter()
    if left0 == 0:
        return {"rate": float("nan"), "seconds": 0.0}
    return {"rate": left0 / (t1 - t0), "seconds": t1 - t0}


def mpjobs_remaining(conn: sqlite3.Connection) -> Callable[[], int]:
    # Both counts are answered from partial indexes, so a poll costs microseconds.
    sql = (
        "SELECT (SELECT count(*) FROM jobs WHERE status = 'SCHEDULED') + "
        "(SELECT count(*) FROM jobs WHERE status = 'RUNNING')"
    )
    return lambda: int(conn.execute(sql).fetchone()[0])


def store_rate(conn: sqlite3.Connection) -> float:
    """Jobs finished / (last finish - first start), from the timestamps the store keeps."""
    n, first, last = conn.execute(
        "SELECT count(*), min(started_at), max(finished_at) FROM jobs WHERE status = 'SUCCESS'"
    ).fetchone()
    return float(n) / (last - first) if n else float("nan")


@contextlib.contextmanager
def pool_of(app: mpjobs.App, workers: int, **opts: Any) -> Iterator[mpjobs.Pool]:
    pool = app.start(workers=workers, **opts)
    try:
        pool.wait_ready(timeout=30, workers=workers)
        yield pool
    finally:
        pool.stop(timeout=10)


def age_of(app: mpjobs.App, pid: int) -> float:
    """Seconds since the process registered itself (psutil's create_time is off by up to
    a second: the kernel's boot time it adds is whole seconds)."""
    for p in app.store.list_processes():
        if p.pid == pid:
            return time.time() - p.started_at
    return 0.0


def tree_of(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def start_latencies(app: mpjobs.App, samples: int) -> list[float]:
    """Push-to-start latencies (ms) of single jobs on `app`'s running, idle pool."""
    lats: list[float] = []
    for _ in range(5):  # warm-up: the workers import the task module
        tasks.stamp.schedule().now().wait(10)
    for _ in range(samples):
        time.sleep(0.02)  # let both workers go back to sleep: the pool is idle
        t = time.time()
        started = tasks.stamp.schedule().now().wait(10).result()
        lats.append((started - t) * 1000)
    return lats


def schedule_lags(app: mpjobs.App, home: Path, every: float, seconds: float) -> list[float]:
    """Fire-to-start lags (ms) of a schedule of `every` seconds, run for `seconds` on
    `app`'s running pool; the jobs' own rows give each fire's due time and start."""
    sch = tasks.stamp.schedule().options(id="lag").every(every)
    time.sleep(seconds)
    sch.pause()
    conn = reader(home / "mpjobs.db")
    active = (
        "SELECT count(*) FROM jobs WHERE schedule_id = 'lag' "
        "AND status IN ('SCHEDULED', 'RUNNING')"
    )
    wait_until(lambda: conn.execute(active).fetchone()[0] == 0, 10, "last fires")
    since = time.time() - seconds - 60  # this run's fires, not a history of the schedule
    rows = conn.execute(
        "SELECT exec_at, result FROM jobs WHERE schedule_id = 'lag' AND status = 'SUCCESS' "
        "AND finished_at > ? AND result IS NOT NULL",
        (since,),
    ).fetchall()
    conn.close()
    return [(pickle.loads(res) - at) * 1000 for at, res in rows]


class Bench:
    def __init__(self, cfg: Config, tmp: Path) -> None:
        self.cfg = cfg
        self.tmp = tmp
        self.out: dict[str, Any] = {}
        self.samples: dict[str, list[float]] = {}

    def home(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(mode=0o700)
        return path

    def log(self, msg: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    # -- 1. drain: mpjobs against huey ------------------------------------------------

    def drain(self) -> None:
        n = self.cfg.drain_n
        home = self.home("drain")
        app = tasks.rehome(tasks.app, home)
        app.push_many([tasks.noop.schedule() for _ in range(n)])
        conn = reader(home / "mpjobs.db")
        with pool_of(app, 2):
            r = measure_drain(mpjobs_remaining(conn), n, timeout=300)
        self.out["drain_jobs_per_s"] = round(r["rate"])
        self.out["drain_jobs_per_s_store_ts"] = round(store_rate(conn))
        self.log(f"mpjobs drained {n} no-op jobs in {r['seconds']:.2f}s")
        conn.close()
        self.huey_drain("huey_drain_jobs_per_s", self.cfg.huey_n, fsync="")
        self.huey_drain("huey_nosync_drain_jobs_per_s", self.cfg.huey_nosync_n, fsync="0")

    def huey_drain(self, key: str, n: int, fsync: str) -> None:
        """SqliteHuey: enqueue n no-op tasks, then run `huey_consumer -k process -w 2`."""
        db = self.tmp / f"huey-{key}.db"
        env = {**os.environ, "MPJOBS_BENCH_HUEY_DB": str(db), "MPJOBS_BENCH_HUEY_FSYNC": fsync}
        # Enqueue in one transaction with huey's own serializer: what huey's enqueue()
        # writes, without paying n commits before the clock starts.
        code = (
            "import sqlite3, sys\n"
            "from benchmarks.huey_tasks import huey, noop\n"
            "n = int(sys.argv[1])\n"
            "rows = [(huey.name, huey.serialize_task(noop.s()), 0) for _ in range(n)]\n"
            "conn = huey.storage.conn\n"
            "conn.execute('begin')\n"
            "conn.executemany('insert into task (queue, data, priority) values (?, ?, ?)', rows)\n"
            "conn.execute('commit')\n"
        )
        subprocess.run([sys.executable, "-c", code, str(n)], env=env, cwd=ROOT, check=True)
        conn = reader(db)
        count = "SELECT count(*) FROM task"
        assert conn.execute(count).fetchone()[0] == n
        consumer = subprocess.Popen(
            [sys.executable, "-m", "huey.bin.huey_consumer", "benchmarks.huey_tasks.huey",
             "-k", "process", "-w", "2", "-q"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            r = measure_drain(lambda: int(conn.execute(count).fetchone()[0]), n, timeout=300)
        finally:
            consumer.send_signal(signal.SIGINT)  # huey: SIGINT = graceful stop
            try:
                consumer.wait(10)
            except subprocess.TimeoutExpired:
                consumer.kill()
                consumer.wait()
            conn.close()
        self.out[key] = round(r["rate"])
        mode = "huey default (synchronous=FULL)" if fsync == "" else "fsync=False (synchronous=OFF)"
        self.log(f"huey [{mode}] drained {n} no-op jobs in {r['seconds']:.2f}s")

    # -- 2. push rates ---------------------------------------------------------------

    def push(self) -> None:
        home = self.home("push")
        app = tasks.rehome(tasks.app, home)
        tasks.noop.schedule().now()  # open the store, warm the caches
        n = self.cfg.push_n
        t0 = time.perf_counter()
        for _ in range(n):
            tasks.noop.schedule().now()
        self.out["push_per_s"] = round(n / (time.perf_counter() - t0))
        m, batch = self.cfg.push_many_n, self.cfg.push_many_batch
        build = call = 0.0
        for _ in range(m // batch):
            t0 = time.perf_counter()
            builders = [tasks.noop.schedule() for _ in range(batch)]
            t1 = time.perf_counter()
            app.push_many(builders)
            t2 = time.perf_counter()
            build, call = build + t1 - t0, call + t2 - t1
        # End to end: building the builders is part of what a caller pays.
        self.out["push_many_per_s"] = round(m / (build + call))
        self.out["push_many_call_only_per_s"] = round(m / call)
        self.log(f"pushed {n} one by one, {m} with push_many in batches of {batch}")

    # -- 3. push-to-start latency on an idle pool ------------------------------------

    def latency(self) -> None:
        app = tasks.rehome(tasks.app, self.home("latency"))
        with pool_of(app, 2):
            lats = start_latencies(app, self.cfg.latency_samples)
        self.out["start_latency_p50_ms"] = round(pct(lats, 50), 3)
        self.out["start_latency_p99_ms"] = round(pct(lats, 99), 3)
        self.out["start_latency_max_ms"] = round(max(lats), 3)
        self.samples["start_latency_ms"] = lats
        self.log(f"latency: {len(lats)} samples")

    # -- 4. schedule lag -------------------------------------------------------------

    def schedule_lag(self) -> None:
        home = self.home("schedule")
        app = tasks.rehome(tasks.app, home)
        with pool_of(app, 2):
            lags = schedule_lags(app, home, self.cfg.schedule_every, self.cfg.schedule_for)
        self.out["schedule_lag_p50_ms"] = round(pct(lags, 50), 3)
        self.out["schedule_lag_p99_ms"] = round(pct(lags, 99), 3)
        self.samples["schedule_lag_ms"] = lags
        self.log(f"schedule lag: {len(lags)} fires every {self.cfg.schedule_every}s")

    # -- 5. recovery after SIGKILL of a busy worker ----------------------------------

    def recovery(self) -> None:
        home = self.home("recovery")
        app = tasks.rehome(tasks.app, home)
        times: list[float] = []
        with pool_of(app, 2) as pool:
            for k in range(self.cfg.kills):
                wait_until(lambda: len(pool.workers()) == 2, 10, "two live workers", 0.005)
                marker = self.tmp / f"hang-{k}"
                job = tasks.hang_once.schedule(str(marker)).now()
                wait_until(lambda m=marker: m.exists() and m.read_text(), 10, "job start")  # type: ignore[misc]
                pid = int(marker.read_text())
                # A worker killed within 1 s of its fork counts as a boot failure and is
                # respawned with a back-off; kill only workers past that age.
                age = age_of(app, pid)
                if age < 1.2:
                    time.sleep(1.2 - age)
                t = time.time()
                os.kill(pid, signal.SIGKILL)
                times.append((job.wait(10).result() - t) * 1000)
        self.out["recovery_p50_ms"] = round(pct(times, 50), 3)
        self.out["recovery_p99_ms"] = round(pct(times, 99), 3)
        self.samples["recovery_ms"] = times
        self.log(f"recovery: {len(times)} kills")

    # -- 6. leader failover ----------------------------------------------------------

    def failover(self) -> None:
        home = self.home("failover")
        logfile = self.tmp / "leader.log"
        os.environ["MPJOBS_BENCH_LEADER_LOG"] = str(logfile)
        app = tasks.rehome(tasks.failover_app, home)
        hm = app.home

        def lines() -> list[str]:
            return logfile.read_text().splitlines() if logfile.exists() else []

        def standby_ready(pools: list[mpjobs.Pool], leader_pid: int) -> bool:
            coords = [p.coordinator() for p in pools]
            return all(coords) and any(c != leader_pid for c in coords)

        times: list[float] = []
        with pool_of(app, 1) as p1, pool_of(app, 1) as p2:
            for _ in range(self.cfg.failovers):
                info = wait_until(lambda: current_leader(hm), 10, "a leader", 0.005)
                pid = int(info["pid"])
                wait_until(lambda p=pid: standby_ready([p1, p2], p), 10, "a standby", 0.005)  # type: ignore[misc]
                wait_until(lambda p=pid: any(ln.endswith(f" {p}") for ln in lines()), 10, "setup")  # type: ignore[misc]
                age = age_of(app, pid)
                if age < 1.2:  # see recovery(): stay clear of the boot-failure back-off
                    time.sleep(1.2 - age)
                before = len(lines())
                t = time.time()
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda b=before: len(lines()) > b, 10, "a new leader")  # type: ignore[misc]
                t_new = float(lines()[before].split()[0])
                times.append((t_new - t) * 1000)
        self.out["failover_p50_ms"] = round(pct(times, 50), 3)
        self.out["failover_p99_ms"] = round(pct(times, 99), 3)
        self.samples["failover_ms"] = times
        self.log(f"failover: {len(times)} kills of the leader (2 supervisors)")

    # -- 7. idle RSS and CPU ---------------------------------------------------------

    def idle(self) -> None:
        """A pool started the way users start one (`mpjobs run`), so nothing of this
        benchmark process is inherited by its workers."""
        home = self.home("idle")
        app = tasks.rehome(tasks.app, home)
        proc = subprocess.Popen(
            [sys.executable, "-m", "mpjobs", "run", "benchmarks.tasks:app", "--workers", "2",
             "--home", str(home)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:

            def workers() -> list[psutil.Process]:
                kids = psutil.Process(proc.pid).children()
                regs = {p.pid for p in app.store.list_processes() if p.kind == "worker"}
                return [k for k in kids if k.pid in regs]

            wait_until(lambda: len(workers()) == 2, 30, "two workers", 0.01)
            for job in app.push_many([tasks.noop.schedule() for _ in range(100)]):
                job.wait(10)  # the workers have run jobs: idle after work, not fresh
            time.sleep(1.0)
            procs = tree_of(proc.pid)
            cpu0 = sum(sum(p.cpu_times()[:2]) for p in procs)
            t0 = time.monotonic()
            time.sleep(self.cfg.idle_for)
            cpu1 = sum(sum(p.cpu_times()[:2]) for p in procs)
            t1 = time.monotonic()
            mems = [p.memory_full_info() for p in workers()]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        self.out["idle_pool_cpu_percent"] = round((cpu1 - cpu0) / (t1 - t0) * 100, 3)
        self.out["worker_idle_rss_mb"] = round(max(m.rss for m in mems) / 2**20, 1)
        self.out["worker_idle_uss_mb"] = round(max(m.uss for m in mems) / 2**20, 1)
        self.log(f"idle: {len(procs)} processes watched for {self.cfg.idle_for:.0f}s")

    # -- 7b. CPU of idle waiters in one process ---------------------------------------

    def idle_waiters(self) -> None:
        """n asyncio tasks in one client process wait on jobs that no pool runs: what
        does its waiting cost? (All waiters of a process share one listener.)"""
        home = self.home("idle-waiters")
        ready = self.tmp / "idle-waiters.ready"
        n = self.cfg.idle_waiters_n
        proc = subprocess.Popen([sys.executable, "-c", IDLE_WAITERS_CHILD, str(home), str(n),
                                 str(ready)], cwd=ROOT)  # fmt: skip
        try:
            wait_until(ready.exists, 120, "the waiters asleep", 0.01)
            me = psutil.Process(proc.pid)
            cpu0, t0 = sum(me.cpu_times()[:2]), time.monotonic()
            time.sleep(self.cfg.idle_for)
            cpu1, t1 = sum(me.cpu_times()[:2]), time.monotonic()
        finally:
            proc.kill()
            proc.wait(15)
        self.out["idle_waiters_cpu_percent"] = round((cpu1 - cpu0) / (t1 - t0) * 100, 3)
        self.log(f"idle waiters: {n} wait_async() in one process, {self.cfg.idle_for:.0f}s")

    # -- 8. drain with a 1M-job backlog ----------------------------------------------

    def backlog(self) -> None:
        n, k = self.cfg.backlog_n, self.cfg.backlog_drain_n
        home = self.home("backlog")
        app = tasks.rehome(tasks.app, home)
        db = home / "mpjobs.db"
        t0 = time.perf_counter()
        app.store  # noqa: B018 - create the schema
        conn = reader(db)
        now = time.time()
        # The same row push() writes, made by SQLite itself: 1M rows in a few seconds.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT ?) "
            "INSERT INTO jobs (name, func, queue, priority, status, exec_at, max_attempts, "
            "retry_backoff, created_at) SELECT 'benchmarks.tasks.noop', "
            "'benchmarks.tasks:noop', 'default', 0, 'SCHEDULED', ?, 1, 1.0, ? FROM c",
            (n, now, now),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.log(f"backlog of {n} jobs built in {time.perf_counter() - t0:.1f}s")
        status = "SELECT status FROM jobs WHERE id = ?"
        # The reference: the same drain from an otherwise empty store, right before, so
        # both see the same load from whatever else runs on the machine.
        ref = self.home("backlog-ref")
        ref_app = tasks.rehome(tasks.app, ref)
        ref_app.push_many([tasks.noop.schedule() for _ in range(k)])
        ref_conn = reader(ref / "mpjobs.db")
        with pool_of(ref_app, 2):
            wait_until(lambda: ref_conn.execute(status, (k,)).fetchone()[0] == "SUCCESS",
                       300, "the reference drain", 0.01)  # fmt: skip
        self.out["drain_jobs_per_s_empty_ref"] = round(store_rate(ref_conn))
        ref_conn.close()
        app = tasks.rehome(tasks.app, home)
        with pool_of(app, 2):
            # Same exec_at and priority everywhere: jobs are claimed in id order, so job
            # k being done means about k jobs are done.
            wait_until(lambda: conn.execute(status, (k,)).fetchone()[0] == "SUCCESS",
                       300, "the drain", 0.01)  # fmt: skip
        self.out["drain_jobs_per_s_1m_backlog"] = round(store_rate(conn))
        conn.close()
        shutil.rmtree(home, ignore_errors=True)
        self.log(f"drained {k} of the {n} backlog")

    # -- 9. async jobs on workers of concurrency 100, against concurrency 1 ----------

    def async_drain(self) -> None:
        """Jobs that each await asyncio.sleep(0.1): the sleeping is the floor, the rest is
        the executor's overhead (claims, journal, commits, the loop)."""
        for key, n, concurrency in (
            ("async_drain", self.cfg.async_n, ASYNC_CONCURRENCY),
            ("async_serial", self.cfg.async_serial_n, 1),
        ):
            home = self.home(key)
            app = tasks.rehome(tasks.app, home)
            app.push_many([tasks.nap.schedule(ASYNC_SLEEP) for _ in range(n)])
            conn = reader(home / "mpjobs.db")
            with pool_of(app, 2, concurrency=concurrency):
                r = measure_drain(mpjobs_remaining(conn), n, timeout=600)
            conn.close()
            floor = n * ASYNC_SLEEP / (2 * concurrency)  # seconds of sleeping per slot
            self.out[f"{key}_s"] = round(r["seconds"], 2)
            self.out[f"{key}_overhead_s"] = round(r["seconds"] - floor, 2)
            self.log(f"{n} jobs of {ASYNC_SLEEP} s, 2 workers x {concurrency}: "
                     f"{r['seconds']:.2f} s ({floor:.1f} s of it sleeping per slot)")  # fmt: skip
        per_job = self.out["async_serial_s"] / self.cfg.async_serial_n
        self.out["async_serial_projected_s"] = round(per_job * self.cfg.async_n, 1)

    # -- workflows: a 10,000-member group with a chord against independent jobs --------

    def workflows(self) -> None:
        from benchmarks import workflows

        n = 2_000 if self.cfg == QUICK else 10_000
        self.out.update(workflows.run(self.home("workflows"), n))

    # -- 10. PostgreSQL: mpjobs, procrastinate and Chancy on one server -------------------

    def postgres(self) -> None:
        from benchmarks import postgres  # needs the bench extra (psycopg, procrastinate, chancy)

        postgres.run_section(self, quick=self.cfg == QUICK)

    # -- 11. scale: the watchdog with 16 memory-limited jobs, drain by worker count ------

    def scale(self) -> None:
        from benchmarks import scale

        self.out.update(scale.run(quick=self.cfg == QUICK))


    # -- 11b. a store with history: 2M finished, 1M delayed (benchmarks/bigstore.py) ------

    def bigstore(self) -> None:
        from benchmarks import bigstore

        self.out.update(bigstore.run(self.tmp, quick=self.cfg == QUICK, log=self.log))

    # -- 12. job control: each option's cost on the no-op drain, a 1,000/s limit -------

    def control(self) -> None:
        from benchmarks import control

        for key, value in control.run(quick=self.cfg == QUICK, log=self.log).items():
            self.out[key] = value[0] if isinstance(value, list) else value

    # -- 13. The dashboard's pages with a million jobs (benchmarks/dashboard.py) ----------

    def dashboard(self) -> None:
        from benchmarks import dashboard

        self.out.update(dashboard.run(self.cfg.dashboard_n, 21, self.log))

    # -- 14. bulk push: bare executemany vs push_many vs task.map (benchmarks/bulk.py) --

    def bulk(self) -> None:
        from benchmarks import bulk

        quick = self.cfg == QUICK
        self.out.update(bulk.run(20_000 if quick else 100_000, 3 if quick else 5,
                                 self.home("bulk"), self.log))  # fmt: skip


SCENARIOS = ["push", "latency", "schedule_lag", "recovery", "failover", "idle", "idle_waiters",
             "drain", "backlog", "bigstore", "async_drain", "scale", "workflows", "control",
             "dashboard", "postgres", "bulk"]  # fmt: skip

# The client of the idle_waiters scenario: every waiter has run to its first sleep once
# the main coroutine runs again after sleep(0).
IDLE_WAITERS_CHILD = """
import asyncio, os, sys
from pathlib import Path
from benchmarks import tasks
home, n, ready = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
jobs = tasks.rehome(tasks.app, home).push_many([tasks.noop.schedule() for _ in range(n)])
async def main():
    waiting = asyncio.gather(*(j.wait_async() for j in jobs))
    await asyncio.sleep(0)
    tmp = ready.with_name(ready.name + ".tmp")
    tmp.write_text("ready")
    os.replace(tmp, ready)
    await waiting
asyncio.run(main())
"""

BIGSTORE_QUERIES = (
    "claim_10", "claim_10_one_queue", "claim_fair_share_4", "has_due", "has_due_none_due",
    "next_exec_at", "schedule_active_count", "purge_of_nothing", "queue_depths",
    "jobs_success_q1", "jobs_failed_q1", "get_job",
)  # fmt: skip
# (key, target, higher is better); a target of None is reported without a verdict.
TARGETS: list[tuple[str, str, float | None, bool]] = [
    ("drain_jobs_per_s", "jobs/s", None, True),
    ("drain_jobs_per_s_store_ts", "jobs/s", None, True),
    ("huey_drain_jobs_per_s", "jobs/s", None, True),
    ("huey_nosync_drain_jobs_per_s", "jobs/s", None, True),
    ("drain_vs_huey", "x", 10.0, True),
    ("push_per_s", "/s", 20_000, True),
    ("push_many_per_s", "/s", 200_000, True),
    ("push_many_call_only_per_s", "/s", None, True),
    ("start_latency_p50_ms", "ms", 2.0, False),
    ("start_latency_p99_ms", "ms", 10.0, False),
    ("start_latency_max_ms", "ms", None, False),
    ("schedule_lag_p50_ms", "ms", None, False),
    ("schedule_lag_p99_ms", "ms", 20.0, False),
    ("recovery_p50_ms", "ms", None, False),
    ("recovery_p99_ms", "ms", 500.0, False),
    ("failover_p50_ms", "ms", None, False),
    ("failover_p99_ms", "ms", 100.0, False),
    ("worker_idle_rss_mb", "MiB", 30.0, False),
    ("worker_idle_uss_mb", "MiB", None, False),
    ("idle_pool_cpu_percent", "% core", 1.0, False),
    ("idle_waiters_cpu_percent", "% core", 1.0, False),
    ("drain_jobs_per_s_empty_ref", "jobs/s", None, True),
    ("drain_jobs_per_s_1m_backlog", "jobs/s", None, True),
    ("backlog_vs_empty", "ratio", 0.8, True),
    ("async_drain_s", "s", 10.0, False),
    ("async_drain_overhead_s", "s", None, False),
    ("async_serial_s", "s", None, False),
    ("async_serial_overhead_s", "s", None, False),
    ("async_serial_projected_s", "s", None, False),
    ("tree_sample_table_us", "us", None, False),
    ("tree_sample_psutil_us", "us", None, False),
    ("watchdog_pass_16_jobs_us", "us", None, False),
    ("supervisor_cpu_16_jobs_no_limit_percent", "% core", None, False),
    ("supervisor_cpu_16_memory_limited_percent", "% core", 5.0, False),
    ("drain_1_workers_per_s", "jobs/s", None, True),
    ("drain_2_workers_per_s", "jobs/s", None, True),
    ("drain_4_workers_per_s", "jobs/s", None, True),
    ("drain_8_workers_per_s", "jobs/s", None, True),
    ("wf_independent_push_per_s", "/s", None, True),
    ("wf_group_chord_push_per_s", "/s", None, True),
    ("wf_independent_complete_per_s", "jobs/s", None, True),
    ("wf_group_chord_complete_per_s", "jobs/s", None, True),
    ("control_plain_drain_per_s", "jobs/s", None, True),
    ("control_expires_drain_per_s", "jobs/s", None, True),
    ("control_rate_drain_per_s", "jobs/s", None, True),
    ("control_key_drain_per_s", "jobs/s", None, True),
    ("rate1000_busiest_aligned_second", "starts", 1000, False),
    ("rate1000_starts_per_window", "starts", None, True),
    ("dashboard_overview_ms", "ms", 100.0, False),
    ("dashboard_jobs_status_queue_task_ms", "ms", 100.0, False),
    ("dashboard_jobs_second_page_ms", "ms", 100.0, False),
    ("dashboard_failures_ms", "ms", 100.0, False),
    *[(f"bigstore_{q}_us", "us", 1000.0, False) for q in BIGSTORE_QUERIES],
    ("bigstore_census_ms", "ms", None, False),
    ("bigstore_start_latency_p50_ms", "ms", None, False),
    ("bigstore_start_latency_p99_ms", "ms", 10.0, False),
    ("bigstore_schedule_lag_p50_ms", "ms", None, False),
    ("bigstore_schedule_lag_p99_ms", "ms", 20.0, False),
    ("bigstore_drain_jobs_per_s_empty_ref", "jobs/s", None, True),
    ("bigstore_drain_jobs_per_s", "jobs/s", None, True),
    ("bigstore_drain_vs_empty", "ratio", 0.9, True),
    ("bulk_sqlite_bare_per_s", "jobs/s", None, True),
    ("bulk_sqlite_push_many_per_s", "jobs/s", None, True),
    ("bulk_sqlite_map_per_s", "jobs/s", None, True),
    ("bulk_sqlite_push_many_vs_bare", "x", 0.7, True),
    ("bulk_sqlite_push_many_call_vs_bare", "x", None, True),
    ("bulk_sqlite_map_vs_bare", "x", 0.7, True),
]


def derive(out: dict[str, Any]) -> None:
    if out.get("huey_drain_jobs_per_s") and "drain_jobs_per_s" in out:
        out["drain_vs_huey"] = round(out["drain_jobs_per_s"] / out["huey_drain_jobs_per_s"], 1)
    if out.get("drain_jobs_per_s_empty_ref") and "drain_jobs_per_s_1m_backlog" in out:
        ratio = out["drain_jobs_per_s_1m_backlog"] / out["drain_jobs_per_s_empty_ref"]
        out["backlog_vs_empty"] = round(ratio, 2)


def table(out: dict[str, Any]) -> str:
    rows = [("metric", "value", "target", "met")]
    for key, unit, target, higher in TARGETS:
        if key not in out:
            continue
        value = out[key]
        if target is None:
            tgt, met = "", ""
        else:
            tgt = f"{'>=' if higher else '<='} {target:g}"
            met = "yes" if (value >= target if higher else value <= target) else "NO"
        rows.append((key, f"{value:,} {unit}", tgt, met))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(out: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs, for development")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--json", type=Path, default=LATEST, help="where to write the results")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    chosen = SCENARIOS if not args.only else [s.strip() for s in args.only.split(",")]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS}")
    # The pools inherit this: the kills the scenarios make on purpose log warnings.
    logging.getLogger("mpjobs").setLevel(logging.ERROR)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mpjobs-bench-") as tmp:
        bench = Bench(cfg, Path(tmp))
        for name in SCENARIOS:
            if name in chosen:
                print(f"{name} ...", flush=True)
                getattr(bench, name)()
    out = bench.out
    derive(out)
    out["_samples_sorted"] = {k: sorted(round(x, 3) for x in v) for k, v in bench.samples.items()}
    out["_meta"] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "mpjobs": getattr(mpjobs, "__version__", "?"),
    }
    print()
    print(table(out))
    if "_postgres" in out:
        from benchmarks import postgres

        print("\n" + postgres.table(out))
    print(f"\n{out['_meta']['seconds']} s in all; load average {out['_meta']['loadavg_at_end']}")
    write_json(out, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
