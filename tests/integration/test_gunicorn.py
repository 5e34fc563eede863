"""Real gunicorn (3 sync workers) with the mpjobs hooks in its config file, driven over HTTP.

Covers: push-and-wait from a web request, the leader lifecycle task ticking in exactly
one process and failing over after SIGKILL, HUP neither orphaning nor duplicating the
pool, and SIGTERM leaving nothing running and losing no job. With and without preload_app.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import web_jobs
from web_helpers import (
    Server,
    assert_no_job_lost,
    assert_one_ticker_at_a_time,
    coordinators,
    measure_failover,
    ours,
    supervisors,
    ticks,
    wait_until,
)

import mpjobs

CONF = Path(__file__).resolve().parents[1] / "apps" / "web_gunicorn_conf.py"


@pytest.fixture
def jobs_app(home: Path) -> mpjobs.App:
    web_jobs.app._home_arg, web_jobs.app._home = str(home), None
    return web_jobs.app


def start_gunicorn(home: Path, workdir: Path, preload: bool) -> Server:
    server = Server(
        ["gunicorn", "-c", str(CONF), "web_wsgi:application"], home, workdir,
        {"WEB_PRELOAD": "1" if preload else "0"},
    )  # fmt: skip
    server.wait_up()
    return server


@pytest.fixture
def gunicorn_server(request: pytest.FixtureRequest, home: Path, tmp_path: Path) -> Iterator[Server]:
    server = start_gunicorn(home, tmp_path, preload=request.param)
    failed_before = request.session.testsfailed
    try:
        yield server
    finally:
        if request.session.testsfailed > failed_before:
            print(f"--- server log ---\n{server.output()}")
        server.kill_all()


def web_workers(server: Server, app: mpjobs.App) -> set[int]:
    """The arbiter's children other than the pool supervisor."""
    pools = {int(s["pid"]) for s in supervisors(app)}  # type: ignore[call-overload]
    live = set()
    for p in psutil.Process(server.proc.pid).children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.pid not in pools:
                live.add(p.pid)
        except psutil.Error:
            continue
    return live


def assert_all_gone(server: Server, home: Path, tree: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert not alive, f"left running after stop: {[(p.pid, p.cmdline()) for p in alive]}"
    assert not ours(home), f"processes of our home still running: {ours(home)}"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("gunicorn_server", [False], indirect=True, ids=["no-preload"])
def test_gunicorn_hooks_end_to_end(
    gunicorn_server: Server, jobs_app: mpjobs.App, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = gunicorn_server
    # an endpoint pushes a job and returns its result, from several web workers
    seen = set()
    for i in range(12):
        body = server.get(f"/add?x={i}&y=10")
        assert body["result"] == i + 10
        seen.add(body["web_pid"])
    assert seen <= web_workers(server, jobs_app)

    # one pool, forked from the arbiter, before any web worker: its parent is the arbiter
    sups = wait_until(lambda: supervisors(jobs_app), 10, "the pool supervisor")
    assert len(sups) == 1
    sup_pid = int(sups[0]["pid"])  # type: ignore[call-overload]
    assert psutil.Process(sup_pid).ppid() == server.proc.pid

    # the leader lifecycle task ticks in exactly one process: the pool's coordinator
    wait_until(lambda: len(ticks(server.ticks)) >= 5, 10, "5 ticks")
    runs = assert_one_ticker_at_a_time(ticks(server.ticks))
    assert len(runs) == 1
    assert runs[0] in {int(c["pid"]) for c in coordinators(jobs_app)}  # type: ignore[call-overload]

    # SIGKILL of the ticking process: ticking moves to another process
    old, new, took = measure_failover(server.ticks)
    with capsys.disabled():
        print(f"\n[gunicorn] leader tick failover after SIGKILL: {took * 1000:.0f} ms")
    assert new != old and took < 5.0

    # HUP: gunicorn replaces its web workers; the pool is the same one, not orphaned,
    # not duplicated, and its job workers are replaced too (HUP forwarded)
    before_web = web_workers(server, jobs_app)
    pool = mpjobs.Pool(jobs_app, sup_pid, str(sups[0]["token"]), None)
    before_jobs = set(pool.workers())
    server.proc.send_signal(signal.SIGHUP)
    def web_replaced() -> bool:
        now = web_workers(server, jobs_app)
        return bool(now) and not now & before_web

    wait_until(web_replaced, 30, "gunicorn to replace its web workers")
    wait_until(lambda: len(pool.workers()) == 2 and not set(pool.workers()) & before_jobs, 30,
               "the pool to replace its job workers")  # fmt: skip
    assert [int(s["pid"]) for s in supervisors(jobs_app)] == [sup_pid]  # type: ignore[call-overload]
    assert server.get("/add?x=1&y=1")["result"] == 2

    # SIGTERM with jobs in flight: nothing of ours left, and no job lost
    ids = [server.get(f"/push?x={i}&s=0.3")["id"] for i in range(6)]
    tree = server.tree()
    assert server.stop(signal.SIGTERM) == 0
    assert_all_gone(server, home, tree)
    assert_no_job_lost(jobs_app, ids, [i + 1 for i in range(6)])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("gunicorn_server", [True], indirect=True, ids=["preload"])
def test_gunicorn_with_preload_app(
    gunicorn_server: Server, jobs_app: mpjobs.App, home: Path
) -> None:
    server = gunicorn_server
    assert {server.get(f"/add?x={i}&y=1")["result"] for i in range(6)} == {i + 1 for i in range(6)}
    sups = supervisors(jobs_app)
    assert len(sups) == 1 and psutil.Process(int(sups[0]["pid"])).ppid() == server.proc.pid  # type: ignore[call-overload]
    wait_until(lambda: len(ticks(server.ticks)) >= 3, 10, "3 ticks")
    assert len(assert_one_ticker_at_a_time(ticks(server.ticks))) == 1
    tree = server.tree()
    assert server.stop(signal.SIGINT) == 0
    assert_all_gone(server, home, tree)
