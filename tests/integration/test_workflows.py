"""Workflows with real workers, on SQLite and PostgreSQL: chains pass results, a diamond
waits for both branches, a failing member cancels the chord saying why, a parent's
retries hold its child back, a 10,000-member chord finishes in bounded time, groups are
found from another process and cancelled as one, and bad dependencies fail at push."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
import workflow_tasks as wt
from conftest import started

import mpjobs
from mpjobs import JobStatus


@pytest.fixture(autouse=True)
def wapp(home: Path) -> mpjobs.App:
    return wt.make_app(home)


def test_chain_of_three_passes_results(wapp: mpjobs.App) -> None:
    with started(wapp):
        a = wt.value.schedule(1).now()
        c = a.then(wt.step.schedule(10)).then(wt.step.schedule(100))
        assert c.wait(20).result() == 111
        assert a.result() == 1


def test_diamond_waits_for_both_branches(wapp: mpjobs.App, tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    a = wt.value.schedule("a", log).now()
    b = wt.value.schedule("b", log, 0.2).options(depends_on=[a]).now()
    c = wt.value.schedule("c", log).options(depends_on=[a]).now()
    d = wt.value.schedule("d", log).options(depends_on=[b, c]).now()
    assert d.status is JobStatus.SCHEDULED
    assert wapp.store.links(int(d.id)) == ([int(b.id), int(c.id)], [])
    with started(wapp):
        assert d.wait(20).result() == "d"
    t = {(e["tag"], e["ev"]): e["t"] for e in wt.entries(log)}
    assert t["a", "end"] < t["b", "start"] and t["a", "end"] < t["c", "start"]
    assert t["d", "start"] > max(t["b", "end"], t["c", "end"])


def test_failing_member_cancels_chord_with_reason(wapp: mpjobs.App) -> None:
    group = wapp.group([wt.value.schedule(1), wt.boom.schedule("kaput"), wt.value.schedule(3)])
    chord = group.then(wt.collect.schedule())
    with started(wapp):
        chord.wait(20)
        group.wait(20)
    assert chord.status is JobStatus.CANCELLED
    bad = group.jobs[1]
    assert chord.error == f"cancelled: dependency job {bad.id} ended FAILED"
    with pytest.raises(mpjobs.JobCancelledError):
        chord.result()
    with pytest.raises(mpjobs.JobFailedError, match="kaput"):
        group.results()


def test_retries_of_a_parent_do_not_release_the_child(wapp: mpjobs.App, tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    parent = wt.flaky.schedule(log, 2).now()
    child = parent.then(wt.step.schedule("!", log))
    with started(wapp):
        assert child.wait(20).result() == "finally!"
    events = [(e["tag"], e.get("n")) for e in wt.entries(log) if e["ev"] == "start"]
    assert events == [("flaky", 0), ("flaky", 1), ("flaky", 2), ("step!", None)]
    assert parent.attempts == 3


def test_group_results_wait_and_get_group(wapp: mpjobs.App, home: Path) -> None:
    group = wapp.group([wt.value.schedule(i) for i in range(20)])
    chord = group.then(wt.collect.schedule())
    code = (
        "import sys, workflow_tasks as wt; app = wt.make_app(sys.argv[1]); "
        "g = app.get_group(sys.argv[2]); print(len(g.jobs), g.wait(30).results()[:3])"
    )
    with started(wapp):
        out = subprocess.run(
            [sys.executable, "-c", code, str(home), group.id], capture_output=True, text=True,
            timeout=60, check=True,
        ).stdout  # fmt: skip
        assert out.strip() == "20 [0, 1, 2]"
        assert asyncio.run(group.wait_async(20)) is group
        assert group.results() == list(range(20))
        assert chord.wait(20).result() == list(range(20))
    assert wapp.get_group("no-such-group") is None


def test_group_cancel_cancels_members_not_started_and_chord(
    wapp: mpjobs.App, tmp_path: Path
) -> None:
    marker = str(tmp_path / "hang")
    later = [wt.value.schedule(i).options(queue="later") for i in range(3)]  # never served
    group = wapp.group([wt.hang.schedule(marker), *later])
    chord = group.then(wt.count.schedule())
    with started(wapp, queues=["default"]):
        from conftest import wait_for

        wait_for(lambda: wt.entries(marker), 20, what="the hanging member to start")
        assert group.cancel() == 3  # the running one is left alone
        assert chord.status is JobStatus.CANCELLED
        assert group.jobs[0].status is JobStatus.RUNNING
        assert group.cancel(terminate=True) == 1
        group.wait(20)
    assert [j.status for j in group.jobs] == [JobStatus.CANCELLED] * 4


def test_push_time_errors(wapp: mpjobs.App, tmp_path: Path, store_backend: str) -> None:
    with pytest.raises(mpjobs.NotFoundError, match="cannot depend on job 424242"):
        wt.value.schedule(1).options(depends_on=[424242]).now()
    with pytest.raises(TypeError, match="depends_on must be a list"):
        wt.value.schedule(1).options(depends_on="12")
    with pytest.raises(ValueError, match="not a job id"):
        wt.value.schedule(1).options(depends_on=["x"])
    from conftest import pg_store_url

    other = mpjobs.App(tmp_path / "other", pg_store_url() if store_backend == "postgres" else None)
    foreign = other.schedule("workflow_tasks:noop").now()
    with pytest.raises(mpjobs.ConfigError, match="another home or store"):
        wt.value.schedule(1).options(depends_on=[foreign]).now()
    with pytest.raises(ValueError, match="at least one job"):
        wapp.group([])
    with pytest.raises(TypeError, match="not a job builder"):
        wapp.group([foreign])  # type: ignore[list-item]
    assert wapp.jobs() == []  # nothing of a refused push was written


def test_dependency_already_finished_at_push(wapp: mpjobs.App) -> None:
    with started(wapp):
        ok = wt.value.schedule(5).now().wait(20)
        bad = wt.boom.schedule().now().wait(20)
        assert ok.then(wt.step.schedule(1)).wait(20).result() == 6
        doomed = wt.value.schedule(1).options(depends_on=[ok, bad]).now()
        assert doomed.status is JobStatus.CANCELLED  # at once, in the push
        assert f"dependency job {bad.id} ended FAILED" in (doomed.error or "")


@pytest.mark.timeout(240)
def test_chord_of_10000_noop_members(wapp: mpjobs.App, store_backend: str) -> None:
    n = 10_000
    t0 = time.monotonic()
    group = wapp.group([wt.noop.schedule() for _ in range(n)])
    chord = group.then(wt.count.schedule())
    pushed = time.monotonic() - t0
    with started(wapp):
        assert chord.wait(180).result() == n
    took = time.monotonic() - t0
    print(f"{store_backend}: 10,000-member chord pushed in {pushed:.2f} s, done in {took:.2f} s")
    assert all(o[1] == "SUCCESS" for o in wapp.store.outcomes_of([int(j.id) for j in group.jobs]))


@pytest.mark.postgres_only
def test_a_version_1_postgres_schema_migrates(tmp_path: Path) -> None:
    """A schema made by the previous release gains the workflow tables on first open."""
    import psycopg
    from conftest import pg_store_url

    from mpjobs.store.postgres.schema import MARK, MIGRATIONS, SCHEMA_VERSION

    url = pg_store_url()
    base, schema = url.split("?schema=")[0].split("&schema=")[0], url.rsplit("schema=", 1)[1]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path = {schema}")
        for statement in MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('mark', %s), ('version', '1')", (MARK,))
    app = mpjobs.App(tmp_path / "h", store=url)
    a = app.schedule("workflow_tasks:noop").now()
    b = app.schedule("workflow_tasks:noop").options(depends_on=[a]).now()
    assert app.store.links(int(b.id)) == ([int(a.id)], [])
    with psycopg.connect(base, autocommit=True) as conn:
        row = conn.execute(f"SELECT value FROM {schema}.meta WHERE key = 'version'").fetchone()
    assert row == (str(SCHEMA_VERSION),)
