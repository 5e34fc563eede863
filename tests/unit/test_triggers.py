from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from mpjobs.scheduling.triggers import (
    CronTrigger,
    DailyTrigger,
    IntervalTrigger,
    Trigger,
    due_fires,
    trigger_from_spec,
)

PARIS = ZoneInfo("Europe/Paris")
UTC = timezone.utc


def paris(
    y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, *, fold: int = 0
) -> float:
    return datetime(y, mo, d, h, mi, s, tzinfo=PARIS, fold=fold).timestamp()


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> float:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp()


def fires(trigger: Trigger, start: float, count: int) -> list[float]:
    out: list[float] = []
    t = start
    for _ in range(count):
        t = trigger.next_after(t)
        out.append(t)
    return out


# -- IntervalTrigger ------------------------------------------------------------------


def test_interval_next_after() -> None:
    trig = IntervalTrigger(10.0, 1000.0)
    assert trig.next_after(0.0) == 1000.0
    assert trig.next_after(999.999) == 1000.0
    assert trig.next_after(1000.0) == 1010.0
    assert trig.next_after(1005.0) == 1010.0
    assert trig.next_after(1010.0) == 1020.0


def test_interval_no_drift_far_away() -> None:
    trig = IntervalTrigger(0.1, 1_700_000_000.0)
    t = 1_700_000_000.0 + 365 * 86400 + 0.05
    nxt = trig.next_after(t)
    assert nxt > t
    assert nxt - 0.1 <= t + 1e-6


@pytest.mark.parametrize("interval", [0, -1, float("nan"), float("inf")])
def test_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError):
        IntervalTrigger(interval, 0.0)


# -- CronTrigger ----------------------------------------------------------------------


def test_cron_basic_utc() -> None:
    trig = CronTrigger("*/15 * * * *", "UTC")
    start = utc(2025, 1, 1, 10, 7)
    assert fires(trig, start, 3) == [utc(2025, 1, 1, 10, 15), utc(2025, 1, 1, 10, 30),
                                     utc(2025, 1, 1, 10, 45)]
    assert trig.next_after(utc(2025, 1, 1, 10, 15)) == utc(2025, 1, 1, 10, 30)


def test_cron_six_fields_seconds_last() -> None:
    trig = CronTrigger("* * * * * */10", "UTC")
    assert trig.next_after(utc(2025, 1, 1, 0, 0, 1)) == utc(2025, 1, 1, 0, 0, 10)


def test_cron_invalid_expression() -> None:
    with pytest.raises(ValueError, match=r"^invalid cron expression '\* \* \*': "):
        CronTrigger("* * *")
    with pytest.raises(ValueError, match=r"^invalid cron expression '61 \* \* \* \*': "):
        CronTrigger("61 * * * *")
    with pytest.raises(ValueError, match="invalid cron expression"):
        CronTrigger("a b c d e")


def test_cron_unknown_time_zone() -> None:
    with pytest.raises(ValueError, match=r"^unknown time zone 'Mars/Base'$"):
        CronTrigger("0 * * * *", "Mars/Base")


