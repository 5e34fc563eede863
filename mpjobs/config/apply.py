"""Turn a loaded config file into an App plus schedules and jobs in its home.

`mpjobs run --config FILE` calls `apply_config` before it starts the supervisor. Every
entry is applied under a stable id, so restarting, or starting several supervisors
from the same file at once, updates the same rows instead of adding new ones:

- an entry with a frequency becomes a schedule whose id is the entry's `id`
  (re-declaring it keeps its phase and next fire time, see `schedules.declare`);
- an entry without one is one job pushed with `unique_key = "config:<id>"`: while a copy
  is waiting or running, another start returns that copy instead of adding a second. It
  therefore runs once per start of the system (like core-lib's run-once jobs), not once
  per supervisor;
- `initial_delay = "startup"` on a cron or daily entry also pushes such a one-time job.

Everything that can be checked is checked before anything is written, so a bad file
changes nothing in the home.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from mpjobs.app import App, JobBuilder
from mpjobs.config.check import check_config
from mpjobs.config.load import load_config
from mpjobs.config.spec import Config, JobSpec, Where
from mpjobs.job import Job
from mpjobs.loading import UsageError, load_app
from mpjobs.scheduling.schedules import Schedule

__all__ = [
    "CLASS_RUNNER",
    "apply_config",
    "apply_jobs",
    "builder_for",
    "check_config",
    "check_file",
    "config_home_of",
]

log = logging.getLogger("mpjobs.config")

CLASS_RUNNER = "mpjobs.config:run_class_handler"
"""What a worker runs for a class handler: it instantiates the class and calls run()."""


def apply_config(
    path: str | os.PathLike[str], target: str | None = None, home: str | None = None
) -> tuple[App, Config]:
    """Load `path`, build its App, and declare its jobs in the App's home.

    The App is the CLI `target` (MODULE:APP) if given, else the config's `app`, else a new
    App with the config's `imports`. The home is the CLI `home`, else the config's `home`
    (relative to the config file's directory), else the App's own. Raises ConfigError
    naming the file, entry and field.
    """
    cfg = check_file(path)
    config_dir = str(cfg.path.absolute().parent)
    if config_dir not in sys.path:
        sys.path.append(config_dir)  # handlers next to the config file can be imported
    _import_modules(cfg)
    chosen_home = home if home is not None else config_home_of(cfg)
    app = _make_app(cfg, target, chosen_home)
    apply_jobs(app, cfg)
    return app, cfg


def check_file(path: str | os.PathLike[str]) -> Config:
    """Load and check a config file without importing or writing anything."""
    cfg = load_config(path)
    check_config(cfg)
    return cfg


def builder_for(app: App, spec: JobSpec) -> JobBuilder[Any]:
    """The job one entry describes (handler, arguments, options), not yet scheduled."""
    if spec.handler_kind == "class":
        builder = app.schedule(CLASS_RUNNER, spec.handler, dict(spec.params))
    else:
        builder = app.schedule(spec.handler, *spec.args, **spec.kwargs)
    return builder.options(
        name=spec.id,
        queue=spec.queue,
        priority=spec.priority,
        max_attempts=spec.max_attempts,
        timeout=spec.timeout,
        memory_limit=spec.memory_limit,
    )


def apply_jobs(app: App, cfg: Config) -> list[Schedule | Job[Any]]:
    """Declare every entry of `cfg` in `app`'s home; idempotent per entry id."""
    check_config(cfg)
    done: list[Schedule | Job[Any]] = []
    for spec in cfg.jobs:
        builder = builder_for(app, spec)
        if spec.frequency_kind is None:
            done.append(_push_once(builder, spec, spec.initial_delay))
            continue
        recurring = builder.options(id=spec.id)
        schedule: Schedule
        if spec.frequency_kind == "interval":
            assert isinstance(spec.frequency, float)
            # None: one interval from now; "startup": now; a number: after that delay.
            schedule = recurring.every(spec.frequency, start=spec.initial_delay)
        elif spec.frequency_kind == "cron":
            assert isinstance(spec.frequency, str)
            schedule = recurring.cron(spec.frequency, spec.tz)
        else:
            assert isinstance(spec.frequency, str)
            schedule = recurring.daily(spec.frequency, spec.tz)
        nrt = schedule.next_run_time
        log.info(
            "config %s: schedule %r (%s), next run %s",
            cfg.path, spec.id, schedule.trigger, nrt.astimezone() if nrt else "-",
        )  # fmt: skip
        done.append(schedule)
        if spec.frequency_kind != "interval" and spec.initial_delay == "startup":
            done.append(_push_once(builder, spec, "startup"))
    return done


def _push_once(builder: JobBuilder[Any], spec: JobSpec, delay: float | str | None) -> Job[Any]:
    once = builder.options(unique_key=f"config:{spec.id}")
    job = once.delay(delay) if isinstance(delay, (int, float)) else once.now()
    log.info("config: one-time job %r is job %s, runs at %s", spec.id, job.id,
             job.exec_at.astimezone())  # fmt: skip
    return job


def config_home_of(cfg: Config) -> str | None:
    """The config's `home`, with ~ expanded and relative to the config file's directory."""
    if cfg.home is None:
        return None
    home = Path(os.path.expanduser(cfg.home))
    if not home.is_absolute():
        home = cfg.path.absolute().parent / home
    return str(home)


def _import_modules(cfg: Config) -> None:
    """Import `imports` now, so a typo is a config error and not a worker boot loop."""
    for name in cfg.imports:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise Where(cfg.path).error(
                f"cannot import {name!r}: {type(exc).__name__}: {exc}", "imports"
            ) from exc


def _make_app(cfg: Config, target: str | None, home: str | None) -> App:
    app_path = target if target is not None else cfg.app
    if app_path is None:
        return App(home=home, imports=cfg.imports)
    try:
        app = load_app(app_path)
    except UsageError as exc:
        if target is not None:
            raise
        raise Where(cfg.path).error(str(exc), "app") from exc
    app.imports.extend(name for name in cfg.imports if name not in app.imports)
    if home is not None:
        app._home_arg, app._home = home, None
    return app
