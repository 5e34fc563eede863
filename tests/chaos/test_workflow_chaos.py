"""Groups with chords while a seeded killer SIGKILLs workers at random.

40 groups of 10 members, each with a chord (200 x 20 under MPJOBS_SOAK=1, the issue's
size; scaled down here for CI time on a shared 2-core machine). Every job appends a
start and an end line to one log (one O_APPEND write each), so the order of runs is read
from the jobs' own records, not from the store. What must hold:

- every member and every chord ends SUCCESS, each chord with its group's results in
  push order;
- no chord ever starts before the last end of each of its members (a member cut short
  by a kill and run again counts by its last run): a dependent never starts before its
  parents' success;
- each chord runs once, except when its own worker is killed under it: re-executions of
  chords are at most the number of workers killed (the guarantee of any job under kills).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest
import workflow_tasks as wt
from conftest import pid_age, unfinished

import mpjobs
from mpjobs import JobStatus
from mpjobs.coordination.notify import Watcher

SOAK = os.environ.get("MPJOBS_SOAK") == "1"
GROUPS, MEMBERS = (200, 20) if SOAK else (40, 10)
PAUSE = 0.002
ELIGIBLE_AGE = 1.1  # past the supervisor's boot grace (see test_chaos.py)
DEADLINE = 500.0 if SOAK else 90.0

pytestmark = pytest.mark.timeout(600 if SOAK else 150)


def test_chords_survive_killed_workers(home: Path, tmp_path: Path) -> None:
    rng = random.Random(1414)
    app = wt.make_app(home)
    log = str(tmp_path / "log")
    retry = {"max_attempts": 50, "retry_backoff": 0.01}
    groups: list[mpjobs.Group] = []
    chords: list[mpjobs.Job] = []
    for g in range(GROUPS):
        group = app.group(
            [wt.value.schedule(f"{g}.{m}", log, PAUSE).options(**retry) for m in range(MEMBERS)]
        )
        groups.append(group)
        chords.append(group.then(wt.collect.schedule(f"chord{g}", log).options(**retry)))
    kills = 0
    with app.start(workers=2, graceful_timeout=5.0) as pool, Watcher(home) as watcher:
        pool.wait_ready(timeout=20, workers=2)
        deadline = time.monotonic() + DEADLINE
        next_kill = time.monotonic() + rng.uniform(0.1, 0.3)
        while unfinished(app):
            assert time.monotonic() < deadline, f"not done; {kills} kills, {unfinished(app)} left"
            if time.monotonic() >= next_kill:
                targets = [p for p in pool.workers() if pid_age(p) >= ELIGIBLE_AGE]
                if targets:
                    os.kill(rng.choice(sorted(targets)), signal.SIGKILL)
                    kills += 1
                next_kill = time.monotonic() + rng.uniform(0.1, 0.3)
            watcher.wait(max(0.0, next_kill - time.monotonic()))
    assert kills >= 1, "the killer never struck"

    starts: dict[str, list[float]] = defaultdict(list)
    ends: dict[str, list[float]] = defaultdict(list)
    for e in wt.entries(log):
        (starts if e["ev"] == "start" else ends)[e["tag"]].append(e["t"])
    reruns = 0
    for g, (group, chord) in enumerate(zip(groups, chords, strict=True)):
        assert chord.status is JobStatus.SUCCESS, (g, chord.status, chord.error)
        expected = [f"{g}.{m}" for m in range(MEMBERS)]
        assert chord.result() == expected
        assert group.results() == expected
        last_member_end = max(max(ends[tag]) for tag in expected)
        assert min(starts[f"chord{g}"]) > last_member_end, f"chord {g} started too early"
        reruns += len(starts[f"chord{g}"]) - 1
    print(f"{GROUPS}x{MEMBERS}: {kills} workers killed, {reruns} chord re-executions")
    assert reruns <= kills
