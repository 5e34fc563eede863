from __future__ import annotations

import builtins
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from mpjobs.config import Config, load_config, run_class_handler
from mpjobs.errors import ConfigError
from mpjobs.scheduling.triggers import CronTrigger, DailyTrigger, IntervalTrigger


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


FULL_TOML = """
[mpjobs]
app = "pkg.mod:app"
home = "/var/lib/x"
workers = 4
queues = ["default", "mail"]
imports = ["pkg.tasks"]

[[mpjobs.jobs]]
id = "refresh-cache"
handler = "pkg.mod:func"
args = [1, 2]
kwargs = {x = 1}
initial_delay = "2h32m"
frequency = "30m"
queue = "mail"
priority = 5
max_attempts = 3
timeout = "30s"
memory_limit = "512MB"

[[mpjobs.jobs]]
handler = { class = "pkg.mod.MyJob", params = { some_param = "x" } }
frequency = "16:00"
tz = "Europe/Paris"

[[mpjobs.jobs]]
handler = "pkg.other.nightly"
frequency = "0 3 * * 1-5"
initial_delay = "startup"

[[mpjobs.jobs]]
handler = "pkg.other.once"
"""


def test_full_toml(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "mpjobs.toml", FULL_TOML))
    assert isinstance(cfg, Config)
    assert cfg.path == tmp_path / "mpjobs.toml"
    assert (cfg.app, cfg.home, cfg.workers) == ("pkg.mod:app", "/var/lib/x", 4)
    assert cfg.queues == ["default", "mail"]
    assert cfg.imports == ["pkg.tasks"]
    first, second, third, fourth = cfg.jobs

    assert first.id == "refresh-cache"
    assert (first.handler, first.handler_kind) == ("pkg.mod:func", "function")
    assert (first.args, first.kwargs, first.params) == ([1, 2], {"x": 1}, {})
    assert first.initial_delay == 9120.0
    assert (first.frequency_kind, first.frequency) == ("interval", 1800.0)
    assert (first.queue, first.priority, first.max_attempts) == ("mail", 5, 3)
    assert first.timeout == 30.0
    assert first.memory_limit == 512 * 1024**2

    assert second.id == "pkg.mod.MyJob"
    assert (second.handler, second.handler_kind) == ("pkg.mod.MyJob", "class")
    assert second.params == {"some_param": "x"}
    assert (second.frequency_kind, second.frequency, second.tz) == ("daily", "16:00",
                                                                    "Europe/Paris")
    assert (second.queue, second.priority, second.max_attempts) == ("default", 0, 1)
    assert (second.timeout, second.memory_limit, second.initial_delay) == (None, None, None)

    assert (third.frequency_kind, third.frequency) == ("cron", "0 3 * * 1-5")
    assert third.initial_delay == "startup"

    assert (fourth.frequency_kind, fourth.frequency) == (None, None)


def test_make_trigger(tmp_path: Path) -> None:
    first, second, third, fourth = load_config(write(tmp_path, "m.toml", FULL_TOML)).jobs
    assert first.make_trigger(100.0) == IntervalTrigger(1800.0, 100.0)
    assert second.make_trigger(100.0) == DailyTrigger(16, 0, "Europe/Paris")
    assert third.make_trigger(100.0) == CronTrigger("0 3 * * 1-5")
    assert fourth.make_trigger(100.0) is None


def test_minimal_files(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "a.toml", "[mpjobs]\n"))
    assert (cfg.app, cfg.home, cfg.workers, cfg.queues, cfg.imports, cfg.jobs) == (
        None, None, None, None, [], []
    )
    cfg = load_config(write(tmp_path, "a.yml", "mpjobs:\n  queues: a, b\n"))
    assert cfg.queues == ["a", "b"]


def test_seed_core_lib_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """
        core_lib:
          jobs:
            - initial_delay: 2h32m
              frequency: 16:00
              handler:
                class: some_package.MyJob
                params:
                  some_param: some value
            - initial_delay: startup
              frequency: None
              handler:
                class: some_package.SomeJob
                params: {}
        """,
    )
    first, second = load_config(path).jobs
    assert (first.handler, first.handler_kind) == ("some_package.MyJob", "class")
    assert first.params == {"some_param": "some value"}
    assert first.initial_delay == 2 * 3600 + 32 * 60
    # YAML 1.1 would read unquoted 16:00 as 960; mpjobs reads it as 16:00 every day.
    assert (first.frequency_kind, first.frequency) == ("daily", "16:00")
    assert second.handler == "some_package.SomeJob"
    assert second.params == {}
    assert second.initial_delay == "startup"
    assert (second.frequency_kind, second.frequency) == (None, None)


