"""The command line's grammar: every command, every option, each with its help text."""

from __future__ import annotations

import argparse

import mpjobs
from mpjobs.cli.common import Parser, duration, job_status
from mpjobs.cli.jobs import cmd_jobs, cmd_schedules
from mpjobs.cli.run import cmd_run
from mpjobs.cli.serve import cmd_dashboard, cmd_metrics
from mpjobs.cli.status import cmd_status
from mpjobs.operations import SCHEDULE_ACTIONS

DESCRIPTION = "mpjobs: run a supervisor, and look at or act on a home from the shell."
_LEVEL = "default INFO, or $MPJOBS_LOG_LEVEL"
_FORMAT = "log lines as text (default) or json, one object a line; or $MPJOBS_LOG_FORMAT"
_FILE = "write log lines to this file instead of stderr; or $MPJOBS_LOG_FILE"
_HOME = "the home directory (default $MPJOBS_HOME, else ./.mpjobs)"


def _logging_options(p: argparse.ArgumentParser, default: object) -> None:
    p.add_argument("--log-level", default=default, help=_LEVEL)
    p.add_argument("--log-format", default=default, choices=["text", "json"], help=_FORMAT)
    p.add_argument("--log-file", default=default, metavar="PATH", help=_FILE)


def _filters(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--status", type=job_status, action="append",
        help=f"{what} jobs in this status (any case; repeat for several)",
    )  # fmt: skip
    p.add_argument("--queue", help=f"{what} jobs of this queue only")
    p.add_argument("--task", help=f"{what} jobs of this task (its name, e.g. tasks.add) only")


def _run_parser(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    run = sub.add_parser("run", parents=[common], help="run a supervisor and its workers")
    run.add_argument("target", nargs="?", help="MODULE:APP")
    run.add_argument("--workers", type=int, help="worker processes (default: CPU count)")
    run.add_argument("--queues", help="comma-separated queue names")
    run.add_argument("--config", help="a TOML or YAML config file")
    run.add_argument("--graceful-timeout", type=float, help="seconds a stop waits for jobs")
    run.add_argument("--max-jobs-per-worker", type=int, help="replace a worker after N jobs")
    run.add_argument("--max-memory-per-worker", help="replace a worker over this RSS (e.g. 1G)")
    run.add_argument("--concurrency", type=int, help="async jobs at once per worker")
    run.add_argument("--token", help=argparse.SUPPRESS)
    run.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    # app.start() through exec: its options as JSON, and a pipe to report a failed start.
    run.add_argument("--supervisor-options", help=argparse.SUPPRESS)
    run.add_argument("--report-fd", type=int, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mpjobs", description=DESCRIPTION)
    parser.add_argument(
        "--version", action="version", version=f"mpjobs {mpjobs.__version__}",
        help="print the version and exit",
    )  # fmt: skip
    _logging_options(parser, None)
    sub = parser.add_subparsers(dest="command", required=True)
    common = Parser(add_help=False)
    _logging_options(common, argparse.SUPPRESS)
    common.add_argument(
        "--store", default=argparse.SUPPRESS,
        help="a postgresql:// URL shared by hosts (default $MPJOBS_STORE, else SQLite)",
    )  # fmt: skip
    common.add_argument("--home", help=_HOME)
    _run_parser(sub, common)

    status = sub.add_parser("status", parents=[common], help="supervisors, workers, leader, queues")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.add_argument("--watch", action="store_true", help="show again every second")
    status.set_defaults(func=cmd_status)

    jobs = sub.add_parser(
        "jobs", parents=[common], help="list, show, cancel, retry or purge jobs"
    )
    jobs.add_argument(
        "action", choices=["list", "show", "cancel", "retry", "purge"],
        help="cancel and retry take a job id, or a filter (--status ...) for many jobs",
    )  # fmt: skip
    jobs.add_argument("id", nargs="?", help="a job id")
    _filters(jobs, "only")
    jobs.add_argument("--search", help="list: jobs whose id, task, arguments or error hold this")
    jobs.add_argument("--before", type=int, help="list: jobs with ids below this (next page)")
    jobs.add_argument("--limit", type=int, default=50, help="list: at most this many (50)")
    jobs.add_argument("--terminate", action="store_true", help="cancel: also stop running jobs")
    jobs.add_argument(
        "--older-than", type=duration, help="purge: jobs finished longer ago than this (7d)"
    )
    jobs.add_argument("--json", action="store_true", help="print JSON instead of text")
    jobs.set_defaults(func=cmd_jobs)

    scheds = sub.add_parser(
        "schedules", parents=[common], help="list, pause, resume, run now or remove schedules"
    )
    scheds.add_argument(
        "action", choices=["list", *SCHEDULE_ACTIONS], help="run: push one job now"
    )
    scheds.add_argument("id", nargs="?", help="a schedule id")
    scheds.add_argument("--json", action="store_true", help="print JSON instead of text")
    scheds.set_defaults(func=cmd_schedules)

    dash = sub.add_parser("dashboard", parents=[common], help="serve the web dashboard")
    dash.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    dash.add_argument("--port", type=int, default=8000, help="port to bind (8000)")
    dash.add_argument(
        "--allow-actions", action="store_true",
        help="show and accept retry, cancel and schedule actions (off by default)",
    )  # fmt: skip
    dash.add_argument(
        "--token", help="every request must carry it (default $MPJOBS_DASHBOARD_TOKEN)"
    )
    dash.set_defaults(func=cmd_dashboard)

    metrics = sub.add_parser("metrics", parents=[common], help="serve Prometheus metrics")
    metrics.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    metrics.add_argument("--port", type=int, default=9108, help="port to bind (9108)")
    metrics.set_defaults(func=cmd_metrics)
    return parser
