"""The PostgreSQL backend's own promises: URLs, schemas, fencing, fires, claims, pushes
inside a caller's transaction, passwords. Real server (tests/pgharness.py), real rows.
The promises both backends share are the rest of the integration suite, run on both."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from conftest import pg_base_url, pg_store_url, started, wait_for

import mpjobs
from mpjobs.errors import ConfigError, StoreError
from mpjobs.store.backends import open_backend
from mpjobs.store.base import NewJob, ScheduleRecord
from mpjobs.store.postgres.schema import SCHEMA_VERSION

pytestmark = pytest.mark.postgres_only


def _new_job(name: str = "t", **kw: object) -> NewJob:
    fields: dict[str, object] = dict(
        name=name, func="tasks:noop", func_pickle=None, payload=None, queue="default",
        priority=0, exec_at=time.time(), max_attempts=1, retry_backoff=1.0, timeout=None,
        memory_limit=None, unique_key=None,
    )  # fmt: skip
    fields.update(kw)
    return NewJob(**fields)  # type: ignore[arg-type]


def _raw(url: str) -> psycopg.Connection[tuple[object, ...]]:
    base = url.split("?schema=")[0].split("&schema=")[0]
    return psycopg.connect(base, autocommit=True)


def test_bad_store_urls_are_refused_early_and_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="postgresql://"):
        mpjobs.App(tmp_path / "h", store="mysql://u@db/x")
    with pytest.raises(ConfigError, match="invalid schema"):
        mpjobs.App(tmp_path / "h", store="postgresql://u@db/x?schema=Bad-Name")


def test_apps_in_one_database_keep_to_their_own_schema(tmp_path: Path) -> None:
    a = mpjobs.App(tmp_path / "a", store=pg_store_url())
    b = mpjobs.App(tmp_path / "b", store=pg_store_url())
    ja = a.schedule("tasks:add", 1, 2).now()
    b.schedule("tasks:add", 3, 4).now()
    b.schedule("tasks:add", 5, 6).now()
    assert [j.id for j in a.jobs()] == [ja.id]
    assert len(b.jobs()) == 2


def test_a_foreign_schema_is_refused_untouched(tmp_path: Path) -> None:
    url = pg_store_url()
    schema = url.rsplit("schema=", 1)[1]
    with _raw(url) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.invoices (id int)")
    app = mpjobs.App(tmp_path / "h", store=url)
    with pytest.raises(StoreError, match="another program"):
        app.schedule("tasks:add", 1, 2).now()
    with _raw(url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,),
        ).fetchall()
    assert tables == [("invoices",)]


def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    url = pg_store_url()
    schema = url.rsplit("schema=", 1)[1]
    mpjobs.App(tmp_path / "a", store=url).jobs()  # creates the schema
    with _raw(url) as conn:
        conn.execute(f"UPDATE {schema}.meta SET value = %s WHERE key = 'version'",
                     (str(SCHEMA_VERSION + 1),))  # fmt: skip
    with pytest.raises(StoreError, match="newer than this mpjobs"):
        mpjobs.App(tmp_path / "b", store=url).jobs()


def test_many_processes_migrate_a_new_schema_once(tmp_path: Path) -> None:
    """Eight processes open the same new schema at once: one migrates, all work."""
    url = pg_store_url()
    code = (
        "import sys, mpjobs; app = mpjobs.App(sys.argv[1], store=sys.argv[2]); "
        "print(app.schedule('tasks:add', 1, 2).now().id)"
    )
    argv = [sys.executable, "-c", code]
    procs = [
        subprocess.Popen([*argv, str(tmp_path / f"h{i}"), url], stdout=subprocess.PIPE, text=True)
        for i in range(8)
    ]
    ids = sorted(int(p.communicate(timeout=60)[0]) for p in procs)
    assert [p.returncode for p in procs] == [0] * 8
    assert ids == list(range(1, 9))


def test_push_many_inside_the_callers_transaction(tmp_path: Path) -> None:
    """Jobs pushed on the caller's connection commit, or vanish, with the caller's rows."""
    url = pg_store_url()
    app = mpjobs.App(tmp_path / "h", store=url)
    with _raw(url) as conn:
        conn.execute("CREATE TEMP TABLE orders (id int)")
        with conn.transaction():
            conn.execute("INSERT INTO orders VALUES (1)")
            jobs = app.push_many([app.schedule("tasks:add", i, 1) for i in range(3)],
                                 connection=conn)  # fmt: skip
            assert app.jobs() == []  # not visible to others before the caller commits
        assert {j.id for j in app.jobs()} == {j.id for j in jobs}
        with pytest.raises(ZeroDivisionError), conn.transaction():
            app.push_many([app.schedule("tasks:add", 9, 9)], connection=conn)
            1 / 0  # noqa: B018
        assert len(app.jobs()) == 3
        # the caller's search_path is as it was: its own tables still resolve
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)


def test_push_many_begins_the_callers_transaction_if_it_has_not(tmp_path: Path) -> None:
    """A non-autocommit connection that has sent nothing yet (Django's atomic() before
    its first query) is idle: the push begins the caller's transaction, it does not
    commit one of its own, so a rollback takes the jobs with it."""
    url = pg_store_url()
    app = mpjobs.App(tmp_path / "h", store=url)
    base = url.split("?schema=")[0].split("&schema=")[0]
    with psycopg.connect(base, autocommit=False) as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        app.push_many([app.schedule("tasks:add", 1, 1)], connection=conn)
        conn.rollback()
    assert app.jobs() == []


def test_push_many_on_a_connection_needs_postgres(tmp_path: Path) -> None:
    app = mpjobs.App(tmp_path / "h", store=None)
    app._store_arg = None
    import os

    os.environ.pop("MPJOBS_STORE", None)
    with pytest.raises(ConfigError, match="needs a PostgreSQL store"):
        app.push_many([app.schedule("tasks:add", 1, 1)], connection=object())


def test_a_stale_leader_cannot_write(tmp_path: Path) -> None:
    """The epoch fences leader writes: once another process leads, the old one is refused."""
    url = pg_store_url()
    backend = open_backend(mpjobs.App(tmp_path / "h", store=url).home, url)
    store = backend.store
    old = backend.leadership("c-old")
    old_lock = backend.liveness.hold("c-old")
    old.campaign()
    epoch = store.fence_epoch  # type: ignore[attr-defined]
    assert epoch is not None
    store.fire_due(time.time(), lambda rec, now, n: ([], None))  # leads: allowed
    # Another process takes over (its session got the lock after ours ended).
    old.lock.release()
    with _raw(url) as conn:
        schema = url.rsplit("schema=", 1)[1]
        conn.execute(f"UPDATE {schema}.leader SET epoch = epoch + 1, token = 'c-new'")
    with pytest.raises(StoreError, match="no longer leads"):
        store.fire_due(time.time(), lambda rec, now, n: ([], None))
    with pytest.raises(StoreError, match="no longer leads"):
        store.recover("w-dead", lambda job: None, time.time())  # type: ignore[arg-type, return-value]
    old.resign()
    old_lock.release()
    store.fire_due(time.time(), lambda rec, now, n: ([], None))  # not a leader: not fenced


def test_a_fire_becomes_one_job_even_from_two_leaders(tmp_path: Path) -> None:
    url = pg_store_url()
    store = open_backend(mpjobs.App(tmp_path / "h", store=url).home, url).store
    now = time.time()
    rec = ScheduleRecord("s1", "tasks:noop", "tasks:noop", None, b"", '{"kind": "x"}',
                         '{"max_failures": null}', "active", now - 1, 0, now, now)  # fmt: skip
    store.upsert_schedule(rec)

    def rule(r: ScheduleRecord, at: float, active: int) -> tuple[list[NewJob], float | None]:
        return [_new_job(schedule_id=r.id, fired_for=r.next_run_time)], r.next_run_time

    first = store.fire_due(now, rule)  # next_run_time stays: a second leader fires it again
    second = store.fire_due(now, rule)
    assert len(first) == 1 and second == []
    assert store.active_count("s1") == 1


def test_claims_skip_each_others_rows(tmp_path: Path) -> None:
    """Two claimers at once never take the same job and never wait for each other."""
    url = pg_store_url()
    store = open_backend(mpjobs.App(tmp_path / "h", store=url).home, url).store
    store.push([_new_job() for _ in range(200)], time.time())
    got: dict[str, list[int]] = {"a": [], "b": []}

    def claim(owner: str) -> None:
        while True:
            jobs = store.claim(owner, 1, None, 7, time.time())
            if not jobs:
                return
            got[owner] += [j.id for j in jobs]

    threads = [threading.Thread(target=claim, args=(o,)) for o in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got["a"] + got["b"]) == list(range(1, 201))
    assert not set(got["a"]) & set(got["b"])


def test_a_claim_reads_the_index_of_waiting_jobs_only(tmp_path: Path) -> None:
    """With many finished rows, the claim's pick is an index scan of the partial index."""
    url = pg_store_url()
    schema = url.rsplit("schema=", 1)[1]
    app = mpjobs.App(tmp_path / "h", store=url)
    app.jobs()
    with _raw(url) as conn:
        conn.execute(
            f"INSERT INTO {schema}.jobs (name, queue, priority, status, exec_at, max_attempts, "
            "retry_backoff, created_at, finished_at) SELECT 't', 'default', 0, 'SUCCESS', 0, 1, "
            "1, 0, 0 FROM generate_series(1, 50000)"
        )
        conn.execute(f"ANALYZE {schema}.jobs")
        conn.execute(f"SET search_path = {schema}")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM jobs WHERE status = 'SCHEDULED' AND exec_at <= 1e12 "
            "ORDER BY priority, exec_at, id LIMIT 10 FOR UPDATE SKIP LOCKED"
        ))  # fmt: skip
    assert "jobs_ready" in plan, plan
    assert "Seq Scan" not in plan, plan


