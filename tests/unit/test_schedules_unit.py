"""The leader's fire rule and the store's fire transaction, driven with synthetic `now`.

No processes and no sleeping: `fire_rule(rec, now, active)` and
`store.fire_due(now, fire_rule)` take the time as an argument, so DST changes, downtime
and misfires are replayed by stepping `now`.
"""

from __future__ import annotations

import itertools
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import mpjobs
from mpjobs.rules.schedules import fire_rule
from mpjobs.store.base import ScheduleRecord

PARIS = ZoneInfo("Europe/Paris")
UTC = timezone.utc


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp()


@pytest.fixture
def app(tmp_path: Path) -> mpjobs.App:
    return mpjobs.App(tmp_path / "home")


def step_through(app: mpjobs.App, start: float, end: float, step: float) -> list[float]:
    """Call the leader's fire transaction every `step` seconds; return the exec_at of
    every job made, in order."""
    store = app.store
    made: list[int] = []
    now = start
    while now <= end:
        made += store.fire_due(now, fire_rule)
        now += step
    return [store.get(i).exec_at for i in made]  # type: ignore[union-attr]


def cron_at(app: mpjobs.App, expr: str, first_fire_after: float) -> mpjobs.Schedule:
    sch = app.schedule("coord_tasks:stamp", "/dev/null").options(max_instances=None).cron(
        expr, tz="Europe/Paris"
    )
    from mpjobs.scheduling.triggers import CronTrigger

    first = CronTrigger(expr, "Europe/Paris").next_after(first_fire_after)
    app.store.update_schedule(sch.id, next_run_time=first)
    return sch


# -- DST in Europe/Paris ------------------------------------------------------------------


def test_fixed_time_cron_across_spring_forward(app: mpjobs.App) -> None:
    """02:30 does not exist on 2025-03-30: that day fires once, at 03:30 CEST."""
    cron_at(app, "30 2 * * *", utc(2025, 3, 28, 12))
    got = step_through(app, utc(2025, 3, 28, 12), utc(2025, 4, 1, 12), 600)
    assert got == [utc(2025, 3, 29, 1, 30), utc(2025, 3, 30, 1, 30), utc(2025, 3, 31, 0, 30),
                   utc(2025, 4, 1, 0, 30)]  # fmt: skip
    local = [datetime.fromtimestamp(t, PARIS).strftime("%d %H:%M %Z") for t in got]
    assert local == ["29 02:30 CET", "30 03:30 CEST", "31 02:30 CEST", "01 02:30 CEST"]


def test_fixed_time_cron_across_fall_back(app: mpjobs.App) -> None:
    """02:30 happens twice on 2025-10-26: it fires on the first pass only."""
    cron_at(app, "30 2 * * *", utc(2025, 10, 24, 12))
    got = step_through(app, utc(2025, 10, 24, 12), utc(2025, 10, 28, 12), 600)
    local = [datetime.fromtimestamp(t, PARIS).strftime("%d %H:%M %Z") for t in got]
    assert local == ["25 02:30 CEST", "26 02:30 CEST", "27 02:30 CET", "28 02:30 CET"]


def test_hourly_cron_fires_every_real_hour_across_both_changes(app: mpjobs.App) -> None:
    cron_at(app, "0 * * * *", utc(2025, 10, 25, 20))
    got = step_through(app, utc(2025, 10, 25, 20), utc(2025, 10, 26, 4), 300)
    assert [b - a for a, b in itertools.pairwise(got)] == [3600.0] * (len(got) - 1)
    local = [datetime.fromtimestamp(t, PARIS).hour for t in got]
    assert local == [23, 0, 1, 2, 2, 3, 4, 5]  # the repeated 02:00 local hour fires twice
    app.store.remove_schedule(app.schedules()[0].id)
    cron_at(app, "0 * * * *", utc(2025, 3, 29, 22))
    got = step_through(app, utc(2025, 3, 29, 22), utc(2025, 3, 30, 4), 300)
    assert [b - a for a, b in itertools.pairwise(got)] == [3600.0] * (len(got) - 1)
    local = [datetime.fromtimestamp(t, PARIS).hour for t in got]
    assert 2 not in local and local == [0, 1, 3, 4, 5, 6]


