"""Log configuration and hook registration, without a pool (the pool tests are in
tests/integration/test_job_logs.py and test_hooks.py)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import mpjobs
from mpjobs.errors import ConfigError
from mpjobs.observability import logs
from mpjobs.observability.hooks import Hooks, JobInfo, Middleware, Outcome
from mpjobs.store.base import SUCCESS, Completion, JobRecord


@pytest.fixture(autouse=True)
def _restore(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("MPJOBS_LOG_FORMAT", "MPJOBS_LOG_LEVEL", "MPJOBS_LOG_FILE", "MPJOBS_LOG_LIBS"):
        monkeypatch.delenv(name, raising=False)  # the defaults come from this test alone
    root = logging.getLogger()
    level = root.level
    libs = {n: logging.getLogger(n).level for n in logs.LIBRARIES}
    try:
        yield
    finally:
        logs.reset()
        root.setLevel(level)
        for n, lv in libs.items():
            logging.getLogger(n).setLevel(lv)


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("MPJOBS_LOG_FORMAT", "xml", "'xml'"),
        ("MPJOBS_LOG_LEVEL", "LOUD", "'LOUD'"),
        ("MPJOBS_LOG_FILE", "/nonexistent/dir/x.log", "/nonexistent/dir/x.log"),
        ("MPJOBS_LOG_LIBS", "yes", "'yes'"),
    ],
)
def test_bad_settings_are_refused_naming_the_value(
    env: str, value: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        logs.configure()
    with pytest.raises(ConfigError, match="'yaml'"):
        logs.configure(fmt="yaml")


def test_libraries_stay_at_warning_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs.configure(level=logging.DEBUG, file=str(tmp_path / "a.log"))
    assert logging.getLogger("mpjobs.worker").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("filelock").isEnabledFor(logging.INFO)
    assert logging.getLogger("filelock").isEnabledFor(logging.WARNING)
    monkeypatch.setenv("MPJOBS_LOG_LIBS", "1")
    logs.configure(level=logging.DEBUG, file=str(tmp_path / "a.log"))
    assert logging.getLogger("filelock").isEnabledFor(logging.DEBUG)


def test_json_lines_of_many_processes_never_interleave(tmp_path: Path) -> None:
    """Forked children inherit the O_APPEND handler; each record is one write()."""
    path = tmp_path / "many.log"
    logs.configure(fmt="json", file=str(path))
    log = logging.getLogger("mpjobs.test")
    pids = []
    for n in range(4):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                for i in range(300):
                    log.info("line %d", i, extra={"filler": "x" * (1000 + 37 * n), "n": n})
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    every = [json.loads(line) for line in path.read_text().splitlines()]  # each line whole
    # (this process's own background threads may log meanwhile: count the children's)
    recs = [r for r in every if r["logger"] == "mpjobs.test"]
    assert len(recs) == 1200
    assert {r["pid"] for r in recs} == set(pids)
    assert all(len(r["filler"]) == 1000 + 37 * r["n"] for r in recs)


def test_configure_keeps_its_choices_for_exec_not_in_the_environment(tmp_path: Path) -> None:
    logs.configure(level=15, fmt="json", file=str(tmp_path / "x.log"))
    env = logs.exec_env()
    assert env["MPJOBS_LOG_FORMAT"] == "json"
    assert env["MPJOBS_LOG_FILE"] == str(tmp_path / "x.log")
    assert logs.parse_level(env["MPJOBS_LOG_LEVEL"]) == 15
    # every later subprocess of the program would inherit what a library call put there
    assert "MPJOBS_LOG_FILE" not in os.environ and "MPJOBS_LOG_FORMAT" not in os.environ


def test_configure_again_replaces_its_handler(tmp_path: Path) -> None:
    logs.configure(file=str(tmp_path / "1.log"))
    logs.configure(file=str(tmp_path / "2.log"))
    logging.getLogger("mpjobs.test").warning("only once")
    assert "only once" not in (tmp_path / "1.log").read_text()
    assert (tmp_path / "2.log").read_text().count("only once") == 1


def _job() -> JobRecord:
    return JobRecord(7, "t", None, None, None, "q", 0, "RUNNING", 0.0, 1, 3, 1.0, None, None,
                     None, None, None, None, None, None, None, 0.0, None, None)  # fmt: skip


def test_registration_errors_are_clear(tmp_path: Path) -> None:
    app = mpjobs.App(tmp_path / "home")
    with pytest.raises(ConfigError, match="no hook named 'after_run'"):
        app.on("after_run")
    with pytest.raises(ConfigError, match="not int"):
        app.middleware([3])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="a list of middleware"):
        app.middleware(Middleware())  # type: ignore[arg-type]


def test_a_raising_hook_is_logged_and_the_next_hook_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    class Broken(Middleware):
        def after_job(self, job: JobInfo, outcome: Outcome) -> None:
            raise SystemExit(3)

    hooks = Hooks([Broken()])
    hooks.on("after_job", lambda job, outcome: seen.append(outcome.status))
    with caplog.at_level(logging.ERROR, "mpjobs.hooks"):
        hooks.after(_job(), Completion(7, SUCCESS), 0.1)
    assert seen == [SUCCESS]
    assert "Broken.after_job raised; ignored" in caplog.text
    assert caplog.records[0].exc_info is not None


def test_only_overridden_methods_are_called() -> None:
    class Before(Middleware):
        def before_job(self, job: JobInfo) -> None: ...

    hooks = Hooks([Before()])
    assert len(hooks._fns["before_job"]) == 1 and not hooks._fns["after_job"]


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_counters_agree_between_the_backends(kind: str, tmp_path: Path) -> None:
    """The same pushes, claims, give-backs and outcomes give the same counts."""
    from mpjobs.home import Home
    from mpjobs.store.backends import open_backend
    from mpjobs.store.base import FAILED, NewJob
    from mpjobs.store.memory_backend import MemoryBackend

    home = Home.resolve(tmp_path / "home")
    store = (open_backend(home) if kind == "sqlite" else MemoryBackend(home)).store
    jobs = [NewJob("t", "m:f", None, None, q, 0, 0.0, 1, 0.0, None, None, None)
            for q in ("a", "a", "a", "b")]  # fmt: skip
    store.push(jobs, 1.0)
    claimed = store.claim("w1", 1, None, 4, 2.0)
    store.release("w1", [claimed[-1].id])  # handed back unstarted: not a start
    store.complete("w1", [Completion(claimed[0].id, SUCCESS), Completion(claimed[1].id, FAILED)],
                   2.003)  # fmt: skip
    counts = store.metric_counts(9.0).counters
    got = {(r.name, r.queue, r.status, r.bucket): r.n for r in counts if r.n}
    assert got == {
        ("pushed", "a", "", 0): 3, ("pushed", "b", "", 0): 1, ("started", "a", "", 0): 3,
        ("finished", "a", "SUCCESS", 0): 1, ("finished", "a", "FAILED", 0): 1,
    }  # fmt: skip
    assert store.metric_counts(9.0).oldest_due == {"b": 0.0}
