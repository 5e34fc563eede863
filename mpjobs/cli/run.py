"""`mpjobs run`: a supervisor and its workers in this process, until SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from mpjobs.home import home_path
from mpjobs.loading import UsageError, load_app


def cmd_run(args: argparse.Namespace) -> int:
    report_fd: int | None = args.report_fd
    if report_fd is not None:
        os.set_inheritable(report_fd, False)  # for app.start() only, not for jobs' execs
    try:
        _run(args)
    except BaseException as exc:
        if report_fd is not None:
            from mpjobs.pool import report_failure

            report_failure(report_fd, exc)
        raise
    return 0


def _run(args: argparse.Namespace) -> None:
    from mpjobs.runtime.supervisor import Supervisor

    workers, queues, target = args.workers, args.queues, args.target
    if not args.config and target is None:
        raise UsageError("mpjobs run needs MODULE:APP or --config FILE")
    named = _named_home(args)
    if named is not None:
        # Before anything is imported: an App() without a home that a module creates and
        # uses at import (schedules declared there) must land in the home named, too,
        # and so must those of the workers, which inherit the environment.
        os.environ["MPJOBS_HOME"] = str(named)
    if args.config:
        from mpjobs.config.apply import apply_config

        app, cfg = apply_config(args.config, target=target, home=args.home)
        workers = workers or cfg.workers
        queues = queues or (",".join(cfg.queues) if cfg.queues else None)
    else:
        assert target is not None
        app = load_app(target)
    if args.home is not None:
        app._rehome(args.home)
    opts: dict[str, Any] = json.loads(args.supervisor_options) if args.supervisor_options else {}
    if args.parent_pid:
        opts["parent_pid"] = args.parent_pid
    for key in ("graceful_timeout", "max_jobs_per_worker", "max_memory_per_worker", "concurrency"):
        value = getattr(args, key)
        if value is not None:
            opts[key] = value
    Supervisor(
        app, workers=workers, queues=queues.split(",") if queues else None, token=args.token, **opts
    ).run()


def _named_home(args: argparse.Namespace) -> Path | None:
    """The home `mpjobs run` was told to use (--home, else the config's), if any."""
    if args.home is not None:
        return home_path(args.home)
    if args.config:
        from mpjobs.config.apply import check_file, config_home_of

        config_home = config_home_of(check_file(args.config))
        return None if config_home is None else home_path(config_home)
    return None
