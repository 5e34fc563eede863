"""A process full of idle waiters, for tests/integration/test_waiters.py.

    python idle_waiters.py HOME N_ASYNC N_THREADS N_LOOPS READY DONE [TIMEOUT]

Pushes N_ASYNC + N_THREADS no-op jobs that nobody runs yet, waits on them from N_ASYNC
asyncio tasks spread over N_LOOPS event loops (the main thread's and N_LOOPS-1 threads
of their own) and N_THREADS threads, writes READY once every waiter sleeps, and when
all have returned writes DONE: a JSON report of how late each woke after its job ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import tasks

import mpjobs
from mpjobs.coordination import notify


def inotify_instances(pid: int) -> int:
    """How many inotify instances process `pid` has open (each costs one of the
    user's 128 by default)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify"
    return count


def settled(expected: int, started: list[object], n_threads: int) -> bool:
    """Every waiter is asleep: the shared listener counts them."""
    from mpjobs.coordination import listener

    return bool(listener.parked() >= expected)


def main() -> None:
    if os.environ.get("IDLE_WAITERS_NO_INOTIFY"):
        notify._LIBC = None  # as on a system without inotify, or with none left to open
    home, n_async, n_threads, n_loops = sys.argv[1], *map(int, sys.argv[2:5])
    ready, done = Path(sys.argv[5]), Path(sys.argv[6])
    timeout = float(sys.argv[7]) if len(sys.argv) > 7 else 120.0
    app = tasks.make_app(home)
    jobs = app.push_many(tasks.noop.schedule() for _ in range(n_async + n_threads))
    woke: dict[str, float] = {}
    errors: list[str] = []
    started: list[object] = []

    def wait_in_thread(job: mpjobs.Job) -> None:
        started.append(job)
        try:
            job.wait(timeout)
            woke[job.id] = time.time()
        except Exception as exc:  # reported in DONE, asserted by the test
            errors.append(repr(exc))

    async def wait_on_loop(job: mpjobs.Job) -> None:
        try:
            await job.wait_async(timeout)
            woke[job.id] = time.time()
        except Exception as exc:
            errors.append(repr(exc))

    async def loop_share(share: list[mpjobs.Job], announce: bool) -> None:
        waiting = asyncio.gather(*(wait_on_loop(j) for j in share))
        await asyncio.sleep(0)  # each waiter runs to its first sleep
        if announce:
            deadline = time.monotonic() + 60
            while not settled(len(jobs), started, n_threads):
                if time.monotonic() > deadline:
                    raise SystemExit("waiters never settled")
                await asyncio.sleep(0.01)
            tasks.write_marker(ready, "ready")
        await waiting

    async_jobs, thread_jobs = jobs[:n_async], jobs[n_async:]
    shares = [async_jobs[i::n_loops] for i in range(n_loops)]
    threads = [threading.Thread(target=wait_in_thread, args=(j,)) for j in thread_jobs]
    threads += [
        threading.Thread(target=asyncio.run, args=(loop_share(s, False),)) for s in shares[1:]
    ]
    for t in threads:
        t.start()
    asyncio.run(loop_share(shares[0], True))
    for t in threads:
        t.join()
    lags = sorted(woke[j.id] - (j._record().finished_at or 0.0) for j in jobs if j.id in woke)
    report = {"woke": len(woke), "errors": errors[:5], "n_errors": len(errors),
              "max_lag": lags[-1] if lags else None,
              "p50_lag": lags[len(lags) // 2] if lags else None}  # fmt: skip
    tasks.write_marker(done, json.dumps(report))


if __name__ == "__main__":
    main()
