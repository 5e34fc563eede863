"""What each job-control option (issue 13) costs on the no-op drain.

    python -m benchmarks.control_overhead            # 5,000 jobs per variant, 3 rounds
    python -m benchmarks.control_overhead --n 2000 --rounds 1

Each variant drains N no-op jobs through a pool of 2 workers (the `drain` scenario of
benchmarks/run.py, same observer); the rounds interleave the variants, because a
shared machine drifts. The plain task must be as fast as before the options existed:
it pushes the same payload and runs the same path. Figures are jobs per second.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import mpjobs
from benchmarks.run import measure_drain, mpjobs_remaining, pool_of, reader

app = mpjobs.App()


@app.task
def plain() -> None:
    return None


@app.task(retry_on=(ConnectionError,), dont_retry_on=(KeyError,))
def ruled() -> None:
    return None


@app.task(soft_timeout=60)
def soft() -> None:
    return None


@app.task
def progress() -> None:
    mpjobs.current_job().set_progress(1.0)


VARIANTS = {"plain": plain, "retry_on": ruled, "soft_timeout": soft, "set_progress": progress}


def drain(task: mpjobs.Task[[], None], home: Path, n: int) -> float:
    app._home_arg, app._home = str(home), None
    app.push_many([task.schedule() for _ in range(n)])
    conn = reader(home / "mpjobs.db")
    try:
        with pool_of(app, 2):
            return measure_drain(mpjobs_remaining(conn), n, timeout=300)["rate"]
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {k: [] for k in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="mpjobs-ctl-bench-") as tmp:
        for r in range(args.rounds):
            for name, task in VARIANTS.items():
                rate = drain(task, Path(tmp) / f"{name}-{r}", args.n)
                rates[name].append(rate)
                print(f"round {r + 1} {name:13s} {rate:8.0f} jobs/s", flush=True)
    print()
    for name, got in rates.items():
        print(f"{name:13s} median {statistics.median(got):8.0f} jobs/s  ({len(got)} rounds)")


if __name__ == "__main__":
    main()
