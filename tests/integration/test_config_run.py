"""`mpjobs run --config FILE`: TOML and YAML configs run by real supervisors.

Handlers live in tests/apps/config_tasks.py and record "label pid" lines in a file. The
subprocesses get TZ=Europe/Paris, so "16:00" is checked against a wall clock that is not
UTC. Nothing waits for 16:00 or 03:00: those schedules are checked through their next run
time, and their "startup" runs through the one-time jobs they add.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psutil
import pytest
from config_tasks import labels
from conftest import store_opened, wait_for

import mpjobs
from mpjobs.config_apply import apply_config, check_file
from mpjobs.errors import ConfigError
from mpjobs.store.base import JobRecord

PARIS = ZoneInfo("Europe/Paris")

TOML = """
[mpjobs]
workers = 2
imports = ["config_tasks"]

[[mpjobs.jobs]]
id = "tick"
handler = "config_tasks:note"
args = [@OUT@, "tick"]
frequency = "1s"
initial_delay = "startup"

[[mpjobs.jobs]]
id = "greet"
frequency = "1s"
initial_delay = "startup"
[mpjobs.jobs.handler]
class = "config_tasks.Greeter"
params = { out = @OUT@, greeting = "hello", name = "toml" }

[[mpjobs.jobs]]
id = "teatime"
handler = "config_tasks:note"
args = [@OUT@, "teatime"]
frequency = "16:00"

[[mpjobs.jobs]]
id = "nightly"
handler = "config_tasks:note"
args = [@OUT@, "nightly"]
frequency = "0 3 * * *"
tz = "UTC"
initial_delay = "startup"

[[mpjobs.jobs]]
id = "boot"
handler = "config_tasks:note"
kwargs = { out = @OUT@, label = "boot" }
initial_delay = "startup"

[[mpjobs.jobs]]
id = "later"
handler = "config_tasks:note"
args = [@OUT@, "later"]
initial_delay = "1s"

[[mpjobs.jobs]]
id = "missing-func"
handler = "no_such_module_xyz:run"

[[mpjobs.jobs]]
id = "missing-class"
handler = { class = "no_such_module_xyz.Job", params = { x = 1 } }
"""

# core-lib layout: other core_lib settings are tolerated, `frequency: 16:00` is unquoted.
YAML = """
core_lib:
  cache: {type: memory}
  workers: 2
  jobs:
    - id: tick
      handler: config_tasks.note
      args: [@OUT@, tick]
      frequency: 1s
      initial_delay: startup
    - id: greet
      frequency: 16:00
      handler:
        class: config_tasks.Greeter
        params: {out: @OUT@, greeting: hi, name: yaml}
    - id: boot
      initial_delay: startup
      frequency: None
      handler: config_tasks:once
      args: [@OUT@, boot, @RELEASE@]
    - id: nightly
      handler: config_tasks:once
      args: [@OUT@, nightly, @RELEASE@]
      frequency: "0 3 * * *"
      initial_delay: startup
"""


# core-lib's documented example: a delay with a clock-time frequency is refused.
CORE_LIB_DOC_EXAMPLE = """
core_lib:
  jobs:
    - initial_delay: 2h32m
      frequency: 16:00
      handler:
        class: some_package.MyJob
        params:
          some_param: some value
"""


def write_config(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    text = textwrap.dedent(text)
    for key, value in (("@OUT@", tmp_path / "out"), ("@RELEASE@", tmp_path / "release")):
        text = text.replace(key, json.dumps(str(value)))  # a valid TOML and YAML string
    path.write_text(text)
    return path


def start(config: Path, home: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mpjobs", "run", "--config", str(config),
             "--home", str(home), "--workers", "2"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "TZ": "Europe/Paris"},
        )  # fmt: skip


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM; the supervisor must exit 0 and take all its processes with it."""
    family = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError(f"supervisor ignored SIGTERM:\n{log.read_text()}") from None
    assert rc == 0, f"exit code {rc}:\n{log.read_text()}"
    wait_for(lambda: not [p for p in family if p.is_running() and
                          p.status() != psutil.STATUS_ZOMBIE],
             timeout=15, what="the supervisor's children to exit")  # fmt: skip


def open_home(home: Path) -> mpjobs.App:
    wait_for(lambda: store_opened(home), timeout=20, what="the store to appear")
    return mpjobs.App(home=home)


