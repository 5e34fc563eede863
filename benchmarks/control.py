"""The cost of the job-control options on the no-op drain and push, and how close a
rate limit of 1,000/s holds under load (SQLite home, 2 workers).

    python -m benchmarks.control [--quick] [--only plain,expires,rate,key,retry_on,...]

Each variant drains the same number of no-op jobs pushed before the clock starts;
"plain" is the task with no option, the others one option each (a rate and a limit
far above what is reached, so the cost measured is the gated claim's, not waiting).
`rate_1000` drains jobs limited to 1000/s and reports the starts of the busiest
aligned second and the overall rate, from the store's started_at. Also run from
`python -m benchmarks.run --only control`.
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import tasks
from benchmarks.run import measure_drain, mpjobs_remaining, pool_of, reader

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "expires": {"expires": "1h"},
    "rate": {"rate_limit": "1000000/s"},
    "key": {"concurrency_key": "k", "concurrency_limit": 1000},
    "retry_on": {"retry_on": (ConnectionError,), "dont_retry_on": (KeyError,)},
    "soft_timeout": {"soft_timeout": 60},
    "set_progress": {},  # a no-op that reports its progress once (tasks.progress_noop)
}


def _builders(options: dict[str, Any], n: int, name: str = "") -> list[Any]:
    task = tasks.progress_noop if name == "set_progress" else tasks.noop
    if not options:
        return [task.schedule() for _ in range(n)]
    b = task.schedule().options(**options)
    return [b for _ in range(n)]  # one builder, pushed n times: same options, no payload


def drain(tmp: Path, name: str, options: dict[str, Any], n: int) -> dict[str, float]:
    home = tmp / f"drain-{name}"
    home.mkdir(mode=0o700)
    app = tasks.rehome(tasks.app, home)
    b = _builders(options, 1, name)[0]
    b.now()  # open the store, warm the caches
    pushes = n // 4
    t0 = time.perf_counter()
    for _ in range(pushes):
        b.now()
    push_rate = pushes / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    app.push_many(_builders(options, n - pushes - 1, name))
    push_many_rate = (n - pushes - 1) / (time.perf_counter() - t0)
    conn = reader(home / "mpjobs.db")
    with pool_of(app, 2):
        r = measure_drain(mpjobs_remaining(conn), n, timeout=300)
    conn.close()
    return {"drain_per_s": round(r["rate"]), "push_per_s": round(push_rate),
            "push_many_per_s": round(push_many_rate)}  # fmt: skip


def rate_1000(tmp: Path, n: int) -> dict[str, float]:
    home = tmp / "rate-1000"
    home.mkdir(mode=0o700)
    app = tasks.rehome(tasks.app, home)
    app.push_many(_builders({"rate_limit": "1000/s"}, n))
    conn = reader(home / "mpjobs.db")
    with pool_of(app, 2):
        measure_drain(mpjobs_remaining(conn), n, timeout=300)
    starts = [r[0] for r in conn.execute("SELECT started_at FROM jobs ORDER BY started_at")]
    conn.close()
    per_second: dict[int, int] = {}
    for t in starts:
        per_second[math.floor(t)] = per_second.get(math.floor(t), 0) + 1
    sliding, j = 0, 0
    for i, t in enumerate(starts):  # the most starts in any 1 s span (fixed windows: < 2x)
        while starts[j] <= t - 1.0:
            j += 1
        sliding = max(sliding, i - j + 1)
    windows = math.floor(starts[-1]) - math.floor(starts[0]) + 1
    return {
        "rate1000_busiest_aligned_second": max(per_second.values()),
        "rate1000_busiest_sliding_second": sliding,
        "rate1000_windows_used": windows,
        "rate1000_starts_per_window": round(len(starts) / windows, 1),
    }


def claim_loop(tmp: Path, n: int = 20_000, batch: int = 32) -> dict[str, float]:
    """The claim+complete path alone, in this process (no pool, far less noise): jobs/s."""
    from mpjobs.store.base import SUCCESS, Completion

    home = tmp / "claim-loop"
    home.mkdir(mode=0o700)
    app = tasks.rehome(tasks.app, home)
    app.push_many([tasks.noop.schedule() for _ in range(n)])
    store = app.store
    done: list[Any] = []
    t0, c0 = time.perf_counter(), time.process_time()
    while True:
        jobs = store.claim("bench", 1, None, batch, time.time(), done)
        if not jobs:
            break
        done = [Completion(j.id, SUCCESS) for j in jobs]
    store.complete("bench", done, time.time())
    # CPU time too: on a shared machine it is the steadier of the two.
    return {"claim_loop_per_s": round(n / (time.perf_counter() - t0)),
            "claim_loop_cpu_us_per_job": round((time.process_time() - c0) / n * 1e6, 2)}


def run(only: list[str] | None = None, quick: bool = False, rounds: int = 1,
        log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    n = 5_000 if quick else 20_000
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mpjobs-bench-control-") as tmp:
        for i in range(rounds):  # interleaved: the machine is noisy
            for name, options in VARIANTS.items():
                if only and name not in only:
                    continue
                (Path(tmp) / str(i)).mkdir(exist_ok=True)
                r = drain(Path(tmp) / str(i), name, options, n)
                for k, v in r.items():
                    out.setdefault(f"control_{name}_{k}", []).append(v)
                log(f"  {name}: {r}")
        if only and "claim_loop" in only:
            r3 = claim_loop(Path(tmp))
            out.update(r3)
            log(f"  claim_loop: {r3}")
        if not only or "rate_1000" in only:
            r2 = rate_1000(Path(tmp), 5_000 if quick else 10_000)
            out.update(r2)
            log(f"  rate_1000: {r2}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.control", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help=f"comma-separated subset of {[*VARIANTS, 'rate_1000']}")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    only = None if not args.only else [s.strip() for s in args.only.split(",")]
    out = run(only, args.quick, args.rounds)
    for k, v in out.items():
        print(f"{k}: {v}")
    print(f"sqlite {sqlite3.sqlite_version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
