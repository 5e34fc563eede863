"""What a job config file says, once checked: `Config`, `JobSpec` and the `frequency` grammar.

`frequency` is read, in this order, as: nothing (absent, null, "none"/"null": run once),
a number of seconds, "HH:MM" (every day at that wall-clock time), a duration string
("30m", "2h 32m"), or a cron expression (5 fields, or 6 with seconds last, or @hourly,
@daily, ...). Durations are tried before cron because both may contain spaces.

Errors are ConfigErrors built by `Where`, so each names the file, the entry and the field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from mpjobs.errors import ConfigError
from mpjobs.options import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, DEFAULT_QUEUE
from mpjobs.scheduling.durations import parse_daily_time, parse_duration
from mpjobs.scheduling.triggers import CronTrigger, DailyTrigger, IntervalTrigger, Trigger

__all__ = [
    "NONE_WORDS",
    "Config",
    "JobSpec",
    "Where",
    "check",
    "parse_frequency",
    "parse_initial_delay",
    "parse_timeout",
]

NONE_WORDS = ("none", "null", "~", "")
_STARTUP_WORDS = ("startup", "boot")


@dataclass(frozen=True)
class JobSpec:
    """One `[[mpjobs.jobs]]` entry, validated and normalised.

    `handler` is "pkg.mod:func" / "pkg.mod.func" for functions (called with args/kwargs),
    or the class path for classes (instantiated with **params, then `.run()` is called,
    see `run_class_handler`). `initial_delay` is seconds, "startup" (run once at start),
    or None. `frequency` is seconds for "interval", the expression for "cron", "HH:MM"
    for "daily", or None (with frequency_kind None) for a job that runs once.
    """

    id: str
    handler: str
    handler_kind: Literal["function", "class"]
    params: dict[str, Any] = field(default_factory=dict)
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    initial_delay: float | Literal["startup"] | None = None
    frequency_kind: Literal["interval", "cron", "daily"] | None = None
    frequency: str | float | None = None
    tz: str | None = None
    queue: str = DEFAULT_QUEUE
    priority: int = DEFAULT_PRIORITY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float | None = None
    memory_limit: int | None = None

    def make_trigger(self, anchor: float) -> Trigger | None:
        """Build the recurring trigger (None for a run-once job).

        `anchor` is the first fire of an interval job (e.g. start time + initial_delay);
        cron and daily jobs ignore it because their fire times come from the clock.
        """
        if self.frequency_kind == "interval":
            assert isinstance(self.frequency, float)
            return IntervalTrigger(self.frequency, anchor)
        if self.frequency_kind == "cron":
            assert isinstance(self.frequency, str)
            return CronTrigger(self.frequency, self.tz)
        if self.frequency_kind == "daily":
            assert isinstance(self.frequency, str)
            hour, minute = (int(part) for part in self.frequency.split(":"))
            return DailyTrigger(hour, minute, self.tz)
        return None


@dataclass(frozen=True)
class Config:
    """A whole config file; None means "not set here", leaving the CLI's or App's default."""

    path: Path
    app: str | None
    home: str | None
    workers: int | None
    queues: list[str] | None
    imports: list[str]
    jobs: list[JobSpec]


class Where:
    """Builds error messages that name the file, the entry and the field."""

    def __init__(self, path: Path, entry: str = "") -> None:
        self.path = path
        self.entry = entry

    def at(self, entry: str) -> Where:
        return Where(self.path, entry)

    def error(self, message: str, key: str | None = None) -> ConfigError:
        parts = [str(self.path)]
        if self.entry:
            parts.append(self.entry)
        if key is not None:
            parts.append(f"field {key!r}")
        return ConfigError(": ".join([*parts, message]))


def parse_frequency(
    value: object, tz: str | None, where: Where
) -> tuple[Literal["interval", "cron", "daily"] | None, str | float | None]:
    if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        return None, None
    key = "frequency"
    expected = "expected a duration, a cron expression, HH:MM or none"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise where.error(f"{expected}, got {value!r}", "frequency")
    if isinstance(value, (int, float)):
        seconds = check(lambda: parse_duration(value, what="frequency"), where, "frequency")
        if seconds <= 0:
            raise where.error(f"invalid frequency {value!r}: must be greater than zero", key)
        return "interval", seconds
    text = " ".join(value.split())
    daily = check(lambda: parse_daily_time(text), where, "frequency")
    if daily is not None:
        return "daily", f"{daily[0]:02d}:{daily[1]:02d}"
    try:
        seconds = parse_duration(text, what="frequency")
    except ValueError as exc:
        # Not a duration ("2h 32m" has spaces too, so durations are tried first).
        if " " in text or text.startswith("@"):
            check(lambda: CronTrigger(text, tz), where, "frequency")
            return "cron", text
        raise where.error(
            f"invalid frequency {value!r}: expected a duration ('30m', '2h32m'), a cron"
            " expression ('*/5 * * * *'), a time of day ('16:00') or none",
            "frequency",
        ) from exc
    if seconds <= 0:
        raise where.error(f"invalid frequency {value!r}: must be greater than zero", "frequency")
    return "interval", seconds


def parse_initial_delay(value: object, where: Where) -> float | Literal["startup"] | None:
    if value is None:
        return None
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _STARTUP_WORDS:
            return "startup"
        if word in NONE_WORDS:
            return None
    if not isinstance(value, (int, float, str)):
        raise where.error(f"expected a duration or 'startup', got {value!r}", "initial_delay")
    return check(lambda: parse_duration(value, what="initial_delay"), where, "initial_delay")


def parse_timeout(value: object, where: Where) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float, str)):
        raise where.error(f"expected a duration, got {value!r}", "timeout")
    seconds = check(lambda: parse_duration(value, what="timeout"), where, "timeout")
    if seconds <= 0:
        raise where.error(f"invalid timeout {value!r}: must be greater than zero", "timeout")
    return seconds


_T = TypeVar("_T")


def check(fn: Callable[[], _T], where: Where, key: str) -> _T:
    """Run a validator from durations/triggers, re-raising its ValueError as ConfigError."""
    try:
        return fn()
    except ValueError as exc:
        raise where.error(str(exc), key) from exc
