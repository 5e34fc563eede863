"""Waiting costs nothing (issue 9, item 8): every waiter of a process shares one listener.

The waiters live in their own process (tests/apps/idle_waiters.py, fork_waiter.py), so
its CPU time and its inotify descriptors are its waiters' alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import tasks
from conftest import APPS, started, wait_for
from idle_waiters import inotify_instances

import mpjobs
from mpjobs.coordination import hub, listener, notify

N_ASYNC = 10_000  # over two event loops
N_THREADS = 200
WINDOW = 2.0  # seconds of idle CPU measured
MODES = ["inotify", "polling"]  # polling: as without inotify, or with none left to open


@contextmanager
def idle_waiters(
    home: Path, tmp: Path, mode: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A process whose N_ASYNC + N_THREADS waiters all sleep on jobs nobody runs yet."""
    env = dict(os.environ)
    if mode == "polling":
        env["IDLE_WAITERS_NO_INOTIFY"] = "1"
    ready, done = tmp / "ready", tmp / "done"
    argv = [sys.executable, str(APPS / "idle_waiters.py"), str(home), str(N_ASYNC),
            str(N_THREADS), "2", str(ready), str(done)]  # fmt: skip
    proc = subprocess.Popen(argv, env=env)
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, 120, what="waiters asleep")
        assert proc.poll() is None, f"the waiters' process died: {proc.returncode}"
        yield proc, done
    finally:
        proc.kill()
        proc.wait(10)


def _threads() -> int:
    """Threads, but for a PostgreSQL store's relay (which runs beside any waiter)."""
    return sum(1 for t in threading.enumerate() if not getattr(t, "mpjobs_fork_safe", False))


@pytest.mark.sqlite_only  # the process's one listener; on PostgreSQL each check is a round trip
@pytest.mark.parametrize("mode", MODES)
def test_ten_thousand_idle_waiters_cost_under_one_percent_of_a_core(
    home: Path, tmp_path: Path, mode: str
) -> None:
    with idle_waiters(home, tmp_path, mode) as (proc, _):
        me = psutil.Process(proc.pid)
        before = me.cpu_times()
        time.sleep(WINDOW)  # the measurement window itself, not a synchronisation
        after = me.cpu_times()
        used = (after.user + after.system) - (before.user + before.system)
        instances = inotify_instances(proc.pid)
    # Without inotify one thread looks at the doorbell 20 times a second for the whole
    # process (about 0.3% of a core measured alone); allow for a loaded machine there.
    bound = 0.01 if mode == "inotify" else 0.02
    assert used < bound * WINDOW, f"{N_ASYNC + N_THREADS} idle waiters used {used:.3f} s CPU"
    assert instances <= (1 if mode == "inotify" else 0), f"{instances} inotify instances"


@pytest.mark.sqlite_only  # the process's one listener; on PostgreSQL each check is a round trip
@pytest.mark.parametrize("mode", MODES)
def test_every_idle_waiter_wakes_when_its_job_ends(
    app: mpjobs.App, home: Path, tmp_path: Path, mode: str
) -> None:
    with idle_waiters(home, tmp_path, mode) as (proc, done), started(app):
        wait_for(done.exists, 120, what="every waiter to return")
        report = json.loads(done.read_text())
        assert proc.wait(10) == 0
    assert report["n_errors"] == 0, report["errors"]
    assert report["woke"] == N_ASYNC + N_THREADS
    # Rings are coalesced: a waiter re-checks once per round, however many commits.
    assert report["max_lag"] < 10.0, report


