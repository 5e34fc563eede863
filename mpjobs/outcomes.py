"""What happens to a job whose attempt ended badly: one rule, used by every process.

The worker that saw an exception, the supervisor that killed a job at its limit and the
process that found a dead owner all ask the same question (retry, or give up?), so the
answer lives here and nowhere else.
"""

from __future__ import annotations

import random
import traceback

from mpjobs import serialization
from mpjobs.store.base import FAILED, SCHEDULED, Completion, JobRecord

MAX_BACKOFF = 3600.0


def retry_delay(backoff: float, attempts: int) -> float:
    """Exponential backoff with ±20% jitter, so a burst of failures does not retry in step."""
    base = min(MAX_BACKOFF, backoff * 2.0 ** max(0, attempts - 1))
    return float(base * random.uniform(0.8, 1.2))


def failure(
    job: JobRecord, error: str, now: float, *, status: str = FAILED, exc: bytes | None = None
) -> Completion:
    """Retry while attempts remain, otherwise end in `status`."""
    if job.attempts < job.max_attempts:
        at = now + retry_delay(job.retry_backoff, job.attempts)
        return Completion(job.id, SCHEDULED, exec_at=at, error=error, exc=exc)
    return Completion(job.id, status, error=error, exc=exc)


def from_exception(job: JobRecord, exc: BaseException, now: float) -> Completion:
    text = "".join(traceback.format_exception(exc))
    try:
        blob: bytes | None = serialization.dumps(exc, "exception")
    except Exception:
        blob = None
    return failure(job, text, now, exc=blob)


def lost(job: JobRecord, reason: str, now: float) -> Completion:
    """The owner of a running job died: count it as a failed attempt of that job."""
    return failure(job, f"worker lost: {reason}", now)


def requeue(job: JobRecord, now: float) -> Completion:
    """Put back a job that we stopped on purpose (shutdown, neighbour's kill): no attempt used."""
    return Completion(job.id, SCHEDULED, exec_at=now, refund_attempt=True, error=job.error)