@pytest.mark.parametrize("text", ["frequency: 16:00", "frequency: '16:00'", 'frequency: "16:00"'])
def test_yaml_time_of_day_quoted_or_not(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "c.yaml", f"mpjobs:\n  jobs:\n    - handler: m.f\n      {text}\n")
    (job,) = load_config(path).jobs
    assert (job.frequency_kind, job.frequency) == ("daily", "16:00")


def test_toml_time_of_day(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", '[[mpjobs.jobs]]\nhandler = "m.f"\nfrequency = "7:05"\n')
    (job,) = load_config(path).jobs
    assert (job.frequency_kind, job.frequency) == ("daily", "07:05")


def test_integer_frequency_is_seconds(tmp_path: Path) -> None:
    toml = write(tmp_path, "c.toml", '[[mpjobs.jobs]]\nhandler = "m.f"\nfrequency = 960\n')
    yaml = write(tmp_path, "c.yaml", "mpjobs:\n  jobs:\n    - {handler: m.f, frequency: 960}\n")
    for path in (toml, yaml):
        (job,) = load_config(path).jobs
        assert (job.frequency_kind, job.frequency) == ("interval", 960.0)


def test_yaml_other_values_still_typed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        """
        mpjobs:
          workers: 3
          jobs:
            - handler: m.f
              args: [1, 2.5, true, null, "x"]
              priority: -1
              timeout: 1.5
        """,
    )
    cfg = load_config(path)
    assert cfg.workers == 3
    assert cfg.jobs[0].args == [1, 2.5, True, None, "x"]
    assert cfg.jobs[0].priority == -1
    assert cfg.jobs[0].timeout == 1.5


def test_cron_six_fields_and_keywords(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.toml",
        """
        [[mpjobs.jobs]]
        id = "a"
        handler = "m.f"
        frequency = "*/10 * * * * 30"
        [[mpjobs.jobs]]
        id = "b"
        handler = "m.f"
        frequency = "@hourly"
        """,
    )
    a, b = load_config(path).jobs
    assert (a.frequency_kind, b.frequency_kind) == ("cron", "cron")


def test_duration_with_spaces_is_not_cron(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", '[[mpjobs.jobs]]\nhandler = "m.f"\nfrequency = "1h 30m 15s"\n')
    (job,) = load_config(path).jobs
    assert (job.frequency_kind, job.frequency) == ("interval", 5415.0)


def test_handler_does_not_get_imported(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", '[[mpjobs.jobs]]\nhandler = "no_such_pkg_xyz.mod:f"\n')
    assert load_config(path).jobs[0].handler == "no_such_pkg_xyz.mod:f"
    assert "no_such_pkg_xyz" not in sys.modules


# -- errors ----------------------------------------------------------------------------


def error_for(tmp_path: Path, name: str, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, name, text))
    return str(info.value)


def test_error_names_file_entry_and_field(tmp_path: Path) -> None:
    msg = error_for(
        tmp_path,
        "mpjobs.toml",
        """
        [[mpjobs.jobs]]
        handler = "a.b"
        [[mpjobs.jobs]]
        handler = "a.c"
        [[mpjobs.jobs]]
        id = "refresh-cache"
        handler = "pkg.mod:func"
        frequency = "* * *"
        """,
    )
    assert msg.startswith(
        f"{tmp_path / 'mpjobs.toml'}: jobs[2] ('refresh-cache'): field 'frequency': "
        "invalid cron expression '* * *': "
    )


@pytest.mark.parametrize(
    ("job", "field", "fragment"),
    [
        ('frequency = "0 3 * * *"\ntz = "Mars/Base"', "tz", "unknown time zone 'Mars/Base'"),
        ('frequency = "30m"\ntz = "UTC"', "tz", "only applies"),
        ('frequency = "2x"', "frequency", "'2x'"),
        ('frequency = "25:00"', "frequency", "'25:00'"),
        ('frequency = "61 * * * *"', "frequency", "invalid cron expression"),
        ("frequency = 0", "frequency", "greater than zero"),
        ("frequency = true", "frequency", "True"),
        ('initial_delay = "soon"', "initial_delay", "'soon'"),
        ("initial_delay = -5", "initial_delay", "negative"),
        ('timeout = "0s"', "timeout", "greater than zero"),
        ('memory_limit = "lots"', "memory_limit", "'lots'"),
        ("max_attempts = 0", "max_attempts", "at least 1"),
        ('priority = "high"', "priority", "integer"),
        ("args = 5", "args", "list"),
        ("kwargs = [1]", "kwargs", "keyword"),
        ('queue = ""', "queue", "empty"),
    ],
)
def test_bad_job_fields(tmp_path: Path, job: str, field: str, fragment: str) -> None:
    text = f'[[mpjobs.jobs]]\nid = "j"\nhandler = "m.f"\n{job}\n'
    msg = error_for(tmp_path, "c.toml", text)
    assert f"c.toml: jobs[0] ('j'): field '{field}': " in msg
    assert fragment in msg


def test_unknown_job_key(tmp_path: Path) -> None:
    msg = error_for(tmp_path, "c.toml", '[[mpjobs.jobs]]\nhandler = "m.f"\nfrequncy = "5m"\n')
    assert "jobs[0] ('m.f')" in msg
    assert "'frequncy'" in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    msg = error_for(tmp_path, "c.toml", "[mpjobs]\nworker = 4\n")
    assert "c.toml" in msg and "'worker'" in msg


def test_core_lib_section_tolerates_other_app_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "core_lib:\n  cache: {type: memory}\n  jobs: []\n")
    assert load_config(path).jobs == []


