"""The rules alone: records and a time in, what to write out. No store, no process."""

from __future__ import annotations

import json

from mpjobs import JobStatus as PublicJobStatus
from mpjobs.rules import recovery
from mpjobs.rules.schedules import Tally, max_failures_of, redeclared, tally
from mpjobs.store.base import (
    CANCELLED,
    FAILED,
    PERMANENTLY_FAILED,
    RUNNING,
    SCHEDULED,
    SUCCESS,
    TIMEOUT,
    Completion,
    JobRecord,
    JobStatus,
    ScheduleRecord,
)

NOW = 1_000_000.0


def _job(job_id: int, attempts: int = 1, max_attempts: int = 1) -> JobRecord:
    return JobRecord(
        job_id, "t", "m:f", None, None, "default", 0, RUNNING, NOW, attempts, max_attempts,
        1.0, None, None, None, None, "w1", 1, None, None, "earlier", NOW, NOW, None,
    )  # fmt: skip


def test_settling_keeps_a_finished_outcome() -> None:
    kept = Completion(1, SUCCESS, result=b"x")
    account = recovery.Account(frozenset({1}), {1: kept}, "killed")
    assert recovery.settle(account, _job(1), NOW) is kept
    assert not recovery.lost_in_flight(account, _job(1))


def test_settling_fails_the_job_killed_at_its_limit_with_that_status() -> None:
    account = recovery.Account(frozenset({1}), {}, "killed", target=(1, TIMEOUT, "time limit"))
    c = recovery.settle(account, _job(1), NOW)
    assert (c.status, c.error) == (TIMEOUT, "time limit")
    retried = recovery.settle(account, _job(1, attempts=1, max_attempts=3), NOW)
    assert retried.status == SCHEDULED and retried.exec_at is not None and retried.exec_at > NOW


def test_settling_counts_a_begun_job_as_lost_unless_stopped_on_purpose() -> None:
    account = recovery.Account(frozenset({1}), {}, "it was killed by SIGKILL")
    c = recovery.settle(account, _job(1), NOW)
    assert c.status == FAILED and c.error == "worker lost: it was killed by SIGKILL"
    assert recovery.lost_in_flight(account, _job(1))
    calm = recovery.Account(frozenset({1}), {}, "stopped", deliberate=True)
    c = recovery.settle(calm, _job(1), NOW)
    assert (c.status, c.refund_attempt, c.exec_at, c.error) == (SCHEDULED, True, NOW, "earlier")


def test_settling_gives_back_a_job_never_begun_with_its_attempt() -> None:
    c = recovery.settle(recovery.Account(frozenset(), {}, "died"), _job(2), NOW)
    assert (c.status, c.refund_attempt) == (SCHEDULED, True)


def test_the_leader_leaves_a_dead_worker_to_its_supervisor_for_a_moment() -> None:
    assert recovery.wait_for_parent(0.0)
    assert not recovery.wait_for_parent(recovery.SUPERVISOR_FIRST)


def test_max_failures_counts_consecutive_failures_only() -> None:
    assert tally("s", SUCCESS, 4, 5) == Tally(0)
    assert tally("s", CANCELLED, 4, 5) is None
    assert tally("s", FAILED, 3, 5) == Tally(4)
    assert tally("s", TIMEOUT, 4, 5) == Tally(
        5, stop=True, note="\nschedule 's' stopped after 5 consecutive failures"
    )
    assert tally("s", FAILED, 100, None) == Tally(101)


def test_max_failures_is_read_from_the_stored_options() -> None:
    assert max_failures_of(json.dumps({"max_failures": 3})) == 3
    assert max_failures_of(json.dumps({"max_failures": None})) is None
    assert max_failures_of("{}") is None
    assert max_failures_of("not json") is None
    assert max_failures_of(json.dumps({"max_failures": "3"})) is None


def _sched(trigger: dict[str, object], nxt: float, state: str = "active") -> ScheduleRecord:
    return ScheduleRecord("s", "s", "m:f", None, b"", json.dumps(trigger), "{}", state, nxt,
                          2, 10.0, 10.0)  # fmt: skip


def test_a_redeclared_schedule_keeps_its_phase_state_and_count() -> None:
    prev = _sched({"every": 60, "anchor": 0.0}, 120.0, state="paused")
    again = _sched({"every": 60, "anchor": 7.0}, 67.0)
    again.failures, again.created_at = 0, 99.0
    redeclared(prev, again, trigger_changed=False)
    assert json.loads(again.trigger)["anchor"] == 0.0
    assert (again.next_run_time, again.state, again.failures, again.created_at) == (
        120.0, "paused", 2, 10.0,
    )  # fmt: skip
    changed = _sched({"every": 30, "anchor": 7.0}, 37.0)
    redeclared(_sched({"every": 60, "anchor": 0.0}, 120.0), changed, trigger_changed=False)
    assert changed.next_run_time == 37.0  # a new trigger: its own first fire


def test_statuses_have_one_source() -> None:
    assert [s.value for s in JobStatus] == [
        SCHEDULED, RUNNING, SUCCESS, FAILED, TIMEOUT, CANCELLED, PERMANENTLY_FAILED,
    ]  # fmt: skip
    assert PublicJobStatus is JobStatus
