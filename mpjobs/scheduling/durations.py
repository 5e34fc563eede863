"""Turn human-written durations, sizes and times of day into plain numbers.

Inside mpjobs seconds are floats and sizes are ints; strings such as "2h32m" or "512MB"
are accepted only where people type them (config files, CLI options, public keyword
arguments), and are converted here, once, so every error message about them looks alike.
"""

from __future__ import annotations

import datetime
import math
import os
import re

from mpjobs.errors import ConfigError

__all__ = ["duration_from_env", "parse_bytes", "parse_daily_time", "parse_duration"]

_DURATION_HINT = "expected seconds or a string such as '30s', '5m', '2h32m'"

_UNIT_SECONDS: dict[str, float] = {
    "ms": 0.001,
    "msec": 0.001,
    "msecs": 0.001,
    "millisecond": 0.001,
    "milliseconds": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "w": 604800.0,
    "week": 604800.0,
    "weeks": 604800.0,
}

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN_NUMBER_RE = re.compile(rf"^{_NUMBER}$")
# Longest unit names first, so "ms" is not read as "m" followed by garbage.
_UNITS_ALT = "|".join(sorted(_UNIT_SECONDS, key=len, reverse=True))
_PART_RE = re.compile(rf"({_NUMBER})\s*({_UNITS_ALT})(?![a-z])")
_DURATION_RE = re.compile(rf"^(?:\s*{_NUMBER}\s*(?:{_UNITS_ALT})(?![a-z]))+\s*$")


def parse_duration(
    value: float | int | str | datetime.timedelta, *, what: str = "duration"
) -> float:
    """Return a non-negative duration in seconds.

    Bare numbers (and numeric strings) are seconds. Unit strings may combine parts, in any
    case and with optional spaces: "500ms", "30s", "5m", "2h32m", "1h 30m 15s", "1.5h",
    "1d", "2w". `what` names the setting in the error message, so a bad value in a large
    config can be found.
    """
    # bool is an int subclass; `timeout = true` is a mistake, not one second.
    if isinstance(value, bool):
        raise ValueError(f"invalid {what} {value!r}: {_DURATION_HINT}")
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration_str(value, what)
    else:
        raise ValueError(f"invalid {what} {value!r}: {_DURATION_HINT}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"invalid {what} {value!r}: must be a finite number of seconds")
    if seconds < 0:
        raise ValueError(f"invalid {what} {value!r}: must not be negative")
    return seconds


def _parse_duration_str(value: str, what: str) -> float:
    text = value.strip().lower()
    if _PLAIN_NUMBER_RE.match(text):
        return float(text)
    if not text or not _DURATION_RE.match(text):
        raise ValueError(f"invalid {what} {value!r}: {_DURATION_HINT}")
    return sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _PART_RE.findall(text))


# Binary multiples for both spellings: the seed systems (core-lib, the shell scripts that
# set ulimits) take "512MB" as 512 * 1024**2, and a memory limit that silently shrank by 5%
# when someone switched from "512MiB" to "512MB" would be a surprise.
_BYTE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_BYTES_RE = re.compile(rf"^\s*({_NUMBER})\s*([a-z]*)\s*$")


def parse_bytes(value: int | str, *, what: str = "memory limit") -> int:
    """Return a positive size in bytes.

    Ints are bytes. Strings are a number and an optional unit, case-insensitive:
    "1024", "100kb", "512M", "512MB", "1.5GB", "2GiB", "1T". K/KB/KiB, M/MB/MiB, G/GB/GiB
    and T/TB/TiB are all binary multiples (1024, 1024**2, ...): "512MB" is 512 * 1024**2
    bytes, as in the seed systems this replaces, not 512 * 10**6.
    """
    hint = "expected bytes or a size such as '512MB', '1.5GB', '2GiB'"
    if isinstance(value, bool):
        raise ValueError(f"invalid {what} {value!r}: {hint}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _BYTES_RE.match(value.lower())
        if match is None or match.group(2) not in _BYTE_UNITS:
            raise ValueError(f"invalid {what} {value!r}: {hint}")
        size = round(float(match.group(1)) * _BYTE_UNITS[match.group(2)])
    else:
        raise ValueError(f"invalid {what} {value!r}: {hint}")
    if size <= 0:
        raise ValueError(f"invalid {what} {value!r}: must be greater than zero")
    return size


_DAILY_TIME_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


def parse_daily_time(value: str) -> tuple[int, int] | None:
    """Return (hour, minute) for "HH:MM", or None when `value` is not written like a time.

    The two outcomes are kept apart so a caller can try other readings (duration, cron)
    for None, while "25:00" or "12:61" - clearly meant as a time - fails loudly instead of
    falling through to a confusing "not a duration" error.
    """
    match = _DAILY_TIME_RE.match(value)
    if match is None:
        return None
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        raise ValueError(f"invalid time of day {value!r}: expected HH:MM between 00:00 and 23:59")
    return hour, minute


def duration_from_env(name: str, default: float, low: float, high: float = float("inf")) -> float:
    """A host-wide bound from the environment variable `name` (seconds, or "30s"),
    `default` when unset; ConfigError naming the variable when it is not a duration in
    [low, high] (low excluded when 0). Every process of a home must agree on such a
    bound, so it is a setting of the environment rather than an option of one pool."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse_duration(raw, what=name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not (low < value if low == 0 else low <= value) or value > high:
        bounds = f"more than {low:g} seconds" if high == float("inf") else f"{low:g} to {high:g} s"
        raise ConfigError(f"invalid {name} {raw!r}: must be {bounds}")
    return value
