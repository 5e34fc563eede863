"""Django's Tasks framework on mpjobs, end to end: the test project in tests/apps/djproject.

Every task runs in a real pool started as `python manage.py mpjobs run` (a subprocess),
and is enqueued and read through Django's public API only (`task.enqueue`,
`result.refresh()`, `task.get_result`), on the django-tasks backport (Django 5.2 here).
The tasks write rows with Django's ORM in the workers (SQLite, WAL).

These run on SQLite only: the backend does nothing store-specific except the
in-transaction enqueue, which has its own PostgreSQL test at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django")
if django.VERSION < (6,):
    pytest.importorskip("django_tasks")  # the backport; Django 6 has django.tasks built in

from tests.conftest import pg_base_url, wait_for  # noqa: E402

MANAGE = Path(__file__).resolve().parents[1] / "apps" / "djproject" / "manage.py"
CONF = MANAGE.parent / "gunicorn_conf.py"
_STATE: dict[str, Path] = {}


def _project_env(tmp: Path) -> dict[str, str]:
    return {"DJ_DB": str(tmp / "db.sqlite3"), "DJ_HOME": str(tmp / "home"),
            "DJANGO_SETTINGS_MODULE": "djproject.settings"}  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Django set up once in this process, on a fresh database and mpjobs home."""
    tmp = _STATE.get("tmp")
    if tmp is None:
        tmp = _STATE["tmp"] = tmp_path_factory.mktemp("djproject")
        os.environ.update(_project_env(tmp))
        django.setup()
        from django.core.management import call_command

        call_command("migrate", run_syncdb=True, verbosity=0)
    return tmp


def manage(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MANAGE), *args], capture_output=True, text=True, timeout=60, **kw
    )


