"""The supervisor: forks workers and a coordinator, reaps them, replaces them, kills them.

Modelled on gunicorn's arbiter. Signal handlers only queue the signal and the main loop
dispatches it; the supervisor runs no threads and holds no lock or connection across
fork(). It is also the limits watchdog: only a process's parent can kill it without
racing pid reuse, and only a process outside the job can stop a job stuck in C code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psutil

from mpjobs.coordination.leader import leader_timeout
from mpjobs.coordination.listener import foreign_thread_count, safe_to_fork
from mpjobs.coordination.notify import drain_pipe
from mpjobs.coordination.processes import BOOT_ERROR, POKE_SIGNAL, host_info, new_token
from mpjobs.limits import kill_tree
from mpjobs.observability import joblog
from mpjobs.runtime.journal import remove_journal, write_kill_note
from mpjobs.runtime.ledger import Ledger
from mpjobs.runtime.reaping import (
    Child,
    backoff,
    bury,
    failed_boot,
    forget_idle_files,
    how_it_died,
    idle_file,
)
from mpjobs.runtime.recovery import forget_dead_processes, recover_dead_owners
from mpjobs.runtime.watchdog import Watchdog, cancelled_while_running, silent_leader
from mpjobs.runtime.worker import Worker
from mpjobs.store.base import FAILED, TIMEOUT, ProcessRecord

if TYPE_CHECKING:
    from mpjobs.app import App

log = logging.getLogger("mpjobs.supervisor")

HOUSEKEEPING = 1.0
HANDLED = (
    signal.SIGCHLD,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    POKE_SIGNAL,
)


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
        concurrency: int = 1,
        install_signal_handlers: bool = True,
        token: str | None = None,
        parent_pid: int | None = None,
    ) -> None:
        from mpjobs.scheduling.durations import parse_bytes

        n = (os.cpu_count() or 1) if workers is None else workers
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        self.app = app
        self.n = n
        self.concurrency = concurrency  # jobs at once per worker (docs/workers.md)
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
        self.watchdog = Watchdog(self._report_r)
        self.registered = False
        try:
            self._register()
            backend = self.app.backend
            self.ledger.attempt("recover jobs of dead owners", recover_dead_owners, backend)
            self.ledger.attempt("forget dead processes", forget_dead_processes, backend)
            forget_idle_files(self.app.home, backend.liveness.alive)
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
            remove_journal(idle_file(self.app.home, self.token))  # its holders are gone
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
            host_info(workers=self.n, queues=self.queues),
        )  # fmt: skip
        self.registered, _ = self.ledger.attempt(
            "register this supervisor", self.store.register_process, record
        )

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    # -- the loop --------------------------------------------------------------------

    def _loop(self) -> None:
        next_housekeeping = time.monotonic() + HOUSEKEEPING
        while True:
            while self.signals:
                self._dispatch(self.signals.pop(0))
            self.watchdog.read_reports(self.children)
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
        wake += self.watchdog.next_check(self.children)
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
            drain_pipe(self._wake_r)

    def _dispatch(self, signum: int) -> None:
        """Call `handle_<signal>` (gunicorn's arbiter does the same), in the loop."""
        name = signal.Signals(signum).name[3:].lower()
        getattr(self, f"handle_{name}")()

    def handle_chld(self) -> None:
        """Nothing: the loop reaps every turn."""

    def handle_term(self) -> None:
        """Graceful stop; a second one kills at once (unless it is the kernel's duplicate)."""
        if self.stopping and time.monotonic() < self.stop_began + 1.0:
            # The kernel sends the parent-death SIGTERM once per exiting thread of a
            # multi-threaded parent (app.start() in a web process): not a second request.
            log.info("ignoring a repeated SIGTERM within 1 s of the first")
        elif self.stopping:
            self._kill_all("second SIGTERM")
        else:
            self.stop()

    def handle_int(self) -> None:
        if self.stopping:
            self._kill_all("second SIGINT")
        else:
            self.stop()

    def handle_quit(self) -> None:
        self.stop()
        self._kill_all("SIGQUIT")

    def handle_hup(self) -> None:
        log.info("SIGHUP: replacing workers one by one")
        self.retire_queue = [p for p, c in self.children.items() if not c.retiring]

    def handle_usr1(self) -> None:
        """POKE_SIGNAL: a job was cancelled with terminate=True; look at once."""
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
                    from mpjobs.runtime.coordinator import Coordinator

                    Coordinator(self.app, token=token, parent_token=self.token).run(parent)
                Worker(
                    self.app, token=token, parent_token=self.token, slot=slot, queues=self.queues,
                    report_fd=self._report_w, max_jobs=self.max_jobs, max_memory=self.max_memory,
                    share=self.n, concurrency=self.concurrency,
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
        self.watchdog.read_reports(self.children)  # last words ("booted") precede death
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
        """A child is gone: settle its jobs, then schedule its replacement (reaping.py)."""
        code = os.waitstatus_to_exitcode(status)
        how = how_it_died(child, code)
        in_job = bury(self.ledger, self.app.backend, child, how, self.stopping)
        if self.stopping or child.retiring or code == 0:
            if not (self.stopping or child.retiring):
                log.info("%s %d (slot %d) exited; replacing it", child.kind, child.pid, child.slot)
            return
        key = (child.kind, child.slot)
        if failed_boot(child, code, in_job):
            n = self.failures[key] = self.failures.get(key, 0) + 1
            delay = backoff(n)
            self.respawn_at[key] = time.monotonic() + delay
            log.error("%s slot %d %s while booting; retrying in %.1fs (see the traceback above)",
                      child.kind, child.slot, how, delay)  # fmt: skip
        else:
            self.failures.pop(key, None)
            if child.kill is None:
                log.warning(
                    "%s %d (slot %d) %s; replacing it", child.kind, child.pid, child.slot, how
                )

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

    def _check_limits(self) -> None:
        for child, watch, reason in self.watchdog.over_limit(self.children):
            status = TIMEOUT if reason.startswith("time") else FAILED
            log.warning(
                "job %d on worker %d: %s; killing the worker", watch.job_id, child.pid, reason
            )
            joblog.limit_killed(watch, child.pid, reason, status)
            # The worker's other jobs in flight are put back (a deliberate kill).
            self._kill(child, (watch.job_id, status, reason))

    def _kill_requested(self) -> None:
        """Kill workers whose running job was cancelled with terminate=True."""
        for child, job_id in cancelled_while_running(self.ledger, self.app.home, self.children):
            log.info("job %d cancelled while running; killing worker %d", job_id, child.pid)
            self._kill(child, (job_id, "", "cancelled"))

    def _housekeeping(self) -> None:
        if self.liveness.renew():  # a store session lost and taken again: register again
            self.registered = False
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
        found = silent_leader(self.app.backend, self.children, self.leader_timeout)
        if found is not None:
            child, age = found
            log.error("coordinator %d leads but has shown no sign of life for %.1fs (bound "
                      "%gs); killing it", child.pid, age, self.leader_timeout)  # fmt: skip
            child.kill = (None, "", "silent leader")
            self._signal(child.pid, signal.SIGKILL)
