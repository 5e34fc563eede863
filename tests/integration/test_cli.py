"""The command line as a user runs it: `python -m mpjobs ...` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import tasks
from conftest import wait_for

import mpjobs
from mpjobs import JobStatus


def mpjobs_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpjobs", *args],
        capture_output=True, text=True, timeout=timeout, env=os.environ.copy(),
    )  # fmt: skip


@pytest.mark.parametrize(
    "target, words",
    [
        ("no_such_module_xyz:app", "cannot import 'no_such_module_xyz'"),
        ("tasks:no_such_app", "has no attribute 'no_such_app'"),
        ("core_tasks:not_an_app", "not an mpjobs.App"),
        ("tasks", "expected MODULE:APP"),
        ("tasks:", "expected MODULE:APP"),
        ("/no/such/file.py:app", "no file"),
    ],
)
def test_bad_target_is_one_line_without_traceback(home: Path, target: str, words: str) -> None:
    r = mpjobs_cli("run", target, "--home", str(home), "--workers", "1", timeout=20)
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert words in err[0]
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_run_subprocess_then_sigterm_exits_0_and_leaves_nothing(home: Path) -> None:
    app = tasks.make_app(home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpjobs", "run", "tasks:app", "--workers", "2", "--home", str(home)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        jobs = [tasks.add.schedule(i, i).now() for i in range(20)]
        assert [j.wait(20).result() for j in jobs] == [2 * i for i in range(20)]
        sup = psutil.Process(proc.pid)
        wait_for(lambda: len(sup.children()) == 3, 10, what="coordinator and 2 workers")
        children = sup.children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert app.store.list_processes() == []


@pytest.fixture
def busy_pool(app: mpjobs.App, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 2-worker pool running one blocked job, with two more jobs waiting in queue 'q'."""
    marker, release = tmp_path / "m", tmp_path / "r"
    with app.start(workers=2, graceful_timeout=5.0) as pool:
        pool.wait_ready(timeout=20, workers=2)
        running = tasks.block.schedule(str(marker), str(release)).now()
        wait_for(marker.exists, 10, what="job to start")
        waiting = [tasks.add.schedule(1, 1).options(queue="q").delay(3600) for _ in range(2)]
        try:
            yield pool, running, waiting
        finally:
            release.touch()


def test_status_json(busy_pool, home: Path) -> None:  # type: ignore[no-untyped-def]
    pool, running, _ = busy_pool
    r = mpjobs_cli("status", "--home", str(home), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    procs = data["processes"]
    sups = [p for p in procs if p["kind"] == "supervisor"]
    assert [s["pid"] for s in sups] == [pool.pid]
    workers = [p for p in procs if p["kind"] == "worker"]
    assert sorted(w["pid"] for w in workers) == sorted(pool.workers())
    assert all(isinstance(w["rss_bytes"], int) and w["rss_bytes"] > 0 for w in workers)
    busy = [w for w in workers if w["state"] == "running"]
    assert len(busy) == 1 and busy[0]["job"]["id"] == running.id
    assert busy[0]["job"]["name"] == "tasks.block"
    assert [w["state"] for w in workers if w is not busy[0]] == ["idle"]
    assert data["leader"] is not None and data["leader"]["pid"] == pool.coordinator()
    assert data["queues"]["q"].get("SCHEDULED") == 2
    assert data["queues"]["default"].get("RUNNING") == 1


def test_status_text(busy_pool, home: Path) -> None:  # type: ignore[no-untyped-def]
    pool, running, _ = busy_pool
    r = mpjobs_cli("status", "--home", str(home))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"supervisor pid {pool.pid}" in out
    for pid in pool.workers():
        assert f"pid {pid}" in out
    assert f"job {running.id} tasks.block" in out
    assert "MiB" in out and "leader: pid" in out
    assert "q: 2 waiting, 0 running" in out
    assert "default: 0 waiting, 1 running" in out


def test_status_of_empty_home(app: mpjobs.App, home: Path) -> None:
    app.store  # noqa: B018 - a home that exists (a missing one is an error: test_home_resolution)
    r = mpjobs_cli("status", "--home", str(home), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["processes"] == [] and data["leader"] is None and data["queues"] == {}


def test_jobs_list_show_cancel_retry(app: mpjobs.App, home: Path) -> None:
    ok = tasks.add.schedule(1, 2).options(queue="q1").delay(3600)
    other = tasks.add.schedule(3, 4).options(queue="q2").delay(3600)
    h = ("--home", str(home))

    r = mpjobs_cli("jobs", "list", *h)
    assert r.returncode == 0, r.stderr
    ids = [line.split()[0] for line in r.stdout.splitlines()]
    assert ids == [other.id, ok.id]
    r = mpjobs_cli("jobs", "list", "--queue", "q1", *h)
    assert [line.split()[0] for line in r.stdout.splitlines()] == [ok.id]
    r = mpjobs_cli("jobs", "list", "--status", "SUCCESS", *h)
    assert r.returncode == 0 and r.stdout == ""

    r = mpjobs_cli("jobs", "show", ok.id, *h)
    assert r.returncode == 0 and ok.id in r.stdout and "tasks.add" in r.stdout
    assert "SCHEDULED" in r.stdout and "exec_at" in r.stdout

    r = mpjobs_cli("jobs", "cancel", ok.id, *h)
    assert r.returncode == 0 and "cancelled" in r.stdout
    assert ok.status is JobStatus.CANCELLED
    r = mpjobs_cli("jobs", "cancel", ok.id, *h)
    assert r.returncode != 0 and "not cancelled" in r.stdout

    r = mpjobs_cli("jobs", "show", ok.id, *h)
    assert "CANCELLED" in r.stdout and "cancelled" in r.stdout

    r = mpjobs_cli("jobs", "retry", ok.id, *h)
    assert r.returncode == 0 and "queued again" in r.stdout
    assert ok.status is JobStatus.SCHEDULED and ok.attempts == 0
    r = mpjobs_cli("jobs", "retry", other.id, *h)
    assert r.returncode != 0 and "not retried" in r.stdout

    with app.start(workers=1, graceful_timeout=5.0) as pool:
        pool.wait_ready(timeout=20, workers=1)
        assert ok.wait(10).result() == 3
    assert other.status is JobStatus.SCHEDULED

    for args in (("jobs", "show", "99999"), ("jobs", "cancel", "nope"), ("jobs", "show")):
        r = mpjobs_cli(*args, *h)
        assert r.returncode != 0
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_jobs_show_prints_traceback_of_failed_job(pool: mpjobs.Pool, home: Path) -> None:
    job = tasks.fail.schedule("cli-boom").now()
    job.wait(10)
    r = mpjobs_cli("jobs", "show", job.id, "--home", str(home))
    assert r.returncode == 0
    assert "FAILED" in r.stdout and "ValueError: cli-boom" in r.stdout and "Traceback" in r.stdout
