"""mpjobs limits and recovery, shown on a live pool of two workers.

    python examples/limits.py          # uses $MPJOBS_HOME if set, else a temp dir

What it does, in about ten seconds:
1. a job stuck in time.sleep with timeout=1 is killed at its limit: TIMEOUT, retried once;
2. a job stuck in a catastrophic regex (one C call that never releases the GIL) is
   killed all the same: Limit(Limit.Type.TIME, 1);
3. a job that allocates memory in 20 MB steps with memory_limit="200MB" is killed near
   the limit: FAILED, with the limit and the peak in its error;
4. a worker running a job is killed with SIGKILL "from outside" (as the OOM killer
   would): the job is retried in a new worker and succeeds;
5. a job that hangs forever without a limit stays RUNNING until cancel(terminate=True).
After each kill the pool is back to two workers, with new pids.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import mpjobs
from mpjobs import JobStatus, Limit

OWN_HOME = not os.environ.get("MPJOBS_HOME")
HOME = Path(os.environ.get("MPJOBS_HOME") or tempfile.mkdtemp(prefix="mpjobs-limits-"))
app = mpjobs.App(home=HOME)


@app.task(timeout=1, max_attempts=2, retry_backoff=0.1)
def stuck_in_sleep() -> None:
    time.sleep(3600)


@app.task(limits=[Limit(Limit.Type.TIME, 1)])
def stuck_in_c() -> bool:
    return re.match(r"(a+)+$", "a" * 40 + "b") is not None  # hours of backtracking


@app.task(memory_limit="200MB")
def hog() -> int:
    held = []
    for _ in range(75):  # up to 1.5 GB, 20 MB at a time, every page touched
        held.append(b"\1" * (20 * 1024**2))
    return len(held)


@app.task(max_attempts=2, retry_backoff=0.1)
def killable(marker: str) -> int:
    """The first attempt waits to be killed; the second returns at once."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        time.sleep(3600)
    return os.getpid()


@app.task
def hang(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    while True:
        time.sleep(1)


def wait_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return path.read_text()


def full_strength(pool: mpjobs.Pool, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(pool.workers()) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("the pool did not get back to two workers")
        time.sleep(0.01)
    return sorted(pool.workers())


def took(job: mpjobs.Job) -> str:
    rec = app.store.get(int(job.id))
    if rec is None or rec.started_at is None or rec.finished_at is None:
        return ""
    return f"last attempt ran {rec.finished_at - rec.started_at:.2f} s"


def main() -> int:
    t0 = time.monotonic()
    ok = True
    with app.start(workers=2, graceful_timeout=2.0) as pool:
        pool.wait_ready(timeout=20, workers=2)
        print(f"pool: supervisor {pool.pid}, workers {sorted(pool.workers())}")

        for job in (stuck_in_sleep.schedule().now(), stuck_in_c.schedule().now()):
            job.wait(20)
            ok &= job.status is JobStatus.TIMEOUT
            print(f"{job.name}: {job.status.value} after {job.attempts} attempt(s), "
                  f"{took(job)}; workers now {full_strength(pool)}")  # fmt: skip

        job = hog.schedule().now().wait(30)
        peak = re.search(r"reached ([\d.]+) MiB", job.error or "")
        ok &= job.status is JobStatus.FAILED and peak is not None
        print(f"hog: {job.status.value}: {(job.error or '').strip().splitlines()[-1]}")
        print(f"  overshoot {float(peak.group(1)) - 200 if peak else 0:.1f} MiB "
              f"over the limit; workers now {full_strength(pool)}")  # fmt: skip

        marker = HOME / "killable.pid"
        job = killable.schedule(str(marker)).now()
        victim = int(wait_file(marker))
        os.kill(victim, signal.SIGKILL)
        job.wait(20)
        ok &= job.status is JobStatus.SUCCESS and job.result() != victim
        print(f"killable: worker {victim} got SIGKILL; the job was retried in worker "
              f"{job.result()}: {job.status.value} after {job.attempts} attempts")  # fmt: skip

        marker = HOME / "hang.pid"
        job = hang.schedule(str(marker)).now()
        victim = int(wait_file(marker))
        print(f"hang: {job.status.value} in worker {victim} (no limit, so it would run forever)")
        job.cancel(terminate=True)
        job.wait(10)
        ok &= job.status is JobStatus.CANCELLED
        print(f"hang: cancel(terminate=True) -> {job.status.value}; "
              f"workers now {full_strength(pool)}")  # fmt: skip
    verdict = "OK" if ok else "UNEXPECTED"
    print(f"pool stopped; took {time.monotonic() - t0:.1f} s: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        code = main()
    finally:
        if OWN_HOME:
            shutil.rmtree(HOME, ignore_errors=True)
    sys.exit(code)
