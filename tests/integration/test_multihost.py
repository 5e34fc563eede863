"""Several hosts on one PostgreSQL store, with real processes: kills, a cut, a restart.

A "host" is a home of its own on the shared store. Host A is the test process (it
pushes and waits through `multihost_tasks.make_app(home_a)`) and its `app.start()`
pool; host B is `python -m mpjobs run multihost_tasks:app --home B` in a subprocess,
as it would run on another machine, and for the network cut inside a network
namespace of its own (tests/netns.py). Both reach the same schema.

The tasks (tests/apps/multihost_tasks.py) log each attempt's start and end, with pid
and home, so a test sees which host ran what, and that no job finished twice. Every
wait is on files, processes or the store, and bounded. Times are printed (`-s`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import multihost_tasks as mt
import psutil
import pytest
from conftest import log_lines, started, wait_for

import mpjobs
from mpjobs import JobStatus
from mpjobs.store.base import ProcessRecord

if TYPE_CHECKING:
    from tests.pgharness import PgCluster

pytestmark = [pytest.mark.postgres_only, pytest.mark.timeout(120)]

TERMINAL = {JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.CANCELLED}
TARGET = "multihost_tasks:app"


# -- hosts -------------------------------------------------------------------------------


class Host:
    """Host B: `mpjobs run` in a subprocess on home `home`, its stderr kept in a file.

    `prefix` runs it elsewhere (`ip netns exec NAME`, which execs, so the pid is the
    supervisor's); `env` adds to the environment (its timeout); `args` to `mpjobs run`.
    """

    def __init__(
        self, name: str, home: Path, store: str, logs: Path, *, workers: int = 2,
        prefix: tuple[str, ...] = (), env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        self.name = name
        self.home = home
        self.store = store
        self.workers = workers
        self.prefix = prefix
        self.env = env or {}
        self.args = args
        self.stderr_path = logs / f"host-{name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Host:
        env = {**os.environ, "MPJOBS_STORE": self.store, **self.env}
        argv = [*self.prefix, sys.executable, "-m", "mpjobs", "run", TARGET,
                "--home", str(self.home), "--workers", str(self.workers), *self.args]  # fmt: skip
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def supervisor(self, app: mpjobs.App) -> ProcessRecord | None:
        for p in app.store.list_processes():
            if p.kind == "supervisor" and p.pid == self.pid:
                return p
        return None

    def children(self, app: mpjobs.App, kind: str) -> list[ProcessRecord]:
        """Its live workers or coordinators, as the store sees them."""
        sup = self.supervisor(app)
        if sup is None:
            return []
        alive = app.backend.liveness.alive
        return [
            p
            for p in app.store.list_processes()
            if p.parent == sup.token and p.kind == kind and alive(p.token)
        ]

    def wait_ready(self, app: mpjobs.App, timeout: float = 30.0) -> Host:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"host {self.name} exited: {self.stderr()}")
            return (
                len(self.children(app, "worker")) >= self.workers
                and len(self.children(app, "coordinator")) == 1
            )

        wait_for(ready, timeout, what=f"host {self.name}'s workers and coordinator")
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (a graceful drain), then SIGKILL of the whole tree if it hangs."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        tree = _tree(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in [proc.pid, *tree]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(5)


@contextlib.contextmanager
def running(host: Host) -> Iterator[Host]:
    host.start()
    try:
        yield host
    finally:
        host.stop()


def _tree(pid: int) -> list[int]:
    """`pid`'s descendants (not `pid` itself)."""
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def pool_coordinator_token(app: mpjobs.App, pool: mpjobs.Pool) -> str | None:
    alive = app.backend.liveness.alive
    for p in app.store.list_processes():
        if p.parent == pool.token and p.kind == "coordinator" and alive(p.token):
            return p.token
    return None


def leader(app: mpjobs.App) -> dict[str, Any] | None:
    return app.backend.current_leader()


def wait_leader(
    app: mpjobs.App, check: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        row = leader(app)
        return row if row is not None and check(row) else None

    row = wait_for(found, timeout, what=what)
    assert isinstance(row, dict)
    return row


# -- checks --------------------------------------------------------------------------------


def by_job(log: Path) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for e in mt.events(log):
        out.setdefault(int(e["n"]), []).append(e)
    return out


def assert_once_each(jobs: dict[int, mpjobs.Job], log: Path) -> None:
    """Every job is terminal, SUCCESS, and its task ran to its end exactly once.

    A job "in two terminal states" would have finished on two hosts (two "end" events),
    or have finished and still been retried; its row alone cannot show that.
    """
    statuses = Counter(j.status for j in jobs.values())
    assert statuses == {JobStatus.SUCCESS: len(jobs)}, statuses
    seen = by_job(log)
    ends = {n: sum(e["event"] == "end" for e in seen.get(n, [])) for n in jobs}
    twice = {n: seen[n] for n, k in ends.items() if k != 1}
    assert not twice, f"jobs that did not end exactly once: {twice}"
    for n, job in jobs.items():
        assert job.result() == n


def store_answers(app: mpjobs.App, timeout: float = 10.0) -> None:
    """Wait, bounded, until the store answers again (a server that is restarting)."""

    def answers() -> bool:
        try:
            app.store.status_of(0)
        except app.backend.unavailable:
            return False
        return True

    wait_for(answers, timeout, what="the store to answer again")


def wait_terminal(app: mpjobs.App, jobs: list[mpjobs.Job], timeout: float) -> None:
    """Wait for every job to end; on failure, say where each one that did not is stuck."""
    try:
        wait_for(
            lambda: all(j.status in TERMINAL for j in jobs), timeout, home=app.home.path,
            what="every job to end",
        )  # fmt: skip
    except AssertionError:
        print(stuck_report(app, jobs))
        raise


def stuck_report(app: mpjobs.App, jobs: list[mpjobs.Job]) -> str:
    """The rows of the jobs not yet terminal, their owners' liveness, and the process rows."""
    store, lines = app.store, []
    for job in jobs:
        rec = store.get(int(job.id))
        if rec is None or rec.status in TERMINAL:
            continue
        alive = rec.owner is not None and app.backend.liveness.alive(rec.owner)
        lines.append(
            f"job {rec.id}: {rec.status} owner={rec.owner} pid={rec.pid} attempts="
            f"{rec.attempts} exec_at-now={rec.exec_at - time.time():.3f} owner alive={alive}"
            f" error={(rec.error or '')[-300:]!r}"
        )  # fmt: skip
    for proc in store.list_processes():
        lines.append(f"process {proc.kind} {proc.token} pid={proc.pid} parent={proc.parent}")
    return "\n".join(lines)


@pytest.fixture
def short_pg_timeout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MPJOBS_PG_TIMEOUT=3 for this process and the pools it forks or starts.

    `dead_after()` is cached per process, and the test process has usually read it
    already; forked children inherit that cache, so it is cleared now, and again at the
    end so that later tests read the restored environment.
    """
    from mpjobs.store.postgres.connection import dead_after

    monkeypatch.setenv("MPJOBS_PG_TIMEOUT", "3")
    dead_after.cache_clear()
    yield
    dead_after.cache_clear()


def with_host(url: str, host: str) -> str:
    """`url` with its host part replaced (the namespace reaches the server elsewhere)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.replace(parts.hostname or "", host, 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# -- a. a whole host killed ------------------------------------------------------------------


def test_host_killed_its_running_jobs_recover_on_the_other(tmp_path: Path) -> None:
    """SIGKILL of every process of host A while its two workers run jobs: host B runs
    them again, each job ends once, SUCCESS; the time from the kill to the jobs running
    on host B is printed."""
    url = os.environ["MPJOBS_STORE"]
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    app = mt.make_app(home_a)
    log, release = tmp_path / "events", tmp_path / "release"
    with started(app, workers=2) as pool_a:
        jobs = {n: mt.hold.schedule(n, str(log), str(release)).now() for n in range(2)}
        wait_for(
            lambda: {e["n"] for e in mt.events(log) if e["home"] == str(home_a)} == {0, 1},
            20, what="both jobs to start on host A",
        )  # fmt: skip
        with running(Host("b", home_b, url, tmp_path)) as host_b:
            host_b.wait_ready(app)
            victims = [pool_a.pid, *_tree(pool_a.pid)]
            assert len(victims) == 4, f"supervisor, coordinator, 2 workers: {victims}"
            t_kill = time.time()
            for pid in victims:
                os.kill(pid, signal.SIGKILL)

            def restarted_on_b() -> bool:
                on_b = {e["n"] for e in mt.events(log)
                        if e["home"] == str(home_b) and e["event"] == "start"}  # fmt: skip
                return on_b == {0, 1} and all(
                    j.status == JobStatus.RUNNING for j in jobs.values()
                )

            wait_for(restarted_on_b, 20, what="both jobs running again on host B")
            starts_b = [e["t"] for e in mt.events(log) if e["home"] == str(home_b)]
            print(f"\nhost A killed: jobs running on host B after "
                  f"{min(starts_b) - t_kill:.3f} s (first) and "
                  f"{max(starts_b) - t_kill:.3f} s (both)")  # fmt: skip
            assert all(gone(pid) for pid in victims[1:])
            release.touch()
            wait_terminal(app, list(jobs.values()), 20)
            assert_once_each(jobs, log)
            for n, job in jobs.items():
                starts = [e for e in by_job(log)[n] if e["event"] == "start"]
                assert [e["home"] for e in starts] == [str(home_a), str(home_b)]
                assert 1 <= job.attempts <= 2, job.attempts
        assert not app.jobs(status="RUNNING", limit=1)


def test_host_killed_its_interrupted_attempts_count(tmp_path: Path) -> None:
    """rules/recovery.py: an attempt a dead owner had begun counts (retried while
    attempts remain). Over hosts, a job whose host dies with it mid-run each time would
    otherwise be retried for ever."""
    url = os.environ["MPJOBS_STORE"]
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    app = mt.make_app(home_a)
    log, release = tmp_path / "events", tmp_path / "release"
    with started(app, workers=1) as pool_a:
        job = mt.hold.schedule(0, str(log), str(release)).now()
        wait_for(lambda: mt.events(log), 20, what="the job to start on host A")
        with running(Host("b", home_b, url, tmp_path, workers=1)) as host_b:
            host_b.wait_ready(app)
            for pid in [pool_a.pid, *_tree(pool_a.pid)]:
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: len(mt.events(log)) == 2, 20, what="the job to start on host B")
            release.touch()
            job.wait(20)
    assert job.status == JobStatus.SUCCESS
    assert job.attempts == 2  # the interrupted attempt on A, and B's


# -- b. the leader killed ------------------------------------------------------------------


@pytest.mark.parametrize("leader_on", ["a", "b"])
def test_leader_killed_a_new_one_takes_over(tmp_path: Path, leader_on: str) -> None:
    """SIGKILL of the coordinator the `leader` row names: another one leads, with the
    epoch one higher; bounded at 10 s, the time is printed."""
    url = os.environ["MPJOBS_STORE"]
    app = mt.make_app(tmp_path / "a")
    host_b = Host("b", tmp_path / "b", url, tmp_path)
    with contextlib.ExitStack() as stack:
        # Whoever starts first leads: the other one's coordinator queues behind it.
        if leader_on == "b":
            stack.enter_context(running(host_b)).wait_ready(app)
            wait_leader(app, lambda r: r["pid"] == host_b.children(app, "coordinator")[0].pid,
                        20, "host B to lead")  # fmt: skip
        pool_a = stack.enter_context(started(app, workers=2))
        wait_for(lambda: pool_coordinator_token(app, pool_a), 20, what="host A's coordinator")
        if leader_on == "a":
            wait_leader(app, lambda r: r["pid"] == pool_a.coordinator(), 20, "host A to lead")
            stack.enter_context(running(host_b)).wait_ready(app)
        old = leader(app)
        assert old is not None
        t_kill = time.monotonic()
        os.kill(int(old["pid"]), signal.SIGKILL)
        new = wait_leader(app, lambda r: r["token"] != old["token"], 10, "a new leader")
        took = time.monotonic() - t_kill
        print(f"\nleader on host {leader_on} killed: new leader (pid {new['pid']}) after "
              f"{took:.3f} s, epoch {old['epoch']} -> {new['epoch']}")  # fmt: skip
        assert new["epoch"] == old["epoch"] + 1
        # The cluster still works: a job pushed now runs.
        job = mt.ping.schedule(7).now()
        assert job.wait(20).result() == 7


# -- c. a network cut ----------------------------------------------------------------------


def require_netns() -> None:
    from tests.netns import available

    reason = available()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"network namespaces are unavailable, and CI is set: {reason}")
    pytest.skip(f"network namespaces are unavailable: {reason}")


class Cut:
    """What a network cut of host B showed (see `cut_host_b`); times from the cut, in s."""

    def __init__(self) -> None:
        self.b_gone: float = -1.0  # B's job process is gone
        self.a_start: float = -1.0  # the job's next attempt started on host A
        self.new_leader: float | None = None  # host A's coordinator leads (B led)
        self.healed: float = -1.0  # the link is back
        self.b_back: float | None = None  # B has its workers again, after the heal
        self.b_stderr = ""


def cut_host_b(
    tmp_path: Path, leader_on: str, *, hold_cut_for_b: bool = False, want_b_back: bool = False,
) -> Cut:  # fmt: skip
    """Host B, inside a network namespace, runs a job when its link to the server is cut.

    Asserts what must hold in any case: host A runs the job within 20 s of the cut, B's
    job process is gone, the jobs pushed during the cut run, and after the heal every
    job pushed ends SUCCESS, each having run to its end once (the interrupted one on A).
    With `hold_cut_for_b`, the cut lasts until host B's supervisor has been cut off long
    enough to replace its workers (or has died) before the heal; with `want_b_back`, the
    test waits up to 60 s after the heal for B to have its workers again.
    """
    require_netns()
    from tests.netns import NetNs

    assert os.environ.get("MPJOBS_PG_TIMEOUT") == "3", "use the short_pg_timeout fixture"
    url = os.environ["MPJOBS_STORE"]
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    app = mt.make_app(home_a)
    log, release = tmp_path / "events", tmp_path / "release"
    seen = Cut()
    with NetNs("cut") as ns, contextlib.ExitStack() as stack:
        host_b = Host("b", home_b, with_host(url, ns.server_ip), tmp_path,
                      prefix=tuple(ns.prefix), env={"MPJOBS_PG_TIMEOUT": "3"})  # fmt: skip
        stack.enter_context(running(host_b)).wait_ready(app)
        jobs = {0: mt.hold.schedule(0, str(log), str(release)).now()}
        wait_for(lambda: mt.events(log), 20, what="the job to start on host B")
        first = mt.events(log)[0]
        assert first["home"] == str(home_b)
        b_pid = int(first["pid"])
        pool_a = stack.enter_context(started(app, workers=2))
        wait_for(lambda: pool_coordinator_token(app, pool_a), 20, what="host A's coordinator")
        if leader_on == "a":  # B started first and leads: hand leadership to A
            os.kill(host_b.children(app, "coordinator")[0].pid, signal.SIGKILL)
            wait_leader(app, lambda r: r["pid"] == pool_a.coordinator(), 20, "host A to lead")
            host_b.wait_ready(app)  # its coordinator is back, as a candidate
        else:
            wait_leader(app, lambda r: r["pid"] == host_b.children(app, "coordinator")[0].pid,
                        5, "host B to lead")  # fmt: skip
        before = leader(app)
        assert before is not None

        before_cut = host_b.stderr()
        t_cut = time.monotonic()
        ns.cut()
        b_gone_at: float | None = None
        a_start_at: float | None = None
        a_leads_at: float | None = None if leader_on == "b" else t_cut
        a_coordinator = pool_a.coordinator()
        # Polled at 10 ms rather than waited on, to time both sides of the hand-over.
        while b_gone_at is None or a_start_at is None or a_leads_at is None:
            now = time.monotonic()
            assert now < t_cut + 20.0, (
                f"20 s after the cut: B's job process gone: {b_gone_at is not None}, "
                f"the job started on A: {a_start_at is not None}, A leads: "
                f"{a_leads_at is not None}; {mt.events(log)}"
            )
            if b_gone_at is None and gone(b_pid):
                b_gone_at = now
            if a_start_at is None and any(e["home"] == str(home_a) for e in mt.events(log)):
                a_start_at = now
            if a_leads_at is None:
                row = leader(app)
                if row is not None and row["pid"] == a_coordinator:
                    a_leads_at = now
                    assert row["epoch"] > before["epoch"]
            time.sleep(0.01)  # a bounded poll of a process and a file: nothing to wait on
        seen.b_gone, seen.a_start = b_gone_at - t_cut, a_start_at - t_cut
        print(f"\ncut ({leader_on} leads): B's job process gone after {seen.b_gone:.3f} s, "
              f"the job running on A after {seen.a_start:.3f} s")  # fmt: skip
        assert jobs[0].status == JobStatus.RUNNING
        if leader_on == "b":
            seen.new_leader = a_leads_at - t_cut
        # Acknowledged while B is cut off: they must all end, too.
        jobs.update({n: mt.short.schedule(n, str(log)).now() for n in range(1, 6)})
        wait_for(lambda: all(jobs[n].status in TERMINAL for n in range(1, 6)), 20,
                 home=home_a, what="the jobs pushed during the cut")  # fmt: skip
        if hold_cut_for_b:
            # Its workers died of the cut and were replaced; the replacements cannot
            # reach the store either and die in turn: a supervisor must live through it.
            def replaced() -> bool:  # (counted since the cut)
                err = host_b.stderr()[len(before_cut) :]
                return err.count("replacing it") >= 2 or not host_b.alive()

            wait_for(replaced, 20, what="host B's supervisor to replace its workers")
            since = len(host_b.stderr())

            def failed_again() -> bool:
                err = host_b.stderr()[since:]
                return "while booting" in err or "cannot connect" in err or not host_b.alive()

            wait_for(failed_again, 30, what="host B's new workers to fail to reach the store")

        ns.heal()
        t_heal = time.monotonic()
        seen.healed = t_heal - t_cut
        jobs.update({n: mt.short.schedule(n, str(log)).now() for n in range(6, 10)})
        release.touch()
        wait_terminal(app, list(jobs.values()), 30)
        assert_once_each(jobs, log)
        assert [e["home"] for e in by_job(log)[0] if e["event"] == "end"] == [str(home_a)]
        if want_b_back:
            with contextlib.suppress(AssertionError):
                host_b.wait_ready(app, timeout=60)
                seen.b_back = time.monotonic() - t_heal
                print(f"host B has its workers again {seen.b_back:.3f} s after the heal")
        seen.b_stderr = host_b.stderr()
    assert "lost its liveness" in seen.b_stderr, seen.b_stderr[-3000:]
    return seen


@pytest.mark.timeout(150)
@pytest.mark.usefixtures("short_pg_timeout")
@pytest.mark.parametrize("leader_on", ["b", "a"])
def test_network_cut_host_is_replaced(tmp_path: Path, leader_on: str) -> None:
    """The cable of host B is pulled while it runs a job: host A recovers and runs the
    job, B's job process is gone, a leader B was is replaced, nothing pushed is lost and
    nothing runs to its end twice (all asserted by `cut_host_b`)."""
    seen = cut_host_b(tmp_path, leader_on)
    if seen.new_leader is not None:
        print(f"host A leads {seen.new_leader:.3f} s after the cut")


@pytest.mark.timeout(150)
@pytest.mark.usefixtures("short_pg_timeout")
def test_network_cut_host_stops_its_job_before_another_host_runs_it(tmp_path: Path) -> None:
    """At most once at a time: B must have killed its job before A starts it again."""
    seen = cut_host_b(tmp_path, "a")
    overlap = seen.b_gone - seen.a_start
    assert overlap < 0, f"the job ran on both hosts at once for {overlap:.3f} s"


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("short_pg_timeout")
def test_network_cut_host_comes_back_after_the_heal(tmp_path: Path) -> None:
    """A cut host's supervisor waits the cut out: after the heal it has workers again."""
    seen = cut_host_b(tmp_path, "a", hold_cut_for_b=True, want_b_back=True)
    assert seen.b_back is not None, "host B never had its workers again: " + "\n".join(
        seen.b_stderr.splitlines()[-5:]
    )


# -- d. a server restart ------------------------------------------------------------------


STREAM = 200


@contextlib.contextmanager
def own_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, schema: str
) -> Iterator[tuple[PgCluster, str]]:
    """A server of the test's own (it is restarted), and its store URL in $MPJOBS_STORE."""
    from mpjobs.store.backends import close_backends
    from tests.pgharness import PgCluster

    cluster = PgCluster(tmp_path / "pg")
    cluster.start()
    try:
        url = cluster.url() + f"?schema={schema}"
        monkeypatch.setenv("MPJOBS_STORE", url)
        yield cluster, url
    finally:
        close_backends()  # this process's connections to it, before it goes
        cluster.stop()


