"""The finished counts of a batch of outcomes come from the UPDATE that records them
(store/completions.py `_finish_plain`): they must say what the jobs table says, for a
batch that mixes outcomes with a job cancelled under its worker, and after workers are
SIGKILLed in the middle of their batches (their jobs count when they are settled)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import obs_tasks as ot
import pytest
from conftest import started, unfinished, wait_for

import mpjobs
from mpjobs.store.base import (
    CANCELLED,
    FAILED,
    RUNNING,
    SCHEDULED,
    SUCCESS,
    TIMEOUT,
    Completion,
    JobRecord,
)
from mpjobs.store.counters import BUCKETS, FINISHED, STARTED, bucket_of

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def obs_app(home: Path) -> mpjobs.App:
    return ot.make_app(home)


def _finished(app: mpjobs.App) -> tuple[Counter[tuple[str, str]], Counter[int], float]:
    """The finished counters: by (task, status), by duration bucket, and their seconds."""
    by_status: Counter[tuple[str, str]] = Counter()
    by_bucket: Counter[int] = Counter()
    seconds = 0.0
    for r in app.store.metric_counts(0).counters:
        if r.name == FINISHED:
            by_status[(r.task, r.status)] += r.n
            by_bucket[r.bucket] += r.n
            seconds += r.total
    return by_status, by_bucket, seconds


def _started(app: mpjobs.App) -> int:
    return sum(r.n for r in app.store.metric_counts(0).counters if r.name == STARTED)


def _all(app: mpjobs.App) -> list[JobRecord]:
    return app.store.list_jobs(None, None, 100_000)


def test_a_mixed_batch_counts_what_it_recorded(obs_app: mpjobs.App) -> None:
    """One commit with plain successes, a result, a failure, a timeout, a retry, a job
    cancelled under its worker and a job completed twice: the table gets each outcome,
    the cancelled job keeps its cancellation, and the counters count what was written."""
    store = obs_app.store
    ids = [j.id for j in obs_app.push_many([ot.ok.schedule(i) for i in range(9)])]
    ids = [int(i) for i in ids]
    t0 = time.time()
    claimed = store.claim("w", os.getpid(), None, 9, t0)
    assert sorted(j.id for j in claimed) == ids
    a, b, c, d, e, f, g, h, kept = ids
    assert store.cancel(g, True, t0) == (True, "w")  # terminated under its worker
    done = [
        Completion(a, SUCCESS),
        Completion(b, SUCCESS),
        Completion(c, SUCCESS, result=b"\x80\x05K\x08."),  # pickled 8
        Completion(d, FAILED, error="Traceback: boom", exc=b"not a pickle"),
        Completion(e, TIMEOUT, error="time limit"),
        Completion(f, SCHEDULED, exec_at=t0 + 3600, error="retry me"),
        Completion(g, SUCCESS),  # cancelled meanwhile: must change nothing
        Completion(h, SUCCESS),
        Completion(h, FAILED, error="a second outcome of one job"),  # the first counts
    ]
    store.complete("w", done, t0 + 0.02)
    rows = {j.id: j for j in _all(obs_app)}
    assert [rows[i].status for i in ids] == [
        SUCCESS, SUCCESS, SUCCESS, FAILED, TIMEOUT, SCHEDULED, CANCELLED, SUCCESS, RUNNING,
    ]  # fmt: skip
    assert rows[c].result == b"\x80\x05K\x08." and rows[a].result is None
    assert (rows[d].error, rows[d].exc) == ("Traceback: boom", b"not a pickle")
    assert rows[e].error == "time limit" and rows[h].error is None
    assert rows[g].error == "cancelled while running" and rows[g].result is None
    assert all(rows[i].owner is None for i in (a, b, c, d, e, f, h))
    assert rows[kept].owner == "w"

    by_status, by_bucket, seconds = _finished(obs_app)
    task = rows[a].name
    assert by_status == Counter({(task, SUCCESS): 4, (task, FAILED): 1, (task, TIMEOUT): 1})
    ended = [rows[i] for i in (a, b, c, d, e, h)]
    spans = [r.finished_at - r.started_at for r in ended]  # type: ignore[operator]
    assert by_bucket == Counter(bucket_of(s) for s in spans)
    assert 0 < bucket_of(spans[0]) < len(BUCKETS)
    assert seconds == pytest.approx(sum(spans))
    assert _started(obs_app) == 9


def test_counts_stay_exact_when_workers_are_killed_mid_batch(obs_app: mpjobs.App) -> None:
    """Workers draining quick jobs in batches are SIGKILLed three times, each with
    results journaled and not yet committed: once everything is settled and run, the
    counters agree with the jobs table, by task and status, and in starts."""
    n = 6000
    obs_app.push_many([ot.ok.schedule(i) for i in range(n)])
    killed: set[int] = set()
    with started(obs_app, workers=2) as pool:
        for left in (5000, 3500, 2000):
            wait_for(lambda left=left: unfinished(obs_app) <= left, 60,  # type: ignore[misc]
                     home=obs_app.home.path, what=f"{left} jobs left")  # fmt: skip
            victim = next(p for p in pool.workers() if p not in killed)
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
        wait_for(lambda: unfinished(obs_app) == 0, 120, home=obs_app.home.path,
                 what="every job run")  # fmt: skip
        wait_for(lambda: not set(pool.workers()) & killed and len(pool.workers()) == 2, 30,
                 what="the killed workers replaced")  # fmt: skip
    jobs = _all(obs_app)
    assert len(jobs) == n
    by_status, by_bucket, _ = _finished(obs_app)
    assert by_status == Counter((j.name, j.status) for j in jobs)
    assert sum(by_bucket.values()) == n
    assert _started(obs_app) == sum(j.attempts for j in jobs)
    assert by_status[(jobs[0].name, SUCCESS)] >= n - 3  # at most the jobs killed mid-run
