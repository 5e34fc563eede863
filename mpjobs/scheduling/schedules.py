"""Recurring schedules: declaring them and the Schedule handle.

A schedule lives in the store, not in a process, so every process may declare it at
import time: the same id updates one row, and only the leader turns fires into jobs
(by the rule in rules/schedules.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from mpjobs.control.options import Gates, schedule_spec
from mpjobs.errors import ConfigError, NotFoundError
from mpjobs.job import Job
from mpjobs.limits import resolve_limits
from mpjobs.scheduling.durations import parse_duration
from mpjobs.scheduling.triggers import (
    CronTrigger,
    IntervalTrigger,
    Trigger,
    trigger_from_spec,
)
from mpjobs.store.base import ACTIVE, PAUSED, ScheduleRecord

if TYPE_CHECKING:
    from mpjobs.app import App, JobBuilder

SCHEDULE_DEFAULTS: dict[str, Any] = {
    "coalesce": True,
    "misfire_grace_time": None,
    "max_instances": 1,
    "max_failures": None,
    "jitter": None,
}


def interval_trigger(interval: float | str | timedelta, start: Any = None) -> IntervalTrigger:
    """`every(interval, start=...)`: start is None (one interval from now), 'startup'
    (now), a delay such as '2h32m', or a datetime."""
    every = parse_duration(interval, what="interval")
    if every <= 0:
        raise ValueError(f"interval must be positive, got {interval!r}")
    now = time.time()
    if start is None:
        anchor = now + every
    elif isinstance(start, str) and start.lower() in ("startup", "boot"):
        anchor = now
    elif isinstance(start, datetime):
        anchor = start.timestamp()
    else:
        anchor = now + parse_duration(start, what="start")
    return IntervalTrigger(every, anchor)


def _shape(spec: dict[str, object]) -> dict[str, object]:
    """A trigger spec without its anchor: what makes two declarations "the same"."""
    return {k: v for k, v in spec.items() if k != "anchor"}


def _options(builder: JobBuilder[Any]) -> dict[str, Any]:
    o = builder._options
    opts = {k: o.get(k, d) for k, d in SCHEDULE_DEFAULTS.items()}
    for key in ("misfire_grace_time", "jitter"):
        if opts[key] is not None:
            opts[key] = parse_duration(opts[key], what=key)
    for key in ("max_instances", "max_failures"):
        if opts[key] is not None and (not isinstance(opts[key], int) or opts[key] < 1):
            raise ValueError(f"{key} must be an int >= 1 or None, got {opts[key]!r}")
    timeout, memory = resolve_limits(o.get("timeout"), o.get("memory_limit"), o.get("limits"))
    opts.update(
        queue=o.get("queue", "default"), priority=o.get("priority", 0),
        max_attempts=o.get("max_attempts", 1), retry_backoff=float(o.get("retry_backoff", 1.0)),
        timeout=timeout, memory_limit=memory,
    )  # fmt: skip
    gates = schedule_spec(Gates.of(o), builder.args, builder.kwargs)
    if gates is not None:  # expires, rate_limit, concurrency_key: each fire carries them
        opts["control"] = gates
    return opts


STARTUP_SLACK = 5.0  # seconds: how far before the declaration a "startup" anchor may lie


def declare(builder: JobBuilder[Any], trigger: Trigger) -> Schedule:
    """Create or update the schedule; the same id (given, or derived) is one schedule."""
    if "depends_on" in builder._options:
        raise ConfigError(
            "a schedule cannot depend on jobs (depends_on): each fire would wait on the "
            "same parents; push the dependent job from the parent instead (job.then)"
        )
    now = time.time()  # before opening the store: a start="startup" anchor is "now" too
    store = builder.app.store
    opts = _options(builder)
    payload = builder.payload() or b""
    spec = trigger.to_spec()
    sid = builder._options.get("id")
    if sid is None:
        h = hashlib.sha1(
            repr((builder.func, builder.func_pickle, payload, _shape(spec), opts["queue"])).encode()
        )
        sid = f"{builder.name}@{h.hexdigest()[:10]}"
    existing = store.get_schedule(sid)
    since = now
    if existing is not None and _shape(json.loads(existing.trigger)) == _shape(spec):
        spec = json.loads(existing.trigger)  # keep the first declaration's phase
        trigger = trigger_from_spec(spec)
    elif isinstance(trigger, IntervalTrigger) and 0 <= now - trigger.anchor < STARTUP_SLACK:
        # A new `start="startup"` anchor was read from the clock when the trigger was
        # built, a moment before `now`; a busy machine can make that moment long, and
        # the first fire (at the anchor) must not be skipped for it. (An anchor further
        # in the past, a datetime, is not caught up on.)
        since = trigger.anchor
    first = trigger.next_after(since - 1e-3)
    store.upsert_schedule(
        ScheduleRecord(
            id=sid, name=builder._options.get("name") or builder.name, func=builder.func,
            func_pickle=builder.func_pickle, payload=payload, trigger=json.dumps(spec),
            options=json.dumps(opts), state=ACTIVE, next_run_time=first, failures=0,
            created_at=now, updated_at=now,
        )
    )  # fmt: skip
    return Schedule(builder.app, sid)


class Schedule:
    """A handle to a recurring schedule; reads are fresh from the store."""

    def __init__(self, app: App, schedule_id: str) -> None:
        self.app = app
        self.id = schedule_id

    def __repr__(self) -> str:
        rec = self._record()
        return f"<Schedule {self.id} {rec.state} {self.trigger}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _record(self) -> ScheduleRecord:
        rec = self.app.store.get_schedule(self.id)
        if rec is None:
            raise self._gone()
        return rec

    def _gone(self) -> NotFoundError:
        return NotFoundError(f"schedule {self.id!r} does not exist (removed?)")

    def _update(self, **fields: object) -> None:
        """Change the row, or raise NotFoundError if it was removed (even just now)."""
        if not self.app.store.update_schedule(self.id, updated_at=time.time(), **fields):
            raise self._gone()

    @property
    def next_run_time(self) -> datetime | None:
        t = self._record().next_run_time
        return None if t is None else datetime.fromtimestamp(t, tz=timezone.utc)

    @property
    def state(self) -> str:
        """'active', 'paused', or 'stopped' (after max_failures)."""
        return self._record().state

    @property
    def trigger(self) -> str:
        return trigger_from_spec(json.loads(self._record().trigger)).describe()

    @property
    def options(self) -> dict[str, Any]:
        return dict(json.loads(self._record().options))

    @property
    def failures(self) -> int:
        return self._record().failures

    def pause(self) -> None:
        """Stop firing until `resume()`; NotFoundError if the schedule was removed."""
        self._update(state=PAUSED)

    def resume(self) -> None:
        """Resume from now on: fires missed while paused are not made up."""
        rec = self._record()
        nxt = trigger_from_spec(json.loads(rec.trigger)).next_after(time.time())
        self._update(state=ACTIVE, next_run_time=nxt, failures=0)

    def reschedule(
        self,
        cron: str | None = None,
        every: float | str | timedelta | None = None,
        *,
        tz: str | None = None,
        start: Any = None,
    ) -> None:
        if (cron is None) == (every is None):
            raise TypeError("reschedule() takes exactly one of cron= or every=")
        trigger: Trigger
        if cron is not None:
            trigger = CronTrigger(cron, tz)
        else:
            assert every is not None
            trigger = interval_trigger(every, start)
        self._update(
            trigger=json.dumps(trigger.to_spec()),
            next_run_time=trigger.next_after(time.time() - 1e-3),
        )

    def remove(self) -> None:
        """Delete the schedule; removing one that is already gone does nothing."""
        self.app.store.remove_schedule(self.id)

    def jobs(self, limit: int = 100) -> list[Job[Any]]:
        store = self.app.store
        return [Job(store, r.id) for r in store.list_jobs(None, None, limit, schedule_id=self.id)]
