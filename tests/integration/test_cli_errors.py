"""One line, exit 2, for every error a user can fix (issue 9, item 13).

The command line as a user runs it (`python -m mpjobs ...` in a subprocess), and the
API errors behind it: `Schedule.resume()` of a removed schedule, `app.start()` with a
bad option or a supervisor that dies before it is up.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import tasks
from conftest import descendants

import mpjobs
from mpjobs import MpjobsError


def mpjobs_cli(
    *args: str,
    timeout: float = 30,
    user: int | None = None,
    cwd: Path | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpjobs", *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **env}, user=user, cwd=cwd,
    )  # fmt: skip


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    """The single `mpjobs: error: ...` line of a failed command (exit 2, no traceback)."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("mpjobs: error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


# -- homes that cannot be created or read ------------------------------------------------

COMMANDS = [
    ("run", "tasks:app", "--workers", "1"),
    ("status",),
    ("jobs", "list"),
    ("schedules", "list"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("bad_home", ["/proc/mpjobs-x", "/etc/hostname/sub"])
def test_home_that_cannot_be_created_is_one_line(command: tuple[str, ...], bad_home: str) -> None:
    line = one_error_line(mpjobs_cli(*command, "--home", bad_home, timeout=20))
    assert bad_home in line, line


def _drop_dac_capabilities() -> None:
    """In the child before exec: lose root's power to ignore file permissions.

    Tests run as root, which passes every permission check; without CAP_DAC_OVERRIDE
    and CAP_DAC_READ_SEARCH (dropped from the bounding set, so the exec'd program never
    gets them) root is held to a file's mode bits like any other owner.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def without_permission(*args: str) -> subprocess.CompletedProcess[str]:
    """`mpjobs ARGS` held to file permissions, even when the tests run as root."""
    preexec = _drop_dac_capabilities if os.geteuid() == 0 else None
    try:
        return subprocess.run(
            [sys.executable, "-m", "mpjobs", *args], capture_output=True, text=True,
            timeout=20, preexec_fn=preexec, cwd="/",
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise
    except subprocess.SubprocessError as exc:  # the preexec_fn failed: no CAP_SETPCAP
        pytest.skip(f"cannot drop root's file-permission capabilities here: {exc}")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("where", ["inside", "itself"])
def test_home_permission_denied_is_one_line(
    tmp_path: Path, command: tuple[str, ...], where: str
) -> None:
    """A home in a directory we may not enter, or a home we may not enter ourselves."""
    if where == "inside":
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o700)
        home = locked / "home"
    else:
        home = locked = tmp_path / "home"
        mpjobs.App(home=home).store  # noqa: B018 - a real home, with its store
    locked.chmod(0o000)
    try:
        r = without_permission(*command, "--home", str(home))
    finally:
        locked.chmod(0o700)
    line = one_error_line(r)
    assert "Permission denied" in line and str(home) in line, line
    if where == "inside":
        assert not home.exists()


# -- options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, env",
    [
        (("--log-level", "BOGUS", "jobs", "list"), {}),
        (("jobs", "list", "--log-level", "BOGUS"), {}),
        (("jobs", "list"), {"MPJOBS_LOG_LEVEL": "BOGUS"}),
        (("run", "tasks:app", "--log-level", "BOGUS"), {}),
    ],
    ids=["before", "after", "env", "run"],
)
def test_unknown_log_level_is_one_line(
    app: mpjobs.App, home: Path, argv: tuple[str, ...], env: dict[str, str]
) -> None:
    app.store  # noqa: B018 - an existing home: the log level alone is wrong
    line = one_error_line(mpjobs_cli(*argv, "--home", str(home), **env))
    assert "unknown log level 'BOGUS'" in line, line
    assert ("MPJOBS_LOG_LEVEL" in line) == bool(env)


def test_unknown_status_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    line = one_error_line(mpjobs_cli("jobs", "list", "--status", "BOGUS", "--home", str(home)))
    assert "unknown status 'BOGUS'" in line and "SUCCESS" in line, line
    assert not home.exists()


def test_status_and_log_level_in_any_case_are_taken(app: mpjobs.App, home: Path) -> None:
    job = tasks.add.schedule(1, 2).delay(3600)
    r = mpjobs_cli(
        "jobs", "list", "--status", "scheduled", "--home", str(home), MPJOBS_LOG_LEVEL="debug"
    )
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()] == [job.id]


# -- a closed pipe -------------------------------------------------------------------------


def test_output_into_a_closed_pipe_exits_quietly(app: mpjobs.App, home: Path) -> None:
    app.push_many(tasks.add.schedule(i, i) for i in range(10))
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        r = subprocess.run(
            [sys.executable, "-m", "mpjobs", "jobs", "list", "--home", str(home)],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=30,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert r.stderr == "", r.stderr
    assert r.returncode == 141  # 128 + SIGPIPE, as a tool killed by SIGPIPE would


def test_jobs_list_into_head_exits_quietly(app: mpjobs.App, home: Path, tmp_path: Path) -> None:
    """More lines than a pipe holds, so the writer is still writing when `head` leaves."""
    app.push_many(tasks.add.schedule(i, i) for i in range(3000))
    err = tmp_path / "err"
    r = subprocess.run(
        f"'{sys.executable}' -m mpjobs jobs list --limit 3000 --home '{home}' 2>'{err}'"
        " | head -1",
        shell=True, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and "tasks.add" in lines[0], r.stdout
    assert err.read_text() == "" and r.stderr == "" and r.returncode == 0


# -- retry of a job whose unique key is live again ----------------------------------------


def test_retry_when_the_unique_key_is_live_again_is_one_line(app: mpjobs.App, home: Path) -> None:
    first = tasks.add.schedule(1, 1).options(unique_key="nightly").delay(3600)
    assert first.cancel()
    second = tasks.add.schedule(2, 2).options(unique_key="nightly").delay(3600)
    assert second.id != first.id
    line = one_error_line(mpjobs_cli("jobs", "retry", first.id, "--home", str(home)))
    assert f"job {first.id}" in line and "unique key" in line, line
    assert first.status is mpjobs.JobStatus.CANCELLED
    assert second.status is mpjobs.JobStatus.SCHEDULED


# -- schedules that are gone ---------------------------------------------------------------


def test_resume_or_pause_of_a_removed_schedule_raises_mpjobs_error(app: mpjobs.App) -> None:
    sched = tasks.add.schedule(1, 2).options(id="gone").every("1h")
    sched.pause()
    sched.remove()
    for action in (sched.resume, sched.pause, lambda: sched.reschedule(every="2h")):
        with pytest.raises(MpjobsError, match="'gone' does not exist") as caught:
            action()
        assert isinstance(caught.value, LookupError)  # what it was before: still caught
    assert app.get_schedule("gone") is None


# -- app.start() -------------------------------------------------------------------------


def _no_pool_left(before: set[int]) -> bool:
    return not [p for p in descendants() if p.pid not in before]


@pytest.fixture
def threaded() -> Iterator[None]:
    """Another thread runs, so app.start() must start the pool by fork+exec."""
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)


@pytest.mark.parametrize("path", ["fork", "exec"])
def test_start_with_a_bad_option_raises_in_the_caller(
    app: mpjobs.App, path: str, request: pytest.FixtureRequest
) -> None:
    if path == "exec":
        request.getfixturevalue("threaded")
    before = {p.pid for p in descendants()}
    with pytest.raises(TypeError, match="bogus"):
        app.start(workers=1, bogus=3)
    with pytest.raises(ValueError, match="workers"):
        app.start(workers=0)
    assert _no_pool_left(before)
    assert app.store.list_processes() == []


def test_start_from_a_thread_passes_its_options_to_the_exec_child(
    app: mpjobs.App, threaded: None
) -> None:
    """Options reach a pool started by exec exactly (here: a graceful timeout of 0.5 s)."""
    with app.start(workers=1, graceful_timeout=0.5, max_jobs_per_worker=1000) as pool:
        assert pool._proc is not None, "expected the exec path"
        procs = {p.token: p for p in app.store.list_processes()}
        assert pool.token in procs  # start() returned once the supervisor registered
        cmdline = psutil.Process(pool.pid).cmdline()
        assert '{"graceful_timeout": 0.5, "max_jobs_per_worker": 1000}' in cmdline


def test_start_raises_when_the_forked_supervisor_dies_before_it_is_up(
    app: mpjobs.App, home: Path
) -> None:
    app.store  # noqa: B018 - the home as start() finds it ...
    (home / "procs").rmdir()
    (home / "procs").write_text("")  # ... until no liveness lock can be taken in it
    started = time.monotonic()
    with pytest.raises(MpjobsError, match=r"exited before it was up: NotADirectoryError"):
        app.start(workers=1)
    assert time.monotonic() - started < 20
    assert app.store.list_processes() == []


def test_start_raises_when_the_exec_supervisor_dies_before_it_is_up(
    home: Path, threaded: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import breakable

    app = breakable.make_app(home)
    monkeypatch.setenv("MPJOBS_TEST_BREAK_IMPORT", "1")  # the child's import of it fails
    with pytest.raises(MpjobsError, match="RuntimeError: breakable: broken at import"):
        app.start(workers=1)
    assert app.store.list_processes() == []


@pytest.mark.sqlite_only  # about the SQLite file or its locks
def test_start_gives_up_on_a_supervisor_that_cannot_come_up(
    app: mpjobs.App, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the store's write lock: start() waits, bounded, then stops it."""
    import mpjobs.pool

    app.store  # noqa: B018
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
         "c.execute('BEGIN IMMEDIATE'); print('held', flush=True); sys.stdin.read()",
         str(home / "mpjobs.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            sqlite3.connect(home / "mpjobs.db", timeout=0).execute("BEGIN IMMEDIATE")
        monkeypatch.setattr(mpjobs.pool, "START_TIMEOUT", 1.0)
        before = {p.pid for p in descendants()}
        started = time.monotonic()
        with pytest.raises(MpjobsError, match="not up after 1 s"):
            app.start(workers=1)
        assert time.monotonic() - started < 10
        assert _no_pool_left(before)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
