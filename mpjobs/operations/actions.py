"""What an operator does to jobs and schedules, one place for the CLI and the dashboard.

Bulk actions walk the matching jobs by keyset (newest first, a page at a time) and act
on each through the store's own one-job operation (`retry`, `cancel`), so the rules a
single retry or cancel follows (unique keys, a running job's owner) hold for every job
of a bulk one too, and no transaction holds the write lock for long.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mpjobs.errors import MpjobsError, NotFoundError
from mpjobs.job import Job
from mpjobs.store.base import JobFilter, NewJob

if TYPE_CHECKING:
    from mpjobs.app import App

CHUNK = 500
SCHEDULE_ACTIONS = ("pause", "resume", "run", "remove")


@dataclass
class Tally:
    """How a bulk action went: jobs acted on, and jobs that matched but were refused."""

    done: int = 0
    refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"done": self.done, "refused": self.refused}


def retry_one(app: App, job_id: int) -> bool:
    """Queue a finished job again with fresh attempts; False if it is not finished."""
    return app.store.retry(job_id, time.time())


def cancel_one(app: App, job_id: int, terminate: bool = False) -> bool:
    """Cancel a waiting job (a running one too with `terminate`)."""
    return Job(app.store, job_id).cancel(terminate=terminate)


def _each(app: App, where: JobFilter) -> list[int]:
    """The ids of the matching jobs, newest first (collected before acting on them)."""
    ids: list[int] = []
    before: int | None = None
    while True:
        rows = app.store.job_page(where, before, CHUNK)
        ids.extend(r.id for r in rows)
        if len(rows) < CHUNK:
            return ids
        before = rows[-1].id


def _need_filter(where: JobFilter, verb: str) -> None:
    if not where.statuses:
        raise MpjobsError(f"{verb} by filter needs a status (e.g. --status FAILED)")


def retry_matching(app: App, where: JobFilter) -> Tally:
    """Retry every finished job the filter matches."""
    _need_filter(where, "retry")
    tally = Tally()
    for job_id in _each(app, where):
        try:
            ok = retry_one(app, job_id)
        except MpjobsError:  # another live job holds its unique key
            ok = False
        tally.done += ok
        tally.refused += not ok
    return tally


def cancel_matching(app: App, where: JobFilter, terminate: bool = False) -> Tally:
    """Cancel every waiting (with `terminate`, also running) job the filter matches."""
    _need_filter(where, "cancel")
    tally = Tally()
    for job_id in _each(app, where):
        ok = cancel_one(app, job_id, terminate)
        tally.done += ok
        tally.refused += not ok
    return tally


def purge(app: App, where: JobFilter, older_than: float) -> int:
    """Delete finished jobs that match and finished more than `older_than` seconds ago."""
    if older_than < 0:
        raise MpjobsError(f"older-than must be a duration >= 0, got {older_than}")
    return app.store.purge_matching(where, time.time() - older_than)


def schedule_action(app: App, schedule_id: str, action: str) -> int | None:
    """Pause, resume, remove or run now a schedule; `run` returns the new job's id.

    Running now pushes one job as the schedule's next fire would, outside its cadence:
    the next fire is still due when it was. A paused schedule may be run now too.
    """
    if action not in SCHEDULE_ACTIONS:
        raise MpjobsError(f"unknown schedule action {action!r}; one of {SCHEDULE_ACTIONS}")
    sched = app.get_schedule(schedule_id)
    if sched is None:
        raise NotFoundError(f"no schedule {schedule_id!r}")
    if action == "pause":
        sched.pause()
    elif action == "resume":
        sched.resume()
    elif action == "remove":
        sched.remove()
    else:
        return run_schedule_now(app, schedule_id)
    return None


def run_schedule_now(app: App, schedule_id: str) -> int:
    rec = app.store.get_schedule(schedule_id)
    if rec is None:
        raise NotFoundError(f"no schedule {schedule_id!r}")
    o = json.loads(rec.options)
    now = time.time()
    job = NewJob(
        name=rec.name, func=rec.func, func_pickle=rec.func_pickle, payload=rec.payload or None,
        queue=o["queue"], priority=o["priority"], exec_at=now, max_attempts=o["max_attempts"],
        retry_backoff=o["retry_backoff"], timeout=o["timeout"], memory_limit=o["memory_limit"],
        unique_key=None, schedule_id=rec.id,
    )  # fmt: skip
    return app.store.push([job], now)[0][0]