def test_cron_none_means_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    trig = CronTrigger("0 9 * * *")
    t = trig.next_after(utc(2025, 1, 1, 12))
    assert t == datetime(2025, 1, 2, 9, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp()
    assert trig.to_spec()["tz"] is None


def test_hourly_over_spring_forward_paris() -> None:
    trig = CronTrigger("0 * * * *", "Europe/Paris")
    got = fires(trig, utc(2025, 3, 29, 22, 30), 5)
    # 02:00 local does not exist on 2025-03-30: 01:00 CET (00:00 UTC), then 03:00 CEST.
    assert got == [utc(2025, 3, 29, 23), utc(2025, 3, 30, 0), utc(2025, 3, 30, 1),
                   utc(2025, 3, 30, 2), utc(2025, 3, 30, 3)]
    assert got[1] == paris(2025, 3, 30, 1)
    assert got[2] == paris(2025, 3, 30, 3)


def test_hourly_over_fall_back_paris_fires_every_real_hour() -> None:
    trig = CronTrigger("0 * * * *", "Europe/Paris")
    got = fires(trig, utc(2025, 10, 25, 21, 30), 8)
    assert [b - a for a, b in itertools.pairwise(got)] == [3600.0] * 7
    # 02:00 happens twice, and fires twice.
    assert paris(2025, 10, 26, 2, fold=0) in got
    assert paris(2025, 10, 26, 2, fold=1) in got


def _day_fires(trig: Trigger, day_start: float, day_end: float) -> list[float]:
    out: list[float] = []
    t = day_start
    while True:
        t = trig.next_after(t)
        if t >= day_end:
            return out
        out.append(t)


def test_daily_fixed_time_spring_forward_fires_once_at_0330_cest() -> None:
    for trig in (CronTrigger("30 2 * * *", "Europe/Paris"), DailyTrigger(2, 30, "Europe/Paris")):
        got = _day_fires(trig, paris(2025, 3, 29, 12), paris(2025, 3, 31, 12))
        # 02:30 does not exist on the 30th: moved forward by the 1 h gap to 03:30 CEST,
        # which is exactly 24 real hours after the 29th's 02:30 CET.
        assert got == [utc(2025, 3, 30, 1, 30), paris(2025, 3, 31, 2, 30)]
        assert got[0] == paris(2025, 3, 29, 2, 30) + 86400
        assert datetime.fromtimestamp(got[0], PARIS).strftime("%H:%M %Z") == "03:30 CEST"


def test_daily_fixed_time_fall_back_fires_once() -> None:
    for trig in (CronTrigger("30 2 * * *", "Europe/Paris"), DailyTrigger(2, 30, "Europe/Paris")):
        got = _day_fires(trig, paris(2025, 10, 25, 12), paris(2025, 10, 27, 12))
        # 02:30 happens twice on the 26th; a fixed-time job fires on the first pass only.
        assert got == [paris(2025, 10, 26, 2, 30, fold=0), paris(2025, 10, 27, 2, 30)]
        assert datetime.fromtimestamp(got[0], PARIS).strftime("%H:%M %Z") == "02:30 CEST"


def test_fixed_time_job_asked_inside_the_gap_or_fold() -> None:
    trig = CronTrigger("30 2 * * *", "Europe/Paris")
    # Just after the clocks jumped, the moved 02:30 (= 03:30 CEST) is still ahead.
    assert trig.next_after(paris(2025, 3, 30, 3, 10)) == paris(2025, 3, 30, 3, 30)
    assert trig.next_after(paris(2025, 3, 30, 3, 30)) == paris(2025, 3, 31, 2, 30)
    # During the second pass of 02:xx, today's job already ran.
    assert trig.next_after(paris(2025, 10, 26, 2, 10, fold=1)) == paris(2025, 10, 27, 2, 30)


def _wildcard_reference(minutes: set[int], hours: set[int], t: float) -> float:
    """Slow truth for wildcard jobs: the next real minute whose Paris wall time matches."""
    x = (int(t) // 60 + 1) * 60
    while True:
        wall = datetime.fromtimestamp(x, PARIS)
        if wall.minute in minutes and wall.hour in hours:
            return x
        x += 60


ALL_HOURS = set(range(24))


@pytest.mark.parametrize(
    ("expr", "minutes", "hours"),
    [
        ("*/15 * * * *", {0, 15, 30, 45}, ALL_HOURS),
        ("0 */2 * * *", {0}, set(range(0, 24, 2))),
        ("* * * * *", set(range(60)), ALL_HOURS),
        ("5,40 * * * *", {5, 40}, ALL_HOURS),
        ("*/7 1-3 * * *", set(range(0, 60, 7)), {1, 2, 3}),
    ],
)
def test_wildcard_jobs_match_real_instants_around_dst(
    expr: str, minutes: set[int], hours: set[int]
) -> None:
    trig = CronTrigger(expr, "Europe/Paris")
    for day in ((2025, 3, 30), (2025, 10, 26)):
        base = utc(*day) - 3 * 3600
        for k in range(0, 8 * 3600, 577):
            t = base + k + 0.5
            assert trig.next_after(t) == _wildcard_reference(minutes, hours, t), (expr, t)


@pytest.mark.parametrize("expr", ["30 2 * * *", "0,30 2 * * *", "15 1-3 * * *", "0 2 * * *"])
def test_fixed_jobs_fire_once_per_wall_time_around_dst(expr: str) -> None:
    trig = CronTrigger(expr, "Europe/Paris")
    for day in ((2025, 3, 30), (2025, 10, 26)):
        start = datetime(*day) - timedelta(days=1)
        it = croniter(expr, start)
        expected = []
        for _ in range(12):
            wall = it.get_next(datetime)
            expected.append(wall.replace(tzinfo=PARIS, fold=0).timestamp())
        expected = sorted(set(expected))
        got = fires(trig, start.replace(tzinfo=PARIS).timestamp(), len(expected))
        assert got == expected


def test_cron_keywords() -> None:
    assert CronTrigger("@hourly", "UTC").next_after(utc(2025, 1, 1, 0, 30)) == utc(2025, 1, 1, 1)
    assert CronTrigger("@daily", "UTC").next_after(utc(2025, 1, 1, 0, 30)) == utc(2025, 1, 2)


def test_daily_trigger_validates() -> None:
    with pytest.raises(ValueError):
        DailyTrigger(24, 0)
    with pytest.raises(ValueError):
        DailyTrigger(0, 60)
    with pytest.raises(ValueError, match="unknown time zone"):
        DailyTrigger(1, 0, "Nowhere/City")


# -- specs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trigger",
    [
        IntervalTrigger(2.5, 1_700_000_000.25),
        CronTrigger("*/5 * * * *", "Europe/Paris"),
        CronTrigger("0 3 * * 1-5"),
        DailyTrigger(16, 0, "UTC"),
    ],
)
def test_spec_round_trip(trigger: Trigger) -> None:
    spec = json.loads(json.dumps(trigger.to_spec()))
    again = trigger_from_spec(spec)
    assert type(again) is type(trigger)
    assert again == trigger
    assert again.to_spec() == trigger.to_spec()
    assert again.describe() == trigger.describe()
    t = 1_750_000_000.0
    assert again.next_after(t) == trigger.next_after(t)


def test_spec_rejects_unknown() -> None:
    with pytest.raises(ValueError):
        trigger_from_spec({"type": "lunar"})
    with pytest.raises(ValueError):
        trigger_from_spec({"type": "interval"})


def test_describe() -> None:
    assert IntervalTrigger(9120, 0).describe() == "every 2h32m"
    assert IntervalTrigger(0.5, 0).describe() == "every 0.5s"
    assert "16:00" in DailyTrigger(16, 0, "UTC").describe()
    assert "*/5 * * * *" in CronTrigger("*/5 * * * *", "UTC").describe()


# -- due_fires ------------------------------------------------------------------------


def test_due_fires_not_due() -> None:
    trig = IntervalTrigger(10, 0)
    assert due_fires(trig, 100.0, 99.0, coalesce=False, misfire_grace_time=None) == ([], 100.0)


def test_due_fires_exactly_on_time() -> None:
    trig = IntervalTrigger(10, 0)
    assert due_fires(trig, 100.0, 100.0, coalesce=False, misfire_grace_time=None) == (
        [100.0],
        110.0,
    )


def test_due_fires_collects_all_missed() -> None:
    trig = IntervalTrigger(10, 0)
    got = due_fires(trig, 100.0, 135.0, coalesce=False, misfire_grace_time=None)
    assert got == ([100.0, 110.0, 120.0, 130.0], 140.0)


def test_due_fires_coalesce_keeps_latest() -> None:
    trig = IntervalTrigger(10, 0)
    got = due_fires(trig, 100.0, 135.0, coalesce=True, misfire_grace_time=None)
    assert got == ([130.0], 140.0)


def test_due_fires_grace_drops_late_ones() -> None:
    trig = IntervalTrigger(10, 0)
    got = due_fires(trig, 100.0, 135.0, coalesce=False, misfire_grace_time=15.0)
    assert got == ([120.0, 130.0], 140.0)
    # exactly grace seconds late still runs
    got = due_fires(trig, 100.0, 135.0, coalesce=False, misfire_grace_time=25.0)
    assert got == ([110.0, 120.0, 130.0], 140.0)
    # all too late: nothing runs, but the schedule still moves past now
    got = due_fires(trig, 100.0, 135.0, coalesce=True, misfire_grace_time=1.0)
    assert got == ([], 140.0)


def test_due_fires_limit_keeps_latest() -> None:
    trig = IntervalTrigger(10, 0)
    got = due_fires(trig, 100.0, 195.0, coalesce=False, misfire_grace_time=None, limit=3)
    assert got == ([170.0, 180.0, 190.0], 200.0)


def test_due_fires_unaligned_stored_time_counts() -> None:
    trig = IntervalTrigger(10, 0)
    got = due_fires(trig, 95.0, 112.0, coalesce=False, misfire_grace_time=None)
    assert got == ([95.0, 100.0, 110.0], 120.0)


def test_due_fires_year_of_downtime_at_1s_is_cheap() -> None:
    trig = IntervalTrigger(1.0, 1_700_000_000.0)
    now = 1_700_000_000.0 + 365 * 86400 + 0.5
    fires_, nxt = due_fires(trig, 1_700_000_000.0, now, coalesce=True, misfire_grace_time=None)
    assert fires_ == [now - 0.5]
    assert nxt == now + 0.5
    fires_, nxt = due_fires(trig, 1_700_000_000.0, now, coalesce=False, misfire_grace_time=None)
    assert len(fires_) == 1000
    assert fires_[-1] == now - 0.5
    assert fires_[0] == now - 0.5 - 999


def test_due_fires_cron_after_long_downtime() -> None:
    trig = CronTrigger("* * * * *", "UTC")
    nrt = utc(2024, 1, 1)
    now = utc(2025, 1, 1, 12, 0, 30)
    fires_, nxt = due_fires(trig, nrt, now, coalesce=True, misfire_grace_time=None)
    assert fires_ == [utc(2025, 1, 1, 12)]
    assert nxt == utc(2025, 1, 1, 12, 1)
    fires_, _ = due_fires(trig, nrt, now, coalesce=False, misfire_grace_time=None, limit=5)
    assert fires_ == [utc(2025, 1, 1, 12) - 60 * i for i in (4, 3, 2, 1, 0)]
    fires_, _ = due_fires(trig, nrt, now, coalesce=False, misfire_grace_time=150.0)
    assert fires_ == [utc(2025, 1, 1, 11, 58), utc(2025, 1, 1, 11, 59), utc(2025, 1, 1, 12)]


def test_due_fires_cron_few_missed_includes_stored() -> None:
    trig = CronTrigger("0 * * * *", "UTC")
    nrt = utc(2025, 1, 1, 10)
    fires_, nxt = due_fires(trig, nrt, utc(2025, 1, 1, 12, 5), coalesce=False,
                            misfire_grace_time=None)
    assert fires_ == [utc(2025, 1, 1, 10), utc(2025, 1, 1, 11), utc(2025, 1, 1, 12)]
    assert nxt == utc(2025, 1, 1, 13)