@pytest.mark.parametrize(
    ("handler", "fragment"),
    [
        ('"justaname"', "function path"),
        ('"pkg.mod:"', "function path"),
        ('"pkg mod.f"', "function path"),
        ("5", "function path"),
        ('{ params = {} }', "handler.class"),
        ('{ class = "a.B", param = {} }', "'param'"),
        ('{ class = "a.B", params = [1] }', "handler.params"),
    ],
)
def test_bad_handlers(tmp_path: Path, handler: str, fragment: str) -> None:
    msg = error_for(tmp_path, "c.toml", f"[[mpjobs.jobs]]\nhandler = {handler}\n")
    assert "jobs[0]" in msg and "field 'handler'" in msg
    assert fragment in msg


def test_missing_handler(tmp_path: Path) -> None:
    msg = error_for(tmp_path, "c.toml", '[[mpjobs.jobs]]\nfrequency = "5m"\n')
    assert "jobs[0]" in msg and "'handler'" in msg


def test_class_handler_rejects_args(tmp_path: Path) -> None:
    msg = error_for(
        tmp_path, "c.toml", '[[mpjobs.jobs]]\nhandler = {class = "a.B"}\nargs = [1]\n'
    )
    assert "field 'args'" in msg


def test_duplicate_ids(tmp_path: Path) -> None:
    msg = error_for(
        tmp_path, "c.toml", '[[mpjobs.jobs]]\nhandler = "m.f"\n[[mpjobs.jobs]]\nhandler = "m.f"\n'
    )
    assert "jobs[1] ('m.f'): field 'id': duplicate job id 'm.f' (also jobs[0])" in msg


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[mpjobs]\nworkers = 0\n", "field 'workers'"),
        ("[mpjobs]\nworkers = true\n", "field 'workers'"),
        ('[mpjobs]\napp = "no_colon"\n', "field 'app'"),
        ("[mpjobs]\nqueues = [1]\n", "field 'queues'"),
        ('[mpjobs]\nimports = ["bad name"]\n', "field 'imports'"),
        ('[mpjobs]\njobs = "x"\n', "field 'jobs'"),
        ("[other]\nx = 1\n", "no 'mpjobs' section"),
        ("[mpjobs]\n[core_lib]\n", "both"),
        ("[mpjobs\n", "invalid TOML"),
        ("mpjobs = 3\n", "section 'mpjobs'"),
    ],
)
def test_bad_toml_files(tmp_path: Path, text: str, fragment: str) -> None:
    msg = error_for(tmp_path, "c.toml", text)
    assert msg.startswith(str(tmp_path / "c.toml"))
    assert fragment in msg


def test_bad_yaml_files(tmp_path: Path) -> None:
    assert "invalid YAML" in error_for(tmp_path, "c.yaml", "mpjobs: [\n")
    assert "top level" in error_for(tmp_path, "c.yml", "- 1\n- 2\n")


def test_unsupported_extension_and_missing_file(tmp_path: Path) -> None:
    assert "unsupported" in error_for(tmp_path, "c.json", "{}")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_yaml_missing_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "yaml":
            raise ImportError("No module named 'yaml'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    msg = error_for(tmp_path, "c.yaml", "mpjobs: {}\n")
    assert "install mpjobs[yaml]" in msg


# -- run_class_handler -----------------------------------------------------------------


class _Job:
    def __init__(self, some_param: str) -> None:
        self.some_param = some_param

    def run(self) -> str:
        return f"ran with {self.some_param}"


@pytest.fixture
def fake_module(monkeypatch: pytest.MonkeyPatch) -> str:
    module = types.ModuleType("mpjobs_test_fake_jobs")
    module._Job = _Job  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.__name__


def test_run_class_handler(fake_module: str) -> None:
    assert run_class_handler(f"{fake_module}._Job", {"some_param": "x"}) == "ran with x"
    assert run_class_handler(f"{fake_module}:_Job", {"some_param": "y"}) == "ran with y"


def test_run_class_handler_import_errors(fake_module: str) -> None:
    with pytest.raises(ImportError, match="no_such_pkg_xyz"):
        run_class_handler("no_such_pkg_xyz.Job", {})
    with pytest.raises(ImportError, match="'Missing'"):
        run_class_handler(f"{fake_module}.Missing", {})
