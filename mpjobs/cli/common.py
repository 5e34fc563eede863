"""What every command shares: the App on an existing home, times, the one-line parser."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from typing import Any, NoReturn

from mpjobs.app import App
from mpjobs.home import Home
from mpjobs.job import JobStatus
from mpjobs.loading import UsageError
from mpjobs.scheduling.durations import parse_duration
from mpjobs.store.base import JobFilter
from mpjobs.store.postgres.url import store_from


def existing_app(args: argparse.Namespace) -> App:
    """An App on the home named, which must exist: these commands never create one.

    With a shared store (PostgreSQL) the jobs are not in the home, so a host that only
    looks (`mpjobs status` on an operator's box) gets a home made for it.
    """
    home = Home.resolve(args.home) if store_from(None) else Home.existing(args.home)
    app = App(home=home.path)
    app._home = home
    return app


def ts(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other error a user can fix."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"mpjobs: error: {message} (see: {self.prog} --help)\n")


def log_level(raw: str, source: str = "--log-level") -> int:
    """A logging level from its name (any case) or number; UsageError naming `source`."""
    name = raw.strip().upper()
    if name.isdigit():
        return int(name)
    level = logging.getLevelName(name)  # a name's number; for an unknown name, a string
    if not isinstance(level, int):
        choices = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise UsageError(f"unknown log level {raw!r} in {source}; expected one of {choices}")
    return level


def job_status(raw: str) -> str:
    """A job status from its name in any case, as `--status` takes it."""
    try:
        return JobStatus(raw.upper()).value
    except ValueError:
        choices = ", ".join(s.value for s in JobStatus)
        raise argparse.ArgumentTypeError(
            f"unknown status {raw!r}; expected one of {choices}"
        ) from None


def duration(raw: str) -> float:
    """A duration for `--older-than` ("7d", "12h", "90s"), as argparse takes it."""
    try:
        return parse_duration(raw, what="--older-than")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def filter_of(args: argparse.Namespace) -> JobFilter:
    """The jobs `--status` (repeatable), `--queue` and `--task` name."""
    return JobFilter(
        statuses=tuple(dict.fromkeys(getattr(args, "status", None) or ())),
        queue=getattr(args, "queue", None),
        name=getattr(args, "task", None),
    )
