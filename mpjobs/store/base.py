"""The storage interface: a few dozen small operations, each one transaction.

Modelled on procrastinate's connector: a store only moves rows. Decisions (is a failure
retried, when, what a lost worker means) are made by the caller and passed in, so a
second backend only has to implement these operations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

SCHEDULED = "SCHEDULED"
RUNNING = "RUNNING"
SUCCESS = "SUCCESS"
FAILED = "FAILED"
TIMEOUT = "TIMEOUT"
CANCELLED = "CANCELLED"
PERMANENTLY_FAILED = "PERMANENTLY_FAILED"
TERMINAL = frozenset({SUCCESS, FAILED, TIMEOUT, CANCELLED, PERMANENTLY_FAILED})


@dataclass(slots=True)
class NewJob:
    name: str
    func: str | None
    func_pickle: bytes | None
    payload: bytes | None
    queue: str
    priority: int
    exec_at: float
    max_attempts: int
    retry_backoff: float
    timeout: float | None
    memory_limit: int | None
    unique_key: str | None
    schedule_id: str | None = None
    # Jobs with equal batch keys share every column but payload and exec_at; the builder
    # sets it so push_many can group jobs without comparing ten fields per job.
    batch_key: object = None


@dataclass(slots=True)
class JobRecord:
    id: int
    name: str
    func: str | None
    func_pickle: bytes | None
    payload: bytes | None
    queue: str
    priority: int
    status: str
    exec_at: float
    attempts: int
    max_attempts: int
    retry_backoff: float
    timeout: float | None
    memory_limit: int | None
    unique_key: str | None
    schedule_id: str | None
    owner: str | None
    pid: int | None
    result: bytes | None
    exc: bytes | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None


@dataclass(slots=True)
class Completion:
    """The new state of a job that stopped running: terminal, or SCHEDULED again for a retry."""

    job_id: int
    status: str
    exec_at: float | None = None
    result: bytes | None = None
    exc: bytes | None = None
    error: str | None = None
    refund_attempt: bool = False
    schedule_id: str | None = None  # set when the job came from a schedule (failure counting)


@dataclass(slots=True)
class ScheduleRecord:
    id: str
    name: str
    func: str | None
    func_pickle: bytes | None
    payload: bytes
    trigger: str
    options: str
    state: str
    next_run_time: float | None
    failures: int
    created_at: float
    updated_at: float


@dataclass(slots=True)
class ProcessRecord:
    token: str
    kind: str
    pid: int
    parent: str | None
    started_at: float
    info: str


Decide = Callable[[JobRecord], Completion]
# (schedule, now, jobs of it still waiting or running) -> (jobs to push, new next_run_time)
FireRule = Callable[[ScheduleRecord, float, int], "tuple[list[NewJob], float | None]"]


class Store(Protocol):
    """What mpjobs needs from storage. Every method is atomic on its own."""

    def close(self) -> None: ...

    # jobs
    def push(self, jobs: Sequence[NewJob], now: float) -> list[tuple[int, bool]]: ...
    def claim(
        self,
        owner: str,
        pid: int,
        queues: Sequence[str] | None,
        limit: int,
        now: float,
        done: Sequence[Completion] = (),
        share: int = 1,
    ) -> list[JobRecord]: ...
    def has_due(self, queues: Sequence[str] | None, now: float) -> bool: ...
    def complete(self, owner: str, done: Sequence[Completion], now: float) -> None: ...
    def release(self, owner: str, job_ids: Sequence[int]) -> None: ...
    def recover(
        self, owner: str, decide: Decide, now: float
    ) -> list[tuple[JobRecord, Completion]]: ...
    def get(self, job_id: int) -> JobRecord | None: ...
    def status_of(self, job_id: int) -> str | None: ...
    def list_jobs(
        self, status: str | None, queue: str | None, limit: int, schedule_id: str | None = None
    ) -> list[JobRecord]: ...
    def cancel(self, job_id: int, terminate: bool, now: float) -> tuple[bool, str | None]: ...
    def retry(self, job_id: int, now: float) -> bool: ...
    def running_owners(self) -> list[str]: ...
    def kill_requests(self, owners: Sequence[str]) -> list[tuple[int, str]]: ...
    def clear_owner(self, job_id: int) -> None: ...
    def next_exec_at(self, queues: Sequence[str] | None) -> float | None: ...
    def queue_depths(self) -> dict[str, dict[str, int]]: ...
    def purge(self, before: float) -> int: ...

    # schedules
    def upsert_schedule(
        self, rec: ScheduleRecord, trigger_changed: bool = False
    ) -> ScheduleRecord: ...
    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None: ...
    def list_schedules(self) -> list[ScheduleRecord]: ...
    def update_schedule(self, schedule_id: str, **fields: object) -> bool: ...
    def remove_schedule(self, schedule_id: str) -> bool: ...
    def fire_due(self, now: float, rule: FireRule) -> list[int]: ...
    def next_fire_time(self) -> float | None: ...
    def checkpoint(self) -> None: ...
    def active_count(self, schedule_id: str) -> int: ...

    # processes
    def register_process(self, rec: ProcessRecord) -> None: ...
    def unregister_process(self, token: str) -> None: ...
    def list_processes(self) -> list[ProcessRecord]: ...
