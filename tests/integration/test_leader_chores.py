"""The leader's chores thread (runtime/housekeeping.py), with a real pool on each
backend. The census of deep queues: a queue deeper than DEPTH_CAP shows a floor until
the leader counts it, then the exact figure with its time, in the store's depths and in
`mpjobs status`; each census after is fresh; a queue drained below the cap is exact
again. The purge of jobs past `result_ttl`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import tasks
from conftest import started, wait_for

import mpjobs
from mpjobs import JobStatus
from mpjobs.runtime import housekeeping
from mpjobs.store.base import SCHEDULED
from mpjobs.store.census import DEPTH_CAP


def test_the_leader_counts_a_deep_queue(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(housekeeping, "CENSUS_EVERY", 0.2)  # the pool is forked: it has this too
    app = tasks.make_app(home)
    tasks.noop.map([()] * (DEPTH_CAP + 50), queue="deep", delay=3600)
    assert app.store.depths().estimated == {"deep": None}  # no leader yet: a floor
    with started(app, workers=1):
        counted = wait_for(lambda: app.store.depths().estimated.get("deep"), 30, home,
                           "the leader's census")  # fmt: skip
        assert isinstance(counted, float) and abs(time.time() - counted) < 30
        assert app.store.depths().counts["deep"] == {SCHEDULED: DEPTH_CAP + 50}
        out = subprocess.run(
            [sys.executable, "-m", "mpjobs", "status", "--home", str(home)],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        assert f"deep: ~{DEPTH_CAP + 50:,} (counted" in out, out
        tasks.noop.map([()] * 10, queue="deep", delay=3600)
        wait_for(lambda: app.store.depths().counts["deep"][SCHEDULED] == DEPTH_CAP + 60,
                 30, home, "the next census")  # fmt: skip
        for job in app.jobs(status="SCHEDULED", queue="deep", limit=100):
            job.cancel()
        depths = app.store.depths()  # exact at once, without waiting for a census
        assert depths.counts["deep"] == {SCHEDULED: DEPTH_CAP - 40}
        assert depths.estimated == {}


def test_the_leader_purges_expired_jobs_beside_its_loop(home: Path) -> None:
    """The purge runs in the leader's chores thread, at once when it leads, then every
    minute: a finished job past `result_ttl` goes (the newest row always stays)."""
    first = tasks.make_app(home)
    old, new = tasks.noop.schedule().now(), tasks.noop.schedule().now()
    with started(first, workers=1):
        assert old.wait(20).status is new.wait(20).status is JobStatus.SUCCESS
    app = mpjobs.App(home, result_ttl=0.001)
    with started(app, workers=1):
        wait_for(lambda: app.get_job(old.id) is None, 30, home, "the purge of the old job")
        assert app.get_job(new.id) is not None  # the newest row keeps the ids unique
