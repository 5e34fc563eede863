"""The job log lines, on logger `mpjobs.jobs`: a built-in middleware (see hooks.py).

One line when a job starts and one when it ends, with the fields an operator filters
on as record attributes (`extra=`), so the JSON format (logs.py) has them as keys: id,
task, queue, attempt, and at the end duration, status, error (a failure's traceback),
retry_at (a retry's time). The supervisor, which kills a worker at a job's limit,
writes the limit line (`limit_killed`). Nothing is formatted unless the logger is
enabled for the line's level, so a no-op drain pays one level check per hook point.
"""

from __future__ import annotations

import logging
import time

from mpjobs.limits import Watch
from mpjobs.observability.hooks import JobInfo, Middleware, Outcome
from mpjobs.observability.logs import iso
from mpjobs.store.base import SCHEDULED, SUCCESS

log = logging.getLogger("mpjobs.jobs")


def _fields(job: JobInfo) -> dict[str, object]:
    return {"id": job.id, "task": job.task, "queue": job.queue, "attempt": job.attempt}


class JobLog(Middleware):
    """Writes the "started" and "finished" lines of every job a worker runs."""

    # A succeeded job's lines are INFO: with INFO off, Hooks skips making the job's info
    # for it (its failure and retry lines are WARNING and ERROR, always asked).
    quiet_below_info = True

    def before_job(self, job: JobInfo) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(
                "job %d %s started (queue %s, attempt %d of %d)",
                job.id, job.task, job.queue, job.attempt, job.max_attempts,
                extra={**_fields(job), "event": "started"},
            )  # fmt: skip

    def after_job(self, job: JobInfo, outcome: Outcome) -> None:
        if outcome.status == SUCCESS:
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "job %d %s finished SUCCESS in %.3f s",
                    job.id, job.task, outcome.duration,
                    extra={**_fields(job), "event": "finished", "status": SUCCESS,
                           "duration": round(outcome.duration, 6)},
                )  # fmt: skip
            return
        if outcome.status == SCHEDULED:
            if not log.isEnabledFor(logging.WARNING):
                return
            at = outcome.retry_at or time.time()
            log.warning(
                "job %d %s failed in %.3f s (attempt %d of %d); retrying at %s (in %.1f s)",
                job.id, job.task, outcome.duration, job.attempt, job.max_attempts, iso(at),
                max(0.0, at - time.time()),
                extra={**_fields(job), "event": "retry", "status": "RETRY",
                       "duration": round(outcome.duration, 6), "retry_at": iso(at),
                       "error": outcome.error},
            )  # fmt: skip
            return
        if log.isEnabledFor(logging.ERROR):
            log.error(
                "job %d %s finished %s in %.3f s (attempt %d of %d)",
                job.id, job.task, outcome.status, outcome.duration, job.attempt,
                job.max_attempts,
                extra={**_fields(job), "event": "finished", "status": outcome.status,
                       "duration": round(outcome.duration, 6),
                       "error": outcome.error},
            )  # fmt: skip


def limit_killed(watch: Watch, worker_pid: int, reason: str, status: str) -> None:
    """The supervisor kills worker `worker_pid`: `watch`'s job broke a limit (`reason`)."""
    if not log.isEnabledFor(logging.ERROR):
        return
    limit = "time" if reason.startswith("time") else "memory"
    ran = time.monotonic() - watch.started
    log.error(
        "job %d killed at its %s limit after %.1f s: %s (worker %d killed)",
        watch.job_id, limit, ran, reason, worker_pid,
        extra={"id": watch.job_id, "event": "limit", "limit": limit, "status": status,
               "duration": round(ran, 3), "timeout": watch.timeout,
               "memory_limit": watch.memory_limit, "rss_peak": watch.peak or None,
               "worker_pid": worker_pid, "error": reason},
    )  # fmt: skip
