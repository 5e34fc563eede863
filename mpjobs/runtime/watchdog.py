"""The watchdog: which of a supervisor's children must be killed, and why.

Three reasons, each read from outside the child: a limited job over its time or memory
limit, a running job cancelled with terminate=True, and a leading coordinator whose
heartbeat went stale (docs/leadership.md).


For limits, workers report over a pipe when a job with a time or memory limit starts ("S pid job
timeout memory [grace]") and ends ("E pid job"), and that they have booted ("R pid").
By pid, because during a reload two workers share a slot. The watchdog turns those
lines into watches on the children and says which job is over its limit; the arbiter
(supervisor.py) does the killing, since only a process's parent can kill it without
racing pid reuse and only a process outside the job can stop one stuck in C code.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mpjobs.home import Home
from mpjobs.limits import Watch, align, shared_rss
from mpjobs.runtime.journal import read_journal
from mpjobs.runtime.ledger import Ledger
from mpjobs.runtime.proctable import ProcTable
from mpjobs.runtime.reaping import Child

if TYPE_CHECKING:
    from mpjobs.store.backend import Backend

log = logging.getLogger("mpjobs.supervisor")


class Watchdog:
    """Reads the report pipe and checks the limits of every watched job."""

    def __init__(self, report_fd: int) -> None:
        self._fd = report_fd
        self._buf = b""
        # Asked before each read: most passes have nothing to read, and a read that fails
        # with EAGAIN costs 3-4 times a poll right after the supervisor wakes (both cold).
        self._pending = select.poll()
        self._pending.register(report_fd, select.POLLIN)
        self._procs = ProcTable()  # the host's process tree, for memory samples

    def read_reports(self, children: dict[int, Child]) -> None:
        if not self._pending.poll(0):
            return
        try:
            while True:
                data = os.read(self._fd, 65536)
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
                child = children.get(int(parts[1]))
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
                grace = float(parts[5]) if len(parts) > 5 else 0.0
                watch = Watch(int(parts[2]), time.monotonic(), timeout or None,
                              memory or None, child.proc, grace)  # fmt: skip
                # with the memory watches of every child, so that one pass (one listing
                # of /proc) samples them all, not one pass per worker
                align(watch, (w for c in children.values() for w in c.watches.values()))
                child.watches[watch.job_id] = watch
            elif parts[0] == "E":
                child.watches.pop(int(parts[2]), None)

    def over_limit(self, children: dict[int, Child]) -> Iterator[tuple[Child, Watch, str]]:
        """(child, watch, reason) for the first job of each child that is over a limit.

        A worker with concurrency N may have up to N limited jobs watched at once; their
        memory limits share one RSS sample of the worker per pass.
        """
        now = time.monotonic()
        self._procs.new_pass()
        for child in list(children.values()):
            if child.kill is not None or not child.watches or child.proc is None:
                continue
            rss = shared_rss(child.proc, self._procs)
            for watch in child.watches.values():
                reason = watch.check(now, rss)
                if reason is not None:
                    yield child, watch, reason
                    break

    def next_check(self, children: dict[int, Child]) -> list[float]:
        """When each watch must be looked at again (the arbiter sleeps until the first)."""
        return [w.next_check() for c in children.values() for w in c.watches.values()]


def cancelled_while_running(
    ledger: Ledger, home: Home, children: dict[int, Child]
) -> list[tuple[Child, int]]:
    """(worker, job) pairs to kill: a job cancelled with terminate=True that really runs.

    The worker journals a start before it checks for cancellation, so "started and not
    finished" is never a false no; a request for a job that never began is cleared.
    """
    by_token = {c.token: c for c in children.values()}
    _, requests = ledger.attempt("read kill requests", ledger.store.kill_requests,
                                 list(by_token))  # fmt: skip
    out = []
    for job_id, owner in requests or []:
        child = by_token.get(owner)
        if child is None or child.kill is not None:
            continue
        try:
            started, done = read_journal(home.journal(owner))
        except OSError as exc:
            log.error("cannot read the journal of worker %d: %s", child.pid, exc)
            continue
        if job_id in started and job_id not in done:
            out.append((child, job_id))
        else:
            ledger.attempt("clear a kill request", ledger.store.clear_owner, job_id)
    return out


def silent_leader(
    backend: Backend, children: dict[int, Child], timeout: float
) -> tuple[Child, float] | None:
    """Our coordinator, and its beat's age, if it leads and its heartbeat is stale.

    Reads files and /proc only, no store: it can wait on nobody.
    """
    for child in children.values():
        if child.kind == "coordinator" and child.kill is None and not child.retiring:
            try:
                stale = backend.silent_leader(timeout)
            except OSError as exc:
                log.error("cannot check the leader's heartbeat: %s", exc)
                return None
            if stale is not None and stale.pid == child.pid:
                return child, stale.age
    return None
