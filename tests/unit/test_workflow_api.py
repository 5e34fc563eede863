"""The workflow API without workers: what is pushed and refused (SQLite in a temp home)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

import mpjobs
from mpjobs import JobStatus


@pytest.fixture
def wapp(tmp_path: Path) -> mpjobs.App:
    return mpjobs.App(tmp_path / "home")


def test_depends_on_is_a_per_job_option(wapp: mpjobs.App) -> None:
    with pytest.raises(TypeError, match="unknown option"):
        wapp.task(depends_on=[1])(len)


def test_waiting_job_is_scheduled_far_away(wapp: mpjobs.App) -> None:
    a = wapp.schedule("builtins:len", [1]).now()
    b = wapp.schedule("builtins:len", [2]).options(depends_on=[a, int(a.id)]).now()
    assert b.status is JobStatus.SCHEDULED
    assert b.exec_at == datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    assert wapp.store.next_exec_at(None) == wapp.store.get(int(a.id)).exec_at  # type: ignore[union-attr]
    assert wapp.store.links(int(b.id)) == ([int(a.id)], [])


def test_push_many_records_dependencies_in_one_transaction(wapp: mpjobs.App) -> None:
    a = wapp.schedule("builtins:len", [1]).now()
    jobs = wapp.push_many([
        wapp.schedule("builtins:len", [2]),
        wapp.schedule("builtins:len", [3]).options(depends_on=[a]),
    ])  # fmt: skip
    assert wapp.store.links(int(a.id)) == ([], [int(jobs[1].id)])
    with pytest.raises(mpjobs.ConfigError, match="connection"):
        wapp.push_many([wapp.schedule("builtins:len", [3]).options(depends_on=[a])],
                       connection=object())  # fmt: skip
    with pytest.raises(mpjobs.NotFoundError):
        wapp.push_many([wapp.schedule("builtins:len", [3]).options(depends_on=[10**9])])
    assert len(wapp.jobs()) == 3


def test_then_and_chord_store_their_parents(wapp: mpjobs.App) -> None:
    group = wapp.group([wapp.schedule("builtins:len", [i]) for i in range(3)])
    chord = group.then(wapp.schedule("builtins:sum"))
    chain = group.jobs[0].then(wapp.schedule("builtins:abs"))
    assert wapp.store.links(int(chord.id))[0] == [int(j.id) for j in group.jobs]
    assert wapp.store.links(int(chain.id))[0] == [int(group.jobs[0].id)]
    assert chord.name == "builtins:sum"  # the builder's name, not the feeder's
    same = wapp.get_group(group.id)
    assert same is not None and same.jobs == group.jobs and len(same) == 3
    assert group.cancel() == 3
    assert chord.status is JobStatus.CANCELLED and chain.status is JobStatus.CANCELLED
    with pytest.raises(mpjobs.JobCancelledError):
        group.results()


def test_a_schedule_cannot_depend_on_jobs(tmp_path: Path) -> None:
    import mpjobs
    from mpjobs.errors import ConfigError

    app = mpjobs.App(tmp_path / "home")
    parent = app.task(print).schedule("a").now()
    with pytest.raises(ConfigError, match="schedule cannot depend on jobs"):
        app.task(print).schedule("b").options(depends_on=[parent]).every("1h")
