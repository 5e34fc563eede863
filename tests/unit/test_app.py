"""App, @app.task and the job builder, without workers: what gets stored, and when."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import tasks

import mpjobs
from mpjobs import App, JobStatus


def test_task_call_runs_locally(app: App) -> None:
    assert tasks.add(2, 3) == 5
    assert app.jobs() == []  # calling a task pushes nothing
    assert tasks.add.name == "tasks.add" and "tasks.add" in app.tasks


def test_push_without_pool_is_scheduled(app: App) -> None:
    job = app.schedule("tasks:add", 1, 2).now()
    assert job.status is JobStatus.SCHEDULED and not job.is_done()
    assert app.get_job(job.id) == job
    assert job.attempts == 0 and job.error is None and job.name == "tasks:add"


def test_now_delay_and_at_set_exec_at(app: App) -> None:
    t0 = time.time()
    now = tasks.add.schedule(1, 1).now()
    assert t0 - 1 <= now.exec_at.timestamp() <= time.time() + 1
    assert now.exec_at.tzinfo is not None
    d = tasks.add.schedule(1, 1).delay("5m").exec_at.timestamp()
    assert t0 + 299 <= d <= time.time() + 301
    d = tasks.add.schedule(1, 1).delay(timedelta(hours=2, minutes=32)).exec_at.timestamp()
    assert abs(d - (t0 + 9120)) < 5
    assert abs(tasks.add.schedule(1, 1).delay("2h32m").exec_at.timestamp() - (t0 + 9120)) < 5
    aware = datetime(2031, 5, 4, 12, 0, tzinfo=timezone.utc)
    assert tasks.add.schedule(1, 1).at(aware).exec_at == aware
    naive = datetime(2031, 5, 4, 12, 0)
    assert tasks.add.schedule(1, 1).at(naive).exec_at == naive.astimezone(timezone.utc)
    with pytest.raises(TypeError):
        tasks.add.schedule(1, 1).at("tomorrow")  # type: ignore[arg-type]


def test_options_layer_over_task_defaults(app: App) -> None:
    builder = tasks.flaky.schedule("c", 1)  # the task declares max_attempts=3
    job = builder.options(priority=-10, queue="q", unique_key="k", timeout="1m",
                          memory_limit="512MB").delay(60)  # fmt: skip
    rec = job._record()
    assert (rec.priority, rec.queue, rec.unique_key, rec.max_attempts) == (-10, "q", "k", 3)
    assert (rec.timeout, rec.memory_limit) == (60.0, 512 * 1024**2)
    assert builder.options(max_attempts=1).delay(60)._record().max_attempts == 1
    seed = tasks.add.schedule(1, 1).options(limits=[
        mpjobs.Limit(mpjobs.Limit.Type.MEMORY, 1024**2), mpjobs.Limit(mpjobs.Limit.Type.TIME, 5),
    ]).delay(60)._record()  # fmt: skip
    assert (seed.timeout, seed.memory_limit) == (5.0, 1024**2)


@pytest.mark.parametrize(
    "bad, exc",
    [
        ({"colour": "red"}, TypeError),
        ({"priority": "high"}, TypeError),
        ({"queue": ""}, ValueError),
        ({"max_attempts": 0}, ValueError),
        ({"timeout": -1}, ValueError),
        ({"memory_limit": "lots"}, ValueError),
        ({"limits": ["5s"]}, TypeError),
    ],
)
def test_bad_options_fail_at_the_call_site(app: App, bad: dict[str, object], exc: type) -> None:
    with pytest.raises(exc):
        tasks.add.schedule(1, 1).options(**bad).now()
    assert app.jobs() == []


def test_push_many_is_one_transaction_in_order(app: App) -> None:
    jobs = app.push_many([tasks.add.schedule(i, i) for i in range(1000)])
    ids = [int(j.id) for j in jobs]
    assert ids == list(range(ids[0], ids[0] + 1000))
    assert len(app.jobs(limit=2000)) == 1000
    mixed = app.push_many([tasks.add.schedule(1, 1), app.schedule(lambda: 1)])
    assert [j.status for j in mixed] == [JobStatus.SCHEDULED] * 2


def test_schedule_rejects_non_callables(app: App) -> None:
    with pytest.raises(TypeError):
        app.schedule(42)  # type: ignore[arg-type]


def test_default_home_comes_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPJOBS_HOME", str(tmp_path / "envhome"))
    assert App().home.path == tmp_path / "envhome"
    monkeypatch.delenv("MPJOBS_HOME")
    monkeypatch.chdir(tmp_path)
    assert App().home.path == tmp_path / ".mpjobs"


def test_job_handles_compare_and_hash(app: App) -> None:
    job = tasks.add.schedule(1, 1).delay(60)
    same = app.get_job(job.id)
    assert same == job and hash(same) == hash(job) and len({job, same}) == 1
    assert "SCHEDULED" in repr(job)
