"""2,000 async jobs on two workers of concurrency 20 while a seeded killer SIGKILLs workers.

Every job must end SUCCESS and have run at least once, and re-executions must not
exceed the jobs that were in flight in the killed workers. To count those exactly, the
killer stops a worker (SIGSTOP: it can claim nothing more), counts the RUNNING jobs it
owns (a worker of concurrency N starts every job it claims at once, so these are its
jobs in flight), then kills it. Each job appends its number to a per-process log before
it awaits, so an attempt cut short by a kill is counted.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import async_tasks as at
import pytest
from conftest import pid_age, unfinished

import mpjobs
from mpjobs import JobStatus
from mpjobs.coordination.notify import Watcher

JOBS = 2000
PAUSE = 0.05  # each job awaits this long, so a kill lands on ~20 jobs in flight
ELIGIBLE_AGE = 1.1  # seconds: older than the supervisor's boot grace (see test_chaos.py)
DEADLINE = 60.0
CHAOS_FOR = 20.0  # the killer strikes this long at most; then the pool must finish

pytestmark = pytest.mark.timeout(120)


def _in_flight(app: mpjobs.App, pid: int) -> int:
    return sum(1 for r in app.store.list_jobs("RUNNING", None, 10_000) if r.pid == pid)


def test_kill_workers_running_many_async_jobs(home: Path, tmp_path: Path) -> None:
    rng = random.Random(20261201)
    app = at.make_app(home)
    logs = tmp_path / "logs"
    logs.mkdir()
    # A lost attempt is retried after the backoff, which doubles per attempt: with the
    # default of 1 s, a job hit by five kills in a row waits 16 s and outlasts the deadline.
    jobs = app.push_many(
        [
            at.arecord.schedule(str(logs), i, PAUSE).options(max_attempts=100, retry_backoff=0.01)
            for i in range(JOBS)
        ]
    )
    kills, lost = 0, 0
    with (
        app.start(workers=2, concurrency=20, graceful_timeout=5.0) as pool,
        Watcher(home) as watcher,
    ):
        pool.wait_ready(timeout=20, workers=2)
        chaos_end = time.monotonic() + CHAOS_FOR
        next_kill = time.monotonic() + rng.uniform(0.2, 0.5)
        while unfinished(app) and time.monotonic() < chaos_end:
            if time.monotonic() >= next_kill:
                targets = sorted(p for p in pool.workers() if pid_age(p) >= ELIGIBLE_AGE)
                if targets:
                    pid = rng.choice(targets)
                    os.kill(pid, signal.SIGSTOP)
                    lost += _in_flight(app, pid)
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
                next_kill = time.monotonic() + rng.uniform(0.2, 0.5)
            watcher.wait(max(0.0, next_kill - time.monotonic()))
        deadline = time.monotonic() + DEADLINE
        while unfinished(app):
            assert time.monotonic() < deadline, f"jobs not done; {kills=}, {unfinished(app)} left"
            watcher.wait(1.0)
    statuses = Counter(j.status for j in jobs)
    assert statuses == {JobStatus.SUCCESS: JOBS}, statuses
    runs = Counter(int(x) for log in logs.glob("*.log") for x in log.read_text().split())
    assert set(runs) == set(range(JOBS)), "every job ran at least once"
    reruns = sum(runs.values()) - JOBS
    print(f"{JOBS} jobs, {kills} workers killed with {lost} jobs in flight, {reruns} re-executions")
    assert kills >= 1, "the killer never struck"
    assert reruns <= lost
    assert not app.jobs(status="RUNNING", limit=1)
