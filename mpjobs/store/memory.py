"""An in-memory backend, for unit tests of the rules (procrastinate's in-memory connector
is the model): the whole seam in one process, no file, no lock, no fork.

It moves rows the way the SQLite store does (the same conditions on status and owner,
the same order of claims) and asks the same rules (mpjobs/rules/) what to write, so a
test of a rule runs in microseconds and shows that the rule, not the SQL, decides.
Integration tests use the real backend: this one has no processes to recover.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mpjobs.control.expiry import expired_error
from mpjobs.control.gate import EXPIRE, TAKE, Candidate, Gate
from mpjobs.errors import StoreError
from mpjobs.home import Home
from mpjobs.rules.schedules import max_failures_of, redeclared, tally
from mpjobs.store import base, counters
from mpjobs.store.base import (
    ACTIVE,
    CANCELLED,
    FAILED,
    LIVE,
    PERMANENTLY_FAILED,
    RUNNING,
    SCHEDULED,
    STOPPED,
    TERMINAL,
    Completion,
    Decide,
    Depths,
    FireRule,
    JobFilter,
    JobRecord,
    NewJob,
    ProcessRecord,
    ScheduleRecord,
)
from mpjobs.store.deps import WAITING_AT
from mpjobs.store.memory_deps import MemoryDeps
from mpjobs.store.progress import Progress, decode

log = logging.getLogger("mpjobs.store")


def _gated(r: JobRecord) -> bool:
    return r.expires_at is not None or r.concurrency_key is not None or r.rate_limit is not None


def _candidate(r: JobRecord) -> Candidate:
    return Candidate(r.id, r.priority, r.exec_at, r.name, r.expires_at, r.concurrency_key,
                     r.concurrency_limit, r.rate_limit, r.rate_period)  # fmt: skip

_SCHEDULE_FIELDS = {"state", "next_run_time", "trigger", "failures", "updated_at", "options"}


class MemoryStore(MemoryDeps):
    """A `Store` in a dict, each operation atomic under one lock; rings after each write."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.url: str | None = None
        self.slow_reads: Callable[[Callable[[], Any]], Any] | None = None  # reads in place
        self.generation = 0  # the doorbell: bumped after every write
        self.changed = threading.Condition(threading.RLock())
        self._jobs: dict[int, JobRecord] = {}
        self._last_id = 0
        self._schedules: dict[str, ScheduleRecord] = {}
        self._procs: dict[str, ProcessRecord] = {}
        # (name, task, queue, status, bucket) -> [n, total]: one process, so no tokens
        self._counts: dict[tuple[str, str, str, str, int], list[float]] = {}
        self._windows: dict[str, tuple[float, int]] = {}  # rate_windows
        self._progress: dict[int, tuple[float | None, str | None]] = {}  # see progress.py

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        with self.changed:
            yield
            self.generation += 1
            self.changed.notify_all()

    def close(self) -> None:
        pass

    @contextlib.contextmanager
    def lock_budget(self, seconds: float) -> Iterator[None]:
        yield

    def checkpoint(self) -> None:
        pass

    # -- jobs --------------------------------------------------------------------------

    def _count(self, key: tuple[str, str, str, str, int], n: int, total: float = 0.0) -> None:
        entry = self._counts.setdefault(key, [0, 0.0])
        entry[0] += n
        entry[1] += total

    def metric_counts(self, now: float) -> counters.MetricCounts:
        with self.changed:
            rows = [counters.CounterRow(*k, int(v[0]), v[1]) for k, v in self._counts.items()]
            oldest: dict[str, float] = {}
            for r in self._due(None, now):
                oldest[r.queue] = min(oldest.get(r.queue, r.exec_at), r.exec_at)
            return counters.MetricCounts(rows, oldest)

    def fold_counters(self) -> int:
        return 0  # one process: nothing to fold

    def _insert(self, j: NewJob, now: float) -> int:
        self._count((counters.PUSHED, j.name, j.queue, "", 0), 1)
        self._last_id += 1
        self._jobs[self._last_id] = JobRecord(
            self._last_id, j.name, j.func, j.func_pickle, j.payload, j.queue, j.priority,
            SCHEDULED, j.exec_at, 0, j.max_attempts, j.retry_backoff, j.timeout,
            j.memory_limit, j.unique_key, j.schedule_id, None, None, None, None, None, now,
            None, None, j.expires_at, j.concurrency_key, j.concurrency_limit, j.rate_limit,
            j.rate_period,
        )  # fmt: skip
        return self._last_id

    def _live_with_key(self, key: str | None) -> JobRecord | None:
        if key is None:
            return None
        return next((r for r in self._jobs.values() if r.unique_key == key
                     and r.status in LIVE), None)  # fmt: skip

    def push(self, jobs: Sequence[NewJob], now: float) -> list[tuple[int, bool]]:
        with self._tx():
            out: list[tuple[int, bool]] = []
            for j in jobs:
                live = self._live_with_key(j.unique_key)
                out.append((live.id, False) if live else (self._insert(j, now), True))
            return out

    def _due(self, queues: Sequence[str] | None, now: float) -> list[JobRecord]:
        return sorted(
            (r for r in self._jobs.values() if r.status == SCHEDULED and r.exec_at <= now
             and (not queues or r.queue in queues)),
            key=lambda r: (r.priority, r.exec_at, r.id),
        )  # fmt: skip

    def claim(
        self, owner: str, pid: int, queues: Sequence[str] | None, limit: int, now: float,
        done: Sequence[Completion] = (), share: int = 1,
    ) -> list[JobRecord]:  # fmt: skip
        with self._tx():
            self._complete_many(owner, done, now)
            due = self._due(queues, now)
            if limit > 1 and share > 1:
                limit = max(1, min(limit, -(-min(len(due), limit * share) // share)))
            chosen = self._gate(due, limit, now) if any(map(_gated, due)) else due[:limit]
            for r in chosen:
                r.status, r.owner, r.pid, r.started_at = RUNNING, owner, pid, now
                r.attempts += 1
                self._count((counters.STARTED, r.name, r.queue, "", 0), 1)
            return [dataclasses.replace(r) for r in chosen]

    def _gate(self, due: list[JobRecord], limit: int, now: float) -> list[JobRecord]:
        """What store/gated.py does in SQL: ask the gate about each gated job in order."""
        g = Gate(now, self._windows.get, self._running)
        chosen: list[JobRecord] = []
        for r in due:
            if len(chosen) >= limit:
                break
            verdict = g.decide(_candidate(r)) if _gated(r) else TAKE
            if verdict == TAKE:
                chosen.append(r)
            elif verdict == EXPIRE:
                self._expire(r, now)
        for name, start, used in g.changed_windows():
            self._windows[name] = (start, used)
        for name, until in g.full_rates.items():
            for r in self._jobs.values():
                if (r.status == SCHEDULED and r.name == name and r.rate_limit is not None
                        and r.exec_at < until):  # fmt: skip
                    r.exec_at = until
        return chosen

    def _running(self, key: str) -> int:
        return sum(1 for r in self._jobs.values()
                   if r.status == RUNNING and r.concurrency_key == key)  # fmt: skip

    def _expire(self, r: JobRecord, now: float) -> None:
        r.status, r.finished_at = CANCELLED, now
        r.error = expired_error(r.expires_at if r.expires_at is not None else now)

    def _startable(self, r: JobRecord) -> bool:
        key = r.concurrency_key
        return key is None or self._running(key) < (r.concurrency_limit or 1)

    def expire_due(self, now: float, limit: int = 500) -> int:
        with self._tx():
            late = sorted((r for r in self._jobs.values() if r.status == SCHEDULED
                           and r.expires_at is not None and r.expires_at <= now),
                          key=lambda r: r.expires_at or 0.0)[:limit]  # fmt: skip
            for r in late:
                self._expire(r, now)
            return len(late)

    def has_due(self, queues: Sequence[str] | None, now: float) -> bool:
        with self.changed:
            return any(not _gated(r) or self._startable(r) for r in self._due(queues, now))

    def complete(self, owner: str, done: Sequence[Completion], now: float) -> None:
        with self._tx():
            self._complete_many(owner, done, now)

    def _complete_many(self, owner: str, done: Sequence[Completion], now: float) -> None:
        for c in done:
            self._apply(owner, c, now)
        self._resolve([c.job_id for c in done], now)  # workflows: memory_deps.py

    def _apply(self, owner: str, c: Completion, now: float) -> Completion:
        try:
            safe = base.storable(c)
        except ValueError as exc:
            safe = base.quarantined(c, exc)
        self._complete(owner, safe, now)
        return safe

    def _complete(self, owner: str, c: Completion, now: float) -> None:
        r = self._jobs.get(c.job_id)
        if r is None or r.status != RUNNING or r.owner != owner:
            return
        r.owner = r.pid = None
        r.error, r.exc = c.error, c.exc
        if c.status == SCHEDULED:
            r.status, r.exec_at, r.started_at = SCHEDULED, c.exec_at or now, None
            r.attempts -= int(c.refund_attempt)
            if c.refund_attempt:  # given back unstarted: its start is taken back too
                self._count((counters.STARTED, r.name, r.queue, "", 0), -1)
            return
        r.status, r.result, r.finished_at = c.status, c.result, now
        s = self._schedules.get(r.schedule_id) if r.schedule_id is not None else None
        if s is not None:
            self._count_schedule_outcome(s, r, c)
        took = now - (r.started_at or now)
        self._count((counters.FINISHED, r.name, r.queue, r.status, counters.bucket_of(took)), 1,
                    took)  # fmt: skip

    def _count_schedule_outcome(self, s: ScheduleRecord, r: JobRecord, c: Completion) -> None:
        t = tally(s.id, c.status, s.failures, max_failures_of(s.options))
        if t is not None:
            s.failures = t.failures
            if t.stop:
                s.state, s.next_run_time = STOPPED, None
                r.status, r.error = PERMANENTLY_FAILED, (r.error or "") + t.note

    def release(self, owner: str, job_ids: Sequence[int]) -> None:
        with self._tx():
            for i in job_ids:
                r = self._jobs.get(i)
                if r is not None and r.status == RUNNING and r.owner == owner:
                    r.status, r.owner, r.pid, r.started_at = SCHEDULED, None, None, None
                    r.attempts -= 1
                    self._count((counters.STARTED, r.name, r.queue, "", 0), -1)

    def recover(
        self, owner: str, decide: Decide, now: float
    ) -> list[tuple[JobRecord, Completion]]:
        with self._tx():
            settled: list[tuple[JobRecord, Completion]] = []
            for r in sorted(self._jobs.values(), key=lambda r: r.id):
                if r.status != RUNNING or r.owner != owner:
                    continue
                job = dataclasses.replace(r)
                try:
                    c = decide(job)
                except Exception as exc:
                    c = base.quarantined(Completion(job.id, FAILED), exc, "cannot settle")
                settled.append((job, self._apply(owner, c, now)))
            self._resolve([job.id for job, _ in settled], now)
            for r in self._jobs.values():
                if r.status == CANCELLED and r.owner == owner:
                    r.owner = r.pid = None
            return settled

    def get(self, job_id: int) -> JobRecord | None:
        with self.changed:
            r = self._jobs.get(job_id)
            return None if r is None else dataclasses.replace(r)

    def status_of(self, job_id: int) -> str | None:
        r = self._jobs.get(job_id)
        return None if r is None else r.status

    def list_jobs(
        self, status: str | None, queue: str | None, limit: int, schedule_id: str | None = None
    ) -> list[JobRecord]:
        with self.changed:
            rows = [r for r in self._jobs.values() if (status is None or r.status == status)
                    and (queue is None or r.queue == queue)
                    and (schedule_id is None or r.schedule_id == schedule_id)]  # fmt: skip
            return [dataclasses.replace(r) for r in sorted(rows, key=lambda r: -r.id)[:limit]]

    def job_ids(self, status: str | None, queue: str | None, limit: int) -> list[int]:
        return [r.id for r in self.list_jobs(status, queue, limit)]

    def cancel(self, job_id: int, terminate: bool, now: float) -> tuple[bool, str | None]:
        with self._tx():
            r = self._jobs.get(job_id)
            if r is None or r.status not in LIVE or (r.status == RUNNING and not terminate):
                return False, None
            running = r.status == RUNNING
            r.status, r.finished_at = CANCELLED, now
            r.error = "cancelled while running" if running else "cancelled"
            r.owner = r.owner if running else None
            self._resolve([job_id], now)
            return True, r.owner

    def retry(self, job_id: int, now: float) -> bool:
        with self._tx():
            r = self._jobs.get(job_id)
            if r is None or r.status not in TERMINAL:
                return False
            if self._live_with_key(r.unique_key) is not None:
                raise StoreError(
                    f"cannot retry job {job_id}: another job with its unique key "
                    f"{r.unique_key!r} is waiting or running"
                )
            r.status, r.exec_at, r.attempts = SCHEDULED, now, 0
            r.owner = r.pid = r.result = r.exc = r.error = r.started_at = r.finished_at = None
            r.expires_at = None
            return True

    def running_owners(self) -> list[str]:
        with self.changed:
            return sorted({r.owner for r in self._jobs.values()
                           if r.status == RUNNING and r.owner is not None})  # fmt: skip

    def kill_requests(self, owners: Sequence[str]) -> list[tuple[int, str]]:
        with self.changed:
            return [(r.id, r.owner) for r in self._jobs.values() if r.status == CANCELLED
                    and r.owner is not None and r.owner in owners]  # fmt: skip

    def clear_owner(self, job_id: int) -> None:
        with self._tx():
            r = self._jobs.get(job_id)
            if r is not None and r.status != RUNNING:
                r.owner = None

    def next_exec_at(self, queues: Sequence[str] | None) -> float | None:
        with self.changed:
            now = time.time()
            times = [r.exec_at for r in self._jobs.values()
                     if r.status == SCHEDULED and r.exec_at < WAITING_AT
                     and (not queues or r.queue in queues)
                     and not (_gated(r) and r.exec_at <= now)]  # fmt: skip
            return min(times, default=None)

    def queue_depths(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with self.changed:
            for r in self._jobs.values():
                if r.status in LIVE:
                    q = out.setdefault(r.queue, {})
                    q[r.status] = q.get(r.status, 0) + 1
        return out

    def set_progress(
        self, job_id: int, owner: str, value: float | None, meta: str | None
    ) -> bool:
        with self._tx():
            r = self._jobs.get(job_id)
            if r is None or r.owner != owner or r.status != RUNNING:
                return False
            old = self._progress.get(job_id, (None, None))[1]
            self._progress[job_id] = (value, old if meta is None else meta)
            return True

    def progress_of(self, job_id: int) -> Progress | None:
        with self.changed:
            if job_id not in self._jobs:
                return None
            return decode(*self._progress.get(job_id, (None, None)))

    def purge(self, before: float) -> int:
        with self._tx():
            newest = max(self._jobs, default=0)
            gone = [i for i, r in self._jobs.items() if r.status not in LIVE and i != newest
                    and r.finished_at is not None and r.finished_at < before]  # fmt: skip
            for i in gone:
                del self._jobs[i]
            return len(gone)

    # -- the operator's views (store/listing.py) -----------------------------------------

    def _matches(self, r: JobRecord, where: JobFilter) -> bool:
        return ((not where.statuses or r.status in where.statuses)
                and (where.queue is None or r.queue == where.queue)
                and (where.name is None or r.name == where.name))  # fmt: skip

    def job_page(self, where: JobFilter, before_id: int | None, limit: int) -> list[JobRecord]:
        with self.changed:
            ids = sorted((i for i in self._jobs if before_id is None or i < before_id),
                         reverse=True)  # fmt: skip
            out = [self._jobs[i] for i in ids if self._matches(self._jobs[i], where)][:limit]
            return [dataclasses.replace(r) for r in out]

    def job_row(self, job_id: int) -> dict[str, object] | None:
        r = self._jobs.get(job_id)
        return None if r is None else dataclasses.asdict(r)

    def purge_matching(self, where: JobFilter, before: float) -> int:
        with self._tx():
            newest = max(self._jobs, default=0)
            gone = [i for i, r in self._jobs.items() if r.status not in LIVE and i != newest
                    and r.finished_at is not None and r.finished_at < before
                    and self._matches(r, where)]  # fmt: skip
            for i in gone:
                del self._jobs[i]
            return len(gone)

    def depths(self) -> Depths:
        return Depths(self.queue_depths())  # every count is exact here: nothing estimated

    def take_census(self, now: float) -> int:
        return 0

    def finished_per_minute(self, since: float) -> list[tuple[int, str, int]]:
        counts: dict[tuple[int, str], int] = {}
        with self.changed:
            for r in self._jobs.values():
                if r.finished_at is not None and r.finished_at >= since:
                    key = (int(r.finished_at) // 60, r.status)
                    counts[key] = counts.get(key, 0) + 1
        return [(m, s, n) for (m, s), n in counts.items()]

    # -- schedules -----------------------------------------------------------------------

    def upsert_schedule(self, rec: ScheduleRecord, trigger_changed: bool = False) -> ScheduleRecord:
        with self._tx():
            prev = self._schedules.get(rec.id)
            if prev is not None:
                redeclared(prev, rec, trigger_changed)
            self._schedules[rec.id] = dataclasses.replace(rec)
            return rec

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        s = self._schedules.get(schedule_id)
        return None if s is None else dataclasses.replace(s)

    def list_schedules(self) -> list[ScheduleRecord]:
        with self.changed:
            return [dataclasses.replace(self._schedules[k]) for k in sorted(self._schedules)]

    def update_schedule(self, schedule_id: str, **fields: object) -> bool:
        bad = sorted(set(fields) - _SCHEDULE_FIELDS)
        if not fields or bad:
            raise ValueError(f"cannot update schedule fields {bad}")
        with self._tx():
            s = self._schedules.get(schedule_id)
            if s is None:
                return False
            for k, v in fields.items():
                setattr(s, k, v)
            return True

    def remove_schedule(self, schedule_id: str) -> bool:
        with self._tx():
            return self._schedules.pop(schedule_id, None) is not None

    def fire_due(self, now: float, rule: FireRule) -> list[int]:
        ids: list[int] = []
        with self._tx():
            for s in list(self._schedules.values()):
                if s.state != ACTIVE or s.next_run_time is None or s.next_run_time > now:
                    continue
                try:
                    jobs, next_time = rule(dataclasses.replace(s), now, self.active_count(s.id))
                except Exception:
                    log.exception("schedule %r cannot be fired; retrying in 60 s", s.id)
                    jobs, next_time = [], now + 60.0
                ids += [self._insert(j, now) for j in jobs]
                s.next_run_time = next_time
        return ids

    def next_fire_time(self) -> float | None:
        with self.changed:
            times = [s.next_run_time for s in self._schedules.values()
                     if s.state == ACTIVE and s.next_run_time is not None]  # fmt: skip
            return min(times, default=None)

    def active_count(self, schedule_id: str) -> int:
        with self.changed:
            return sum(r.schedule_id == schedule_id and r.status in LIVE
                       for r in self._jobs.values())  # fmt: skip

    # -- processes -----------------------------------------------------------------------

    def register_process(self, rec: ProcessRecord) -> None:
        with self._tx():
            self._procs[rec.token] = dataclasses.replace(rec)

    def unregister_process(self, token: str) -> None:
        with self._tx():
            self._procs.pop(token, None)

    def list_processes(self) -> list[ProcessRecord]:
        with self.changed:
            return sorted((dataclasses.replace(p) for p in self._procs.values()),
                          key=lambda p: p.started_at)  # fmt: skip