def test_status_and_errors_never_show_the_password(tmp_path: Path) -> None:
    base = pg_base_url()
    url = base.replace("postgres@", "postgres:s3cr3t-pw@", 1) + (
        "&" if "?" in base else "?"
    ) + "schema=tpw" + str(abs(hash(tmp_path)) % 10**8)
    home = tmp_path / "h"
    app = mpjobs.App(home, store=url)
    app.schedule("tasks:add", 1, 2).now()
    assert "s3cr3t" not in repr(app)
    out = subprocess.run(
        [sys.executable, "-m", "mpjobs", "status", "--home", str(home), "--store", url, "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "s3cr3t" not in out.stdout + out.stderr
    assert json.loads(out.stdout)["store"].endswith("schema=" + url.rsplit("schema=", 1)[1])
    dead = "postgresql://u:s3cr3t-pw@127.0.0.1:1/x"  # nothing listens on port 1
    out = subprocess.run(
        [sys.executable, "-m", "mpjobs", "jobs", "list", "--home", str(home), "--store", dead],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "cannot connect" in out.stderr and "s3cr3t" not in out.stderr, out.stderr


def test_a_pool_runs_jobs_and_elects_a_leader_on_postgres(tmp_path: Path) -> None:
    import tasks

    app = tasks.make_app(tmp_path / "h")
    with started(app) as _:
        job = tasks.add.schedule(2, 3).now()
        assert job.wait(20).result() == 5
        leader = wait_for(app.backend.current_leader, 20, what="a leader")
        assert isinstance(leader, dict) and leader["epoch"] >= 1
