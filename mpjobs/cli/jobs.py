"""`mpjobs jobs ...` and `mpjobs schedules ...`: look at and act on jobs and schedules.

The actions are those of the dashboard (mpjobs/operations), for scripts: one job by id,
or every job a filter (`--status`, `--queue`, `--task`) matches.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from mpjobs import operations
from mpjobs.app import App
from mpjobs.cli.common import existing_app, filter_of, print_json, ts
from mpjobs.loading import UsageError
from mpjobs.operations.views import job_summary
from mpjobs.store.base import JobRecord


def _line(r: JobRecord | dict[str, Any]) -> str:
    j = r if isinstance(r, dict) else job_summary(r)
    return (
        f"{j['id']:>8}  {j['status']:<18} {j['queue']:<10} "
        f"{j['attempts']}/{j['max_attempts']}  {j['name']}"
    )


def _job_id(app: App, args: argparse.Namespace) -> int:
    """The job `args.id` names, which must exist, or a UsageError saying what is missing."""
    if args.id is None:
        raise UsageError(f"mpjobs jobs {args.action} needs a job id")
    try:
        job_id = int(args.id)
    except ValueError:
        job_id = -1
    if job_id < 0 or app.store.status_of(job_id) is None:
        raise UsageError(f"no job {args.id} in {app.home.path}")
    return job_id


def _by_filter(args: argparse.Namespace) -> bool:
    """Whether a bulk action was asked for (a filter and no id); refuses both at once."""
    has_filter = bool(args.status or args.queue or args.task)
    if args.id is not None and has_filter:
        raise UsageError(f"mpjobs jobs {args.action} takes a job id or a filter, not both")
    if args.id is None and not has_filter:
        raise UsageError(f"mpjobs jobs {args.action} needs a job id or --status")
    return args.id is None


def _list(app: App, args: argparse.Namespace) -> int:
    where = filter_of(args)
    if args.search:
        page = operations.job_page(app, where, args.search, args.before, args.limit)
        rows: list[Any] = page["jobs"]
    else:
        rows = [job_summary(r) for r in app.store.job_page(where, args.before, args.limit)]
        page = {"jobs": rows, "next_before": rows[-1]["id"] if len(rows) == args.limit else None}
    if args.json:
        print_json(page)
        return 0
    for j in rows:
        print(_line(j))
    if page.get("scan_limited"):
        print(f"(searched the newest {page['scanned']} jobs; more: --before {page['next_before']})")
    return 0


def _show(app: App, job_id: int, as_json: bool) -> int:
    d = operations.job_detail(app, job_id)
    assert d is not None
    if as_json:
        print_json(d)
        return 0
    print(_line(d))
    print(f"  exec_at: {ts(d['exec_at'])}  started: {ts(d['started_at'])}", end="")
    print(f"  finished: {ts(d['finished_at'])}")
    print(f"  arguments: {d['arguments']}")
    if d["result"] is not None:
        print(f"  result: {d['result']}")
    if d["progress"] is not None or d["meta"] is not None:
        shown = "-" if d["progress"] is None else f"{d['progress']:g}"
        print(f"  progress: {shown}  meta: {json.dumps(d['meta']) if d['meta'] else '-'}")
    if d["depends_on"]:
        print(f"  depends on: {', '.join(f'#{i}' for i in d['depends_on'])}")
    if d["dependents"]:
        print(f"  dependents: {', '.join(f'#{i}' for i in d['dependents'])}")
    if d["schedule"]:
        print(f"  schedule: {d['schedule']['id']}")
    if d["traceback"]:
        print(d["traceback"].rstrip())
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    app = existing_app(args)
    if args.action == "list":
        return _list(app, args)
    if args.action == "purge":
        if args.id is not None:
            raise UsageError("mpjobs jobs purge takes a filter, not a job id")
        if args.older_than is None:
            raise UsageError("mpjobs jobs purge needs --older-than (e.g. 7d)")
        n = operations.purge(app, filter_of(args), args.older_than)
        print_json({"purged": n}) if args.json else print(f"purged {n} jobs")
        return 0
    if args.action in ("cancel", "retry") and _by_filter(args):
        where = filter_of(args)
        if args.action == "retry":
            tally = operations.retry_matching(app, where)
        else:
            tally = operations.cancel_matching(app, where, args.terminate)
        verb = "retried" if args.action == "retry" else "cancelled"
        if args.json:
            print_json(tally.as_dict())
        else:
            print(f"{verb} {tally.done} jobs ({tally.refused} matched but were not {verb})")
        return 0
    job_id = _job_id(app, args)
    if args.action == "show":
        return _show(app, job_id, args.json)
    if args.action == "cancel":
        ok = operations.cancel_one(app, job_id, args.terminate)
        status = app.store.status_of(job_id)
        print(f"job {job_id}: {'cancelled' if ok else f'not cancelled (status {status})'}")
        return 0 if ok else 1
    ok = operations.retry_one(app, job_id)
    status = app.store.status_of(job_id)
    print(f"job {job_id}: {'queued again' if ok else f'not retried (status {status})'}")
    return 0 if ok else 1


_DONE = {"pause": "paused", "resume": "resumed", "remove": "removed"}


def cmd_schedules(args: argparse.Namespace) -> int:
    app = existing_app(args)
    if args.action == "list":
        rows = operations.schedules(app)
        if args.json:
            print_json(rows)
            return 0
        for s in app.schedules():
            nrt = s.next_run_time
            print(
                f"{s.id:<40} {s.state:<8} {s.trigger:<30} next {nrt.astimezone() if nrt else '-'}"
            )
        return 0
    if args.id is None:
        raise UsageError(f"mpjobs schedules {args.action} needs a schedule id")
    if app.get_schedule(args.id) is None:
        raise UsageError(f"no schedule {args.id!r} in {app.home.path}")
    job_id = operations.schedule_action(app, args.id, args.action)
    if job_id is not None:
        print(f"schedule {args.id}: ran now as job {job_id}")
    else:
        print(f"schedule {args.id}: {_DONE[args.action]}")
    return 0
