"""What a schedule does: which due fires become jobs, and when it stops for failures.

`fire_rule` runs inside the store's fire transaction (`Store.fire_due`), so its answer
commits with the jobs; `tally` runs inside the transaction that records the outcome of
a schedule's job, so the count and the stop commit with it; `redeclared` inside the
one that declares a schedule again. All are pure: the store hands them the rows and
applies what they return.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from typing import Any

from mpjobs.control.options import apply_schedule_spec
from mpjobs.scheduling.triggers import due_fires, trigger_from_spec
from mpjobs.store.base import ACTIVE, FAILED, SUCCESS, TIMEOUT, NewJob, ScheduleRecord

log = logging.getLogger("mpjobs.schedules")


def fire_rule(rec: ScheduleRecord, now: float, active: int) -> tuple[list[NewJob], float | None]:
    """The leader's decision for one due schedule: which fires become jobs, and what next.

    `active` is how many of its jobs still wait or run (for max_instances).
    """
    trigger = trigger_from_spec(json.loads(rec.trigger))
    o = json.loads(rec.options)
    assert rec.next_run_time is not None
    times, nxt = due_fires(
        trigger, rec.next_run_time, now, coalesce=o["coalesce"],
        misfire_grace_time=o["misfire_grace_time"],
    )  # fmt: skip
    if o["max_instances"] is not None:
        room = max(0, o["max_instances"] - active)
        if len(times) > room:
            log.info("schedule %s: %d fire(s) skipped, max_instances=%d reached",
                     rec.id, len(times) - room, o["max_instances"])  # fmt: skip
            times = times[len(times) - room :] if room else []
    jitter = o["jitter"]
    gates = o.get("control")  # expires, rate_limit, concurrency_key (control/options.py)
    jobs = [
        apply_schedule_spec(NewJob(
            name=rec.name,
            func=rec.func,
            func_pickle=rec.func_pickle,
            payload=rec.payload or None,
            queue=o["queue"],
            priority=o["priority"],
            exec_at=t + (random.uniform(0, jitter) if jitter else 0.0),
            max_attempts=o["max_attempts"],
            retry_backoff=o["retry_backoff"],
            timeout=o["timeout"],
            memory_limit=o["memory_limit"],
            unique_key=None,
            schedule_id=rec.id,
            fired_for=t,
        ), gates)
        for t in times
    ]
    return jobs, nxt


def _without_anchor(trigger: str) -> Any:
    """A trigger spec minus its anchor: two declarations of one schedule differ only there."""
    spec = json.loads(trigger)
    return {k: v for k, v in spec.items() if k != "anchor"} if isinstance(spec, dict) else spec


def redeclared(prev: ScheduleRecord, rec: ScheduleRecord, trigger_changed: bool) -> None:
    """Make `rec`, a new declaration of the stored schedule `prev`, what is to be stored.

    Every process declares its schedules at import time, so a re-declaration keeps the
    schedule's state, failure count and age, and its next fire time unless the trigger
    itself changed (else each import would push the next run around). Two declarations
    that differ only in their anchor (made a moment apart) keep the first one's phase.
    """
    if not trigger_changed and _without_anchor(prev.trigger) == _without_anchor(rec.trigger):
        rec.trigger = prev.trigger
    keep_time = prev.trigger == rec.trigger and not trigger_changed
    rec.next_run_time = prev.next_run_time if keep_time else rec.next_run_time
    rec.state, rec.failures, rec.created_at = prev.state, prev.failures, prev.created_at
    if rec.state != ACTIVE:
        rec.next_run_time = prev.next_run_time


@dataclass(frozen=True, slots=True)
class Tally:
    """What one outcome of a schedule's job does to the schedule.

    `failures` is its new count of consecutive failures; `stop` means it reached
    max_failures: the schedule stops and that job ends PERMANENTLY_FAILED, its error
    followed by `note`.
    """

    failures: int
    stop: bool = False
    note: str = ""


def max_failures_of(options: str) -> float | None:
    """A schedule's max_failures, from its stored options (None: it never stops)."""
    try:
        value: Any = json.loads(options).get("max_failures")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, (int, float)) else None


def tally(
    schedule_id: str, status: str, failures: int, max_failures: float | None
) -> Tally | None:
    """The schedule's new count after its job ended in `status`; None: no change.

    A success resets the count; a failure or a timeout adds one; any other end (a
    cancel) counts for nothing. Reaching `max_failures` stops the schedule.
    """
    if status == SUCCESS:
        return Tally(0)
    if status not in (FAILED, TIMEOUT):
        return None
    n = failures + 1
    if max_failures is not None and n >= max_failures:
        return Tally(n, True, f"\nschedule {schedule_id!r} stopped after {n} consecutive failures")
    return Tally(n)
