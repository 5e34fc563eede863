"""A worker process: claim → run → record, until told to stop.

Each worker owns its jobs under a token whose liveness lock it holds for life, so any
process can tell a dead owner from a live one without trusting pids or clocks. A job's
result commits in the same transaction that starts the next job, so a kill at any
moment leaves at most the one running job to recover. A worker started with
concurrency N runs the loop of inflight.py instead: up to N jobs at once on an event
loop, the same rules per job. How a job's function is called is executors.py's part.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import psutil

from mpjobs import serialization
from mpjobs.backoff import Backoff
from mpjobs.coordination.locks import FileLock
from mpjobs.coordination.notify import drain_pipe
from mpjobs.coordination.processes import BOOT_ERROR, boot_child, host_info
from mpjobs.observability.hooks import WorkerInfo
from mpjobs.runtime.batch import BatchRest
from mpjobs.runtime.executors import AsyncExecutor, SerialExecutor, Stats
from mpjobs.runtime.inflight import InFlight
from mpjobs.runtime.journal import Journal
from mpjobs.store.base import (
    CANCELLED,
    RUNNING,
    Completion,
    JobRecord,
    ProcessRecord,
)

if TYPE_CHECKING:
    from mpjobs.app import App

log = logging.getLogger("mpjobs.worker")


class _Interrupted(Exception):
    """Raised by a signal handler to leave a blocking flock() (PEP 475 would retry it)."""


BATCH_MAX = 64
BATCH_WINDOW = 0.002  # claim as many jobs as the recent average says run in 2 ms
FLUSH_INTERVAL = 0.005  # commit results at least this often while a batch runs
FAST_JOB = 0.001  # a task whose recent runs took less than this may run before a commit
IDLE_CAP = 5.0
# An idle worker waits this long at most for the listening turn before it looks at the
# store itself: a listener that was stopped (SIGSTOP, a debugger) keeps the turn's flock.
TURN_PATIENCE = 0.25


class Worker:
    """Everything a worker needs, built in the supervisor and run in the forked child."""

    def __init__(
        self,
        app: App,
        *,
        token: str,
        parent_token: str,
        slot: int,
        queues: Sequence[str] | None,
        report_fd: int,
        max_jobs: int | None = None,
        max_memory: int | None = None,
        share: int = 1,
        concurrency: int = 1,
    ) -> None:
        self.app = app
        self.concurrency = concurrency  # 1: one job at a time (below); N: inflight.py
        self.share = share  # workers of this supervisor: a batch is at most a fair share
        self.token = token
        self.parent_token = parent_token
        self.slot = slot
        self.queues = list(queues) if queues else None
        self.report_fd = report_fd
        self.max_jobs = max_jobs
        self.max_memory = max_memory
        self.stopping = False
        self.stats = Stats()  # recent run times (batch sizes, flushes) and jobs done
        self.began: int | None = None  # the last job begun: a crash counts it as begun
        self._queued = False

    # -- process lifecycle -----------------------------------------------------------

    def run(self, parent_pid: int) -> NoReturn:
        """Entry point in the child; never returns."""
        code = 0
        try:
            self._boot(parent_pid)
        except BaseException:
            log.exception("worker %s failed to boot", self.slot)
            os._exit(BOOT_ERROR)
        try:
            self._serve()
        except BaseException:
            log.exception("worker %s crashed", self.slot)
            code = 1
        finally:
            self._shutdown()
        os._exit(code)

    def _boot(self, parent_pid: int) -> None:
        self.parent_pid = parent_pid
        self._wake_r, self.liveness = boot_child(
            self._on_term, parent_pid, signal.SIGKILL, self.app.backend.liveness, self.token
        )
        self.app.backend.abort_waits_when(lambda: self.stopping)  # a stop ends lock waits
        self.store = self.app.store
        self.store.register_process(
            ProcessRecord(
                self.token, "worker", os.getpid(), self.parent_token, time.time(),
                host_info(slot=self.slot, queues=self.queues),
            )
        )  # fmt: skip
        for module in self.app.imports:
            serialization.resolve_path(f"{module}:__name__")
        from mpjobs.scheduling.lifecycle import LifecycleRunner

        self.lifecycle = LifecycleRunner([t for t in self.app.lifecycles if t.scope == "worker"])
        self.lifecycle.start()
        self.watcher = self.app.backend.doorbell.watcher()
        self.idle = FileLock(self.app.home.path / "procs" / f"{self.parent_token}.idle")
        self.proc = psutil.Process()
        self.journal = Journal(self.app.home.journal(self.token))
        self.rest = BatchRest(self._publish)
        self.serial = SerialExecutor(self._report, self.stats, self.store)
        self.serial.hooks = self.app.hooks
        self._report(f"R {os.getpid()}\n")  # booted: from now on a death is a lost worker
        self.app.hooks.worker("on_worker_start", WorkerInfo.of(self))

    def _on_term(self, signum: int, frame: Any) -> None:
        self.stopping = True
        self._on_alarm(signum, frame)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self._queued:  # blocked in flock() behind a sibling: stop waiting now
            self._queued = False
            raise _Interrupted

    def _publish(self, results: list[Completion], ids: list[int]) -> None:
        """Called by the batch steward thread (see batch.py), with a bounded lock wait."""
        with self.store.lock_budget(1.0):
            if results:
                self.store.complete(self.token, results, time.time())
            if ids:
                self.store.release(self.token, ids)

    def _shutdown(self) -> None:
        if getattr(self, "serial", None) is not None:  # it booted
            self.app.hooks.worker("on_worker_stop", WorkerInfo.of(self))
        if getattr(self, "idle", None) is not None:
            self.idle.release()
        if getattr(self, "rest", None) is not None:
            self.rest.stop()
        try:
            if getattr(self, "lifecycle", None) is not None:
                self.lifecycle.stop()
            if getattr(self, "store", None) is not None:
                self.store.unregister_process(self.token)
        except self.app.backend.unavailable as exc:  # its supervisor does it then
            log.error("worker %s: cannot unregister (%s)", self.slot, exc)
        except Exception:
            log.exception("worker %s: error during shutdown", self.slot)
        if getattr(self, "journal", None) is not None:
            # A journal holding anything not yet committed (finished results, a start)
            # stays for whoever settles this worker, however the loop ended: its
            # supervisor reaps us at once and commits the results from it.
            open_start = self.journal.open_start
            if open_start is not None and open_start != self.began:
                with contextlib.suppress(OSError):  # then it counts as begun: still safe
                    self.journal.not_begun(open_start)
            self.journal.close(remove=not self.journal.dirty)
        if getattr(self, "liveness", None) is not None:
            self.liveness.release()

    # -- the loop --------------------------------------------------------------------

    def _serve(self) -> None:
        """Claim a batch (committing the last batch's results), run it, repeat.

        Results are journaled as they happen and committed with the next claim, or
        sooner when a batch runs longer than FLUSH_INTERVAL, so waiters see them soon.
        A worker with concurrency N runs the loop of inflight.py instead.
        """
        if self.concurrency > 1:
            executor = AsyncExecutor(self.concurrency, self._report, self.stats, self.store)
            executor.hooks = self.app.hooks
            InFlight(self, executor).serve()
            return
        while not (self.stopping or self._recycle_due()):
            if not self.rest.has_results() and not self._wait_for_work():
                continue
            self._release_turn()
            limit = max(1, min(BATCH_MAX, int(BATCH_WINDOW / max(self.stats.avg, 1e-6))))
            batch = self._retrying(
                self.store.claim, self.token, os.getpid(), self.queues, limit, time.time(),
                self.rest.results(), self.share,
            )  # fmt: skip
            self._retrying(self.journal.clear)
            self._run_batch(batch)
        self._flush()

    def _run_batch(self, batch: list[JobRecord]) -> None:
        """Run a claimed batch in order, leaving the last results for the next claim.

        Each job's start is journaled before it is checked and run (for a job after the
        first, in the same write as the previous job's result), and the steward thread
        may commit the results and give back the rest while a job runs (batch.py).
        """
        if not batch:
            return
        jobs = {j.id: j for j in batch}
        self.rest.load([j.id for j in batch[1:]])
        flush_at = time.monotonic() + FLUSH_INTERVAL
        job: JobRecord | None = batch[0]
        self._retrying(self.journal.started, batch[0].id)
        while job is not None:
            if self.rest.has_results() and self.stats.durations.get(job.name, 1.0) > FAST_JOB:
                # This one may take a while: publish the results we hold first, so a
                # quick job's waiter does not wait for its slow batch-mate.
                self._flush()
                self._retrying(self.journal.started, job.id)
                flush_at = time.monotonic() + FLUSH_INTERVAL
            # The start is journaled before this look: a terminate-cancel is then either
            # seen here, or the supervisor sees the start and kills. Never neither.
            if self._retrying(self.store.status_of, job.id) != RUNNING:
                done = Completion(job.id, CANCELLED)  # tells the supervisor: no kill
            else:
                self.rest.running()
                self.began = job.id  # from here on, a crash counts this job as begun
                done = self.serial.execute(job)
                self.rest.finished()
            stop = self.stopping or self._recycle_due()
            nxt = None if stop else self.rest.take()
            self._retrying(self.journal.completed, done, nxt)
            self.rest.add_result(done)
            job = None if nxt is None else jobs[nxt]
            if job is not None and time.monotonic() >= flush_at:
                self._flush()  # clears the journal: note the next start again
                self._retrying(self.journal.started, job.id)
                flush_at = time.monotonic() + FLUSH_INTERVAL
        left = self.rest.take_all()  # we are stopping or recycling: hand back the rest
        if left:
            self._flush()
            self._retrying(self.store.release, self.token, left)

    def _flush(self) -> None:
        """Commit the results held, then empty the journal; called only between jobs.

        A start journaled for a job that will not run now (the rest of a batch about to
        be handed back) goes too, so a worker that leaves cleanly leaves no journal.
        """
        results = self.rest.results()
        if results:
            self._retrying(self.store.complete, self.token, results, time.time())
        if results or self.journal.dirty:
            self._retrying(self.journal.clear)

    def _wait_for_work(self) -> bool:
        """Sleep until a due job may exist: woken by any commit, a due time or a signal.

        Idle workers of one supervisor take turns: only the holder of the supervisor's
        idle lock listens for the doorbell, the others queue in flock(). One push then
        wakes one worker, not all of them, which on a small machine is the difference
        between a start in a millisecond and one behind a crowd of woken processes.
        """
        now = time.time()
        if self._retrying(self.store.has_due, self.queues, now):
            return True
        if not self.idle.held:
            self._take_turn()
            return False  # look again from the top: we may have waited a while
        nxt = self._retrying(self.store.next_exec_at, self.queues)
        timeout = IDLE_CAP if nxt is None else min(IDLE_CAP, max(0.0, nxt - now))
        ready = self.watcher.wait(timeout, extra=(self._wake_r,))
        if self._wake_r in ready:
            drain_pipe(self._wake_r)
        if os.getppid() != self.parent_pid:  # where PR_SET_PDEATHSIG does not exist
            log.warning("worker %s: supervisor is gone; exiting", self.slot)
            self.stopping = True
        return False

    def _release_turn(self) -> None:
        """Let a sibling listen for the doorbell while we work."""
        self.idle.release()

    def _take_turn(self) -> None:
        """Queue for the listening turn, for TURN_PATIENCE at most.

        The kernel hands the turn over the instant the listener lets go; the alarm only
        bounds the wait, so a stopped listener costs its siblings a quarter of a second
        per look at the store, not their whole pool.
        """
        old = signal.signal(signal.SIGALRM, self._on_alarm)
        try:
            self._queued = True
            signal.setitimer(signal.ITIMER_REAL, TURN_PATIENCE)
            self.idle.acquire()
        except _Interrupted:
            pass
        finally:
            self._queued = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

    def _recycle_due(self) -> bool:
        if self.max_jobs is not None and self.stats.jobs_done >= self.max_jobs:
            log.info("worker %s recycles after %d jobs", self.slot, self.stats.jobs_done)
            return True
        # after every job (one /proc read), never before the first: a worker whose
        # baseline is over the cap would otherwise exit and respawn in a tight loop
        if self.max_memory is not None and self.stats.jobs_done > 0:
            rss = self.proc.memory_info().rss
            if rss > self.max_memory:
                log.info("worker %s recycles at %.1f MiB RSS", self.slot, rss / 2**20)
                return True
        return False

    def _retrying(self, fn: Any, *args: Any) -> Any:
        """Run a store or journal call, riding out a full disk or a read-only home.

        A result that could not be written is never dropped: the worker keeps it and
        keeps trying, and claims nothing new meanwhile. If the worker is told to stop
        while the store is unwritable, its journal stays behind for whoever settles it.
        """
        try:
            return fn(*args)  # the usual case, a few times per job: no back-off object
        except self.app.backend.unavailable + (OSError,) as exc:  # noqa: RUF005 (mypy)
            failed = exc
        return self._ride_out(failed, fn, *args)

    def _ride_out(self, exc: BaseException, fn: Any, *args: Any) -> Any:
        """`_retrying` after a failed call: try again after doubling waits until it works."""
        backoff = Backoff(0.1, 5.0)
        while True:
            delay = backoff.next()
            log.error("worker %s: store call failed (%s); retrying in %.1fs", self.slot, exc, delay)
            if self.stopping:
                raise exc
            # not self.watcher: failed writes by every process in the home raise
            # inotify events, which would turn this back-off into a busy loop
            ready, _, _ = select.select([self._wake_r], [], [], delay)
            if ready:
                drain_pipe(self._wake_r)
            try:
                return fn(*args)
            except self.app.backend.unavailable + (OSError,) as again:  # noqa: RUF005 (mypy)
                exc = again

    # -- one job ---------------------------------------------------------------------

    def _report(self, message: str) -> None:
        try:
            os.write(self.report_fd, message.encode())
        except OSError:
            self.stopping = True  # the supervisor is gone
