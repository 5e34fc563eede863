"""`expires=`: a job not started by its deadline is not run; it ends CANCELLED.

The deadline is fixed once, at push: the job's first due time plus a duration, or an
aware datetime. Retries keep it (no attempt starts after it), so a job that fails
until past its deadline is cancelled instead of retried; `Job.retry()` clears it, as a
person asking again means "now". A naive datetime is refused: which zone it meant
cannot be known, and a wrong guess silently drops or keeps jobs hours off.
"""

from __future__ import annotations

import datetime

from mpjobs.errors import ConfigError
from mpjobs.scheduling.durations import parse_duration

__all__ = ["Expires", "check_expires", "deadline", "expired_error"]

# A duration after the due time (seconds), or an absolute deadline (a datetime).
Expires = float | datetime.datetime


def check_expires(value: object) -> Expires:
    """The option as stored on the task: seconds (> 0) or an aware datetime."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise ConfigError(
                f"expires={value!r} is a naive datetime: give it a timezone "
                "(datetime.now(timezone.utc) + ...) or pass a duration such as '10m'"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str, datetime.timedelta)):
        raise ConfigError(
            f"expires must be a duration ('10m', seconds, timedelta) or an aware datetime, "
            f"got {value!r}"
        )
    seconds = parse_duration(value, what="expires")
    if seconds <= 0:
        raise ConfigError(f"expires must be a duration > 0, got {value!r}")
    return seconds


def deadline(expires: Expires | None, due: float) -> float | None:
    """The job's deadline (epoch seconds) for a job first due at `due`."""
    if expires is None:
        return None
    if isinstance(expires, datetime.datetime):
        return expires.timestamp()
    return due + expires


def expired_error(expires_at: float) -> str:
    """The error text of an expired job: what happened and when."""
    at = datetime.datetime.fromtimestamp(expires_at, datetime.timezone.utc)
    return f"expired: not started by its deadline {at.isoformat(timespec='milliseconds')}"