def records(app: mpjobs.App, name: str) -> list[JobRecord]:
    return [r for r in app.store.list_jobs(None, None, 10_000) if r.name == name]


def live_supervisors(app: mpjobs.App) -> int:
    return sum(
        1 for p in app.store.list_processes()
        if p.kind == "supervisor" and app.backend.liveness.alive(p.token)
    )  # fmt: skip


def next_run(app: mpjobs.App, schedule_id: str, tz: ZoneInfo) -> datetime:
    sched = app.get_schedule(schedule_id)
    assert sched is not None and sched.next_run_time is not None
    return sched.next_run_time.astimezone(tz)


@pytest.mark.timeout(90)
def test_toml_config_runs_every_kind_of_entry(tmp_path: Path) -> None:
    config, home, log, out = (write_config(tmp_path, "mpjobs.toml", TOML), tmp_path / "home",
                              tmp_path / "sup.log", tmp_path / "out")  # fmt: skip
    t0 = time.time()
    proc = start(config, home, log)
    try:
        app = open_home(home)

        def done() -> bool:
            seen = labels(out)
            failed = [r for n in ("missing-func", "missing-class") for r in records(app, n)
                      if r.status == "FAILED"]  # fmt: skip
            return (seen.count("tick") >= 2 and "hello-toml" in seen and "boot" in seen
                    and "nightly" in seen and "later" in seen and len(failed) == 2)  # fmt: skip

        wait_for(done, timeout=30, home=home, what=f"the config's jobs to run; {labels(out)}")
        assert proc.poll() is None, "a failing handler must not take the supervisor down"

        assert {s.id for s in app.schedules()} == {"tick", "greet", "teatime", "nightly"}
        teatime = next_run(app, "teatime", PARIS)  # "16:00" is every day at 16:00 local time
        assert (teatime.hour, teatime.minute, teatime.second) == (16, 0, 0)
        assert 0 < teatime.timestamp() - t0 <= 25 * 3600
        nightly = next_run(app, "nightly", ZoneInfo("UTC"))
        assert (nightly.hour, nightly.minute) == (3, 0)

        def one_time(name: str) -> list[Any]:
            return [r for r in records(app, name) if r.schedule_id is None]

        for name in ("boot", "later", "nightly"):  # one-time jobs, incl. cron's startup run
            # its output is written before its result commits (results go in batches)
            wait_for(lambda n=name: [r.status for r in one_time(n)] == ["SUCCESS"], 15,
                     home=home, what=f"the one-time job {name} to be recorded")  # fmt: skip
            (rec,) = one_time(name)
            assert rec.unique_key == f"config:{name}" and rec.status == "SUCCESS"
        (later,) = records(app, "later")
        assert later.exec_at - later.created_at == pytest.approx(1.0, abs=0.05)
        for name in ("missing-func", "missing-class"):
            (rec,) = records(app, name)
            assert rec.error and "cannot import 'no_such_module_xyz" in rec.error, rec.error
    finally:
        stop(proc, log)
    assert app.store.list_jobs("RUNNING", None, 100) == []


@pytest.mark.timeout(90)
def test_yaml_config_in_two_supervisors_at_once(tmp_path: Path) -> None:
    config, home, out = (
        write_config(tmp_path, "mpjobs.yaml", YAML),
        tmp_path / "home",
        tmp_path / "out",
    )
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start(config, home, log) for log in logs]
    try:
        app = open_home(home)
        # Both supervisors register after applying the config, and the one-time jobs cannot
        # finish before `release` exists: both applied it while the first copies were still
        # waiting or running, so neither may have added a second copy.
        wait_for(lambda: live_supervisors(app) == 2, timeout=30, home=home, what="2 supervisors")
        (tmp_path / "release").touch()
        wait_for(lambda: {"boot-end", "nightly-end"} <= set(labels(out))
                 and labels(out).count("tick") >= 3,
                 timeout=30, home=home, what="the jobs to run")  # fmt: skip
    finally:
        for proc, log in zip(procs, logs, strict=True):
            stop(proc, log)
    seen = labels(out)
    assert seen.count("boot-start") == 1 and seen.count("nightly-start") == 1, seen
    assert [r.status for r in records(app, "boot")] == ["SUCCESS"]
    assert sorted(s.id for s in app.schedules()) == ["greet", "nightly", "tick"]
    fires = [r.exec_at for r in records(app, "tick")]
    assert len(fires) == len(set(fires)) >= 3  # each fire of the interval became one job
    greet = next_run(app, "greet", PARIS)  # unquoted YAML 16:00 is 16:00, not 960 seconds
    assert (greet.hour, greet.minute) == (16, 0)
    assert app.store.list_jobs("RUNNING", None, 100) == []


