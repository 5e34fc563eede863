"""Scale scenarios: the watchdog's cost with many memory-limited jobs, and drain by workers.

    python -m benchmarks.scale            # about a minute on 2 cores
    python -m benchmarks.scale --quick

- watchdog: 16 workers each run a memory-limited job that sleeps; the supervisor samples
  each job's process tree 50 times a second. Reported: the supervisor's CPU use over a
  few seconds (psutil cpu_times of its process); the cost of one tree sample by the
  process table (mpjobs/runtime/proctable.py) against psutil's walk of every process of
  the host (what the watchdog did first), on this host as it is; and the cost of one
  watchdog pass over 16 watched processes (Watchdog.over_limit, every watch due), run
  back to back in this process: warm caches, so less than the same pass costs the
  supervisor after each 20 ms sleep.
- workers: the same no-op drain with 1, 2, 4 and 8 workers, jobs/s of each, from the
  store's own start and finish times. Every worker commits through the one SQLite
  writer, so the figure stops growing where that writer is saturated (docs/performance.md).

`make bench` runs both through benchmarks.run (scenario "scale").
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks import tasks
from mpjobs.limits import Watch, tree_rss
from mpjobs.runtime.proctable import ProcTable
from mpjobs.runtime.reaping import Child
from mpjobs.runtime.watchdog import Watchdog

WATCHED_JOBS = 16


def _home(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir(mode=0o700)
    return path


def _until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def sample_cost(n: int = 2000) -> dict[str, float]:
    """Microseconds per tree sample of this process: the table against psutil's walk."""
    me = os.getpid()
    table = ProcTable()
    t0 = time.perf_counter()
    for _ in range(n):
        table.new_pass()
        table.tree_rss(me)
    t1 = time.perf_counter()
    proc = psutil.Process(me)
    for _ in range(n):
        tree_rss(proc)
    t2 = time.perf_counter()
    return {
        "table_us": (t1 - t0) / n * 1e6,
        "psutil_us": (t2 - t1) / n * 1e6,
        "host_processes": float(len(psutil.pids())),
    }


def pass_cost(n: int = 2000) -> float:
    """Microseconds per watchdog pass with WATCHED_JOBS memory watches, each one due."""
    sleep = [sys.executable, "-c", "import time; print(flush=True); time.sleep(600)"]
    procs = [subprocess.Popen(sleep, stdout=subprocess.PIPE) for _ in range(WATCHED_JOBS)]
    r, w = os.pipe()
    try:
        for p in procs:  # every one has started: none competes for the CPU while we time
            assert p.stdout is not None and p.stdout.readline() == b"\n"
        os.set_blocking(r, False)
        dog = Watchdog(r)
        children = {}
        for slot, p in enumerate(procs):
            child = Child(p.pid, "worker", slot, f"w{slot}", time.monotonic(), booted=True,
                          proc=psutil.Process(p.pid))  # fmt: skip
            child.watches[slot] = Watch(slot, time.monotonic(), None, 1 << 40, child.proc)
            children[p.pid] = child
        watches = [w for c in children.values() for w in c.watches.values()]
        took = 0.0
        for _ in range(n):
            for watch in watches:
                watch.next_sample = 0.0  # due now, as after the 20 ms sleep
            t0 = time.perf_counter()
            for _over in dog.over_limit(children):
                raise AssertionError("a sleeping process is over 1 TiB")
            took += time.perf_counter() - t0
        return took / n * 1e6
    finally:
        os.close(r)
        os.close(w)
        for p in procs:
            p.kill()
            p.wait()
            if p.stdout is not None:
                p.stdout.close()


def watchdog(tmp: Path, seconds: float, memory_limit: str | None = "1GB") -> float:
    """The supervisor's CPU share (% of a core) while WATCHED_JOBS sleeping jobs run.

    With memory_limit=None it is the baseline: the same pool, nothing to sample.
    """
    home = _home(tmp, f"watchdog-{memory_limit}")
    app = tasks.rehome(tasks.app, home)
    marks = home / "marks"
    marks.mkdir()
    builders = [
        tasks.sleeper.schedule(str(marks / f"{i}"), seconds + 30).options(memory_limit=memory_limit)
        for i in range(WATCHED_JOBS)
    ]
    app.push_many(builders)
    with app.start(workers=WATCHED_JOBS) as pool:
        _until(lambda: len(os.listdir(marks)) >= WATCHED_JOBS, 120, "every job to start")
        sup = psutil.Process(pool.pid)
        c0, t0 = sup.cpu_times(), time.perf_counter()
        time.sleep(seconds)  # the measured window itself: nothing to wait for
        c1, t1 = sup.cpu_times(), time.perf_counter()
        busy = (c1.user - c0.user) + (c1.system - c0.system)
        for job in app.jobs(limit=WATCHED_JOBS):
            job.cancel(terminate=True)
    return 100 * busy / (t1 - t0)


DONE = "SELECT count(*) FROM jobs WHERE status = 'SUCCESS'"


def drain_by_workers(tmp: Path, n: int, counts: tuple[int, ...]) -> dict[int, float]:
    """jobs/s of a no-op drain of `n` jobs with each number of workers."""
    out = {}
    for workers in counts:
        home = _home(tmp, f"workers{workers}")
        app = tasks.rehome(tasks.app, home)
        app.push_many([tasks.noop.schedule() for _ in range(n)])
        conn = sqlite3.connect(home / "mpjobs.db", isolation_level=None, timeout=30)
        with app.start(workers=workers) as pool:
            pool.wait_ready(timeout=60, workers=workers)
            _until(lambda c=conn: c.execute(DONE).fetchone()[0] >= n, 600, "the drain")
        count, first, last = conn.execute(
            "SELECT count(*), min(started_at), max(finished_at) FROM jobs WHERE status = 'SUCCESS'"
        ).fetchone()
        conn.close()
        out[workers] = count / (last - first)
    return out


def run(quick: bool) -> dict[str, Any]:
    """Every scale figure, as benchmarks.run records them."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mpjobs-scale-") as d:
        tmp = Path(d)
        cost = sample_cost(500 if quick else 2000)
        out["tree_sample_table_us"] = round(cost["table_us"], 1)
        out["tree_sample_psutil_us"] = round(cost["psutil_us"], 1)
        out["host_processes"] = int(cost["host_processes"])
        out["watchdog_pass_16_jobs_us"] = round(pass_cost(500 if quick else 2000), 1)
        window = 2.0 if quick else 5.0
        out["supervisor_cpu_16_jobs_no_limit_percent"] = round(watchdog(tmp, window, None), 1)
        out["supervisor_cpu_16_memory_limited_percent"] = round(watchdog(tmp, window), 1)
        rates = drain_by_workers(tmp, 5_000 if quick else 30_000, (1, 2, 4, 8))
        for workers, rate in rates.items():
            out[f"drain_{workers}_workers_per_s"] = round(rate)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for key, value in run(args.quick).items():
        print(f"{key}: {value:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