def restart(cluster: PgCluster) -> float:
    """`pg_ctl restart -m fast` of the test's own server; returns how long it took."""
    t0 = time.monotonic()
    cluster.restart("fast")
    return time.monotonic() - t0


def still_up(pool: mpjobs.Pool, host: Host) -> Callable[[], None]:
    """A check for waits: fail at once, naming who, if a host's supervisor has exited."""

    def check() -> None:
        dead = [n for n, up in (("A", pool.is_alive()), ("B", host.alive())) if not up]
        if dead:
            tail = "\n".join(host.stderr().splitlines()[-3:])
            raise AssertionError(f"the supervisor of host {' and '.join(dead)} exited: {tail}")

    return check


@pytest.mark.timeout(180)
def test_server_restart_mid_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logfile: Path
) -> None:
    """A fast restart of the server while two hosts run a stream of short jobs: every job
    pushed ends SUCCESS, each ran to its end once, and the logs say what happened."""
    with own_cluster(tmp_path, monkeypatch, "restart") as (cluster, url):
        app = mt.make_app(tmp_path / "a")
        log = tmp_path / "events"
        jobs: dict[int, mpjobs.Job] = {}

        def push(lo: int, hi: int) -> None:
            """Push jobs lo..hi-1; a push the store refused (restarting) is pushed again."""
            builders = [mt.short.schedule(n, str(log)) for n in range(lo, hi)]
            deadline = time.monotonic() + 30
            while True:
                try:
                    pushed = app.push_many(builders)
                    break
                except app.backend.unavailable as exc:
                    assert time.monotonic() < deadline, f"cannot push: {exc}"
                    print(f"push refused ({type(exc).__name__}); pushing again")
                    store_answers(app)
            jobs.update(zip(range(lo, hi), pushed, strict=True))

        def ended() -> int:
            return sum(e["event"] == "end" for e in mt.events(log))

        host_b = Host("b", tmp_path / "b", url, tmp_path)
        with started(app, workers=2) as pool_a, running(host_b):
            host_b.wait_ready(app)
            up = still_up(pool_a, host_b)
            restarted_at = None
            for lo in range(0, STREAM, 20):
                push(lo, lo + 20)
                if lo == 100:
                    wait_for(lambda: ended() >= 60, 30, what="60 jobs to end")
                    took = restart(cluster)
                    restarted_at = time.monotonic()
                    print(f"\nrestart took {took:.3f} s, {ended()} of {len(jobs)} pushed jobs "
                          "had ended")  # fmt: skip
            assert restarted_at is not None

            def all_ended() -> bool:
                up()
                return ended() >= STREAM

            wait_for(all_ended, 60, what="every job to end")
            print(f"all {STREAM} jobs ended {time.monotonic() - restarted_at:.3f} s after "
                  f"the restart")  # fmt: skip
            store_answers(app)
            try:
                wait_terminal(app, list(jobs.values()), 30)
                assert_once_each(jobs, log)
            except AssertionError:
                print("host A's log:\n" + logfile.read_text()[-6000:])
                print("host B's log:\n" + host_b.stderr()[-6000:])
                raise
            homes = Counter(e["home"] for e in mt.events(log) if e["event"] == "end")
            print(f"jobs per host: {dict(homes)}")
            up()
        assert len(app.jobs(limit=10 * STREAM)) == STREAM, "a push went in twice"
        words = ("lost", "reconnect", "restored", "back")
        a_lines = [line for line in logfile.read_text().splitlines()
                   if any(w in line for w in words)]  # fmt: skip
        b_lines = [line for line in host_b.stderr().splitlines()
                   if any(w in line for w in words)]  # fmt: skip
        print("host A's log:", *a_lines[:6], sep="\n  ")
        print("host B's log:", *b_lines[:6], sep="\n  ")
        assert a_lines and b_lines, "no log line about the lost connection"
        assert log_lines(logfile, "connection lost") or log_lines(logfile, "lost its store")