def test_wait_timeouts_fire_on_time_among_other_waiters(app: mpjobs.App) -> None:
    """Each waiter's own timeout fires on time while the shared listener serves others,
    and once the last waiter is gone the listener's thread is too (app.start() forks)."""
    threads_before = _threads()
    forever = tasks.noop.schedule().delay(3600)
    kept = threading.Thread(target=forever.wait, args=(30,))  # keeps the listener busy
    kept.start()
    timeout = 0.3
    jobs = app.push_many(tasks.noop.schedule().options(queue="nobody") for _ in range(220))
    late: list[float] = []

    def sync_wait(job: mpjobs.Job) -> None:
        t0 = time.monotonic()
        with pytest.raises(mpjobs.WaitTimeout):
            job.wait(timeout)
        late.append(time.monotonic() - t0 - timeout)

    async def async_wait(job: mpjobs.Job) -> None:
        t0 = time.monotonic()
        with pytest.raises(mpjobs.WaitTimeout):
            await job.wait_async(timeout)
        late.append(time.monotonic() - t0 - timeout)

    async def on_a_loop() -> None:
        await asyncio.gather(*(async_wait(j) for j in jobs[20:]))

    sync = [threading.Thread(target=sync_wait, args=(j,)) for j in jobs[:20]]
    for t in sync:
        t.start()
    asyncio.run(on_a_loop())
    for t in sync:
        t.join(30)
    assert len(late) == 220 and min(late) >= -0.001, late
    assert max(late) < 2.0, f"a timeout fired {max(late):.2f} s late"
    assert forever.cancel() is True  # the commit rings: the kept waiter returns at once
    kept.join(10)
    assert not kept.is_alive()
    assert _threads() == threads_before, threading.enumerate()


@pytest.mark.parametrize("overlap", [False, True])
def test_a_wait_of_years_is_no_error(app: mpjobs.App, overlap: bool) -> None:
    """poll() and lock waits have ceilings (about 24 days; TIMEOUT_MAX); a longer
    timeout is slept in pieces, alone (poll) or with a second waiter (Condition)."""
    jobs = [tasks.noop.schedule().delay(3600) for _ in range(2 if overlap else 1)]
    errors: list[BaseException] = []

    def wait(job: mpjobs.Job) -> None:
        try:
            job.wait(10.0**10)
        except BaseException as exc:
            errors.append(exc)

    waiters = [threading.Thread(target=wait, args=(j,)) for j in jobs]
    for t in waiters:
        t.start()
    wait_for(lambda: listener.parked() == len(jobs), 10, what="the waiters asleep")
    for job in jobs:
        job.cancel()
    for t in waiters:
        t.join(10)
    assert not errors and not any(t.is_alive() for t in waiters)


def inotify_watches() -> int:
    """Watches held by this process's inotify instances, as the kernel lists them."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify":
                count += Path(f"/proc/self/fdinfo/{fd}").read_text().count("inotify wd:")
        except OSError:  # the fd of listdir itself, closed meanwhile
            pass
    return count


def test_waiting_on_many_homes_in_turn_keeps_a_bounded_number_of_watches(
    tmp_path: Path,
) -> None:
    for i in range(3 * hub._KEEP_IDLE):
        app = tasks.make_app(tmp_path / f"home-{i}")
        with pytest.raises(mpjobs.WaitTimeout):
            tasks.noop.schedule().delay(3600).wait(0.001)
        assert inotify_watches() <= hub._KEEP_IDLE
    assert app.home.path == tmp_path / f"home-{i}"


def test_a_pool_started_after_waits_is_still_forked(app: mpjobs.App) -> None:
    with started(app, workers=1) as first:
        tasks.add.schedule(1, 2).now().wait(20)
        assert first._proc is None
    with started(app, workers=1) as second:
        assert second._proc is None, "app.start() fell back to fork+exec after a wait"
        assert asyncio.run(tasks.add.schedule(2, 2).now().wait_async(20)).result() == 4


def test_waiters_keep_working_across_a_fork(app: mpjobs.App, home: Path, tmp_path: Path) -> None:
    """A child forked while the parent's listener runs drops it (its inotify fd too),
    wakes the task it inherited, and builds its own listener; the parent's still works."""
    out = tmp_path / "fork"
    proc = subprocess.Popen([sys.executable, str(APPS / "fork_waiter.py"), str(home), str(out)])
    try:
        forked = Path(f"{out}.forked")
        wait_for(lambda: forked.exists() or proc.poll() is not None, 60, what="the fork")
        with started(app, workers=1):
            assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait(10)
    child = json.loads(Path(f"{out}.child").read_text())
    parent = json.loads(Path(f"{out}.parent").read_text())
    assert child["inotify_after_fork"] == 0, "the child kept its parent's inotify fds"
    assert child["ok"] and child["inotify"] <= 1
    assert parent == {"child_status": 0, "thread_done": True, "a": "SUCCESS"}


