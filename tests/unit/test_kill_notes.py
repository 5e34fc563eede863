"""Whoever settles a killed worker decides as the supervisor that killed it would.

The supervisor reaps its worker and settles its jobs, but the leader's sweep may find
the dead owner first. Without the supervisor's note, the leader can only say "worker
lost"; with it, a job killed at its time limit ends TIMEOUT whoever gets there first.
"""

from __future__ import annotations

import time
from pathlib import Path

from mpjobs import App
from mpjobs.runtime.journal import Journal, write_kill_note
from mpjobs.runtime.recovery import recover_dead_owners


def _running_job(app: App, token: str, max_attempts: int = 1) -> int:
    job = app.schedule("tasks:noop").options(max_attempts=max_attempts).now()
    (claimed,) = app.store.claim(token, 0, None, 1, time.time())
    assert str(claimed.id) == job.id
    Journal(app.home.journal(token)).started(claimed.id)  # it had started when killed
    return claimed.id


def test_leader_sweep_honours_the_supervisors_time_limit_note(tmp_path: Path) -> None:
    app = App(home=tmp_path / "h")
    job_id = _running_job(app, "w-dead-1")
    write_kill_note(
        app.home.kill_note("w-dead-1"), (job_id, "TIMEOUT", "time limit of 1 s exceeded"), True
    )
    assert recover_dead_owners(app.backend) == 1
    rec = app.store.get(job_id)
    assert rec is not None and rec.status == "TIMEOUT"
    assert rec.error == "time limit of 1 s exceeded"
    assert not app.home.kill_note("w-dead-1").exists()


def test_deliberate_kill_puts_the_running_job_back_without_an_attempt(tmp_path: Path) -> None:
    app = App(home=tmp_path / "h")
    job_id = _running_job(app, "w-dead-2")
    write_kill_note(app.home.kill_note("w-dead-2"), None, True)  # e.g. graceful timeout
    recover_dead_owners(app.backend)
    rec = app.store.get(job_id)
    assert rec is not None and rec.status == "SCHEDULED" and rec.attempts == 0


def test_without_a_note_the_job_is_lost(tmp_path: Path) -> None:
    app = App(home=tmp_path / "h")
    job_id = _running_job(app, "w-dead-3")
    recover_dead_owners(app.backend)
    rec = app.store.get(job_id)
    assert rec is not None and rec.status == "FAILED"
    assert rec.error is not None and rec.error.startswith("worker lost")
