"""The dashboard's actions from the shell, for scripts (issue 12 item 5): bulk retry,
cancel and purge by filter, run a schedule now, --json on every listing, --version,
and help text on every option of every command."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import dash_tasks
import pytest

import mpjobs
from mpjobs import JobStatus
from mpjobs.cli import build_parser


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpjobs", *args, "--home", str(home)],
        capture_output=True, text=True, timeout=30, env=os.environ.copy(),
    )  # fmt: skip


def ok(home: Path, *args: str) -> str:
    r = cli(home, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def dapp(home: Path) -> mpjobs.App:
    return dash_tasks.make_app(home)


def test_every_option_has_help() -> None:
    missing = []

    def walk(parser: argparse.ArgumentParser, where: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{where} {name}")
            elif action.help is None:
                missing.append(f"{where}: {action.option_strings or action.dest}")

    walk(build_parser(), "mpjobs")
    assert missing == []


def test_version(home: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "mpjobs", "--version"], capture_output=True,
                       text=True, timeout=30)  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip() == f"mpjobs {mpjobs.__version__}"


def test_retry_and_cancel_by_filter(dapp: mpjobs.App, home: Path) -> None:
    with dapp.start(workers=1, graceful_timeout=5.0) as pool:
        pool.wait_ready(timeout=20, workers=1)
        qa = [dash_tasks.fail.schedule("a").options(queue="qa").now() for _ in range(3)]
        qb = [dash_tasks.fail.schedule("b").options(queue="qb").now() for _ in range(2)]
        for j in qa + qb:
            j.wait(20)
        out = ok(home, "jobs", "retry", "--status", "failed", "--queue", "qa", "--json")
        assert json.loads(out) == {"done": 3, "refused": 0}
        for j in qa:
            j.wait(20)
    assert all(j.status is JobStatus.FAILED and j.attempts == 1 for j in qa)
    assert [j.status for j in qb] == [JobStatus.FAILED] * 2

    waiting = [dash_tasks.add.schedule(i, i).options(queue="qc").delay(3600) for i in range(4)]
    other = dash_tasks.add.schedule(9, 9).options(queue="qd").delay(3600)
    out = ok(home, "jobs", "cancel", "--status", "SCHEDULED", "--queue", "qc",
             "--task", "dash_tasks.add")  # fmt: skip
    assert "cancelled 4 jobs" in out
    assert all(j.status is JobStatus.CANCELLED for j in waiting)
    assert other.status is JobStatus.SCHEDULED

    for bad in (("jobs", "retry"), ("jobs", "retry", other.id, "--status", "FAILED"),
                ("jobs", "purge", "--status", "SUCCESS")):  # fmt: skip
        r = cli(home, *bad)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_purge_by_status_and_age(dapp: mpjobs.App, home: Path) -> None:
    with dapp.start(workers=1, graceful_timeout=5.0) as pool:
        pool.wait_ready(timeout=20, workers=1)
        done = [dash_tasks.add.schedule(i, i).now() for i in range(5)]
        failed = dash_tasks.fail.schedule("kept").now()
        for j in [*done, failed]:
            j.wait(20)
    keep = dash_tasks.add.schedule(0, 0).delay(3600)  # the newest row, always kept
    assert "purged 0 jobs" in ok(home, "jobs", "purge", "--status", "SUCCESS", "--older-than", "7d")
    out = ok(home, "jobs", "purge", "--status", "SUCCESS", "--older-than", "0s", "--json")
    assert json.loads(out) == {"purged": 5}
    assert all(dapp.get_job(j.id) is None for j in done)
    assert failed.status is JobStatus.FAILED and keep.status is JobStatus.SCHEDULED


def test_listings_in_json_and_schedule_run_now(dapp: mpjobs.App, home: Path) -> None:
    jobs = [dash_tasks.add.schedule(i, i).options(queue=f"q{i % 2}").delay(3600) for i in range(6)]
    listed = json.loads(ok(home, "jobs", "list", "--queue", "q1", "--json"))
    assert [j["id"] for j in listed["jobs"]] == [int(j.id) for j in reversed(jobs[1::2])]
    page = json.loads(ok(home, "jobs", "list", "--limit", "4", "--json"))
    rest = json.loads(ok(home, "jobs", "list", "--before", str(page["next_before"]), "--json"))
    assert [j["id"] for j in page["jobs"] + rest["jobs"]] == [int(j.id) for j in reversed(jobs)]
    shown = json.loads(ok(home, "jobs", "show", jobs[0].id, "--json"))
    assert shown["arguments"] == "((0, 0), {})" and shown["queue"] == "q0"

    sched = dash_tasks.add.schedule(2, 3).options(id="nightly").cron("0 3 * * *")
    listing = json.loads(ok(home, "schedules", "list", "--json"))
    assert [(s["id"], s["state"]) for s in listing] == [("nightly", "active")]
    out = ok(home, "schedules", "run", "nightly")
    job_id = out.strip().rsplit(" ", 1)[-1]
    job = dapp.get_job(job_id)
    assert job is not None and dapp.store.get(int(job_id)).schedule_id == "nightly"  # type: ignore[union-attr]
    assert sched.state == "active"
    with dapp.start(workers=1, graceful_timeout=5.0) as pool:
        pool.wait_ready(timeout=20, workers=1)
        assert job.wait(20).result() == 5
    status = json.loads(ok(home, "status", "--json"))
    assert status["schedules"][0]["id"] == "nightly"
    r = cli(home, "schedules", "run", "no-such")
    assert r.returncode == 2 and "no schedule 'no-such'" in r.stderr
