"""Safety and bad input: unsafe homes, corrupt or foreign stores, unpicklable arguments,
unknown import paths (the job fails, the worker stays)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
import tasks

import mpjobs
from mpjobs import App, JobStatus


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.sqlite_only  # about the SQLite file or its locks
def test_home_is_created_0700(tmp_path: Path) -> None:
    home = tmp_path / "a" / "home"
    App(home=home).schedule("tasks:noop").delay(60)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "mpjobs.db").stat().st_mode) & 0o077 == 0


def test_home_writable_by_others_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o777)
    with pytest.raises(mpjobs.UnsafeHomeError, match="writable by other users"):
        App(home=home).schedule("tasks:noop").now()
    assert list(home.iterdir()) == []


def test_group_writable_home_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    home.chmod(0o770)
    with pytest.raises(mpjobs.UnsafeHomeError):
        App(home=home).jobs()


@pytest.mark.sqlite_only  # about the SQLite file or its locks
def test_store_writable_by_others_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    App(home=home).schedule("tasks:noop").delay(60)
    db = home / "mpjobs.db"
    db.chmod(0o666)
    # a fresh process would open the file anew: emulate it by dropping the store cache
    from mpjobs.store import backends
    from mpjobs.store import sqlite as sq

    sq._STORES.pop(home.absolute(), None)
    backends._BACKENDS.pop((home.absolute(), None), None)
    with pytest.raises(mpjobs.UnsafeHomeError, match=r"mpjobs\.db"):
        App(home=home).jobs()


@pytest.mark.sqlite_only  # about the SQLite file or its locks
def test_corrupt_store_is_refused_and_untouched(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    db = home / "mpjobs.db"
    db.write_bytes(os.urandom(8192))
    db.chmod(0o600)
    before = digest(db)
    with pytest.raises(mpjobs.StoreError) as info:
        App(home=home).schedule("tasks:noop").now()
    assert str(db) in str(info.value)
    assert digest(db) == before
    assert not (home / "mpjobs.db-wal").exists() or (home / "mpjobs.db-wal").stat().st_size == 0


@pytest.mark.sqlite_only  # about the SQLite file or its locks
def test_text_file_as_store_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    db = home / "mpjobs.db"
    db.write_text("hello, I am not a database\n" * 100)
    db.chmod(0o600)
    before = digest(db)
    with pytest.raises(mpjobs.StoreError, match=r"mpjobs\.db"):
        App(home=home).jobs()
    assert digest(db) == before


@pytest.mark.sqlite_only  # about the SQLite file or its locks
def test_foreign_sqlite_store_is_refused_and_untouched(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    db = home / "mpjobs.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO invoices (amount) VALUES (12.5)")
    conn.commit()
    conn.close()
    db.chmod(0o600)
    before = digest(db)
    with pytest.raises(mpjobs.StoreError) as info:
        App(home=home).schedule("tasks:noop").now()
    assert str(db) in str(info.value)
    assert digest(db) == before
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("invoices",)]
    conn.close()


@pytest.mark.parametrize(
    "bad",
    [threading.Lock(), (i for i in range(3)), {"nested": [threading.Lock()]}],
    ids=["lock", "generator", "nested-lock"],
)
def test_unpicklable_arguments_fail_at_push(app: App, bad: object) -> None:
    with pytest.raises(mpjobs.SerializationError, match="arguments of"):
        tasks.add.schedule(bad, 1).now()
    with pytest.raises(mpjobs.SerializationError):
        tasks.add.schedule(1, y=bad).delay(10)
    with pytest.raises(mpjobs.SerializationError):
        app.push_many([tasks.add.schedule(1, 1), tasks.add.schedule(bad, 1)])
    assert app.jobs() == []  # nothing half-pushed


def test_unknown_import_path_fails_job_and_worker_stays(app: App) -> None:
    with app.start(workers=1, graceful_timeout=5.0) as pool:
        pool.wait_ready(timeout=20, workers=1)
        (worker,) = pool.workers()
        missing_module = app.schedule("no_such_module_xyz:func").now()
        missing_attr = app.schedule("tasks:no_such_function").now()
        for job in (missing_module, missing_attr):
            job.wait(10)
            assert job.status is JobStatus.FAILED
            assert "ImportError" in (job.error or "")
        assert "no_such_module_xyz" in (missing_module.error or "")
        assert "no_such_function" in (missing_attr.error or "")
        with pytest.raises(mpjobs.JobFailedError) as info:
            missing_module.result()
        assert isinstance(info.value.original, ImportError)
        assert tasks.getpid.schedule().now().wait(10).result() == worker
        assert pool.workers() == [worker]


def test_invalid_import_path_is_refused_at_push(app: App) -> None:
    for bad in ("", "nocolon", "a b:c", "mod:"):
        with pytest.raises(ValueError):
            app.schedule(bad).now()
    assert app.jobs() == []
