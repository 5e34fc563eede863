"""Hooks (observability/hooks.py) run in real workers: both loops, isolation, kills.

The hooks are registered at import of tests/apps/obs_tasks.py in this process, as a
user's app module would register them; the forked workers have them. Each call writes
a line to $OBS_HOOK_LOG, which the tests read.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import obs_tasks as ot
import pytest
from conftest import started, wait_for

import mpjobs

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def obs_app(home: Path) -> mpjobs.App:
    return ot.make_app(home)


@pytest.fixture
def hook_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "hooks.jsonl"
    monkeypatch.setenv("OBS_HOOK_LOG", str(path))
    return path


def of(path: Path, event: str, job: mpjobs.Job | None = None) -> list[dict[str, object]]:
    return [
        e for e in ot.events(path)
        if e["event"] == event and (job is None or e.get("id") == int(job.id))
    ]  # fmt: skip


@pytest.mark.parametrize("concurrency", [1, 4], ids=["serial", "async"])
def test_every_hook_runs_in_the_worker(
    obs_app: mpjobs.App, hook_log: Path, concurrency: int
) -> None:
    with started(obs_app, workers=1, concurrency=concurrency) as pool:
        [wpid] = pool.workers()
        good = ot.ok.schedule(5).now()
        bad = ot.boom.schedule("bad").now()
        again = ot.flaky.schedule().now()
        assert good.wait(20).result() == 10
        assert bad.wait(20).status == mpjobs.JobStatus.FAILED
        wait_for(lambda: of(hook_log, "on_retry", again), 20, what="the retry hook")
        again.cancel()
    [start] = of(hook_log, "on_worker_start")
    assert start["pid"] == wpid and start["concurrency"] == concurrency
    assert [e["pid"] for e in of(hook_log, "on_worker_stop")] == [wpid]
    [before] = of(hook_log, "before_job", good)
    assert before["task"] == ot.ok.name and before["attempt"] == 1 and before["pid"] == wpid
    [after] = of(hook_log, "after_job", good)
    assert after["status"] == "SUCCESS" and after["result"] == 10
    assert isinstance(after["duration"], float) and after["duration"] >= 0
    [failed] = of(hook_log, "after_job", bad)
    assert failed["status"] == "FAILED" and "ValueError: bad" in str(failed["error"])
    [failure] = of(hook_log, "on_failure", bad)
    assert failure["exc"] == "ValueError"
    assert not of(hook_log, "on_failure", good) and not of(hook_log, "on_retry", bad)
    [retry] = of(hook_log, "on_retry", again)
    assert float(retry["retry_at"]) > float(retry["t"]) + 20  # backoff 30 s, jitter ±20%
    assert not of(hook_log, "on_failure", again)
    order = [e["event"] for e in ot.events(hook_log) if e.get("id") == int(good.id)]
    assert order == ["before_job", "after_job"]


def test_a_raising_hook_changes_nothing_but_a_log_line(
    obs_app: mpjobs.App, hook_log: Path, text_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ot.RAISING, "1")
    with started(obs_app, workers=1) as pool:
        [wpid] = pool.workers()
        first = ot.ok.schedule(1).now()
        assert first.wait(20).status == mpjobs.JobStatus.SUCCESS
        assert first.result() == 2
        second = ot.ok.schedule(2).now()
        assert second.wait(20).result() == 4
        assert pool.workers() == [wpid]  # the same worker ran both
    text = text_log.read_text()
    assert "hook after_job maybe_raise raised; ignored" in text
    assert f"RuntimeError: hook broke on job {first.id}" in text
    assert "Traceback (most recent call last):" in text
    assert of(hook_log, "after_job", first) and of(hook_log, "after_job", second)


def test_a_new_worker_after_a_sigkill_runs_the_hooks_again(
    obs_app: mpjobs.App, hook_log: Path, tmp_path: Path
) -> None:
    marker, release = tmp_path / "running", tmp_path / "release"
    with started(obs_app, workers=1) as pool:
        [first_pid] = pool.workers()
        stuck = ot.hold.schedule(str(marker), str(release)).options(max_attempts=1).now()
        wait_for(marker.exists, 20, what="the job to run")
        os.kill(first_pid, signal.SIGKILL)
        assert stuck.wait(30).status == mpjobs.JobStatus.FAILED  # worker lost, no attempt left
        wait_for(lambda: len(of(hook_log, "on_worker_start")) == 2, 20, what="a new worker")
        [second_pid] = pool.workers()
        job = ot.ok.schedule(3).now()
        assert job.wait(20).result() == 6
    starts = [e["pid"] for e in of(hook_log, "on_worker_start")]
    assert starts == [first_pid, second_pid] and first_pid != second_pid
    assert [e["pid"] for e in of(hook_log, "before_job", stuck)] == [first_pid]
    assert not of(hook_log, "after_job", stuck)  # killed mid-job: no after hook
    assert [e["pid"] for e in of(hook_log, "after_job", job)] == [second_pid]
    assert [e["pid"] for e in of(hook_log, "on_worker_stop")] == [second_pid]