@pytest.mark.timeout(120)
def test_server_restart_every_host_keeps_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logfile: Path
) -> None:
    """Two idle hosts live through a fast restart of the server: both supervisors stay up
    and each runs a job of its own queue pushed afterwards."""
    with own_cluster(tmp_path, monkeypatch, "idle") as (cluster, url):
        app = mt.make_app(tmp_path / "a")
        host_b = Host("b", tmp_path / "b", url, tmp_path, args=("--queues", "qb"))
        with started(app, workers=2, queues=["qa"]) as pool_a, running(host_b):
            host_b.wait_ready(app)
            up = still_up(pool_a, host_b)
            took = restart(cluster)
            print(f"\nrestart took {took:.3f} s")
            store_answers(app)
            t0 = time.monotonic()
            jobs = [mt.ping.schedule(n).options(queue=q).now() for n, q in enumerate(["qa", "qb"])]

            def done() -> bool:
                up()
                return all(j.status in TERMINAL for j in jobs)

            wait_for(done, 30, what="a job on each host after the restart")
            print(f"a job on each host done {time.monotonic() - t0:.3f} s after the restart")
            assert [j.status for j in jobs] == [JobStatus.SUCCESS] * 2
            up()
        crashed = log_lines(logfile, "crashed")
        assert not crashed, crashed


