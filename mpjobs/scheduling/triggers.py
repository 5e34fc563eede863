"""Recurring triggers as pure functions of unix time, and the leader's misfire rule.

Triggers hold no clock and no state: `next_after(t)` depends only on `t`, so the leader
can recompute a schedule after any downtime, tests need no sleeping, and two processes
that disagree about "now" still agree about the fire times.
"""

from __future__ import annotations

import abc
import datetime
import math
import os
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

__all__ = [
    "CronTrigger",
    "DailyTrigger",
    "IntervalTrigger",
    "Trigger",
    "due_fires",
    "format_seconds",
    "trigger_from_spec",
]


class Trigger(abc.ABC):
    """When a recurring job fires; all times are unix timestamps in float seconds."""

    @abc.abstractmethod
    def next_after(self, t: float) -> float:
        """Return the first fire time strictly after `t`."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Return a short human description, for logs and `mpjobs` listings."""

    @abc.abstractmethod
    def to_spec(self) -> dict[str, object]:
        """Return a JSON-serialisable dict that `trigger_from_spec` turns back into a trigger."""

    def latest_fires(self, after: float, upto: float, limit: int) -> list[float]:
        """Return the latest `limit` fire times f with after < f <= upto, oldest first.

        The window grows geometrically backwards from `upto`, so the work is about
        proportional to `limit`, not to the length of the downtime: a per-minute cron that
        was down for a year costs a handful of windows, not half a million steps.
        Subclasses that can do this arithmetically override it.
        """
        if limit <= 0 or upto <= after:
            return []
        width = 1.0
        while True:
            start = upto - width
            if start <= after:
                start = after
            found: deque[float] = deque(maxlen=limit)
            for fire in self._iter_fires(start, upto):
                found.append(fire)
            if len(found) >= limit or start == after:
                return list(found)
            width *= 8.0

    def _iter_fires(self, after: float, upto: float) -> Iterator[float]:
        fire = self.next_after(after)
        while fire <= upto:
            yield fire
            fire = self.next_after(fire)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trigger):
            return NotImplemented
        return self.to_spec() == other.to_spec()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.to_spec().items())))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def format_seconds(seconds: float) -> str:
    """Write seconds the way people write them in configs ("2h32m", "1.5s"), for messages."""
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    frac = seconds - rest
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    if rest or frac or not parts:
        parts.append(f"{rest + frac:g}s")
    return "".join(parts)


# ---------------------------------------------------------------------------------------
# Interval


class IntervalTrigger(Trigger):
    """Fires at anchor + k * interval for k >= 0.

    Fire times are computed from the anchor, never from the previous fire, so they do not
    drift however late the leader runs, and skipping a year of fires costs O(1).
    """

    def __init__(self, interval: float, anchor: float) -> None:
        interval = float(interval)
        anchor = float(anchor)
        if not math.isfinite(interval) or interval <= 0:
            raise ValueError(f"invalid interval {interval!r}: must be greater than zero")
        if not math.isfinite(anchor):
            raise ValueError(f"invalid anchor {anchor!r}: must be a finite timestamp")
        self.interval = interval
        self.anchor = anchor

    def _at(self, k: int) -> float:
        return self.anchor + k * self.interval

    def _first_index_after(self, t: float) -> int:
        """Smallest k >= 0 with anchor + k * interval > t, corrected for float rounding."""
        if t < self.anchor:
            return 0
        k = max(0, math.floor((t - self.anchor) / self.interval) + 1)
        while k > 0 and self._at(k - 1) > t:
            k -= 1
        while self._at(k) <= t:
            k += 1
        return k

    def next_after(self, t: float) -> float:
        return self._at(self._first_index_after(t))

    def latest_fires(self, after: float, upto: float, limit: int) -> list[float]:
        if limit <= 0 or upto <= after:
            return []
        lo = self._first_index_after(after)
        hi = self._first_index_after(upto) - 1  # last k with fire <= upto
        lo = max(lo, hi - limit + 1)
        return [self._at(k) for k in range(lo, hi + 1)]

    def describe(self) -> str:
        return f"every {format_seconds(self.interval)}"

    def to_spec(self) -> dict[str, object]:
        return {"type": "interval", "interval": self.interval, "anchor": self.anchor}


# ---------------------------------------------------------------------------------------
# Cron


