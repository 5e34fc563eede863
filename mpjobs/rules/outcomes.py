"""What happens to a job whose attempt ended: one rule, used by every process and backend.

The worker that saw an exception, the supervisor that killed a job at its limit and the
process that found a dead owner all ask the same question (retry, or give up?), so the
answer lives here and nowhere else. So does the making of an outcome from whatever a
job returned or raised: that must never raise itself, or one bad job would crash the
worker that ran it, over and over (its attempt is refunded when the worker dies).
"""

from __future__ import annotations

import math
import random
import traceback
from typing import TYPE_CHECKING, Any

from mpjobs import serialization
from mpjobs.errors import Retry, SerializationError
from mpjobs.scheduling.durations import parse_duration
from mpjobs.store import base
from mpjobs.store.base import FAILED, SCHEDULED, SUCCESS, Completion, JobRecord

if TYPE_CHECKING:
    from mpjobs.control.spec import Control

MAX_BACKOFF = 3600.0


def retry_delay(backoff: float, attempts: int) -> float:
    """Exponential backoff with ±20% jitter, so a burst of failures does not retry in step."""
    # The exponent is capped (2.0 ** 1100 overflows) and a non-finite or negative
    # backoff taken as the cap: a retry time SQLite cannot hold would poison the job.
    base_delay = backoff * 2.0 ** min(64, max(0, attempts - 1))
    if not math.isfinite(base_delay) or base_delay < 0:
        base_delay = MAX_BACKOFF
    return float(min(MAX_BACKOFF, base_delay) * random.uniform(0.8, 1.2))


def failure(
    job: JobRecord, error: str, now: float, *, status: str = FAILED, exc: bytes | None = None
) -> Completion:
    """Retry while attempts remain, otherwise end in `status`."""
    error = base.storable_text(error)
    if job.attempts < job.max_attempts:
        at = now + retry_delay(job.retry_backoff, job.attempts)
        return Completion(job.id, SCHEDULED, exec_at=at, error=error, exc=exc)
    return Completion(job.id, status, error=error, exc=exc)


def success(job: JobRecord, value: Any) -> Completion:
    """The outcome of a job that returned `value`; raises if it cannot be kept.

    The caller treats that exception as the job's own failure, as if the job had raised
    it: a result that cannot be pickled, or is over what the store holds, is an error of
    the job, retried while attempts remain, like any other.
    """
    blob = None if value is None else serialization.dumps(value, f"result of {job.name}")
    if blob is not None and len(blob) > base.MAX_BLOB:
        raise SerializationError(
            f"result of {job.name} is {len(blob)} bytes pickled, over the store's limit of "
            f"{base.MAX_BLOB} bytes; store large data elsewhere and return a reference"
        )
    return Completion(job.id, SUCCESS, result=blob, schedule_id=job.schedule_id)


def from_exception(
    job: JobRecord, exc: BaseException, now: float, control: Control | None = None
) -> Completion:
    """The outcome of a job that raised `exc`, whatever `exc` is; never raises.

    An exception may be beyond repair: its __str__ raises, it cannot be pickled, or it
    pickles but cannot be unpickled. The traceback text is kept whenever it can be
    made, and the pickled exception only when a client could load it again.

    `control` (the job's retry_on/dont_retry_on) is judged here, on the live exception,
    so it needs neither pickling nor importing: see control/spec.py. `Retry` asks for
    another attempt at its own delay, attempts permitting.
    """
    text, blob = describe(exc), _exception_blob(exc)
    if isinstance(exc, Retry):
        return _retry_asked(job, exc, text, blob, now)
    try:
        retried = control is None or control.retries(exc)
    except BaseException:  # a broken exception class: judge it as any other failure
        retried = True
    if not retried:
        why = f"mpjobs: not retried ({type(exc).__name__} is excluded by retry_on/dont_retry_on)\n"
        return Completion(job.id, FAILED, error=base.storable_text(why + text), exc=blob)
    return failure(job, text, now, exc=blob)


def _retry_asked(
    job: JobRecord, exc: Retry, text: str, blob: bytes | None, now: float
) -> Completion:
    """`raise mpjobs.Retry(delay=...)`: due again after the delay (or the backoff)."""
    try:
        asked = None if exc.delay is None else parse_duration(exc.delay, what="Retry delay")
    except Exception as bad:  # the job's own mistake: say so, do not guess a delay
        why = f"mpjobs: not retried: {bad}\n"
        return Completion(job.id, FAILED, error=base.storable_text(why + text), exc=blob)
    if job.attempts < job.max_attempts:
        delay = retry_delay(job.retry_backoff, job.attempts) if asked is None else asked
        error = base.storable_text(text)
        return Completion(job.id, SCHEDULED, exec_at=now + delay, error=error, exc=blob)
    why = f"mpjobs: Retry asked for, but all {job.max_attempts} attempt(s) are used up\n"
    return Completion(job.id, FAILED, error=base.storable_text(why + text), exc=blob)


def describe(exc: BaseException) -> str:
    """The traceback text of `exc`, or failing that as much as can be said of it."""
    try:
        return "".join(traceback.format_exception(exc))
    except BaseException as err:  # whatever a broken exception raises
        return (
            f"{type(exc).__name__}: <the exception could not be formatted: "
            f"{type(err).__name__}>"
        )


def _exception_blob(exc: BaseException) -> bytes | None:
    try:
        blob = serialization.dumps(exc, "exception")
        if len(blob) > base.MAX_BLOB:
            return None
        serialization.loads(blob)  # one that cannot be loaded is of no use to a client
        return blob
    except BaseException:  # the text still tells what happened
        return None


def lost(job: JobRecord, reason: str, now: float) -> Completion:
    """The owner of a running job died: count it as a failed attempt of that job."""
    return failure(job, f"worker lost: {reason}", now)


def requeue(job: JobRecord, now: float) -> Completion:
    """Put back a job that we stopped on purpose (shutdown, neighbour's kill): no attempt used."""
    return Completion(job.id, SCHEDULED, exec_at=now, refund_attempt=True, error=job.error)
