"""`mpjobs`: run a supervisor, and look at or act on a home from the shell.

Errors a user can fix (a bad MODULE:APP or option, a bad config, a home that is unsafe,
missing or cannot be created) exit 2 with one line naming the problem, not a traceback.
Only `run` creates a home; the other commands act on one that exists.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from mpjobs.app import App
from mpjobs.coordination.processes import on_this_host
from mpjobs.errors import MpjobsError
from mpjobs.home import Home, home_path
from mpjobs.job import JobStatus
from mpjobs.loading import UsageError, load_app
from mpjobs.store.postgres.url import STORE_ENV, redact, store_from

log = logging.getLogger("mpjobs.cli")

T = TypeVar("T")


def _existing_app(args: argparse.Namespace) -> App:
    """An App on the home named, which must exist: these commands never create one.

    With a shared store (PostgreSQL) the jobs are not in the home, so a host that only
    looks (`mpjobs status` on an operator's box) gets a home made for it.
    """
    home = Home.resolve(args.home) if store_from(None) else Home.existing(args.home)
    app = App(home=home.path)
    app._home = home
    return app


# -- run -------------------------------------------------------------------------------


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


# -- status ----------------------------------------------------------------------------


def status_data(app: App) -> dict[str, Any]:
    """Everything `mpjobs status` shows, as plain data (also its --json output)."""
    import psutil

    backend = app.backend
    store = backend.store
    running = {r.owner: r for r in store.list_jobs("RUNNING", None, 10_000) if r.started_at}
    procs = []
    for p in store.list_processes():
        if not backend.liveness.alive(p.token):
            continue
        try:  # a pid names a process only on its own host
            rss = psutil.Process(p.pid).memory_info().rss if on_this_host(p.info) else None
        except psutil.Error:
            rss = None
        job = running.get(p.token)
        procs.append(
            {
                "token": p.token, "kind": p.kind, "pid": p.pid, "parent": p.parent,
                "started_at": p.started_at, "rss_bytes": rss,
                "state": "running" if job else "idle",
                "job": None if job is None else {
                    "id": str(job.id), "name": job.name,
                    "running_for_s": round(time.time() - (job.started_at or time.time()), 3),
                },
                **json.loads(p.info or "{}"),
            }
        )  # fmt: skip
    schedules = [
        {"id": s.id, "state": s.state, "next_run_time": s.next_run_time}
        for s in store.list_schedules()
    ]
    url = app.store_url
    return {
        "home": str(app.home.path),
        "store": None if url is None else redact(url),
        "leader": backend.current_leader(),
        "processes": procs,
        "queues": store.queue_depths(),
        "schedules": schedules,
    }


def _ts(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def render_status(data: dict[str, Any]) -> str:
    lines = [f"home: {data['home']}"]
    if data.get("store"):
        lines.append(f"store: {data['store']}")
    leader = data["leader"]
    lines.append(
        f"leader: pid {leader['pid']} since {_ts(leader['since'])}" if leader else "leader: none"
    )
    sups = [p for p in data["processes"] if p["kind"] == "supervisor"]
    lines.append(f"supervisors: {len(sups)}")
    for sup in sups:
        lines.append(f"  supervisor pid {sup['pid']}")
        for p in data["processes"]:
            if p["parent"] != sup["token"]:
                continue
            rss = "-" if p["rss_bytes"] is None else f"{p['rss_bytes'] / 2**20:.1f} MiB"
            job = p["job"]
            what = f"job {job['id']} {job['name']} for {job['running_for_s']:.1f}s" if job else ""
            lead = " (leader)" if data["leader"] and data["leader"]["token"] == p["token"] else ""
            lines.append(
                f"    {p['kind']:<11} pid {p['pid']:<7} {p['state']:<7} rss {rss:<10} {what}{lead}"
            )
    lines.append("queues:")
    for queue, counts in sorted(data["queues"].items()):
        lines.append(
            f"  {queue}: {counts.get('SCHEDULED', 0)} waiting, {counts.get('RUNNING', 0)} running"
        )
    if data["schedules"]:
        lines.append("schedules:")
        for s in data["schedules"]:
            lines.append(f"  {s['id']}: {s['state']}, next {_ts(s['next_run_time'])}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    app = _existing_app(args)
    while True:
        data = status_data(app)
        out = json.dumps(data, indent=2, default=str) if args.json else render_status(data)
        if not args.watch:
            print(out)
            return 0
        print("\033[2J\033[H" + out, flush=True)
        time.sleep(1.0)


# -- jobs and schedules ------------------------------------------------------------------


def _job_line(job: Any) -> str:
    rec = job._record()
    status = job.status.value
    return (
        f"{job.id:>8}  {status:<18} {rec.queue:<10} {rec.attempts}/{rec.max_attempts}  {rec.name}"
    )


def _named(
    app: App, args: argparse.Namespace, noun: str, find: Callable[[str], T | None], label: str
) -> T:
    """The job or schedule `args.id` names, or a UsageError saying what is missing."""
    if args.id is None:
        raise UsageError(f"mpjobs {args.command} {args.action} needs a {noun} id")
    found = find(args.id)
    if found is None:
        raise UsageError(f"no {noun} {label} in {app.home.path}")
    return found


def cmd_jobs(args: argparse.Namespace) -> int:
    app = _existing_app(args)
    if args.action == "list":
        for job in app.jobs(status=args.status, queue=args.queue, limit=args.limit):
            print(_job_line(job))
        return 0
    job = _named(app, args, "job", app.get_job, str(args.id))
    if args.action == "show":
        rec = job._record()
        print(_job_line(job))
        print(f"  exec_at: {_ts(rec.exec_at)}  started: {_ts(rec.started_at)}", end="")
        print(f"  finished: {_ts(rec.finished_at)}")
        if rec.error:
            print(rec.error.rstrip())
        return 0
    if args.action == "cancel":
        ok = job.cancel(terminate=args.terminate)
        verdict = "cancelled" if ok else f"not cancelled (status {job.status.value})"
        print(f"job {job.id}: {verdict}")
        return 0 if ok else 1
    ok = app.store.retry(int(job.id), time.time())
    print(
        f"job {job.id}: {'queued again' if ok else 'not retried (status ' + job.status.value + ')'}"
    )
    return 0 if ok else 1


def cmd_schedules(args: argparse.Namespace) -> int:
    app = _existing_app(args)
    if args.action == "list":
        for s in app.schedules():
            nrt = s.next_run_time
            print(
                f"{s.id:<40} {s.state:<8} {s.trigger:<30} next {nrt.astimezone() if nrt else '-'}"
            )
        return 0
    sched = _named(app, args, "schedule", app.get_schedule, repr(args.id))
    getattr(sched, args.action)()
    print(
        f"schedule {args.id}: {args.action}d"
        if args.action != "remove"
        else f"schedule {args.id}: removed"
    )
    return 0


# -- parsing ---------------------------------------------------------------------------


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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mpjobs", description=__doc__)
    parser.add_argument("--log-level", default=None, help="default INFO, or $MPJOBS_LOG_LEVEL")
    sub = parser.add_subparsers(dest="command", required=True)
    common = Parser(add_help=False)
    common.add_argument("--log-level", default=argparse.SUPPRESS)
    common.add_argument(
        "--store", default=argparse.SUPPRESS,
        help="a postgresql:// URL shared by hosts (default $MPJOBS_STORE, else SQLite)",
    )  # fmt: skip

    run = sub.add_parser("run", parents=[common], help="run a supervisor and its workers")
    run.add_argument("target", nargs="?", help="MODULE:APP")
    run.add_argument("--workers", type=int)
    run.add_argument("--queues", help="comma-separated queue names")
    run.add_argument("--home")
    run.add_argument("--config", help="a TOML or YAML config file")
    run.add_argument("--graceful-timeout", type=float)
    run.add_argument("--max-jobs-per-worker", type=int)
    run.add_argument("--max-memory-per-worker")
    run.add_argument("--concurrency", type=int, help="async jobs at once per worker")
    run.add_argument("--token", help=argparse.SUPPRESS)
    run.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    # app.start() through exec: its options as JSON, and a pipe to report a failed start.
    run.add_argument("--supervisor-options", help=argparse.SUPPRESS)
    run.add_argument("--report-fd", type=int, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", parents=[common], help="supervisors, workers, leader, queues")
    status.add_argument("--home")
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", action="store_true")
    status.set_defaults(func=cmd_status)

    jobs = sub.add_parser("jobs", parents=[common], help="list, show, cancel or retry jobs")
    jobs.add_argument("action", choices=["list", "show", "cancel", "retry"])
    jobs.add_argument("id", nargs="?")
    jobs.add_argument("--home")
    jobs.add_argument("--status", type=job_status)
    jobs.add_argument("--queue")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--terminate", action="store_true", help="also stop a running job")
    jobs.set_defaults(func=cmd_jobs)

    scheds = sub.add_parser(
        "schedules", parents=[common], help="list, pause, resume or remove schedules"
    )
    scheds.add_argument("action", choices=["list", "pause", "resume", "remove"])
    scheds.add_argument("id", nargs="?")
    scheds.add_argument("--home")
    scheds.set_defaults(func=cmd_schedules)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "store", None):
            # Checked here, then handed on the way the home is: through the environment,
            # so the app a module creates at import and every process it starts agree.
            os.environ[STORE_ENV] = str(store_from(args.store))
        if args.log_level is not None:
            level = log_level(args.log_level)
        else:
            level = log_level(os.environ.get("MPJOBS_LOG_LEVEL") or "INFO", "MPJOBS_LOG_LEVEL")
        logging.basicConfig(
            level=level, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
        )
        code = int(args.func(args))
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except (MpjobsError, ValueError) as exc:
        print(f"mpjobs: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Whoever read our output stopped (`mpjobs jobs list | head -1`): stop quietly,
        # as a tool killed by SIGPIPE would, and keep the exit-time flush from failing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