def _local_zone() -> datetime.tzinfo:
    """The machine's zone with its DST rules (not today's fixed offset).

    `datetime.now().astimezone().tzinfo` would freeze the current UTC offset and get every
    DST change wrong, so read TZ or /etc/localtime the way the C library does.
    """
    key = os.environ.get("TZ", "").lstrip(":")
    if key:
        try:
            return ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return datetime.timezone.utc


def _zone(tz: str | None) -> datetime.tzinfo:
    if tz is None:
        return _local_zone()
    if not isinstance(tz, str) or not tz.strip():
        raise ValueError(f"unknown time zone {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


_KEYWORDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# A DST change moves local clocks by at most a couple of hours (the 2011 Samoa date-line
# jump of a whole day is the known exception); this is how far around `t` we look for one.
_PROBE = 3 * 3600.0


class CronTrigger(Trigger):
    """Fires when the local wall-clock time matches a cron expression.

    Five fields (minute hour day month weekday), or six with seconds as the sixth field
    (croniter's convention). `tz` is an IANA zone name; None means the machine's zone.

    Daylight-saving rules, following Vixie cron's split between "wildcard" jobs (minute or
    hour field starting with `*`) and "fixed-time" jobs (all others):

    * Wildcard jobs (`*/5 * * * *`, `0 * * * *`) fire at every real instant whose wall
      time matches: in the spring-forward gap nothing fires (those wall times never
      happen) and in the autumn repeated hour they fire in both passes, so an hourly job
      fires exactly every 3600 s in real time across both changes.
    * Fixed-time jobs (`30 2 * * *`) fire once per matching wall-clock date and time. A
      time repeated in autumn fires on its first occurrence only (02:30 CEST, not again at
      02:30 CET). A time skipped in spring is moved forward by the length of the gap, as
      PEP 495's fold=0 does: `30 2 * * *` in Europe/Paris on 2025-03-30 fires at 03:30 CEST
      (00:30 UTC + 1 h, exactly 24 real hours after the day before); the day is never
      skipped and never fires twice.

    croniter 7 alone gets this wrong with aware datetimes: it fires fixed-time jobs twice
    in the repeated hour and moves every skipped time to the end of the gap (so a job at
    02:30 runs at 03:00, and `0 */2 * * *` fires at 03:00, which it does not match). So
    croniter is only asked for naive wall-clock matches, and each match is resolved to
    real instants here with zoneinfo's `fold`.
    """

    def __init__(self, expr: str, tz: str | None = None) -> None:
        if not isinstance(expr, str):
            raise ValueError(f"invalid cron expression {expr!r}: expected a string")
        self.expr = " ".join(expr.split())
        self.tz = tz
        expanded = _KEYWORDS.get(self.expr.lower(), self.expr)
        fields = expanded.split()
        if len(fields) not in (5, 6):
            raise ValueError(
                f"invalid cron expression {expr!r}: expected 5 fields (minute hour day month"
                f" weekday) or 6 (with seconds last), got {len(fields)}"
            )
        try:
            croniter(expanded, datetime.datetime(2000, 1, 1))
            # Some impossible dates ("0 0 30 2 *") only fail when iterated.
            croniter(expanded, datetime.datetime(2000, 1, 1)).get_next(datetime.datetime)
        except (CroniterError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"invalid cron expression {expr!r}: {exc}") from exc
        self._expanded = expanded
        self._zone = _zone(tz)
        self._wildcard = fields[0].startswith("*") or fields[1].startswith("*")

    # -- wall time <-> instants ----------------------------------------------------------

    def _offset(self, t: float) -> float:
        offset = datetime.datetime.fromtimestamp(t, self._zone).utcoffset()
        assert offset is not None
        return offset.total_seconds()

    def _transition_size(self, t: float) -> float:
        """How far a clock change within _PROBE of `t` moves local time (0 if none)."""
        return abs(self._offset(t + _PROBE) - self._offset(t - _PROBE))

    def _wall(self, t: float) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(t, self._zone).replace(tzinfo=None)

    def _instants(self, wall: datetime.datetime) -> list[float]:
        first = wall.replace(tzinfo=self._zone, fold=0).timestamp()
        second = wall.replace(tzinfo=self._zone, fold=1).timestamp()
        if first == second:  # an ordinary wall time
            return [first]
        if first < second:  # repeated (autumn): fold=0 is the first pass
            return [first, second] if self._wildcard else [first]
        # skipped (spring): fold=0 applies the old offset, i.e. moves it forward by the gap
        return [] if self._wildcard else [first]

    def _walls_after(self, start: datetime.datetime) -> Iterator[datetime.datetime]:
        it = croniter(self._expanded, start)
        while True:
            yield it.get_next(datetime.datetime)

    def next_after(self, t: float) -> float:
        # Wall order and real order differ only near a clock change: look back for matches
        # whose instants still lie after t (the second pass of a repeated hour, a skipped
        # time moved forward past t) and, once a fire is found near a change, look ahead
        # for later wall times that happen earlier in real time.
        lookback = self._transition_size(t)
        start = self._wall(t) - datetime.timedelta(seconds=lookback + 1)
        best: float | None = None
        stop_at: datetime.datetime | None = None
        for wall in self._walls_after(start):
            if stop_at is not None and wall > stop_at:
                break
            for instant in self._instants(wall):
                if instant > t and (best is None or instant < best):
                    best = instant
                    ahead = self._transition_size(instant)
                    stop_at = self._wall(instant) + datetime.timedelta(seconds=ahead)
        assert best is not None
        return best

    def describe(self) -> str:
        return f"cron '{self.expr}' ({self.tz or 'local time'})"

    def to_spec(self) -> dict[str, object]:
        return {"type": "cron", "expr": self.expr, "tz": self.tz}


class DailyTrigger(CronTrigger):
    """Every day at hour:minute wall-clock time in `tz`; DST rules as for a fixed-time cron job."""

    def __init__(self, hour: int, minute: int, tz: str | None = None) -> None:
        for name, value, top in (("hour", hour, 23), ("minute", minute, 59)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise ValueError(f"invalid {name} {value!r}: expected an integer 0..{top}")
        self.hour = hour
        self.minute = minute
        super().__init__(f"{minute} {hour} * * *", tz)

    def describe(self) -> str:
        return f"daily at {self.hour:02d}:{self.minute:02d} ({self.tz or 'local time'})"

    def to_spec(self) -> dict[str, object]:
        return {"type": "daily", "hour": self.hour, "minute": self.minute, "tz": self.tz}


def trigger_from_spec(spec: Mapping[str, object]) -> Trigger:
    """Rebuild a trigger from `Trigger.to_spec()` output (e.g. read back from the store)."""
    kind = spec.get("type")
    s: Mapping[str, Any] = spec
    try:
        if kind == "interval":
            return IntervalTrigger(float(s["interval"]), float(s["anchor"]))
        if kind == "cron":
            return CronTrigger(str(s["expr"]), _opt_str(s.get("tz")))
        if kind == "daily":
            return DailyTrigger(int(s["hour"]), int(s["minute"]), _opt_str(s.get("tz")))
    except KeyError as exc:
        raise ValueError(f"invalid trigger spec {dict(spec)!r}: missing {exc}") from exc
    raise ValueError(f"invalid trigger spec {dict(spec)!r}: unknown type {kind!r}")


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------
# The leader's rule


def due_fires(
    trigger: Trigger,
    next_run_time: float,
    now: float,
    *,
    coalesce: bool,
    misfire_grace_time: float | None,
    limit: int = 1000,
) -> tuple[list[float], float]:
    """Return (run times to fire now, oldest first; the new next_run_time > now).

    APScheduler's semantics: the fires due are the stored `next_run_time` plus every
    trigger time after it up to and including `now`; fires more than `misfire_grace_time`
    late are dropped (None: never); with `coalesce` only the latest survivor is kept; and
    at most the latest `limit` are returned so a long outage cannot flood the queue.
    Only the fires that are returned are computed, so a year of downtime at a 1 s
    interval costs O(1) for IntervalTrigger and about O(limit) for cron.
    """
    if next_run_time > now:
        return [], next_run_time
    new_next = trigger.next_after(now)
    keep = 1 if coalesce else max(0, limit)
    # `after` is exclusive; nextafter makes a fire exactly `misfire_grace_time` late count.
    after = next_run_time
    stored_survives = True
    if misfire_grace_time is not None:
        oldest = now - misfire_grace_time
        if next_run_time < oldest:
            stored_survives = False
            after = math.nextafter(oldest, -math.inf)
    fires = trigger.latest_fires(after, now, keep)
    if stored_survives and len(fires) < keep:
        fires.insert(0, next_run_time)
    return fires, new_next
