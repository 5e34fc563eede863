"""Completions skip the workflow resolution when job_deps is empty (store/deps.py
`_any_edge`). That shortcut must not go stale in a worker that has run for a while:
the first edge ever, pushed onto a job that is already running, is resolved when that
job ends, and a failed parent still cancels its child."""

from __future__ import annotations

from pathlib import Path

import obs_tasks as ot
import pytest
from conftest import started, wait_for

import mpjobs
from mpjobs import JobStatus

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def obs_app(home: Path) -> mpjobs.App:
    return ot.make_app(home)


def test_the_first_edge_pushed_onto_a_running_job_is_resolved(
    obs_app: mpjobs.App, tmp_path: Path
) -> None:
    with started(obs_app, workers=1):
        # The worker commits outcomes while the store has no edge at all.
        for job in [ot.ok.schedule(i).now() for i in range(20)]:
            assert job.wait(30).status == JobStatus.SUCCESS
        marker, release = tmp_path / "running", tmp_path / "release"
        parent = ot.hold.schedule(str(marker), str(release)).now()
        wait_for(marker.exists, 30, what="the parent running")
        assert obs_app.store.links(int(parent.id)) == ([], [])
        child = ot.ok.schedule(21).options(depends_on=[parent]).now()
        assert child.status == JobStatus.SCHEDULED  # waiting for its running parent
        release.touch()
        assert child.wait(30).result() == 42
        assert parent.status == JobStatus.SUCCESS


def test_a_failed_parent_cancels_the_first_child(obs_app: mpjobs.App) -> None:
    """The other way out of the shortcut: the first edge's parent fails for good."""
    with started(obs_app, workers=1):
        assert ot.ok.schedule(1).now().wait(30).status == JobStatus.SUCCESS
        parent = ot.boom.schedule("no").delay(0.5)  # due once its child is pushed
        child = ot.ok.schedule(2).options(depends_on=[parent]).now()
        assert parent.wait(30).status == JobStatus.FAILED
        assert child.wait(30).status == JobStatus.CANCELLED
        assert "dependency job" in (obs_app.store.get(int(child.id)).error or "")  # type: ignore[union-attr]
