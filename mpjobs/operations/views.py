"""What an operator looks at, as plain data: the overview, pages of jobs, one job, the
schedules. `mpjobs status`/`jobs`/`schedules` print it, and the dashboard serves it as JSON.

Every read is bounded: a page walks an index newest first and stops (store/listing.py);
a text search, which no index answers, scans at most SCAN_LIMIT of the newest matching
jobs and says so, so a page costs the same with millions of rows.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from mpjobs.coordination.processes import on_this_host
from mpjobs.operations.safe_pickle import describe
from mpjobs.scheduling.triggers import trigger_from_spec
from mpjobs.store.base import (
    FAILED,
    PAUSED,
    PERMANENTLY_FAILED,
    RUNNING,
    SUCCESS,
    TIMEOUT,
    JobFilter,
    JobRecord,
)
from mpjobs.store.postgres.url import redact

if TYPE_CHECKING:
    from mpjobs.app import App

FAILURES = (FAILED, PERMANENTLY_FAILED, TIMEOUT)
SCAN_LIMIT = 5000  # newest matching jobs a text search reads at most
PAGE_MAX = 500


def status_data(app: App) -> dict[str, Any]:
    """Everything `mpjobs status` shows, as plain data (also its --json output)."""
    import psutil

    backend = app.backend
    store = backend.store
    # job_page spells the status into its SQL, so this reads the partial index of
    # running jobs, not the whole history (list_jobs binds it, and scans).
    running_jobs = store.job_page(JobFilter((RUNNING,)), None, 10_000)
    running = {r.owner: r for r in running_jobs if r.started_at}
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
                    "progress": None if job is None else _progress(app, job.id),
                },
                **json.loads(p.info or "{}"),
            }
        )  # fmt: skip
    schedules = [
        {"id": s.id, "state": s.state, "next_run_time": s.next_run_time}
        for s in store.list_schedules()
    ]
    url = app.store_url
    depths = store.depths()
    return {
        "home": str(app.home.path),
        "store": None if url is None else redact(url),
        "leader": backend.current_leader(),
        "processes": procs,
        "queues": depths.counts,
        # queue -> when its waiting figure was counted (None: a floor, not counted yet)
        "queues_estimated": depths.estimated,
        "schedules": schedules,
    }


def last_hour(app: App, now: float | None = None) -> dict[str, Any]:
    """Jobs finished per minute over the last hour: succeeded, failed (60 buckets each)."""
    now = time.time() if now is None else now
    first = int(now) // 60 - 59
    ok, failed = [0] * 60, [0] * 60
    for minute, status, n in app.store.finished_per_minute(first * 60.0):
        i = minute - first
        if 0 <= i < 60:
            if status == SUCCESS:
                ok[i] += n
            elif status in FAILURES:
                failed[i] += n
    return {"start": first * 60, "step_s": 60, "succeeded": ok, "failed": failed}


def overview(app: App) -> dict[str, Any]:
    """The dashboard's first page: `status_data` plus the last hour's outcomes."""
    return {**status_data(app), "last_hour": last_hour(app), "now": time.time()}


def job_summary(r: JobRecord) -> dict[str, Any]:
    first_line = (r.error or "").strip().splitlines()[-1:] if r.error else []
    return {
        "id": r.id, "name": r.name, "queue": r.queue, "status": r.status,
        "priority": r.priority, "attempts": r.attempts, "max_attempts": r.max_attempts,
        "created_at": r.created_at, "exec_at": r.exec_at, "started_at": r.started_at,
        "finished_at": r.finished_at, "schedule_id": r.schedule_id,
        "error": first_line[0][:300] if first_line else None,
    }  # fmt: skip


def _matches(r: JobRecord, needle: str) -> bool:
    if needle == str(r.id) or needle in r.name.lower():
        return True
    if r.error and needle in r.error.lower():
        return True
    return r.payload is not None and needle in describe(r.payload)["repr"].lower()


def job_page(
    app: App, where: JobFilter, text: str | None = None, before: int | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """A page of jobs newest first; `next_before` continues it (keyset, by id).

    With `text`, jobs whose id, task name, arguments or error hold it (any case); that
    scan reads at most SCAN_LIMIT jobs and the answer says how far it got.
    """
    limit = max(1, min(limit, PAGE_MAX))
    store = app.store
    if not text:
        rows = store.job_page(where, before, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "jobs": [job_summary(r) for r in rows],
            "next_before": rows[-1].id if more else None,
            "scanned": None, "scan_limited": False,
        }  # fmt: skip
    needle = text.strip().lower()
    found: list[JobRecord] = []
    scanned, cursor, exhausted = 0, before, False
    while len(found) <= limit and scanned < SCAN_LIMIT:
        rows = store.job_page(where, cursor, min(500, SCAN_LIMIT - scanned))
        if not rows:
            exhausted = True
            break
        for r in rows:
            scanned += 1
            cursor = r.id
            if _matches(r, needle):
                found.append(r)
                if len(found) > limit:
                    break
    more = len(found) > limit
    found = found[:limit]
    limited = not exhausted and not more and scanned >= SCAN_LIMIT
    return {
        "jobs": [job_summary(r) for r in found],
        "next_before": found[-1].id if more else (cursor if limited else None),
        "scanned": scanned,
        "scan_limited": limited,
    }


def _extra(value: object) -> object:
    """A column this version does not know (progress, meta): shown, never executed."""
    if isinstance(value, (bytes, memoryview)):
        return describe(bytes(value))["repr"]
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _progress(app: App, job_id: int) -> float | None:
    got = app.store.progress_of(job_id)
    return None if got is None else got[0]


def job_detail(app: App, job_id: int) -> dict[str, Any] | None:
    """All there is to show of one job: arguments, options, timeline, outcome, schedule."""
    row = app.store.job_row(job_id)
    if row is None:
        return None
    values: list[Any] = [row[f] for f in JobRecord.__dataclass_fields__]
    rec = JobRecord(*values)
    out = job_summary(rec)
    args = describe(rec.payload) if rec.payload is not None else {"safe": True, "repr": "((), {})"}
    out.update(
        arguments=args["repr"], arguments_safe=args["safe"],
        options={
            "priority": rec.priority, "max_attempts": rec.max_attempts,
            "retry_backoff": rec.retry_backoff, "timeout": rec.timeout,
            "memory_limit": rec.memory_limit, "unique_key": rec.unique_key,
        },
        func=rec.func or ("(a pickled callable)" if rec.func_pickle else None),
        owner=rec.owner, pid=rec.pid,
        result=None if rec.result is None else describe(rec.result)["repr"],
        exception=None if rec.exc is None else describe(rec.exc)["repr"],
        traceback=rec.error,
        timeline=[
            {"event": e, "at": t} for e, t in (
                ("created", rec.created_at), ("due", rec.exec_at),
                ("started", rec.started_at), ("finished", rec.finished_at),
            ) if t is not None
        ],
        extra={k: _extra(v) for k, v in row.items() if k not in JobRecord.__dataclass_fields__},
        schedule=None,
    )  # fmt: skip
    parents, children = app.store.links(job_id)  # workflows: what it waits for, and on it
    out.update(depends_on=parents, dependents=children)
    progress = app.store.progress_of(job_id)
    out.update(progress=None if progress is None else progress[0],
               meta=None if progress is None else progress[1])  # fmt: skip
    if rec.schedule_id is not None:
        s = app.store.get_schedule(rec.schedule_id)
        out["schedule"] = {
            "id": rec.schedule_id, "exists": s is not None,
            "trigger": None if s is None else json.loads(s.trigger),
            "state": None if s is None else s.state,
        }  # fmt: skip
    return out


def schedules(app: App) -> list[dict[str, Any]]:
    """Each schedule with its trigger, next run, paused or not, and its last job's outcome."""
    out = []
    store = app.store
    for s in store.list_schedules():
        last = store.list_jobs(None, None, 1, schedule_id=s.id)
        out.append({
            "id": s.id, "name": s.name, "trigger": json.loads(s.trigger),
            "trigger_text": trigger_from_spec(json.loads(s.trigger)).describe(), "state": s.state,
            "paused": s.state == PAUSED, "next_run_time": s.next_run_time,
            "failures": s.failures,
            "last": None if not last else {
                "id": last[0].id, "status": last[0].status,
                "finished_at": last[0].finished_at,
            },
        })  # fmt: skip
    return out
