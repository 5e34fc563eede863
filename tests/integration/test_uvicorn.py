"""Real `uvicorn --workers 3` serving a FastAPI app with `lifespan=app.lifespan`, over HTTP.

uvicorn has no master hooks, so the three web processes elect the pool's owner with the
home's pool lock. Covers: exactly one pool, async push-and-wait, one leader ticking and
failing over after SIGKILL, the owner's death handing the pool to another web process,
and a graceful stop leaving nothing running and losing no job.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import web_jobs
from web_helpers import (
    Server,
    assert_no_job_lost,
    assert_one_ticker_at_a_time,
    measure_failover,
    ours,
    supervisors,
    ticks,
    wait_until,
)

import mpjobs


@pytest.fixture
def jobs_app(home: Path) -> mpjobs.App:
    web_jobs.app._home_arg, web_jobs.app._home = str(home), None
    return web_jobs.app


@pytest.fixture
def uvicorn_server(
    request: pytest.FixtureRequest, home: Path, tmp_path: Path
) -> Iterator[Server]:
    server = Server(
        ["uvicorn", "web_fastapi:api", "--workers", "3", "--host", "127.0.0.1",
         "--port", "{port}", "--log-level", "info"],
        home, tmp_path, {},
    )  # fmt: skip
    failed_before = request.session.testsfailed
    try:
        server.wait_up()
        yield server
    finally:
        if request.session.testsfailed > failed_before:
            print(f"--- server log ---\n{server.output()}")
        server.kill_all()


def web_processes(server: Server) -> set[int]:
    """uvicorn's worker processes (spawned; its resource tracker is a child too)."""
    found = set()
    try:
        children = psutil.Process(server.proc.pid).children()
    except psutil.Error:
        return found
    for p in children:
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(p.cmdline()):
                found.add(p.pid)
        except psutil.Error:
            continue
    return found


def one_pool(app: mpjobs.App) -> dict[str, object] | None:
    sups = supervisors(app)
    return sups[0] if len(sups) == 1 else None


@pytest.mark.timeout(90)
def test_uvicorn_workers_share_one_pool(
    uvicorn_server: Server, jobs_app: mpjobs.App, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = uvicorn_server
    webs = wait_until(lambda: len(web_processes(server)) == 3 and web_processes(server), 20,
                      "3 web processes")  # fmt: skip

    # async push + wait_async from the endpoint, answered by several web processes
    seen = set()
    for i in range(15):
        body = server.get(f"/add?x={i}&y=100")
        assert body["result"] == i + 100
        seen.add(body["web_pid"])
    assert seen <= webs and len(seen) >= 1

    # exactly one pool for the home, owned (started) by one of the web processes
    sup = wait_until(lambda: one_pool(jobs_app), 20, "exactly one supervisor")
    assert isinstance(sup, dict)
    owner = psutil.Process(int(sup["pid"])).ppid()
    assert owner in webs
    # the other two web processes keep waiting for the lock: still exactly one pool
    assert len(supervisors(jobs_app)) == 1

    # the leader lifecycle task ticks in one process; SIGKILL moves it
    wait_until(lambda: len(ticks(server.ticks)) >= 3, 20, "3 ticks")
    assert len(assert_one_ticker_at_a_time(ticks(server.ticks))) == 1
    old, new, took = measure_failover(server.ticks)
    with capsys.disabled():
        print(f"\n[uvicorn] leader tick failover after SIGKILL: {took * 1000:.0f} ms")
    assert new != old and took < 5.0

    # kill the web process that owns the pool: another web process takes the pool over
    psutil.Process(owner).kill()
    killed_at = time.monotonic()

    def handed_over() -> dict[str, object] | None:
        s = one_pool(jobs_app)
        return s if s is not None and s["token"] != sup["token"] else None

    new_sup = wait_until(handed_over, 20, "another web process to start the pool")
    handover = time.monotonic() - killed_at
    with capsys.disabled():
        print(f"[uvicorn] pool handover after SIGKILL of its owner: {handover * 1000:.0f} ms")
    assert isinstance(new_sup, dict)
    new_owner = psutil.Process(int(new_sup["pid"])).ppid()
    assert new_owner != owner and new_owner in web_processes(server)
    assert server.get("/add?x=5&y=5")["result"] == 10
    wait_until(lambda: [t for t in ticks(server.ticks) if t[0] not in (old, new)], 20,
               "the new pool's leader to tick")  # fmt: skip
    assert_one_ticker_at_a_time(ticks(server.ticks))

    # graceful stop with jobs in flight: nothing left, no job lost
    ids = [server.get(f"/push?x={i}&s=0.3")["id"] for i in range(6)]
    tree = server.tree()
    assert server.stop(signal.SIGTERM) == 0
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}"
    assert not ours(home), f"processes of our home still running: {ours(home)}"
    assert not supervisors(jobs_app)
    assert_no_job_lost(jobs_app, ids, [i + 1 for i in range(6)])


@pytest.mark.timeout(60)
def test_lifespan_middleware_around_a_bare_asgi_app(
    home: Path, tmp_path: Path, jobs_app: mpjobs.App
) -> None:
    """An app that does not speak lifespan: the middleware speaks it and runs the pool."""
    server = Server(
        ["uvicorn", "web_asgi_plain:app", "--host", "127.0.0.1", "--port", "{port}",
         "--lifespan", "on"],
        home, tmp_path, {},
    )  # fmt: skip
    try:
        server.wait_up()
        assert server.get("/add")["result"] == 42
        sups = supervisors(jobs_app)
        assert len(sups) == 1 and psutil.Process(int(sups[0]["pid"])).ppid() == server.proc.pid  # type: ignore[call-overload]
        tree = server.tree()
        assert server.stop(signal.SIGINT) == 0
        _, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive and not ours(home)
    finally:
        server.kill_all()