@contextlib.contextmanager
def workers(project: Path, n: int = 2, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """`python manage.py mpjobs run --workers N` for the test; stopped with SIGTERM after."""
    log = open(project / "pool.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, str(MANAGE), "mpjobs", "run", "--workers", str(n),
         "--graceful-timeout", "5", *extra],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def app() -> Any:
    from djproject.shop.tasks import add

    return add.get_backend().app


def finished(result: Any, timeout: float = 30.0) -> Any:
    """Wait for Django's result through its mpjobs job (no polling), then refresh it."""
    app().get_job(result.id).wait(timeout=timeout)
    result.refresh()
    assert result.is_finished
    return result


def records(label: str) -> list[Any]:
    from djproject.shop.models import Record

    return list(Record.objects.filter(label=label).order_by("id"))


pytestmark = pytest.mark.sqlite_only


def test_enqueue_runs_in_a_worker_with_the_orm(project: Path) -> None:
    from djproject.shop.tasks import add

    from mpjobs.contrib.django.compat import task_enqueued

    sent: list[Any] = []

    def on_enqueued(sender: Any, task_result: Any, **kw: Any) -> None:
        sent.append(task_result.id)

    task_enqueued.connect(on_enqueued)
    try:
        with workers(project):
            result = add.enqueue(2, 3)
            assert result.status == "READY" and result.id.isdigit()
            finished(result)
    finally:
        task_enqueued.disconnect(on_enqueued)
    assert sent == [result.id]
    # task_started / task_finished were sent in the worker: django-tasks logs them
    log = (project / "pool.log").read_text()
    assert f"Task id={result.id} path=djproject.shop.tasks.add state=SUCCESSFUL" in log
    assert result.status == "SUCCESSFUL"
    assert result.return_value == 5
    assert result.attempts == 1 and result.errors == []
    assert result.enqueued_at <= result.started_at <= result.finished_at
    (row,) = [r for r in records("add") if r.value == 5]
    assert row.pid != os.getpid()  # written by a worker, with Django's ORM
    job = app().get_job(result.id)
    assert job.name == "djproject.shop.tasks.add" and job.queue == "default"
    # manage.py mpjobs jobs / status: mpjobs' CLI on the backend's home
    shown = manage("mpjobs", "jobs", "show", result.id)
    assert shown.returncode == 0, shown.stderr
    assert "djproject.shop.tasks.add" in shown.stdout and "SUCCESS" in shown.stdout
    wrong = manage("mpjobs", "--backend", "nope", "status")
    assert wrong.returncode == 2 and "nope" in wrong.stderr.splitlines()[-1]
    status = manage("mpjobs", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert "queues" in json.loads(status.stdout)


def test_run_after_is_honoured(project: Path) -> None:
    from djproject.shop.tasks import add

    with workers(project):
        run_after = datetime.now(timezone.utc) + timedelta(seconds=1.5)
        result = add.using(run_after=run_after).enqueue(10, 1)
        assert result.status == "READY"
        due = app().get_job(result.id).exec_at
        assert abs(due - run_after) < timedelta(milliseconds=1)
        finished(result)
    assert result.status == "SUCCESSFUL" and result.return_value == 11
    assert result.started_at >= run_after


def test_priority_runs_larger_first(project: Path) -> None:
    """One worker, held busy; three tasks queued meanwhile run highest Django priority first."""
    from djproject.shop.tasks import hold, mark

    gate = project / "gate-priority"
    with workers(project, n=1):
        held = hold.enqueue(str(gate))
        wait_for(lambda: Path(str(gate) + ".started").exists(), 30, what="the worker held")
        low = mark.using(priority=-50).enqueue("prio-low")
        mid = mark.enqueue("prio-mid")
        high = mark.using(priority=50).enqueue("prio-high")
        assert app().get_job(high.id).priority == -50  # mpjobs: lower runs first
        gate.write_text("go")
        for r in (held, low, mid, high):
            finished(r)
    ran_at = {label: records(label)[0].id for label in ("prio-low", "prio-mid", "prio-high")}
    assert sorted(ran_at, key=ran_at.__getitem__) == ["prio-high", "prio-mid", "prio-low"]
    assert high.task.priority == 50 and low.task.priority == -50


def _stop_asgiref_thread() -> None:
    """Stop the thread asgiref's sync_to_async left in this process (aenqueue ran on it).

    A process with a thread it does not own cannot fork a pool safely, and later tests
    in this process start pools; a fresh executor makes its thread only when used.
    """
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.sync import SyncToAsync

    SyncToAsync.single_thread_executor.shutdown(wait=True)
    SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)


def test_async_task_and_async_api(project: Path) -> None:
    from djproject.shop.tasks import async_add

    async def go() -> Any:
        result = await async_add.aenqueue(20, 22)
        await asyncio.to_thread(app().get_job(result.id).wait, 30)
        await result.arefresh()
        return result

    with workers(project):
        try:
            result = asyncio.run(go())
        finally:
            _stop_asgiref_thread()
    assert result.status == "SUCCESSFUL"
    assert result.return_value["sum"] == 42
    assert [r.value for r in records("async") if r.id == result.return_value["row"]] == [42]


def test_a_failure_reaches_result_errors(project: Path) -> None:
    from djproject.shop.tasks import fail

    with workers(project):
        result = finished(fail.enqueue("boom at 7"))
    assert result.status == "FAILED"
    (error,) = result.errors
    assert error.exception_class is ValueError
    assert "boom at 7" in error.traceback and "in fail" in error.traceback
    with pytest.raises(ValueError):
        result.return_value  # noqa: B018 - Django raises for a failed task


def test_async_worker_runs_async_and_sync_tasks_at_once(project: Path) -> None:
    """`--concurrency 2`: async tasks on the worker's loop, sync ones in its threads."""
    from djproject.shop.tasks import add, async_add, whoami

    with workers(project, 1, "--concurrency", "2"):
        rs = [async_add.enqueue(1, 2), add.enqueue(3, 4), whoami.enqueue("c"), add.enqueue(5, 6)]
        for r in rs:
            finished(r)
    assert [r.status for r in rs] == ["SUCCESSFUL"] * 4
    assert rs[0].return_value["sum"] == 3 and rs[1].return_value == 7
    assert rs[2].return_value == {"attempt": 1, "id": rs[2].id, "tag": "c"}


def test_get_result_from_another_process(project: Path) -> None:
    from djproject.shop.tasks import add

    with workers(project):
        result = finished(add.enqueue(100, 23))
    script = (
        "import django, json, sys; django.setup()\n"
        "from djproject.shop.tasks import add\n"
        "r = add.get_result(sys.argv[1])\n"
        "print(json.dumps([r.status, r.return_value, r.id, r.attempts]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, result.id], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["SUCCESSFUL", 123, result.id, 1]


def test_takes_context_gets_the_attempt(project: Path) -> None:
    from djproject.shop.tasks import whoami

    with workers(project):
        result = finished(whoami.enqueue("ctx"))
    assert result.return_value == {"attempt": 1, "id": result.id, "tag": "ctx"}


def test_a_worker_killed_mid_task_is_recovered(project: Path) -> None:
    """SIGKILL of the worker running attempt 1; attempt 2 (mpjobs={'max_attempts': 2}) runs."""
    from djproject.shop.tasks import survive

    marker = project / "survive.pid"
    with workers(project):
        result = survive.enqueue(str(marker))
        wait_for(marker.exists, 30, what="attempt 1 to start")
        wait_for(lambda: marker.read_text().strip(), 5, what="the pid written")
        pid = int(marker.read_text())
        os.kill(pid, signal.SIGKILL)
        finished(result)
    assert result.status == "SUCCESSFUL"
    assert result.return_value == {"attempt": 2}
    assert result.attempts == 2
    assert [r.value for r in records("survived")] == [2]
    assert all(r.pid != pid for r in records("survived"))


def test_mpjobs_options_pass_through_and_bad_ones_fail_early(project: Path) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from djproject.shop.tasks import add

    from mpjobs.contrib.django import MpjobsBackend, with_options
    from mpjobs.contrib.django.compat import InvalidTask

    tuned = with_options(add, max_attempts=3, timeout=30, unique_key="only-one")
    first = tuned.enqueue(1, 1)
    again = tuned.using(mpjobs={"max_attempts": 4}).enqueue(1, 1)
    assert again.id == first.id  # unique_key reached mpjobs
    rec = app().store.get(int(first.id))
    assert (rec.max_attempts, rec.timeout, rec.unique_key) == (3, 30.0, "only-one")
    assert app().get_job(first.id).cancel()
    assert add.get_result(first.id).status == "FAILED"  # CANCELLED is FAILED in Django
    assert "JobCancelledError" in add.get_result(first.id).errors[0].exception_class_path
    with pytest.raises(InvalidTask, match="bogus"):
        add.using(mpjobs={"bogus": 1})
    with pytest.raises(InvalidTask, match="queue_name"):
        add.using(mpjobs={"queue": "x"})
    with pytest.raises(InvalidTask, match="not valid"):
        add.using(queue_name="not-listed")
    with pytest.raises(ImproperlyConfigured, match="nope"):
        MpjobsBackend("x", {"OPTIONS": {"nope": 1}})
    with pytest.raises(ImproperlyConfigured, match="result_ttl"):
        MpjobsBackend("x", {"OPTIONS": {"result_ttl": "soon"}})
    with pytest.raises(ImproperlyConfigured, match="store"):
        MpjobsBackend("x", {"OPTIONS": {"store": "mysql://nope"}})
    with pytest.raises(ImproperlyConfigured, match="QUEUES"):
        MpjobsBackend("x", {"QUEUES": ["ok", ""]})
    from mpjobs.contrib.django.compat import TaskResultDoesNotExist

    with pytest.raises(TaskResultDoesNotExist):
        add.get_result("999999")
    with pytest.raises(TaskResultDoesNotExist):
        add.get_result("not-an-id")


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
def test_under_gunicorn_a_view_enqueues_and_the_pool_runs_it(
    project: Path, tmp_path: Path, preload: bool
) -> None:
    """The pool forked by gunicorn's arbiter (mpjobs' hooks) runs what a Django view enqueued.

    Without preload_app the arbiter sets Django up when it loads the pool's App
    (`registry:default`); with it, the WSGI app did, and has used the database.
    """
    from web_helpers import Server

    env = {**_project_env(project), "WEB_PRELOAD": "1" if preload else "0"}
    server = Server(
        ["gunicorn", "-c", str(CONF), "djproject.wsgi:application"], project / "home",
        tmp_path, env,
    )  # fmt: skip
    total = 1042 + preload
    try:
        server.wait_up()
        sent = server.get(f"/enqueue?x={total - 2}&y=2")
        assert sent["pid"] != os.getpid()
        app().get_job(str(sent["id"])).wait(timeout=30)
        assert server.get(f"/result/{sent['id']}") == {"status": "SUCCESSFUL", "value": total}
        (row,) = [r for r in records("add") if r.value == total]
        assert row.pid not in (sent["pid"], server.proc.pid)  # a pool worker ran it
        assert server.stop() == 0
    except BaseException:
        print(server.output())
        raise
    finally:
        server.kill_all()


# -- PostgreSQL: the enqueue commits or rolls back with the caller's transaction -----

TX_SCRIPT = """
import django, json
django.setup()
from django.core.management import call_command
from django.db import transaction
from djproject.shop.models import Record
from djproject.shop.tasks import add

call_command("migrate", run_syncdb=True, verbosity=0)
app = add.get_backend().app
try:
    with transaction.atomic():
        dropped = add.enqueue(1, 1)  # the first statement of the transaction
        Record.objects.create(label="tx-dropped")
        raise RuntimeError("roll back")
except RuntimeError:
    pass
with transaction.atomic():
    Record.objects.create(label="tx-kept")
    kept = add.enqueue(2, 2)
    visible_inside = app.get_job(kept.id) is not None  # mpjobs' own connection
print(json.dumps({
    "dropped": app.get_job(dropped.id) is not None,
    "dropped_row": Record.objects.filter(label="tx-dropped").exists(),
    "visible_inside": visible_inside,
    "kept": app.get_job(kept.id) is not None,
    "kept_status": add.get_result(kept.id).status,
}))
"""


@pytest.mark.postgres_only
def test_enqueue_in_transaction_on_postgres(tmp_path: Path) -> None:
    env = {**os.environ, **_project_env(tmp_path), "DJ_PG_URL": pg_base_url()}
    out = subprocess.run(
        [sys.executable, "-c", TX_SCRIPT], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "dropped": False, "dropped_row": False, "visible_inside": False, "kept": True,
        "kept_status": "READY",
    }  # fmt: skip


def test_results_map_every_terminal_status(project: Path) -> None:
    """TIMEOUT, PERMANENTLY_FAILED and a lost worker are FAILED with the reason in errors."""
    from djproject.shop.tasks import add

    from mpjobs.contrib.django import results
    from mpjobs.contrib.django.backend import MpjobsBackend

    assert isinstance(add.get_backend(), MpjobsBackend)
    result = add.enqueue(0, 0)
    rec = app().store.get(int(result.id))
    call = results.call_of(rec)
    assert call is not None and call.module_path == "djproject.shop.tasks.add"
    for status in ("TIMEOUT", "PERMANENTLY_FAILED", "FAILED"):
        ended = dataclasses.replace(rec, status=status, error="time limit of 1 s exceeded")
        mapped = results.result_of(add, ended, call)
        assert mapped.status == "FAILED"
        assert mapped.errors[0].traceback == "time limit of 1 s exceeded"
        assert mapped.errors[0].exception_class.__name__ == "JobFailedError"
    waiting = results.result_of(add, dataclasses.replace(rec, attempts=1, error="lost"), call)
    assert waiting.status == "READY" and waiting.attempts == 1  # a retry waits
    assert app().get_job(result.id).cancel()


def test_django_connections_are_closed_before_a_fork(project: Path) -> None:
    """What `manage.py mpjobs run` installs: no Django connection crosses a fork."""
    from django.db import connection

    from mpjobs.contrib.django.registry import close_connections_before_fork

    close_connections_before_fork()
    connection.ensure_connection()
    assert connection.connection is not None
    pid = os.fork()
    if pid == 0:  # the child: it must not have inherited an open connection
        os._exit(0 if connection.connection is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert connection.connection is None  # closed in the parent, before the fork
