"""mpjobs quick start: what `make demo` runs.

Starts a pool of two workers on a throw-away home, pushes a small batch of jobs that
shows the main behaviours (a failure, a retry that then succeeds, a delayed job, a
result waited for, a batch pushed in one transaction), prints one line per job and
stops the pool. Nothing is left running when it exits.

    python examples/quickstart.py          # uses $MPJOBS_HOME if set, else a temp dir

Tasks are plain module-level functions. Here they live in __main__, which works: the
pool is forked from this process, and a function without an importable path is stored
with cloudpickle. In a real project put them in a module (`myproject/jobs.py`).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import mpjobs

OWN_HOME = not os.environ.get("MPJOBS_HOME")
HOME = Path(os.environ.get("MPJOBS_HOME") or tempfile.mkdtemp(prefix="mpjobs-demo-"))
app = mpjobs.App(home=HOME)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def divide(x: float, y: float) -> float:
    return x / y  # divide(1, 0) fails: ZeroDivisionError


@app.task(max_attempts=3, retry_backoff=0.2)
def flaky(marker: str) -> str:
    """Fails on its first attempt, succeeds on the next (retried after ~0.2 s)."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        raise ConnectionError("simulated outage on the first attempt")
    return "ok on a later attempt"


@app.task
def square(n: int) -> int:
    return n * n


def describe(label: str, job: mpjobs.Job) -> str:
    """One summary line: what, status, attempts, and the result or the last error line."""
    status = job.status
    if status is mpjobs.JobStatus.SUCCESS:
        outcome = f"result={job.result()!r}"
    else:
        lines = (job.error or "").strip().splitlines()
        outcome = f"error: {lines[-1]}" if lines else ""
    return f"  {label:<24} {status.value:<10} attempts={job.attempts}  {outcome}"


def main() -> int:
    t0 = time.monotonic()
    print(f"mpjobs {mpjobs.__version__} demo, home {HOME}")
    with app.start(workers=2, graceful_timeout=5.0) as pool:
        pool.wait_ready(timeout=20, workers=2)
        print(f"pool started: supervisor pid {pool.pid}, workers {sorted(pool.workers())}")

        waited = add.schedule(2, 3).now()
        result = waited.wait(timeout=10).result()
        print(f"add(2, 3) -> {result}  (pushed, run by a worker, waited for)")

        failing = divide.schedule(1, 0).now()
        retried = flaky.schedule(str(HOME / "flaky.marker")).now()
        pushed_at = time.time()
        delayed = add.schedule(40, 2).delay(1)  # "1s", "5m", "2h32m" or a timedelta work too
        print(f"delayed job is {delayed.status.value} right after the push")
        batch = app.push_many([square.schedule(i) for i in range(5)])  # one transaction

        everything = [("add(2, 3)", waited), ("divide(1, 0)", failing),
                      ("flaky() [max_attempts=3]", retried), ("add(40, 2) after 1 s", delayed)]
        everything += [(f"square({i})", job) for i, job in enumerate(batch)]
        for _, job in everything:
            job.wait(timeout=20)
        started = delayed.exec_at.timestamp() - pushed_at

        print("\nsummary:")
        for label, job in everything:
            print(describe(label, job))
        print(f"\nthe delayed job was due {started:.2f} s after its push")
        try:
            failing.result()
        except mpjobs.JobFailedError as exc:
            print(f"failing.result() raised JobFailedError; original: {exc.original!r}")

        ok = (
            failing.status is mpjobs.JobStatus.FAILED
            and retried.status is mpjobs.JobStatus.SUCCESS and retried.attempts == 2
            and delayed.result() == 42
            and [j.result() for j in batch] == [0, 1, 4, 9, 16]
        )  # fmt: skip
    verdict = "OK" if ok else "UNEXPECTED"
    print(f"\npool stopped; demo took {time.monotonic() - t0:.1f} s: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        code = main()
    finally:
        if OWN_HOME:
            shutil.rmtree(HOME, ignore_errors=True)
    sys.exit(code)
