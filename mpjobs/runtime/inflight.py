"""The claim/journal loop of a worker that runs up to N jobs at once on an event loop.

The rules are those of the one-at-a-time loop (worker.py), with N jobs in flight:

- The worker claims at most N minus what it runs, and starts every job it claims at
  once, as a task: it never holds claimed-but-unstarted jobs behind a running one, so
  it needs no batch steward (batch.py).
- Each start is journaled before the job's status is looked at and before it begins
  (a terminate-cancel is either seen then, or the supervisor finds the start in the
  journal and kills the worker: never neither), and each outcome is journaled when the
  job ends. Outcomes are committed in batches, with the next claim, at most
  FLUSH_INTERVAL after the first of them ended.
- The journal is never truncated while a job is in flight (that would forget its
  start). When it has grown, or when a job comes back whose id it already holds (a
  retry), it is rewritten atomically: a fresh file holding only the starts of the jobs
  in flight replaces it by rename, so whoever reads it sees the old or the new, both
  complete. With no job in flight it is simply cleared, as before.

Every store and journal call runs on the loop's thread, between awaits, so no job can
end between a commit and the journal's clean-up. A killed worker is settled as before:
its journaled outcomes are kept, its journaled starts count as attempts ("worker lost").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from mpjobs.runtime.executors import AsyncExecutor
from mpjobs.runtime.journal import Journal
from mpjobs.store.base import CANCELLED, RUNNING, Completion, JobRecord, Store

FLUSH_INTERVAL = 0.005  # an ended job's outcome is committed at most this much later
POLL = 0.02  # a worker with free slots looks for due jobs at least this often
COMPACT_AFTER = 4096  # journal records before a rewrite that keeps only the open starts


class Host(Protocol):
    """What the worker process provides to its loop (see worker.Worker)."""

    journal: Journal
    token: str
    queues: list[str] | None
    share: int
    stopping: bool
    began: int | None
    _wake_r: int

    @property
    def store(self) -> Store: ...

    def _retrying(self, fn: Callable[..., Any], *args: Any) -> Any: ...
    def _recycle_due(self) -> bool: ...
    def _wait_for_work(self) -> bool: ...
    def _release_turn(self) -> None: ...


class InFlight:
    """Up to `executor.concurrency` jobs as tasks, and their claims, journal and commits."""

    def __init__(self, host: Host, executor: AsyncExecutor) -> None:
        self.host = host
        self.executor = executor
        self.n = executor.concurrency
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.results: list[Completion] = []  # journaled, not yet committed
        self.flush_at = 0.0
        self.journaled: set[int] = set()  # ids with a record in the journal file
        self.records = 0
        self.maybe_due = True
        self._wake: asyncio.Event | None = None

    def serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.add_reader(self.host._wake_r, self._on_wake_fd)  # signals (a stop) wake us
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.remove_reader(self.host._wake_r)
            self.executor.close()

    def _on_wake_fd(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.host._wake_r, 512)
        if self._wake is not None:
            self._wake.set()

    async def _main(self) -> None:
        h = self.host
        self._wake = asyncio.Event()
        while True:
            stop = h.stopping or h._recycle_due()
            if stop and not self.tasks:
                break
            if not (stop or self.tasks or self.results or self.maybe_due):
                self.maybe_due = h._wait_for_work()
                continue
            free = 0 if stop else self.n - len(self.tasks)
            flush = bool(self.results) and (not self.tasks or time.monotonic() >= self.flush_at)
            # With jobs in flight, claims ride with the flushes: one commit per
            # FLUSH_INTERVAL at most, not one per ended job.
            if flush or (free > 0 and self.maybe_due and not self.results):
                self._commit_and_claim(free)
            await self._pause(free)
        self._commit_and_claim(0)

    async def _pause(self, free: int) -> None:
        """Wait for a job to end, a flush to be due, a signal, or a look for due jobs."""
        assert self._wake is not None
        if not self.tasks:
            return  # nothing runs that could end: the loop decides what comes next
        if self.results:
            timeout = max(0.0, self.flush_at - time.monotonic())
        elif free > 0:
            timeout = POLL
        else:
            timeout = 1.0  # only to look at `stopping` again; signals wake us anyway
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()
        if free > 0 and not self.maybe_due and not self.results and not self.host.stopping:
            self.maybe_due = self.host.store.has_due(self.host.queues, time.time())

    def _commit_and_claim(self, free: int) -> None:
        """Commit the outcomes held and, with free slots, claim and start up to that many."""
        h = self.host
        results, self.results = self.results, []
        if free > 0:
            h._release_turn()  # let an idle sibling listen while we work
            batch: list[JobRecord] = h._retrying(
                h.store.claim, h.token, os.getpid(), h.queues, free, time.time(), results,
                h.share,
            )  # fmt: skip
            self.maybe_due = len(batch) >= free
        else:
            batch = []
            if results:
                h._retrying(h.store.complete, h.token, results, time.time())
        self._tidy_journal(batch)
        for job in batch:
            self._start(job)

    def _tidy_journal(self, batch: Sequence[JobRecord]) -> None:
        """Everything journaled is committed now: drop what no longer needs keeping."""
        h = self.host
        if not self.tasks:
            if h.journal.dirty:
                h._retrying(h.journal.clear)
            self.journaled.clear()
            self.records = 0
        elif self.records >= COMPACT_AFTER or any(j.id in self.journaled for j in batch):
            h._retrying(self._rewrite_journal)

    def _rewrite_journal(self) -> None:
        """Replace the journal by one that holds only the starts of the jobs in flight."""
        h = self.host
        path = h.journal.path
        fresh = Journal(path.with_name(f"{path.name}.rewrite"))
        try:
            for job_id in self.tasks:
                fresh.started(job_id)
            os.replace(fresh.path, path)
        except BaseException:
            fresh.close(remove=True)
            raise
        fresh.path = path
        fresh.open_start = None  # every job in flight has begun (see Worker._shutdown)
        h.journal.close(remove=False)
        h.journal = fresh
        self.journaled = set(self.tasks)
        self.records = len(self.tasks)

    def _start(self, job: JobRecord) -> None:
        h = self.host
        h._retrying(h.journal.started, job.id)
        self.journaled.add(job.id)
        self.records += 1
        # The start is journaled before this look: see the module docstring.
        if h._retrying(h.store.status_of, job.id) != RUNNING:
            self._ended(Completion(job.id, CANCELLED))  # tells the supervisor: no kill
            return
        self.tasks[job.id] = asyncio.get_running_loop().create_task(self._run(job))
        h.began = job.id  # from here on, a crash counts this job as begun

    async def _run(self, job: JobRecord) -> None:
        done = await self.executor.execute(job)
        self.tasks.pop(job.id, None)
        self._ended(done)

    def _ended(self, done: Completion) -> None:
        self.host._retrying(self.host.journal.completed, done)
        self.records += 1
        if not self.results:
            self.flush_at = time.monotonic() + FLUSH_INTERVAL
        self.results.append(done)
        if self._wake is not None:
            self._wake.set()
