"""The executor's per-job fast path (runtime/executors.py, Hooks.silent): a job that
succeeds skips both hook points when no hook would be called, and nothing else is
skipped: a failure still reaches on_failure, a registered hook still sees successes,
and the built-in job log writes its lines as soon as INFO is on."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from mpjobs import serialization
from mpjobs.observability.hooks import Hooks, JobInfo, Middleware, Outcome
from mpjobs.observability.joblog import JobLog
from mpjobs.runtime.executors import SerialExecutor, Stats
from mpjobs.store.base import FAILED, SUCCESS, JobRecord


def _job(func: str, *args: object) -> JobRecord:
    payload = serialization.dumps((args, {}))
    return JobRecord(7, func, func, None, payload, "q", 0, "RUNNING", 0.0, 1, 1, 0.0, None,
                     None, None, None, "w", None, None, None, None, 0.0, None, None)  # fmt: skip


class Seen(Middleware):
    def __init__(self) -> None:
        self.events: list[str] = []

    def before_job(self, job: JobInfo) -> None:
        self.events.append("before")

    def after_job(self, job: JobInfo, outcome: Outcome) -> None:
        self.events.append(f"after {outcome.status}")

    def on_failure(self, job: JobInfo, outcome: Outcome) -> None:
        self.events.append("failure")


def _run(hooks: Hooks, job: JobRecord) -> str:
    ex = SerialExecutor(lambda line: None, Stats())
    ex.hooks = hooks
    return ex.execute(job).status


@pytest.fixture
def info_off() -> Iterator[None]:
    """The job log's INFO lines off, whatever an earlier test of this process set."""
    logger = logging.getLogger("mpjobs.jobs")
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def test_silent_only_when_no_hook_would_be_called(info_off: None) -> None:
    assert Hooks().silent()
    assert Hooks([JobLog()]).silent()  # INFO is off (the default level is WARNING)
    failures_only = Hooks()
    failures_only.on("on_failure", lambda job, outcome: None)
    assert failures_only.silent()  # a success calls no on_failure hook
    assert not Hooks([Seen()]).silent()
    user = Hooks([JobLog()])
    user.on("after_job", lambda job, outcome: None)
    assert not user.silent()


def test_a_silent_executor_still_reports_failures_and_user_hooks_see_everything(
    info_off: None,
) -> None:
    seen = Seen()
    failures: list[str] = []
    quiet = Hooks([JobLog()])
    quiet.on("on_failure", lambda job, outcome: failures.append(outcome.status))
    assert _run(quiet, _job("obs_tasks:ok", 2)) == SUCCESS
    assert _run(quiet, _job("obs_tasks:boom", "no")) == FAILED
    assert failures == [FAILED]
    loud = Hooks([JobLog(), seen])
    assert _run(loud, _job("obs_tasks:ok", 2)) == SUCCESS
    assert _run(loud, _job("obs_tasks:boom", "no")) == FAILED
    assert seen.events == ["before", f"after {SUCCESS}", "before", f"after {FAILED}", "failure"]


def test_the_job_log_writes_once_info_is_on(caplog: pytest.LogCaptureFixture) -> None:
    hooks = Hooks([JobLog()])
    with caplog.at_level(logging.INFO, "mpjobs.jobs"):
        assert not hooks.silent()
        assert _run(hooks, _job("obs_tasks:ok", 2)) == SUCCESS
    assert [r.event for r in caplog.records] == ["started", "finished"]  # type: ignore[attr-defined]
