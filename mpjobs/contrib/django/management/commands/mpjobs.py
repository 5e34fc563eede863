"""`manage.py mpjobs run|status|jobs|schedules ...`: mpjobs' own CLI, on a Django backend's App.

The arguments after `mpjobs` are mpjobs' CLI arguments (`mpjobs --help` lists them),
with the backend's App, home and store filled in: `manage.py mpjobs run --workers 4`
is `mpjobs run mpjobs.contrib.django.registry:default --workers 4 --home ... --store ...`.
`--backend ALIAS` (before the subcommand) picks another entry of settings.TASKS.

manage.py has already called `django.setup()` here, in what becomes the supervisor, so
the workers it forks inherit loaded settings, apps and task modules. Django's
connections are closed before every fork (registry.close_connections_before_fork), so
each worker opens its own.

Django's option parser is bypassed (`run_from_argv`): mpjobs' parser owns every
argument, so `--help`, errors and exit codes are mpjobs' own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from mpjobs.home import home_path

TARGET = "mpjobs.contrib.django.registry:{alias}"


def mpjobs_argv(argv: Sequence[str]) -> list[str]:
    """mpjobs' CLI arguments for `manage.py mpjobs ARGV`."""
    from mpjobs.contrib.django.backend import MpjobsBackend
    from mpjobs.contrib.django.compat import task_backends

    rest, alias = list(argv), "default"
    if rest and rest[0].startswith("--backend"):
        flag = rest.pop(0)
        if "=" in flag:
            alias = flag.split("=", 1)[1]
        elif rest:
            alias = rest.pop(0)
        else:
            raise CommandError("--backend needs an alias of settings.TASKS")
    if not rest or rest[0].startswith("-"):
        return rest  # `--help`, `--version`, or nothing: mpjobs' parser answers
    try:
        backend = task_backends[alias]
    except ImproperlyConfigured as exc:  # an alias not in TASKS, or a backend that won't load
        raise CommandError(f"--backend {alias}: {exc}") from None
    if not isinstance(backend, MpjobsBackend):
        raise CommandError(f"TASKS[{alias!r}] is a {type(backend).__name__}, not an MpjobsBackend")
    command, *tail = rest
    out = [command]
    if command == "run":
        out.append(TARGET.format(alias=alias))
    settings = backend.settings
    if "--home" not in tail and command in ("run", "status", "jobs", "schedules"):
        out += ["--home", str(home_path(settings.home))]
    if settings.store is not None and "--store" not in tail:
        out += ["--store", settings.store]
    return out + tail


def run_mpjobs(argv: Sequence[str]) -> int:
    from mpjobs.cli import main
    from mpjobs.contrib.django.registry import close_connections_before_fork

    try:
        args = mpjobs_argv(argv)
    except CommandError as exc:  # as mpjobs' own CLI reports a usage error: one line, exit 2
        print(f"mpjobs: error: {exc}", file=sys.stderr)
        return 2
    if args and args[0] == "run":
        close_connections_before_fork()
    return main(args)


class Command(BaseCommand):  # type: ignore[misc]
    help = "Run mpjobs workers for Django's tasks, or look at them: run | status | jobs | schedules"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("argv", nargs=argparse.REMAINDER, help="mpjobs CLI arguments")

    def run_from_argv(self, argv: list[str]) -> None:
        """`manage.py mpjobs ...`: everything after `mpjobs` goes to mpjobs' parser."""
        raise SystemExit(run_mpjobs(argv[2:]))

    def handle(self, *args: Any, **options: Any) -> None:
        """`call_command("mpjobs", "status", ...)`: the same, raising on a failure."""
        code = run_mpjobs([*options.get("argv", []), *args])
        if code:
            raise CommandError(f"mpjobs exited with {code}", returncode=code)