def test_dst_change_during_downtime_coalesces_to_one_fire(app: mpjobs.App) -> None:
    """The leader was away across the spring change: one job (coalesce), then on time."""
    cron_at(app, "*/30 * * * *", utc(2025, 3, 29, 23))
    got = step_through(app, utc(2025, 3, 30, 4, 10), utc(2025, 3, 30, 5, 10), 600)
    assert got == [utc(2025, 3, 30, 4, 0), utc(2025, 3, 30, 4, 30), utc(2025, 3, 30, 5, 0)]


# -- the rule -----------------------------------------------------------------------------


def record(app: mpjobs.App, **options: object) -> ScheduleRecord:
    builder = app.schedule("coord_tasks:stamp", "/dev/null").options(**options)
    sch = builder.every(10, start="startup")
    rec = app.store.get_schedule(sch.id)
    assert rec is not None
    return rec


def test_max_instances_skips_and_logs(app: mpjobs.App, caplog: pytest.LogCaptureFixture) -> None:
    rec = record(app, max_instances=1)
    assert rec.next_run_time is not None
    now = rec.next_run_time + 35  # four fires due
    with caplog.at_level(logging.INFO, logger="mpjobs.schedules"):
        jobs, nxt = fire_rule(rec, now, active=1)
    assert jobs == [] and nxt is not None and now < nxt <= now + 10
    assert "skipped, max_instances=1 reached" in caplog.text
    jobs, _ = fire_rule(rec, now, active=0)
    assert [j.exec_at for j in jobs] == [rec.next_run_time + 30]  # coalesced to the latest


def test_coalesce_and_misfire_grace(app: mpjobs.App) -> None:
    rec = record(app, coalesce=False, max_instances=None)
    t0 = rec.next_run_time
    assert t0 is not None
    jobs, nxt = fire_rule(rec, t0 + 45, active=0)
    assert [j.exec_at - t0 for j in jobs] == [0, 10, 20, 30, 40] and nxt == t0 + 50
    rec = record(app, coalesce=False, max_instances=None, misfire_grace_time=25)
    t0 = rec.next_run_time
    assert t0 is not None
    jobs, _ = fire_rule(rec, t0 + 45, active=0)
    assert [j.exec_at - t0 for j in jobs] == [20, 30, 40]  # 0 and 10 are older than 25 s
    rec = record(app, coalesce=True, max_instances=None, misfire_grace_time=2)
    t0 = rec.next_run_time
    assert t0 is not None
    jobs, _ = fire_rule(rec, t0 + 45, active=0)
    assert jobs == []  # the latest fire (t0+40) is 5 s late: dropped
    jobs, _ = fire_rule(rec, t0 + 41, active=0)
    assert [j.exec_at - t0 for j in jobs] == [40]


def test_jitter_delays_within_bound(app: mpjobs.App) -> None:
    rec = record(app, jitter=3, max_instances=None, coalesce=False)
    t0 = rec.next_run_time
    assert t0 is not None
    jobs, _ = fire_rule(rec, t0 + 95, active=0)
    assert len(jobs) == 10
    assert all(0 <= j.exec_at - (t0 + 10 * k) <= 3 for k, j in enumerate(jobs))


