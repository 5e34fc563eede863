"""Real gunicorn (3 sync workers) with the mpjobs hooks in its config file, driven over HTTP.

Covers: push-and-wait from a web request, the leader lifecycle task ticking in exactly
one process and failing over after SIGKILL, HUP neither orphaning nor duplicating the
pool, and SIGTERM leaving nothing running and losing no job. With and without preload_app.
A pool whose supervisor is SIGKILLed comes back by itself (forked, or exec'd when
gunicorn's control-socket thread runs), with a bounded back-off, never during a stop;
and every process that has the store open holds its own SQLite locks.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import procfs
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


def start_gunicorn(
    home: Path, workdir: Path, preload: bool, env: dict[str, str] | None = None
) -> Server:
    server = Server(
        ["gunicorn", "-c", str(CONF), "web_wsgi:application"], home, workdir,
        {"WEB_PRELOAD": "1" if preload else "0", **(env or {})},
    )  # fmt: skip
    server.wait_up()
    return server


@contextlib.contextmanager
def running_gunicorn(
    request: pytest.FixtureRequest, home: Path, workdir: Path, preload: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:  # fmt: skip
    """A gunicorn for one test: its log is printed if the test fails; nothing outlives it."""
    server = start_gunicorn(home, workdir, preload, env)
    failed_before = request.session.testsfailed
    try:
        yield server
    finally:
        if request.session.testsfailed > failed_before:
            print(f"--- server log ---\n{server.output()}")
        server.kill_all()


@pytest.fixture
def gunicorn_server(request: pytest.FixtureRequest, home: Path, tmp_path: Path) -> Iterator[Server]:
    with running_gunicorn(request, home, tmp_path, preload=request.param) as server:
        yield server


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


# -- a dead pool comes back by itself ---------------------------------------------------


def the_supervisor(app: mpjobs.App, other_than: Collection[int] = (), timeout: float = 15) -> int:
    """The pid of the one live pool supervisor of the home not in `other_than`."""

    def found() -> list[int]:
        return [int(s["pid"]) for s in supervisors(app) if int(s["pid"]) not in other_than]  # type: ignore[call-overload]

    pids = wait_until(found, timeout, f"a pool supervisor other than {sorted(other_than)}")
    assert len(pids) == 1, pids
    return int(pids[0])


def pool_tree(sup_pid: int, workers: int = 2) -> list[psutil.Process]:
    """The supervisor and its children, once its workers and coordinator are up."""
    sup = psutil.Process(sup_pid)
    wait_until(lambda: len(sup.children()) >= workers + 1, 15, "the pool's children")
    return [sup, *sup.children(recursive=True)]


def started_pools(server: Server) -> list[int]:
    """Pids of every pool supervisor the arbiter logged as started, in order."""
    text = server.log.read_text(errors="replace")
    return [int(pid) for pid in re.findall(r"mpjobs: pool supervisor (\d+) started", text)]


def log_line(server: Server, pattern: str, timeout: float = 10) -> str:
    def found() -> str | None:
        m = re.search(pattern, server.log.read_text(errors="replace"))
        return m.group(0) if m else None

    return str(wait_until(found, timeout, f"a log line matching {pattern!r}"))


class Request(threading.Thread):
    """One HTTP request in a thread of the test, to hold a web worker while we act."""

    def __init__(self, server: Server, path: str) -> None:
        super().__init__(daemon=True)
        self.server, self.path = server, path
        self.body: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.body = self.server.get(self.path)
        except BaseException as exc:
            self.error = exc

    def result(self, timeout: float) -> dict[str, Any]:
        self.join(timeout)
        assert not self.is_alive(), f"request {self.path} still running after {timeout}s"
        assert self.error is None, f"request {self.path} failed: {self.error!r}"
        assert self.body is not None
        return self.body


@pytest.mark.timeout(120)
@pytest.mark.parametrize("threaded", [False, True], ids=["fork", "control-socket-exec"])
def test_gunicorn_dead_pool_comes_back_by_itself(
    request: pytest.FixtureRequest, threaded: bool, jobs_app: mpjobs.App, home: Path,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    env = {"WEB_CONTROL_SOCKET": str(tmp_path / "ctl")} if threaded else {}
    with running_gunicorn(request, home, tmp_path, env=env) as server:
        arbiter = psutil.Process(server.proc.pid)
        if threaded:  # gunicorn starts its control-socket thread after its first web workers
            wait_until(lambda: arbiter.num_threads() > 1, 15, "the arbiter's control thread")
        old = the_supervisor(jobs_app)
        old_tree = pool_tree(old)

        # a job runs in the pool, and a web request waits on it
        job = web_jobs.hold_once.schedule(str(tmp_path), "hold", 60.0).now()
        runs = tmp_path / "hold"
        wait_until(lambda: runs.exists() and runs.read_text().count("\n") == 1, 15,
                   "the job to start")  # fmt: skip
        waiting = Request(server, f"/result?id={job.id}&timeout=60&mark={tmp_path / 'waiting'}")
        wait_until((tmp_path / "waiting").exists, 15, "the request to wait on the job")

        # SIGKILL of the supervisor: its pool dies with it, and a new one starts, no SIGHUP
        os.kill(old, signal.SIGKILL)
        killed_at = time.monotonic()
        new = the_supervisor(jobs_app, other_than={old})
        took = time.monotonic() - killed_at
        with capsys.disabled():
            print(f"\n[gunicorn] kill -9 of the pool supervisor to a new one registered: "
                  f"{took * 1000:.0f} ms ({'exec' if threaded else 'fork'})")  # fmt: skip
        _, alive = psutil.wait_procs(old_tree, timeout=15)
        assert not alive, f"the killed pool's processes live on: {alive}"
        assert psutil.Process(new).ppid() == server.proc.pid
        # a threaded arbiter must not fork: the new pool is an exec'd `mpjobs run`
        assert ("run" in psutil.Process(new).cmdline()) == threaded
        log_line(server, rf"mpjobs: pool supervisor {old} was killed by SIGKILL after "
                         r"[\d.]+ s; starting a new pool\n")  # fmt: skip
        assert started_pools(server) == [old, new]

        # the killed job is recovered by the new pool, and the waiting request gets it
        body = waiting.result(60)
        assert body == {"status": "SUCCESS", "result": 2, "attempts": 2,
                        "web_pid": body["web_pid"]}  # fmt: skip
        first, second = (int(line) for line in runs.read_text().split())
        assert first in {p.pid for p in old_tree}
        new_tree = pool_tree(new)
        assert second in {p.pid for p in new_tree}
        # and a new request pushes a job and waits on its result
        assert server.get("/add?x=2&y=3")["result"] == 5

        # SIGKILL of the arbiter: the restarted pool goes with it (PR_SET_PDEATHSIG when
        # forked, a getppid() check when exec'd)
        arbiter.kill()
        _, alive = psutil.wait_procs(new_tree, timeout=20)
        assert not alive, f"the pool outlived its arbiter: {alive}"


@pytest.mark.timeout(120)
def test_gunicorn_pool_restarts_back_off_and_a_stop_during_back_off_starts_nothing(
    request: pytest.FixtureRequest, jobs_app: mpjobs.App, home: Path, tmp_path: Path
) -> None:
    with running_gunicorn(request, home, tmp_path) as server:
        # a request that waits on a job nobody runs keeps a web worker busy until we
        # cancel the job, so the shutdown below lasts as long as we want
        job = web_jobs.add.schedule(1, 1).delay("1h")
        waiting = Request(server, f"/result?id={job.id}&timeout=90&mark={tmp_path / 'waiting'}")
        wait_until((tmp_path / "waiting").exists, 15, "the request to wait on the job")

        # pools that die young: the first restart is immediate, then 1 s, then 2 s...
        first = the_supervisor(jobs_app)
        os.kill(first, signal.SIGKILL)
        second = the_supervisor(jobs_app, other_than={first})
        os.kill(second, signal.SIGKILL)
        killed_at = time.monotonic()
        third = the_supervisor(jobs_app, other_than={first, second})
        assert time.monotonic() - killed_at >= 1.0, "restarted without back-off"
        log_line(server, rf"mpjobs: pool supervisor {second} was killed by SIGKILL after "
                         r"[\d.]+ s; starting a new pool in 1 s\n")  # fmt: skip
        pool_tree(third)
        os.kill(third, signal.SIGKILL)
        log_line(server, rf"mpjobs: pool supervisor {third} was killed by SIGKILL after "
                         r"[\d.]+ s; starting a new pool in 2 s\n")  # fmt: skip
        due = time.monotonic() + 2.0

        # gunicorn stops while the restart waits: the arbiter waits for the busy web
        # worker past the time the restart was due (plus a turn of its loop), and
        # starts no pool in all that time, nor in on_exit
        tree = server.tree()
        server.proc.send_signal(signal.SIGTERM)
        while time.monotonic() < due + 1.5:
            assert started_pools(server) == [first, second, third]
            assert server.proc.poll() is None, "gunicorn did not wait for its busy worker"
            time.sleep(0.05)  # a bounded watch for something that must not happen
        job.cancel()
        assert waiting.result(30)["status"] == "CANCELLED"
        assert server.stop(signal.SIGTERM) == 0
        assert started_pools(server) == [first, second, third]
        registered = {p.pid for p in jobs_app.store.list_processes() if p.kind == "supervisor"}
        assert registered <= {first, second, third}, registered
        assert_all_gone(server, home, tree)


# -- SQLite locks of every process (issue 9, item 1) ----------------------------------


def store_users_without_lock(home: Path, roles: dict[int, str]) -> dict[int, str]:
    """Of the processes `roles` names, those that have mpjobs.db-shm open but hold no POSIX
    lock on it: their SQLite state crossed a fork(), and SQLite may delete the WAL under them."""
    shm = home / "mpjobs.db-shm"
    holders = procfs.lock_holders(shm, "POSIX")
    return {pid: role for pid, role in roles.items()
            if procfs.has_open(pid, shm) and pid not in holders}  # fmt: skip


@pytest.mark.sqlite_only  # about the SQLite file or its locks
@pytest.mark.timeout(60)
def test_gunicorn_every_pool_process_holds_its_own_sqlite_locks(
    request: pytest.FixtureRequest, jobs_app: mpjobs.App, home: Path, tmp_path: Path
) -> None:
    with running_gunicorn(request, home, tmp_path) as server:
        sups = wait_until(lambda: supervisors(jobs_app), 15, "the pool supervisor")
        pool = mpjobs.Pool(jobs_app, int(sups[0]["pid"]), str(sups[0]["token"]), None)
        # every process of the pool has registered in the store, so has used it
        wait_until(lambda: len(pool.workers()) == 2 and pool.coordinator(), 15, "the pool")
        assert server.get("/add?x=1&y=2")["result"] == 3
        roles = {pool.pid: "supervisor", **{w: "worker" for w in pool.workers()}}
        roles[int(pool.coordinator() or 0)] = "coordinator"
        assert {p.pid for p in pool_tree(pool.pid)} == set(roles)
        users = [pid for pid in roles if procfs.has_open(pid, home / "mpjobs.db-shm")]
        assert users, "no pool process has the store open: the check below would be empty"
        assert not store_users_without_lock(home, roles), (
            "pool processes use SQLite state inherited across fork() (no POSIX lock of their "
            f"own on mpjobs.db-shm): {store_users_without_lock(home, roles)}"
        )


@pytest.mark.sqlite_only  # about the SQLite file or its locks
@pytest.mark.timeout(60)
def test_gunicorn_web_workers_hold_their_own_sqlite_locks(
    request: pytest.FixtureRequest, jobs_app: mpjobs.App, home: Path, tmp_path: Path
) -> None:
    with running_gunicorn(request, home, tmp_path) as server:
        wait_until(lambda: len(web_workers(server, jobs_app)) == 3, 15, "3 web workers")
        served = {int(server.get(f"/add?x={i}&y=0")["web_pid"]) for i in range(9)}  # type: ignore[call-overload]
        web = web_workers(server, jobs_app)
        assert served <= web
        roles = {server.proc.pid: "arbiter", **{pid: "web worker" for pid in web}}
        assert not store_users_without_lock(home, roles), (
            "web workers (or the arbiter) use SQLite state inherited across fork(): "
            f"{store_users_without_lock(home, roles)}"
        )
