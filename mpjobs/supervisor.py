"""The supervisor: forks workers and a coordinator, reaps them, replaces them, kills them.

Modelled on gunicorn's arbiter. Signal handlers only queue the signal and the main loop
dispatches it; the supervisor runs no threads and holds no lock or connection across
fork(). It is also the limits watchdog: only a process's parent can kill it without
racing pid reuse, and only a process outside the job can stop a job stuck in C code.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from mpjobs.coordination.leader import leader_timeout
from mpjobs.coordination.notify import foreign_thread_count, safe_to_fork
from mpjobs.coordination.processes import POKE_SIGNAL, new_token
from mpjobs.journal import read_journal, remove_journal, write_kill_note
from mpjobs.ledger import Ledger
from mpjobs.limits import Watch, kill_tree
from mpjobs.recovery import forget_dead_processes, recover_dead_owners
from mpjobs.store.base import FAILED, TIMEOUT, ProcessRecord
from mpjobs.worker import BOOT_ERROR, Worker

if TYPE_CHECKING:
    from mpjobs.app import App

log = logging.getLogger("mpjobs.supervisor")

HOUSEKEEPING = 1.0
BOOT_GRACE = 1.0  # a worker that dies sooner than this after its fork failed to boot
BACKOFF = (0.5, 30.0)
HANDLED = (
    signal.SIGCHLD,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    POKE_SIGNAL,
)


@dataclass
class Child:
    pid: int
    kind: str  # "worker" | "coordinator"
    slot: int
    token: str
    born: float
    retiring: bool = False
    booted: bool = False  # a worker says so over the report pipe once it can serve
    kill: tuple[int | None, str, str] | None = None  # (job to settle, status, reason)
    watch: Watch | None = None
    proc: psutil.Process | None = field(default=None, repr=False)


class Supervisor:
    def __init__(
        self,
        app: App,
        workers: int | None = None,
        queues: Sequence[str] | None = None,
        *,
        graceful_timeout: float = 30.0,
        max_jobs_per_worker: int | None = None,
        max_memory_per_worker: int | str | None = None,
        install_signal_handlers: bool = True,
        token: str | None = None,
        parent_pid: int | None = None,
    ) -> None:
        from mpjobs.scheduling.durations import parse_bytes

        n = (os.cpu_count() or 1) if workers is None else workers
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        self.app = app
        self.n = n
        self.queues = list(queues) if queues else None
        self.graceful_timeout = graceful_timeout
        self.max_jobs = max_jobs_per_worker
        self.max_memory = (
            None if max_memory_per_worker is None else parse_bytes(max_memory_per_worker)
        )
        self.install_signal_handlers = install_signal_handlers
        self.token = token or new_token("supervisor")
        # Stop when this process's parent goes (app.start() through exec). Polled, not
        # PR_SET_PDEATHSIG: Linux sends that when the forking *thread* exits, and the
        # caller of app.start() may be a short-lived thread.
        self.parent_pid = parent_pid
        self.children: dict[int, Child] = {}
        self.signals: list[int] = []
        self.stopping = False
        self.stop_deadline = 0.0
        self.stop_began = 0.0
        self.retire_queue: list[int] = []
        self.respawn_at: dict[tuple[str, int], float] = {}
        self.failures: dict[tuple[str, int], int] = {}

    # -- setup -----------------------------------------------------------------------

    def run(self) -> None:
        """Supervise until stopped by SIGTERM/SIGINT (or `stop()` from a handler)."""
        if not safe_to_fork():
            log.warning(
                "supervisor started in a process with %d threads; forking it is unsafe "
                "if those threads hold locks", foreign_thread_count() + 1
            )  # fmt: skip
        self.leader_timeout = leader_timeout()  # a bad MPJOBS_LEADER_TIMEOUT fails here
        self.store = self.app.store
        self.ledger = Ledger(self.store)
        self.liveness = self.app.backend.liveness.hold(self.token)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._report_r, self._report_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._report_r, False)
        old_handlers: dict[int, Any] = {}
        old_wakeup = -1
        if self.install_signal_handlers:
            old_wakeup = signal.set_wakeup_fd(self._wake_w)
            old_handlers = {sig: signal.signal(sig, self._on_signal) for sig in HANDLED}
        self._buf = b""
        self.registered = False
        try:
            self._register()
            backend = self.app.backend
            self.ledger.attempt("recover jobs of dead owners", recover_dead_owners, backend)
            self.ledger.attempt("forget dead processes", forget_dead_processes, backend)
            self._forget_idle_files()
            self._spawn("coordinator", 0)
            for slot in range(self.n):
                self._spawn("worker", slot)
            log.info(
                "supervisor %d started %d workers on %s", os.getpid(), self.n, self.app.home.path
            )
            self._loop()
        finally:
            for pid in list(self.children):
                kill_tree(pid)
            self._reap(block=True)
            self.ledger.retry()  # a last try; the leader or the next supervisor does the rest
            self.ledger.attempt("unregister", self.store.unregister_process, self.token)
            remove_journal(self._idle_file(self.token))  # our workers, its holders, are gone
            self.liveness.release()
            if self.install_signal_handlers:
                signal.set_wakeup_fd(old_wakeup)
                for sig, handler in old_handlers.items():
                    signal.signal(sig, handler)
            for fd in (self._wake_r, self._wake_w, self._report_r, self._report_w):
                os.close(fd)

    def _register(self) -> None:
        record = ProcessRecord(
            self.token, "supervisor", os.getpid(), None, time.time(),
            json.dumps({"workers": self.n, "queues": self.queues}),
        )  # fmt: skip
        self.registered, _ = self.ledger.attempt(
            "register this supervisor", self.store.register_process, record
        )

    def _idle_file(self, token: str) -> Path:
        return self.app.home.path / "procs" / f"{token}.idle"

    def _forget_idle_files(self) -> None:
        """Remove the idle-turn lock files of supervisors that are gone.

        Deleting a lock file is safe here although its holders may still be dying: the
        file is named by a dead supervisor's token, which nobody will ever use again.
        """
        for path in self.app.home.path.glob("procs/*.idle"):
            with contextlib.suppress(OSError):
                if not self.app.backend.liveness.alive(path.stem):
                    path.unlink()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    # -- the loop --------------------------------------------------------------------

    def _loop(self) -> None:
        next_housekeeping = time.monotonic() + HOUSEKEEPING
        while True:
            while self.signals:
                self._dispatch(self.signals.pop(0))
            self._read_reports()
            self._check_limits()
            self._reap()
            if self.stopping:
                if not self.children:
                    return
                if time.monotonic() >= self.stop_deadline:
                    self._kill_all("graceful timeout reached")
            else:
                self._maintain()
            if time.monotonic() >= next_housekeeping:
                self._housekeeping()
                next_housekeeping = time.monotonic() + HOUSEKEEPING
            self._sleep(next_housekeeping)

    def _sleep(self, until: float) -> None:
        now = time.monotonic()
        wake = [until]
        wake += [c.watch.next_check() for c in self.children.values() if c.watch]
        if self.stopping:
            # no respawns while stopping: their (past) times would make this a busy loop
            wake.append(self.stop_deadline)
        else:
            wake += self.respawn_at.values()
        timeout = max(0.0, min(wake) - now)
        try:
            ready, _, _ = select.select([self._wake_r, self._report_r], [], [], timeout)
        except InterruptedError:
            return
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)

    def _dispatch(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return  # the loop reaps every turn
        if signum in (signal.SIGTERM, signal.SIGINT):
            repeated = signum == signal.SIGTERM and time.monotonic() < self.stop_began + 1.0
            if self.stopping and repeated:
                # The kernel sends the parent-death SIGTERM once per exiting thread of a
                # multi-threaded parent (app.start() in a web process): not a second request.
                log.info("ignoring a repeated SIGTERM within 1 s of the first")
            elif self.stopping:
                self._kill_all(f"second {signal.Signals(signum).name}")
            else:
                self.stop()
        elif signum == signal.SIGQUIT:
            self.stop()
            self._kill_all("SIGQUIT")
        elif signum == signal.SIGHUP:
            log.info("SIGHUP: replacing workers one by one")
            self.retire_queue = [p for p, c in self.children.items() if not c.retiring]
        elif signum == POKE_SIGNAL:
            self._kill_requested()

    def stop(self) -> None:
        """Begin a graceful stop: no new claims, running jobs get `graceful_timeout` s."""
        if self.stopping:
            return
        log.info("supervisor stopping; running jobs have %.0fs to finish", self.graceful_timeout)
        self.stopping = True
        self.stop_began = time.monotonic()
        self.stop_deadline = self.stop_began + self.graceful_timeout
        for pid in self.children:
            self._signal(pid, signal.SIGTERM)

    # -- children --------------------------------------------------------------------

    def _spawn(self, kind: str, slot: int) -> None:
        token = new_token(kind)
        parent = os.getpid()
        # Our handlers only queue signals for our loop. A SIGTERM reaching the child before
        # it installs its own would be queued there and lost, and the child would run on
        # until the graceful timeout. So signals wait, blocked, until the child has reset
        # them: one that arrives meanwhile then takes its default action (a child that has
        # not booted holds no job).
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
            raise
        if pid == 0:  # child: never returns
            try:
                for sig in HANDLED:
                    quiet = sig in (signal.SIGINT, signal.SIGHUP)  # the supervisor's to handle
                    signal.signal(sig, signal.SIG_IGN if quiet else signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
                signal.set_wakeup_fd(-1)
                for fd in (self._wake_r, self._wake_w, self._report_r):
                    os.close(fd)
                if kind == "coordinator":
                    from mpjobs.coordinator import Coordinator

                    Coordinator(self.app, token=token, parent_token=self.token).run(parent)
                Worker(
                    self.app, token=token, parent_token=self.token, slot=slot, queues=self.queues,
                    report_fd=self._report_w, max_jobs=self.max_jobs, max_memory=self.max_memory,
                    share=self.n,
                ).run(parent)  # fmt: skip
            finally:
                os._exit(BOOT_ERROR)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        child = Child(pid, kind, slot, token, time.monotonic())
        with contextlib.suppress(psutil.Error):
            child.proc = psutil.Process(pid)
        self.children[pid] = child

    def _maintain(self) -> None:
        """Keep one coordinator and n workers alive, backing off after boot failures."""
        now = time.monotonic()
        live = {(c.kind, c.slot) for c in self.children.values() if not c.retiring}
        wanted = [("coordinator", 0)] + [("worker", s) for s in range(self.n)]
        for key in wanted:
            if key not in live and self.respawn_at.get(key, 0) <= now:
                self.respawn_at.pop(key, None)
                self._spawn(*key)
        if self.retire_queue and not any(c.retiring for c in self.children.values()):
            pid = self.retire_queue.pop(0)
            child = self.children.get(pid)
            if child is not None:
                child.retiring = True
                self._spawn(child.kind, child.slot)
                self._signal(pid, signal.SIGTERM)

    def _reap(self, block: bool = False) -> None:
        self._read_reports()  # a child's last words ("booted") come before its death
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._buried(child, status)

    def _buried(self, child: Child, status: int) -> None:
        """A child is gone: settle its jobs, then schedule its replacement."""
        code = os.waitstatus_to_exitcode(status)
        how = (
            f"exited with code {code}"
            if code >= 0
            else f"was killed by {signal.Signals(-code).name}"
        )
        if code == -signal.SIGKILL and child.kill is None:
            how += " (by someone else, or the kernel's OOM killer)"
        with contextlib.suppress(OSError):
            self.app.backend.liveness.alive(child.token)  # removes its liveness file
        in_job = False
        if child.kind == "worker":
            started, done = read_journal(self.app.home.journal(child.token))
            in_job = bool(started - done.keys())
            kill = child.kill
            target = None
            if kill is not None and kill[0] is not None and kill[1]:
                target = (kill[0], kill[1], kill[2])
            deliberate = kill is not None or self.stopping or child.retiring
            self.ledger.bury(child.token, child.pid, f"worker pid {child.pid} {how}", target,
                             deliberate, settle=True)  # fmt: skip
        else:
            remove_journal(self.app.home.kill_note(child.token))  # notes are for settling workers
            self.ledger.bury(child.token, child.pid, how, None, False, settle=False)
        if self.stopping or child.retiring or code == 0:
            if not (self.stopping or child.retiring):
                log.info("%s %d (slot %d) exited; replacing it", child.kind, child.pid, child.slot)
            return
        key = (child.kind, child.slot)
        if self._failed_boot(child, code, in_job):
            n = self.failures[key] = self.failures.get(key, 0) + 1
            delay = min(BACKOFF[1], BACKOFF[0] * 2 ** (n - 1))
            self.respawn_at[key] = time.monotonic() + delay
            log.error("%s slot %d %s while booting; retrying in %.1fs (see the traceback above)",
                      child.kind, child.slot, how, delay)  # fmt: skip
        else:
            self.failures.pop(key, None)
            if child.kill is None:
                log.warning(
                    "%s %d (slot %d) %s; replacing it", child.kind, child.pid, child.slot, how
                )

    def _failed_boot(self, child: Child, code: int, in_job: bool) -> bool:
        """Did the child fail to start (respawn with a back-off), or was it lost (at once)?

        A kill from outside is never a failed boot. A worker that said it booted and then
        died inside a job (its journal shows a job begun, not finished: `os._exit()` in
        the job, a segfault in C code) is a lost worker. One that booted and died outside
        any job within BOOT_GRACE is crashing in a loop, and is treated like a failed boot.
        """
        if code <= 0:
            return False
        young = time.monotonic() - child.born < BOOT_GRACE
        if child.kind != "worker":
            return code == BOOT_ERROR or young
        return not child.booted or (young and not in_job)

    def _signal(self, pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _kill(self, child: Child, kill: tuple[int | None, str, str]) -> None:
        """Kill a child's tree, first noting why for whoever settles its jobs."""
        if child.kill is None:
            child.kill = kill
            job, status, reason = kill
            target = (job, status, reason) if job is not None and status else None
            try:
                write_kill_note(self.app.home.kill_note(child.token), target, deliberate=True)
            except OSError as exc:  # a full disk must not stop the kill
                log.error("cannot write the kill note of %d: %s", child.pid, exc)
        kill_tree(child.pid)

    def _kill_all(self, why: str) -> None:
        for pid, child in self.children.items():
            if child.kill is None:
                log.warning("killing %s %d: %s", child.kind, pid, why)
            self._kill(child, (None, "", why))

    # -- limits and kill requests ----------------------------------------------------

    def _read_reports(self) -> None:
        """Workers report the start ("S pid job timeout memory") and end ("E pid job") of
        limited jobs; by pid, because during a reload two workers share a slot."""
        try:
            while True:
                data = os.read(self._report_r, 65536)
                if not data:
                    break
                self._buf += data
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                raise
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            parts = line.decode(errors="replace").split()
            try:
                child = self.children.get(int(parts[1]))
            except (IndexError, ValueError):
                continue
            if child is None:
                continue
            if parts[0] == "R":
                child.booted = True
            elif child.proc is None:
                continue
            elif parts[0] == "S":
                timeout, memory = float(parts[3]), int(parts[4])
                child.watch = Watch(int(parts[2]), time.monotonic(), timeout or None,
                                    memory or None, child.proc)  # fmt: skip
            elif parts[0] == "E" and child.watch and child.watch.job_id == int(parts[2]):
                child.watch = None

    def _check_limits(self) -> None:
        now = time.monotonic()
        for pid, child in list(self.children.items()):
            watch = child.watch
            if watch is None or child.kill is not None:
                continue
            reason = watch.check(now)
            if reason is not None:
                status = TIMEOUT if reason.startswith("time") else FAILED
                log.warning(
                    "job %d on worker %d: %s; killing the worker", watch.job_id, pid, reason
                )
                self._kill(child, (watch.job_id, status, reason))

    def _kill_requested(self) -> None:
        """Kill workers whose running job was cancelled with terminate=True."""
        by_token = {c.token: c for c in self.children.values()}
        _, requests = self.ledger.attempt("read kill requests", self.store.kill_requests,
                                           list(by_token))  # fmt: skip
        for job_id, owner in requests or []:
            child = by_token.get(owner)
            if child is None or child.kill is not None:
                continue
            # Kill only if the job really runs: the worker journals a start before it
            # checks for cancellation, so "started and not finished" is never a false no.
            try:
                started, done = read_journal(self.app.home.journal(owner))
            except OSError as exc:
                log.error("cannot read the journal of worker %d: %s", child.pid, exc)
                continue
            if job_id in started and job_id not in done:
                log.info("job %d cancelled while running; killing worker %d", job_id, child.pid)
                self._kill(child, (job_id, "", "cancelled"))
            else:
                self.ledger.attempt("clear a kill request", self.store.clear_owner, job_id)

    def _housekeeping(self) -> None:
        if not self.registered:
            self._register()
        self.ledger.retry()
        self._kill_requested()
        self._kill_silent_leader()
        if self.parent_pid is not None and not self.stopping and os.getppid() != self.parent_pid:
            log.warning("the process that started this pool (%d) is gone", self.parent_pid)
            self.stop()

    def _kill_silent_leader(self) -> None:
        """SIGKILL our coordinator if it leads and has shown no sign of life for the bound.

        A stopped or stuck leader keeps leader.lock, so nothing fires (docs/leadership.md).
        As its parent we kill it without a pid-reuse race; the kernel frees the lock only
        once it is gone, and the coordinator forked in its place campaigns again.
        """
        if self.stopping:
            return
        for child in self.children.values():
            if child.kind == "coordinator" and child.kill is None and not child.retiring:
                try:  # files and /proc only, no store I/O: it cannot wait on anyone
                    stale = self.app.backend.silent_leader(self.leader_timeout)
                except OSError as exc:
                    log.error("cannot check the leader's heartbeat: %s", exc)
                    return
                if stale is not None and stale.pid == child.pid:
                    log.error("coordinator %d leads but has shown no sign of life for %.1fs "
                              "(bound %gs); killing it", child.pid, stale.age,
                              self.leader_timeout)  # fmt: skip
                    child.kill = (None, "", "silent leader")
                    self._signal(child.pid, signal.SIGKILL)
