"""Recovery time and the precision and cost of limits (issue 4's figures).

    python -m benchmarks.recovery_limits            # ~1 minute on 2 cores
    python -m benchmarks.recovery_limits --quick

Measures, each on a fresh home with a 2-worker pool:
- recovery: kill -9 of a worker busy with a job (max_attempts=2) -> the retry starts,
  from the job's own start markers; p50/p99 over 20 kills. Victims are past the
  supervisor's 1 s boot grace, so no kill is taken for a boot failure.
- time-limit overshoot: finished_at - started_at - timeout for jobs stuck in sleep, a
  busy loop and a GIL-holding regex (timeout 0.5 s).
- memory-limit overshoot: peak tree RSS the supervisor saw minus the limit (200 MB),
  for a job allocating 20 MB chunks as fast as it can.
- cost of monitoring: drain rate of no-op jobs without and with a generous timeout
  (each limited job costs two pipe messages and a Watch in the supervisor).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

import mpjobs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "apps"))
import chaos_tasks as ct


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.002)


def fresh_app(tmp: Path, name: str) -> mpjobs.App:
    return ct.make_app(tmp / name)


def recovery(tmp: Path, kills: int) -> list[float]:
    app = fresh_app(tmp, "recovery")
    out: list[float] = []
    with app.start(workers=2) as pool:
        pool.wait_ready(30, 2)
        for k in range(kills):
            until(lambda: len(pool.workers()) == 2, 10, "two workers")
            marker, release = tmp / f"rec-{k}", tmp / f"rel-{k}"
            job = ct.stall.schedule(str(marker), str(release)).options(max_attempts=2).now()
            pid = int(until(lambda m=marker: ct.starts(m), 10, "start")[0]["pid"])  # type: ignore[misc]
            age = time.time() - psutil.Process(pid).create_time()
            if age < 1.2:
                time.sleep(1.2 - age)
            t = time.time()
            psutil.Process(pid).kill()
            retry = until(lambda m=marker: ct.starts(m)[1:], 10, "retry")[0]  # type: ignore[misc]
            out.append((retry["t"] - t) * 1000)
            release.touch()
            job.wait(10)
    return out


def time_overshoot(tmp: Path, per_kind: int) -> dict[str, list[float]]:
    app = fresh_app(tmp, "time")
    out: dict[str, list[float]] = {}
    with app.start(workers=2) as pool:
        pool.wait_ready(30, 2)
        for kind in ("sleeper", "spinner", "regex_bomb"):
            fn = getattr(ct, kind)
            jobs = [fn.schedule().options(timeout=0.5).now() for _ in range(per_kind)]
            for j in jobs:
                j.wait(60)
            recs = [app.store.get(int(j.id)) for j in jobs]
            out[kind] = [(r.finished_at - r.started_at - 0.5) * 1000 for r in recs if r and
                         r.finished_at and r.started_at and r.status == "TIMEOUT"]  # fmt: skip
    return out


def memory_overshoot(tmp: Path, samples: int) -> list[float]:
    app = fresh_app(tmp, "memory")
    out: list[float] = []
    with app.start(workers=2) as pool:
        pool.wait_ready(30, 2)
        for _ in range(samples):
            job = ct.hog.schedule(int(1.5 * 1024**3)).options(memory_limit="200MB").now()
            job.wait(60)
            m = re.search(r"reached ([\d.]+) MiB", job.error or "")
            if m:
                out.append(float(m.group(1)) - 200)
    return out


def drain_rate(tmp: Path, name: str, n: int, timeout: float | None) -> float:
    app = fresh_app(tmp, name)
    builders = [ct.whoami.schedule().options(timeout=timeout) for _ in range(n)]
    app.push_many(builders)
    with app.start(workers=2) as pool:
        t = time.perf_counter()
        until(lambda: not app.store.queue_depths(), 300, "drain")
        elapsed = time.perf_counter() - t
        del pool
    return n / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    kills, per_kind, mem, n, reps = (5, 3, 3, 2000, 1) if args.quick else (20, 8, 8, 10_000, 3)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rec = recovery(tmp, kills)
        print(f"recovery (kill -9 -> retry start, {len(rec)} kills): p50 {pct(rec, 50):.0f} ms, "
              f"p99 {pct(rec, 99):.0f} ms, max {max(rec):.0f} ms")  # fmt: skip
        for kind, values in time_overshoot(tmp, per_kind).items():
            print(f"time-limit overshoot ({kind}, limit 0.5 s, {len(values)} jobs): "
                  f"p50 {pct(values, 50):.0f} ms, max {max(values):.0f} ms")  # fmt: skip
        mo = memory_overshoot(tmp, mem)
        print(f"memory-limit overshoot (200 MB limit, {len(mo)} jobs): "
              f"median {statistics.median(mo):.1f} MiB, max {max(mo):.1f} MiB")  # fmt: skip
        plain = max(drain_rate(tmp, f"plain{i}", n, None) for i in range(reps))
        watched = max(drain_rate(tmp, f"watched{i}", n, 3600) for i in range(reps))
        print(f"drain of {n} no-op jobs, 2 workers: {plain:.0f} jobs/s without limits, "
              f"{watched:.0f} jobs/s with timeout=3600 "
              f"({(plain / watched - 1) * 100:+.0f}% time per job; "
              f"{(1 / watched - 1 / plain) * 2e6:.0f} us per job per worker)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
