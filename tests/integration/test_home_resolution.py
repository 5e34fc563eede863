"""The home you name is the home you get (issue 9, item 11).

`mpjobs run MODULE:APP --home H` must resolve H before the module is imported, so what
the module declares at import lands in H; an App declared with another home is refused;
and the commands that only look never create a home or a store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import store_opened, wait_for

import mpjobs
from mpjobs import JobStatus


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MPJOBS_HOME"}
    env.update(extra)
    return env


def mpjobs_cli(
    *args: str, cwd: Path, timeout: float = 30, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpjobs", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env=_env(**env),
    )  # fmt: skip


def _one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpjobs: error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def _ticks_in(home: Path) -> int:
    if not store_opened(home):
        return 0
    app = mpjobs.App(home=home)
    sched = app.get_schedule("tick")
    if sched is None:
        return 0
    return sum(j.status is JobStatus.SUCCESS for j in sched.jobs())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a running `mpjobs run` and wait for it; kill it if it is stuck."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("named_by", ["--home", "config"])
def test_schedules_declared_at_import_fire_in_the_home_named(tmp_path: Path, named_by: str) -> None:
    cwd, home = tmp_path / "cwd", tmp_path / "named"
    cwd.mkdir()
    argv = [sys.executable, "-m", "mpjobs", "run", "--workers", "1", "--graceful-timeout", "5"]
    if named_by == "--home":
        argv += ["import_schedules:app", "--home", str(home)]
    else:  # the config file's home, relative to the file
        config = tmp_path / "mpjobs.toml"
        config.write_text('[mpjobs]\napp = "import_schedules:app"\nhome = "named"\n')
        argv += ["--config", str(config)]
    log = tmp_path / "run.log"  # a file, not a pipe nobody reads while it runs
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=_env(), stdout=out, stderr=out)
    try:
        wait_for(lambda: _ticks_in(home) >= 2 or proc.poll() is not None, 30,
                 what="two fires of the import-time schedule in the named home")  # fmt: skip
        assert proc.poll() is None, log.read_text()
    finally:
        _stop(proc)
    assert proc.returncode == 0, log.read_text()
    assert _ticks_in(home) >= 2
    assert not (cwd / ".mpjobs").exists(), "the module's schedule went to ./.mpjobs"
    assert os.listdir(cwd) == []


def test_app_declared_with_another_home_is_refused_and_with_the_same_home_runs(
    tmp_path: Path,
) -> None:
    declared, named = tmp_path / "declared", tmp_path / "named"
    r = mpjobs_cli("run", "declared_home:app", "--home", str(named), "--workers", "1",
                   cwd=tmp_path, timeout=20, DECLARED_HOME=str(declared))  # fmt: skip
    line = _one_error_line(r)
    assert str(declared) in line and str(named) in line, line
    assert not named.exists()

    # The same directory spelt differently (relative, absolute) is the same home.
    home = tmp_path / "h"
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mpjobs", "run", "declared_home:app", "--workers", "1",
             "--home", str(home)],
            cwd=tmp_path, env=_env(DECLARED_HOME="h"), stdout=out, stderr=out,
        )  # fmt: skip
    try:
        wait_for(lambda: proc.poll() is not None or store_opened(home), 20,
                 what="the store")  # fmt: skip
        assert proc.poll() is None, log.read_text()
        job = mpjobs.App(home=home).schedule("declared_home:hello").now()
        assert job.wait(20).result() == "hello"
    finally:
        _stop(proc)
    assert proc.returncode == 0, log.read_text()


READ_ONLY = [
    ("status",),
    ("status", "--json"),
    ("jobs", "list"),
    ("jobs", "show", "1"),
    ("schedules", "list"),
]


@pytest.mark.sqlite_only  # about the SQLite file or its locks
@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_read_only_command_on_a_missing_home_says_so_and_creates_nothing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    missing = tmp_path / "typo"
    r = mpjobs_cli(*command, "--home", str(missing), cwd=tmp_path)
    line = _one_error_line(r)
    assert f"no mpjobs home at {missing}" in line, line
    assert r.stdout == ""
    assert not missing.exists()
    # Without --home the default, ./.mpjobs, is not created either.
    r = mpjobs_cli(*command, cwd=tmp_path)
    assert "no mpjobs home at" in _one_error_line(r)
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.sqlite_only  # about the SQLite file or its locks
@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_read_only_command_on_a_home_without_store_creates_no_store(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    home = tmp_path / "empty"
    home.mkdir(mode=0o700)
    r = mpjobs_cli(*command, "--home", str(home), cwd=tmp_path)
    assert "no mpjobs store in" in _one_error_line(r)
    assert os.listdir(home) == []