# -- e. a cross-host wake-up --------------------------------------------------------------


def relay_listening(app: mpjobs.App) -> bool:
    """Whether this process's relay session has run its LISTEN (pg_stat_activity)."""
    row = app.store._conn().execute(  # type: ignore[attr-defined]
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = ? "
        "AND query LIKE 'LISTEN %'",
        (f"mpjobs relay {os.getpid()}",),
    ).fetchone()
    return bool(row[0])


def test_commit_on_another_host_wakes_a_waiter_by_notification(tmp_path: Path) -> None:
    """Host B finishes a job host A pushed: host A's doorbell rings through the relay
    (not the one-second fallback poll), and a `Job.wait()` on host A returns at once."""
    url = os.environ["MPJOBS_STORE"]
    app = mt.make_app(tmp_path / "a")
    log, release = tmp_path / "events", tmp_path / "release"
    with running(Host("b", tmp_path / "b", url, tmp_path)) as host_b:
        host_b.wait_ready(app)
        job = mt.hold.schedule(0, str(log), str(release)).now()
        wait_for(lambda: mt.events(log), 20, what="the job to start on host B")
        with app.backend.doorbell.watcher() as watcher:
            watcher.wait(0)  # takes up the relay
            wait_for(lambda: relay_listening(app), 10, what="the relay to listen")
            while watcher.wait(0):  # drain rings from before (the push, the claim)
                pass
            t0 = time.monotonic()
            release.touch()  # from here on, only host B commits
            wakes = 0
            while job.status != JobStatus.SUCCESS:  # one wake per commit of B's, at most
                assert wakes < 20 and time.monotonic() - t0 < 30, f"{job!r} not done"
                # The watcher caps a wait at the fallback poll (1 s): [] is a timeout.
                assert watcher.wait(timeout=30), "no notification rang the doorbell in 1 s"
                wakes += 1
            latency = time.monotonic() - t0
            assert wakes >= 1
        print(f"\nhost B's completion seen on host A after {latency * 1000:.1f} ms, "
              f"woken by {wakes} ring(s)")  # fmt: skip

        # And Job.wait() itself, end to end: push on A, run on B, woken on A.
        for n in range(1, 6):
            t0 = time.monotonic()
            done = mt.ping.schedule(n).now().wait(10)
            took = time.monotonic() - t0
            print(f"ping {n}: pushed on A, run on B, wait() returned after "
                  f"{took * 1000:.1f} ms")  # fmt: skip
            assert done.result() == n
