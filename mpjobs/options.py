"""The options a job or schedule takes, their defaults and their checks: one source.

`@app.task(...)`, `.options(...)`, a config file's job entry and a schedule's
declaration all fall back to these defaults, so a job means the same whichever way it
was declared. The checks run where the option is given (the decorator, `.options()`),
so a typo fails at the call site, naming the option, and not in a worker later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mpjobs.control.options import GATE_OPTIONS, Gates, check_gates
from mpjobs.control.spec import CONTROL_OPTIONS, Control, check_soft, control_of
from mpjobs.errors import ConfigError
from mpjobs.limits import Limit, resolve_limits
from mpjobs.scheduling.durations import parse_duration

__all__ = [
    "DEFAULTS",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_PRIORITY",
    "DEFAULT_QUEUE",
    "DEFAULT_RETRY_BACKOFF",
    "JOB_OPTIONS",
    "SCHEDULE_OPTIONS",
    "TIMING_OPTIONS",
    "WORKFLOW_OPTIONS",
    "Shape",
    "check_options",
    "check_timing",
]

DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 0
DEFAULT_MAX_ATTEMPTS = 1
DEFAULT_RETRY_BACKOFF = 1.0

JOB_OPTIONS = {
    "queue", "priority", "max_attempts", "retry_backoff", "timeout", "memory_limit",
    "limits", "unique_key", "name",
}  # fmt: skip
JOB_OPTIONS |= GATE_OPTIONS  # expires, rate_limit, concurrency_key/limit (control/options.py)
JOB_OPTIONS |= CONTROL_OPTIONS  # retry_on, dont_retry_on, soft_timeout (control/spec.py)
SCHEDULE_OPTIONS = {
    "coalesce", "misfire_grace_time", "max_instances", "max_failures", "jitter", "id",
}  # fmt: skip

# Per job only (`.options()`), never a task's default: what a job waits for (workflows/).
WORKFLOW_OPTIONS = {"depends_on"}

# Per job only: when it is due, so a batch (`push_many`, `task.map`) can hold delayed and
# timed jobs. `delay` counts from the push, not from the `.options()` call; `at` (or its
# other name `exec_at`, the Job attribute it sets) is an aware datetime, naive = local.
TIMING_OPTIONS = {"delay", "at", "exec_at"}

DEFAULTS: dict[str, Any] = {
    "queue": DEFAULT_QUEUE,
    "priority": DEFAULT_PRIORITY,
    "max_attempts": DEFAULT_MAX_ATTEMPTS,
    "retry_backoff": DEFAULT_RETRY_BACKOFF,
    "timeout": None,
    "memory_limit": None,
    "limits": None,
    "unique_key": None,
}


def check_options(options: dict[str, Any], allowed: set[str]) -> None:
    """Reject unknown or ill-typed options at the call site, naming them."""
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; expected some of {sorted(allowed)}")
    if "queue" in options and (not isinstance(options["queue"], str) or not options["queue"]):
        raise ValueError(f"queue must be a non-empty string, got {options['queue']!r}")
    if "priority" in options and not isinstance(options["priority"], int):
        raise TypeError(f"priority must be an int, got {options['priority']!r}")
    ma = options.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
    if not isinstance(ma, int) or ma < 1:
        raise ValueError(f"max_attempts must be an int >= 1, got {ma!r}")
    limits = options.get("limits")
    if limits is not None and not all(isinstance(x, Limit) for x in limits):
        raise TypeError("limits must be a list of mpjobs.Limit")
    if "depends_on" in options:
        from mpjobs.workflows.links import check_depends_on

        check_depends_on(options["depends_on"])
    if not GATE_OPTIONS.isdisjoint(options):
        check_gates(options)  # raises ConfigError naming the bad control option
    if CONTROL_OPTIONS.intersection(options):
        control_of(options)  # job control: its checks (the timeout pairing is in Shape.of)


def check_timing(options: dict[str, Any]) -> dict[str, float]:
    """The timing option of `options`, checked: {"delay": seconds}, {"at": timestamp}
    or {} when none is given. A bad one is a ConfigError naming it, raised here, at the
    call site, and not at the push of a batch that holds it."""
    given = sorted(TIMING_OPTIONS.intersection(options))
    if not given:
        return {}
    if len(given) > 1:
        raise ConfigError(f"a job takes one of delay=, at= (or exec_at=), got {given}")
    key = given[0]
    value = options[key]
    if key == "delay":
        try:
            return {"delay": parse_duration(value, what="delay")}
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if not isinstance(value, datetime):
        raise ConfigError(
            f"invalid {key} {value!r}: expected a datetime (aware; naive means local time)"
        )
    return {"at": value.timestamp()}


@dataclass(frozen=True, slots=True)
class Shape:
    """A job's options resolved once per task or `.options()` call, not once per push."""

    name: str
    queue: str
    priority: int
    max_attempts: int
    retry_backoff: float
    timeout: float | None
    memory_limit: int | None
    unique_key: str | None
    control: Control | None = None  # retry rules, soft timeout (control/spec.py)
    gates: Gates | None = None  # expires, rate_limit, concurrency (control/options.py)

    @classmethod
    def of(cls, options: dict[str, Any], name: str) -> Shape:
        o = options
        timeout, memory = resolve_limits(o.get("timeout"), o.get("memory_limit"), o.get("limits"))
        control = control_of(o)
        check_soft(control, timeout)
        return cls(
            o.get("name") or name, o.get("queue", DEFAULT_QUEUE),
            o.get("priority", DEFAULT_PRIORITY), o.get("max_attempts", DEFAULT_MAX_ATTEMPTS),
            float(o.get("retry_backoff", DEFAULT_RETRY_BACKOFF)), timeout, memory,
            o.get("unique_key"), control, Gates.of(o),
        )  # fmt: skip