def test_fire_due_commits_jobs_and_next_time_together(app: mpjobs.App) -> None:
    rec = record(app, coalesce=False, max_instances=None)
    t0 = rec.next_run_time
    assert t0 is not None
    assert len(app.store.fire_due(t0 + 25, fire_rule)) == 3
    assert app.store.fire_due(t0 + 25, fire_rule) == []  # fired already: nothing twice
    assert app.store.get_schedule(rec.id).next_run_time == t0 + 30  # type: ignore[union-attr]

    class Died(BaseException):
        """Stands for the leader's death: not an Exception a fire rule could raise."""

    def broken(rec: ScheduleRecord, now: float, active: int) -> tuple[list[object], float]:
        raise Died("leader died mid-transaction")

    with pytest.raises(Died):
        app.store.fire_due(t0 + 45, broken)  # type: ignore[arg-type]
    assert len(app.store.fire_due(t0 + 45, fire_rule)) == 2  # nothing was lost either

    def raises(rec: ScheduleRecord, now: float, active: int) -> tuple[list[object], float]:
        raise RuntimeError("corrupt trigger")

    other = record(app, coalesce=False, max_instances=None, id="other")
    assert other.next_run_time is not None
    # one broken schedule is skipped for a minute; it does not fail the whole pass
    assert app.store.fire_due(t0 + 55, raises) == []  # type: ignore[arg-type]
    assert app.store.get_schedule(rec.id).next_run_time == t0 + 55 + 60  # type: ignore[union-attr]


# -- declaring ----------------------------------------------------------------------------


def test_same_declaration_is_one_schedule(app: mpjobs.App) -> None:
    a = app.schedule("coord_tasks:stamp", "/dev/null").every(60)
    b = app.schedule("coord_tasks:stamp", "/dev/null").every(60)
    assert a.id == b.id and len(app.schedules()) == 1
    assert a.next_run_time == b.next_run_time  # the first declaration's phase is kept
    c = app.schedule("coord_tasks:stamp", "/dev/null").options(id="fixed").every(60)
    d = app.schedule("coord_tasks:stamp", "/dev/null").options(id="fixed").cron("0 4 * * *")
    assert c.id == d.id == "fixed" and len(app.schedules()) == 2
    assert json.loads(app.store.get_schedule("fixed").trigger)["type"] == "cron"  # type: ignore[union-attr]
    assert d.trigger.startswith("cron '0 4 * * *'")


def test_redeclaring_keeps_state_and_failures(app: mpjobs.App) -> None:
    s = app.schedule("coord_tasks:stamp", "/dev/null").options(id="keep").every(60)
    s.pause()
    app.schedule("coord_tasks:stamp", "/dev/null").options(id="keep").every(60)
    assert s.state == "paused"
    s.resume()
    assert s.state == "active" and s.next_run_time is not None


def test_options_are_validated(app: mpjobs.App) -> None:
    b = app.schedule("coord_tasks:stamp", "/dev/null")
    with pytest.raises(ValueError, match="max_instances"):
        b.options(max_instances=0).every(1)
    with pytest.raises(ValueError, match="max_failures"):
        b.options(max_failures=-1).every(1)
    with pytest.raises(TypeError, match="unknown option"):
        b.options(colesce=True)


def test_concurrent_declarations_keep_the_first_phase(
    app: mpjobs.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes declare at import time; the second read the store before the first
    committed, so it computed its own anchor. The store keeps one phase anyway."""
    first = app.schedule("coord_tasks:stamp", "/dev/null").every(60)
    before = app.store.get_schedule(first.id)
    monkeypatch.setattr(type(app.store), "get_schedule", lambda self, sid: None)
    app.schedule("coord_tasks:stamp", "/dev/null").every(60)
    monkeypatch.undo()
    after = app.store.get_schedule(first.id)
    assert after is not None and before is not None
    assert (after.trigger, after.next_run_time) == (before.trigger, before.next_run_time)


def test_a_startup_anchor_read_a_while_before_the_declaration_still_fires_first(
    tmp_path: Path,
) -> None:
    """A busy machine may run a while between reading the anchor and declaring: the
    first fire is still the anchor itself (it was skipped when over 1 ms passed)."""
    import time

    import mpjobs
    from mpjobs.scheduling.schedules import declare
    from mpjobs.scheduling.triggers import IntervalTrigger

    app = mpjobs.App(tmp_path / "home", store=None)
    anchor = time.time() - 0.5  # as if the declaring thread was preempted for 0.5 s
    sched = declare(app.schedule("tasks:noop"), IntervalTrigger(0.1, anchor))
    rec = app.store.get_schedule(sched.id)
    assert rec is not None and rec.next_run_time == anchor