BAD = {
    "cron.toml": (
        '[[mpjobs.jobs]]\nid = "j"\nhandler = "m:f"\nfrequency = "61 * * * *"\n',
        "jobs[0] ('j'): field 'frequency': invalid cron expression",
    ),
    "field.toml": (
        '[[mpjobs.jobs]]\nid = "j"\nhandler = "m:f"\nmax_attempts = 0\n',
        "jobs[0] ('j'): field 'max_attempts': must be at least 1",
    ),
    "unknown.yaml": (
        "mpjobs:\n  jobs:\n    - {id: j, handler: 'm:f', frequncy: 5m}\n",
        "jobs[0] ('j'): unknown field 'frequncy'",
    ),
    "delay.yaml": (
        "mpjobs:\n  jobs:\n    - {id: j, handler: 'm:f', frequency: 16:00, initial_delay: 2h32m}\n",
        "jobs[0] ('j'): field 'initial_delay': a delay (9120s) cannot be combined",
    ),
    "imports.toml": (
        '[mpjobs]\nimports = ["no_such_module_xyz"]\n',
        "field 'imports': cannot import 'no_such_module_xyz'",
    ),
    "app.toml": ('[mpjobs]\napp = "no_such_module_xyz:app"\n', "field 'app': cannot import"),
    "syntax.yaml": ("mpjobs:\n  jobs: [\n", "invalid YAML: "),
}


def test_bad_configs_exit_2_with_one_line(tmp_path: Path) -> None:
    procs = {}
    for name, (text, _) in BAD.items():
        (tmp_path / name).write_text(text)
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "mpjobs", "run", "--config", name, "--home", "home-" + name],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=30)
        lines = stderr.decode().strip().splitlines()
        assert proc.returncode == 2, (name, stderr.decode())
        assert len(lines) == 1, (name, lines)
        assert lines[0].startswith(f"mpjobs: error: {name}: "), lines
        assert BAD[name][1] in lines[0], lines[0]
        assert not (tmp_path / f"home-{name}").exists(), "a bad config must not touch the home"


def test_apply_twice_is_idempotent_and_home_precedence(tmp_path: Path) -> None:
    """What a restart does, in-process: same schedules, same phase, one one-time job."""
    config = write_config(tmp_path, "c.toml", TOML.replace("workers = 2", 'home = "state"'))
    app, cfg = apply_config(config)
    assert app.home.path == tmp_path / "state"  # relative to the config file
    assert app.imports == ["config_tasks"] and cfg.workers is None
    before = {s.id: s.next_run_time for s in app.schedules()}
    boot = app.jobs()
    again, _ = apply_config(config)
    assert {s.id: s.next_run_time for s in again.schedules()} == before
    assert [j.id for j in again.jobs()] == [j.id for j in boot]  # nothing pushed twice
    assert len(before) == 4 and len(boot) == 5  # boot, later, 2 missing, nightly's startup

    other, _ = apply_config(config, home=str(tmp_path / "cli"))  # --home wins
    assert other.home.path == tmp_path / "cli"

    import config_tasks

    with_app = write_config(tmp_path, "d.toml", '[mpjobs]\napp = "config_tasks:app"\n')
    loaded, _ = apply_config(with_app, home=str(tmp_path / "h2"))
    assert loaded is config_tasks.app and loaded.home.path == tmp_path / "h2"
    plain = write_config(tmp_path, "e.toml", '[mpjobs]\nhome = "h3"\n')
    loaded, _ = apply_config(plain, target="config_tasks:app")  # MODULE:APP on the CLI
    assert loaded is config_tasks.app and loaded.home.path == tmp_path / "h3"
    with pytest.raises(ConfigError, match=r"field 'initial_delay'"):
        check_file(write_config(tmp_path, "f.yaml", CORE_LIB_DOC_EXAMPLE))
    with pytest.raises(ConfigError, match=r"d\.toml: field 'app'"):
        apply_config(write_config(tmp_path, "d.toml", '[mpjobs]\napp = "config_tasks:nope"\n'))
