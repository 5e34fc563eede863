"""The coordinator: each supervisor's leader candidate, and the leader's duties.

Leadership belongs to a forked child rather than to the supervisor, so killing the
leader never takes a pool down, and a job's limits never kill the leader: the
coordinator runs no jobs. As leader it turns due schedule fires into jobs, sweeps for
jobs of dead owners and runs the leader-scoped lifecycle tasks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import sqlite3
import time
from typing import TYPE_CHECKING, Any, NoReturn

from mpjobs.coordination.leader import Leadership
from mpjobs.coordination.processes import boot_child
from mpjobs.errors import StoreError
from mpjobs.recovery import forget_dead_processes, recover_dead_owners
from mpjobs.scheduling.lifecycle import LifecycleRunner
from mpjobs.scheduling.schedules import fire_rule
from mpjobs.store.base import ProcessRecord
from mpjobs.store.connection import set_wait_abort

if TYPE_CHECKING:
    from mpjobs.app import App

log = logging.getLogger("mpjobs.coordinator")

SWEEP_INTERVAL = 0.2
FORGET_EVERY = 25  # sweeps between clean-ups of the process table
CHECKPOINT_EVERY = 25  # sweeps (about 5 s): each checkpoint fsyncs, so not too often
PURGE_EVERY = 300  # sweeps (about a minute) between purges of expired finished jobs


class _Stop(Exception):
    """Raised by the signal handler to break out of a blocking flock()."""


class Coordinator:
    def __init__(self, app: App, *, token: str, parent_token: str) -> None:
        self.app = app
        self.token = token
        self.parent_token = parent_token
        self.stopping = False
        self._campaigning = False

    def run(self, parent_pid: int) -> NoReturn:
        code = 0
        try:
            self._boot(parent_pid)
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
        self._wake_r, self.liveness = boot_child(
            self._on_term, parent_pid, signal.SIGTERM, self.app.home.proc_lock(self.token)
        )
        set_wait_abort(lambda: self.stopping)  # a stop ends any wait for the store's locks
        self.store = self.app.store
        self.store.register_process(
            ProcessRecord(self.token, "coordinator", os.getpid(), self.parent_token, time.time(),
                          json.dumps({"leader": False}))
        )  # fmt: skip
        self.leadership = Leadership(self.app.home, self.token)
        self.lifecycle: LifecycleRunner | None = None

    def _lead(self) -> None:
        # Lifecycle setup first: it needs no store write, and a write may wait behind a
        # checkpoint or another process's transaction, which would delay failover.
        self.lifecycle = LifecycleRunner([t for t in self.app.lifecycles if t.scope == "leader"])
        self.lifecycle.start()
        log.info("process %d is now the leader of %s", os.getpid(), self.app.home.path)
        self.store.register_process(
            ProcessRecord(self.token, "coordinator", os.getpid(), self.parent_token, time.time(),
                          json.dumps({"leader": True}))
        )  # fmt: skip
        sweeps = 0
        next_sweep = 0.0
        self._first_seen_dead: dict[str, float] = {}
        failing = 0.0  # back-off while the store refuses writes (disk full, read-only home)
        while not self.stopping:
            now = time.time()
            try:
                due = self.store.next_fire_time()
                if due is not None and due <= now:  # a write only when something is due
                    self.store.fire_due(now, fire_rule)
                if time.monotonic() >= next_sweep:
                    recover_dead_owners(self.store, self._first_seen_dead)
                    sweeps += 1
                    if sweeps % CHECKPOINT_EVERY == 0:
                        self.store.checkpoint()
                    if sweeps % FORGET_EVERY == 0:
                        forget_dead_processes(self.store)
                    if sweeps % PURGE_EVERY == 1 and self.app.result_ttl is not None:
                        self.store.purge(time.time() - self.app.result_ttl)
                    next_sweep = time.monotonic() + SWEEP_INTERVAL
                nxt = self.store.next_fire_time()
                if failing:
                    log.warning("leader: store writable again; sweeping and firing schedules")
                    failing = 0.0
            except (sqlite3.OperationalError, StoreError) as exc:
                failing = min(5.0, failing * 2 or SWEEP_INTERVAL)
                log.error("leader: store unavailable (%s); retrying in %.1fs", exc, failing)
                next_sweep = time.monotonic() + failing
                nxt = None
            timeout = max(0.0, next_sweep - time.monotonic())
            if nxt is not None:
                timeout = min(timeout, max(0.0, nxt - time.time()))
            try:
                ready, _, _ = select.select([self._wake_r], [], [], timeout)
            except InterruptedError:
                continue
            if ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)

    def _shutdown(self) -> None:
        if getattr(self, "lifecycle", None) is not None:
            self.lifecycle.stop()  # type: ignore[union-attr]
        if getattr(self, "leadership", None) is not None:
            self.leadership.resign()
        try:
            if getattr(self, "store", None) is not None:
                self.store.unregister_process(self.token)
        except Exception:
            log.exception("coordinator: error during shutdown")
        if getattr(self, "liveness", None) is not None:
            self.liveness.release()
