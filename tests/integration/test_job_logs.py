"""The job log lines (logger mpjobs.jobs), written by real workers of a real pool.

The starting process configures logging (observability.logs.configure, here through the
MPJOBS_LOG_* variables as `mpjobs run` would); the forked workers inherit its handler,
so their lines land in the one O_APPEND file the test reads.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import obs_tasks as ot
import pytest
from conftest import started, wait_for

import mpjobs
from mpjobs.observability import logs

pytestmark = pytest.mark.timeout(90)
GIB = 1024**3


@pytest.fixture
def obs_app(home: Path) -> mpjobs.App:
    return ot.make_app(home)


@pytest.fixture
def json_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "jobs.log"
    monkeypatch.setenv("MPJOBS_LOG_FORMAT", "json")
    monkeypatch.setenv("MPJOBS_LOG_FILE", str(path))
    monkeypatch.setenv("MPJOBS_LOG_LEVEL", "INFO")
    logs.configure()
    try:
        yield path
    finally:
        logs.reset()


def records(path: Path, **match: Any) -> list[dict[str, Any]]:
    """The JSON records of the log whose fields include `match`."""
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)  # every line is one whole object
        if all(rec.get(k) == v for k, v in match.items()):
            out.append(rec)
    return out


def test_started_and_finished_lines_in_json(obs_app: mpjobs.App, json_log: Path) -> None:
    with started(obs_app, workers=2):
        job = ot.ok.schedule(21).now()
        assert job.wait(20).result() == 42
        wait_for(lambda: records(json_log, id=int(job.id), event="finished"), 10, what="finished")
    [start] = records(json_log, id=int(job.id), event="started")
    [end] = records(json_log, id=int(job.id), event="finished")
    for rec in (start, end):
        assert rec["logger"] == "mpjobs.jobs"
        assert rec["task"] == ot.ok.name and rec["queue"] == "default" and rec["attempt"] == 1
        assert rec["pid"] != os.getpid()  # written by the worker
        datetime.fromisoformat(rec["time"].replace("Z", "+00:00"))
    assert start["level"] == "INFO" and "started" in start["message"]
    assert end["status"] == "SUCCESS" and end["level"] == "INFO"
    assert 0 <= end["duration"] < 10 and end["pid"] == start["pid"]


def test_async_worker_writes_the_same_lines(obs_app: mpjobs.App, json_log: Path) -> None:
    with started(obs_app, workers=1, concurrency=4):
        jobs = [ot.aok.schedule(i).now() for i in range(4)]
        assert [j.wait(20).result() for j in jobs] == [0, 3, 6, 9]
        wait_for(lambda: len(records(json_log, event="finished")) == 4, 10, what="4 lines")
    assert {r["id"] for r in records(json_log, event="started")} == {int(j.id) for j in jobs}
    assert {r["status"] for r in records(json_log, event="finished")} == {"SUCCESS"}


def test_a_failure_carries_its_traceback_text_and_json(
    obs_app: mpjobs.App, tmp_path: Path, text_log: Path
) -> None:
    with started(obs_app, workers=1):
        job = ot.boom.schedule("the disk is on fire").now().wait(20)
        assert job.status == mpjobs.JobStatus.FAILED
        wait_for(lambda: "finished FAILED" in text_log.read_text(), 10, what="failure line")
    text = text_log.read_text()
    head = text.index(f"mpjobs.jobs ERROR job {job.id} ")
    below = text[head:].splitlines()
    assert "finished FAILED" in below[0] and "(attempt 1 of 1)" in below[0]
    assert below[1].startswith("Traceback (most recent call last):")
    assert any("ValueError: the disk is on fire" in line for line in below[2:12])


def test_failure_json_has_the_traceback_in_error(obs_app: mpjobs.App, json_log: Path) -> None:
    with started(obs_app, workers=1):
        job = ot.boom.schedule("no").now().wait(20)
        wait_for(lambda: records(json_log, id=int(job.id), event="finished"), 10, what="line")
    [end] = records(json_log, id=int(job.id), event="finished")
    assert end["status"] == "FAILED" and end["level"] == "ERROR"
    assert end["error"].startswith("Traceback") and "ValueError: no" in end["error"]


def test_a_retry_says_when_it_runs_again(obs_app: mpjobs.App, json_log: Path) -> None:
    with started(obs_app, workers=1):
        job = ot.flaky.schedule().now()
        wait_for(lambda: records(json_log, id=int(job.id), event="retry"), 20, what="retry line")
        t_line = time.time()
        job.cancel()
    [rec] = records(json_log, id=int(job.id), event="retry")
    assert rec["status"] == "RETRY" and rec["level"] == "WARNING" and rec["attempt"] == 1
    at = datetime.fromisoformat(rec["retry_at"].replace("Z", "+00:00")).timestamp()
    assert 30 * 0.8 - 2 <= at - t_line <= 30 * 1.2 + 1  # backoff 30 s, ±20% jitter
    assert f"retrying at {rec['retry_at']} (in " in rec["message"]
    assert "KeyError" in rec["error"]


def test_time_and_memory_limit_kills_say_which_limit(
    chaos_app: mpjobs.App, tmp_path: Path, json_log: Path
) -> None:
    import chaos_tasks as ct

    with started(chaos_app, workers=2, graceful_timeout=2.0):
        slow = ct.sleeper.schedule().options(timeout=1, max_attempts=1).now()
        fat = ct.hog.schedule(int(1.5 * GIB)).options(memory_limit="100MB", max_attempts=1).now()
        assert slow.wait(30).status == mpjobs.JobStatus.TIMEOUT
        assert fat.wait(30).status == mpjobs.JobStatus.FAILED
    [t] = records(json_log, id=int(slow.id), event="limit")
    [m] = records(json_log, id=int(fat.id), event="limit")
    assert t["limit"] == "time" and t["timeout"] == 1 and t["status"] == "TIMEOUT"
    assert t["duration"] >= 1 and "time limit of 1 s exceeded" in t["message"]
    assert m["limit"] == "memory" and m["memory_limit"] == 100 * 1024**2
    assert m["rss_peak"] > 100 * 1024**2 and "memory limit of" in m["message"]
    assert t["level"] == m["level"] == "ERROR" and t["pid"] == m["pid"]  # the supervisor