def test_foreign_thread_count_ignores_only_the_listener(app: mpjobs.App) -> None:
    """What pool.py's fork check should read: the listener thread (which runs only
    while two or more waiters overlap) does not count."""
    job = tasks.noop.schedule().delay(3600)
    assert listener.foreign_thread_count() == 0 and listener.safe_to_fork()

    async def main() -> tuple[int, int, int, bool]:
        first = asyncio.create_task(job.wait_async(30))
        while listener.parked() < 1:
            await asyncio.sleep(0.001)
        alone = _threads()  # a lone waiter reads the fd itself: no thread
        second = asyncio.create_task(job.wait_async(30))
        while listener.parked() < 2:
            await asyncio.sleep(0.001)
        counts = alone, _threads(), listener.foreign_thread_count()
        job.cancel()
        await asyncio.gather(first, second)
        return (*counts, listener.safe_to_fork())

    assert asyncio.run(main()) == (1, 2, 0, True)
    pending = tasks.noop.schedule().delay(3600)
    other = threading.Thread(target=pending.wait, args=(30,))
    other.start()
    try:
        assert listener.foreign_thread_count() == 1 and not listener.safe_to_fork()
    finally:
        pending.cancel()
        other.join(10)
    assert listener.foreign_thread_count() == 0


@pytest.mark.parametrize("mode", MODES)
def test_waiters_coming_and_going_never_sleep_through_a_ring(
    app: mpjobs.App, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiters that start and end at random hand the reading of the fd between a lone
    thread, a lone event loop and the listener thread; none may miss its job's end
    (a missed ring shows as a wait that runs to its timeout). Polling: the listener
    thread watches the doorbell's mtime, whose clock is coarse."""
    rounds, slow = (100 if mode == "inotify" else 20), 3.0
    errors: list[BaseException] = []
    longest: list[float] = []

    def one_sync() -> None:
        t0 = time.monotonic()
        tasks.add.schedule(1, 1).now().wait(slow)
        longest.append(time.monotonic() - t0)

    async def one_async() -> None:
        t0 = time.monotonic()
        await tasks.add.schedule(1, 1).now().wait_async(slow)
        longest.append(time.monotonic() - t0)

    def sync_worker(k: int) -> None:
        try:
            for i in range(rounds):
                one_sync()
                if (i + k) % 3 == 0:
                    time.sleep(0.001 * k)  # vary the overlap: sometimes alone, sometimes not
        except BaseException as exc:
            errors.append(exc)

    def async_worker() -> None:
        async def main() -> None:
            for i in range(rounds):
                await (one_async() if i % 2 else asyncio.gather(one_async(), one_async()))

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    with started(app):
        if mode == "polling":  # for this process only, not for the pool it forked
            monkeypatch.setattr(notify, "_LIBC", None)
            monkeypatch.setattr(hub, "_HUB", None)
        for lone in (True, False):  # first one waiter at a time, then many at once
            workers = [threading.Thread(target=sync_worker, args=(1,))]
            if not lone:
                workers += [threading.Thread(target=sync_worker, args=(k,)) for k in range(4)]
                workers += [threading.Thread(target=async_worker) for _ in range(2)]
            for t in workers:
                t.start()
            for t in workers:
                t.join(120)
    assert not errors, errors[:3]
    assert max(longest) < slow
