"""The coordinator: each supervisor's leader candidate, and the leader's duties.

Leadership belongs to a forked child rather than to the supervisor, so killing the
leader never takes a pool down, and a job's limits never kill the leader: the
coordinator runs no jobs. As leader it turns due schedule fires into jobs, sweeps for
jobs of dead owners and runs the leader-scoped lifecycle tasks, and shows it is alive
with a heartbeat (coordination/leader.py); a leader that cannot (a lifecycle tick hung
in user code, which no one can stop from outside the thread) exits so that another
process leads.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from typing import TYPE_CHECKING, Any, NoReturn

from mpjobs.backoff import Backoff
from mpjobs.coordination.notify import drain_pipe
from mpjobs.coordination.processes import (
    BOOT_ERROR,
    boot_child,
    host_info,
    stop_on_lost_session,
)
from mpjobs.rules.schedules import fire_rule
from mpjobs.runtime.housekeeping import Housekeeping
from mpjobs.runtime.recovery import forget_dead_processes, recover_dead_owners
from mpjobs.scheduling.lifecycle import LifecycleRunner
from mpjobs.store.base import ProcessRecord

if TYPE_CHECKING:
    from mpjobs.app import App

log = logging.getLogger("mpjobs.coordinator")

SWEEP_INTERVAL = 0.2
FORGET_EVERY = 25  # sweeps between clean-ups of the process table
EXPIRE_EVERY = 5  # sweeps (about a second) between cancels of waiting jobs past `expires`
LATE_TURN = 1.0  # a loop turn this much later than planned is a loop that stopped turning
# Each store call of the leader waits this long at most for the locks (another process's
# transaction), so its loop keeps turning; a turn that takes far longer than that is
# stuck, not waiting.
STORE_BUDGET = 1.0
STORE_PATIENCE = 60.0
EXIT_FROZEN = 3  # exit code of a leader that gave way because a lifecycle tick hung


class _Stop(Exception):
    """Raised by the signal handler to break out of a blocking flock()."""


class Coordinator:
    def __init__(self, app: App, *, token: str, parent_token: str) -> None:
        self.app = app
        self.token = token
        self.parent_token = parent_token
        self.stopping = False
        self._campaigning = False
        self._turn_due = float("inf")  # when the leader's loop must next turn, monotonic

    def run(self, parent_pid: int) -> NoReturn:
        code = 0
        try:
            try:
                self._boot(parent_pid)
            except _Stop:
                raise
            except BaseException:  # the store out of reach (a server restarting), say:
                log.exception("coordinator failed to boot")  # as a worker's, backed off
                self._shutdown()
                os._exit(BOOT_ERROR)
            try:
                self._campaigning = True
                self.leadership.campaign()
                self._campaigning = False
            except _Stop:
                pass
            if not self.stopping:
                self._lead()
        except _Stop:
            pass
        except BaseException:
            log.exception("coordinator crashed")
            code = 1
        finally:
            self._shutdown()
        os._exit(code)

    def _on_term(self, signum: int, frame: Any) -> None:
        self.stopping = True
        if self._campaigning:
            self._campaigning = False
            raise _Stop

    def _boot(self, parent_pid: int) -> None:
        self.backend = self.app.backend
        self._wake_r, self.liveness = boot_child(
            self._on_term, parent_pid, signal.SIGTERM, self.backend.liveness, self.token
        )
        # a stop ends any wait for the store's locks
        self.backend.abort_waits_when(lambda: self.stopping)
        self.store = self.backend.store
        self.store.register_process(
            ProcessRecord(self.token, "coordinator", os.getpid(), self.parent_token, time.time(),
                          host_info(leader=False))
        )  # fmt: skip
        self.leadership = self.backend.leadership(self.token)
        self.lifecycle: LifecycleRunner | None = None

    def _drain_wake(self) -> None:
        drain_pipe(self._wake_r)

    def _silence(self) -> str | None:
        """Why the heartbeat must stay silent now, or None: see Heartbeat."""
        if self.lifecycle is not None:
            for task, ran, bound in self.lifecycle.overdue():
                return f"lifecycle task {task.name} has run for {ran:.1f}s, past its {bound:g}s"
        late = time.monotonic() - self._turn_due
        if late > LATE_TURN:
            return f"the leader's loop is {late:.1f}s late"
        return None

    def _give_way_if_hung(self) -> None:
        """Exit if a lifecycle tick hangs: its thread cannot be stopped, so only the
        process's death frees leadership. The kernel frees the lock once every thread is
        gone, so the next leader cannot overlap this one."""
        hung = self.lifecycle.overdue() if self.lifecycle is not None else []
        if not hung:
            return
        task, ran, bound = hung[0]
        log.error(
            "leader: lifecycle task %s has run for %.1fs, past its timeout of %gs; it counts "
            "as frozen, so process %d gives up leadership and exits (its supervisor "
            "replaces it)", task.name, ran, bound, os.getpid(),
        )  # fmt: skip
        os._exit(EXIT_FROZEN)

    def _lead(self) -> None:
        # The heartbeat, then lifecycle setup: neither needs the store, and a write may
        # wait behind a checkpoint or another process's transaction, which would delay
        # failover.
        self._turn_due = time.monotonic() + STORE_PATIENCE
        self.leadership.start_heartbeat(self._silence)
        self.leadership.watch(stop_on_lost_session)  # a leader cut off from the store exits
        self.lifecycle = LifecycleRunner(
            [t for t in self.app.lifecycles if t.scope == "leader"],
            default_timeout=self.leadership.timeout,
        )
        self.lifecycle.start()
        # checkpoints, the purge, the census: slow, so off this loop (housekeeping.py)
        self.chores = Housekeeping(self.store, self.app.result_ttl)
        self.chores.start()
        log.info("process %d is now the leader of %s", os.getpid(), self.app.home.path)
        try:  # only informative (mpjobs status); a busy store must not end a leader
            self.store.register_process(
                ProcessRecord(self.token, "coordinator", os.getpid(), self.parent_token,
                              time.time(), host_info(leader=True))
            )  # fmt: skip
        except self.backend.unavailable as exc:
            log.error("leader: cannot note its leadership in the store yet: %s", exc)
        sweeps = 0
        next_sweep = 0.0
        self._first_seen_dead: dict[str, float] = {}  # owners seen dead (recover_dead_owners)
        self._first_seen_gone: dict[str, float] = {}  # rows seen dead (forget_dead_processes)
        failing = Backoff(SWEEP_INTERVAL, 5.0)  # while the store refuses (full, read-only)
        while not self.stopping:
            self._give_way_if_hung()
            self._turn_due = time.monotonic() + STORE_PATIENCE
            now = time.time()
            try:
                with self.store.lock_budget(STORE_BUDGET):
                    due = self.store.next_fire_time()
                    if due is not None and due <= now:  # a write only when something is due
                        self.store.fire_due(now, fire_rule)
                    if time.monotonic() >= next_sweep:
                        recover_dead_owners(self.backend, self._first_seen_dead)
                        sweeps += 1
                        if sweeps % FORGET_EVERY == 0:
                            forget_dead_processes(self.backend, self._first_seen_gone)
                        if sweeps % EXPIRE_EVERY == 0:  # a read, and a write only if late
                            self.store.expire_due(time.time())
                        next_sweep = time.monotonic() + SWEEP_INTERVAL
                    nxt = self.store.next_fire_time()
                    if failing.failing:
                        log.warning("leader: store writable again; sweeping and firing schedules")
                        failing.reset()
            except Exception as exc:  # a bug or a poison row must not crash-loop the leader
                wait = failing.next()
                if isinstance(exc, self.backend.unavailable):
                    log.error("leader: store unavailable (%s); retrying in %.1fs", exc, wait)
                else:
                    log.exception("leader: unexpected error; retrying in %.1fs", wait)
                next_sweep = time.monotonic() + wait
                nxt = None
            timeout = max(0.0, next_sweep - time.monotonic())
            if nxt is not None:
                timeout = min(timeout, max(0.0, nxt - time.time()))
            self._turn_due = time.monotonic() + timeout
            try:
                ready, _, _ = select.select([self._wake_r], [], [], timeout)
            except InterruptedError:
                continue
            if ready:
                self._drain_wake()

    def _shutdown(self) -> None:
        self._turn_due = float("inf")  # the loop is over; cleanups are watched by overdue()
        ended = True
        if getattr(self, "chores", None) is not None:
            self.chores.stop()
        if getattr(self, "lifecycle", None) is not None:
            ended = self.lifecycle.stop()  # type: ignore[union-attr]
        if not ended:
            # Resigning now would let the next leader set up while our cleanup still
            # runs; the kernel frees the lock when this process exits, just below.
            log.error("leader: a lifecycle task's cleanup is still running; leadership "
                      "ends with this process")  # fmt: skip
        elif getattr(self, "leadership", None) is not None:
            self.leadership.resign()
        try:
            if getattr(self, "store", None) is not None:
                self.store.unregister_process(self.token)
        except Exception:
            log.exception("coordinator: error during shutdown")
        if getattr(self, "liveness", None) is not None:
            self.liveness.release()
