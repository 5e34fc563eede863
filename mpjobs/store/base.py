"""The storage interface: a few dozen small operations, each one transaction.

Modelled on procrastinate's connector: a store only moves rows. Decisions (is a failure
retried, when, what a lost worker means, when a schedule stops) are made by the rules
(mpjobs/rules/), passed in or asked, so a second backend only has to implement these
operations. The job statuses are defined here, once, for Python and SQL alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mpjobs.home import Home
    from mpjobs.store.counters import MetricCounts


class JobStatus(str, enum.Enum):
    """The states of a job: the one source of their names, for Python and for SQL.

    The plain-string constants below are the same values; the SQL modules build their
    statements from them (once, at import), so no status is spelled twice.
    """

    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    PERMANENTLY_FAILED = "PERMANENTLY_FAILED"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self not in (JobStatus.SCHEDULED, JobStatus.RUNNING)


# Plain str (not the enum) where rows are written: drivers bind exact strs fastest.
SCHEDULED: str = JobStatus.SCHEDULED.value
RUNNING: str = JobStatus.RUNNING.value
SUCCESS: str = JobStatus.SUCCESS.value
FAILED: str = JobStatus.FAILED.value
TIMEOUT: str = JobStatus.TIMEOUT.value
CANCELLED: str = JobStatus.CANCELLED.value
PERMANENTLY_FAILED: str = JobStatus.PERMANENTLY_FAILED.value
TERMINAL = frozenset({SUCCESS, FAILED, TIMEOUT, CANCELLED, PERMANENTLY_FAILED})
LIVE = (SCHEDULED, RUNNING)  # a job that may still run

# The states of a schedule.
ACTIVE = "active"
PAUSED = "paused"
STOPPED = "stopped"  # by max_failures
_ENDS = TERMINAL | {SCHEDULED}  # what a completion may set

# What one outcome may hold. SQLite refuses a string or blob over 1e9 bytes
# (SQLITE_MAX_LENGTH); a result is refused well below that (a job's result is not a
# file store, and the journal and the worker hold copies of it), and an error text
# keeps its head and tail: the first frames and the exception, where the reader looks.
MAX_TEXT = 1 << 20  # characters of an error text
MAX_BLOB = 512 << 20  # bytes of a pickled result or exception


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
    # The fire time of the schedule this job was fired for: a fire becomes one job only.
    fired_for: float | None = None
    # Jobs with equal batch keys share every column but payload and exec_at; the builder
    # sets it so push_many can group jobs without comparing ten fields per job.
    batch_key: object = None
    # Job control (mpjobs/control/): a job with any of these is "gated", claimed apart.
    expires_at: float | None = None  # not started by then: CANCELLED
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    rate_limit: int | None = None  # starts of this task per window of rate_period seconds
    rate_period: float | None = None

    @property
    def gated(self) -> bool:
        return (self.expires_at is not None or self.concurrency_key is not None
                or self.rate_limit is not None)  # fmt: skip


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
    # Job control (see NewJob); last, with defaults, so older positional callers still fit.
    expires_at: float | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    rate_limit: int | None = None
    rate_period: float | None = None


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


def storable_text(text: str, cap: int = MAX_TEXT) -> str:
    """`text` as any store can hold and any reader can print.

    Lone surrogates (a file name decoded with surrogateescape) cannot be encoded as
    UTF-8, so SQLite's driver refuses them: they become backslash escapes. NULs, which
    SQLite's text functions and shells treat as the end, become the four characters
    `\\x00`. A text over `cap` characters keeps its head and tail around a note.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if len(text) > cap:
        half = cap // 2
        text = f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"
    return text


def storable(c: Completion) -> Completion:
    """`c` made safe to write, or ValueError naming what no store can write.

    Every completion passes through here on its way into the store, whoever made it (a
    worker, a supervisor settling from a journal, the leader's sweep), so an outcome
    made by an older version or read from a damaged journal is handled alike. Texts are
    repaired (see `storable_text`); an exception blob over MAX_BLOB is dropped (the
    traceback text remains); a result over MAX_BLOB, an unknown status or a field of the
    wrong type is refused, and the store then records the job as FAILED, saying why.
    """
    if c.status not in _ENDS:
        raise ValueError(f"no such job status {c.status!r}")
    if c.error is None and c.result is None and c.exc is None:
        return c  # the common case: a plain success
    error, exc = c.error, c.exc
    if error is not None:
        error = storable_text(error if isinstance(error, str) else repr(error))
    if c.result is not None:
        if not isinstance(c.result, bytes):
            raise ValueError(f"a result must be bytes, not {type(c.result).__name__}")
        if len(c.result) > MAX_BLOB:
            raise ValueError(f"a result of {len(c.result)} bytes is over {MAX_BLOB}")
    if exc is not None and (not isinstance(exc, bytes) or len(exc) > MAX_BLOB):
        exc = None
        error = (error or "") + "\n[the pickled exception was too large to keep]"
    if error is c.error and exc is c.exc:
        return c
    return dataclasses.replace(c, error=error, exc=exc)


def quarantined(
    c: Completion, why: BaseException, what: str = "outcome could not be stored"
) -> Completion:
    """The last resort for a job whose outcome cannot be written: FAILED, saying why.

    It holds only short, clean text, so it can always be written; the original error's
    first lines go with it, for the reader.
    """
    error = f"{what}: {type(why).__name__}: {_safe_str(why)}"
    if isinstance(c.error, str) and c.error:
        error += "\n\nthe job's own error began:\n" + c.error[:4000]
    return Completion(c.job_id, FAILED, error=storable_text(error), schedule_id=c.schedule_id)


def _safe_str(value: object, cap: int = 1000) -> str:
    """str(value) for a message, even when its __str__ raises."""
    try:
        text = str(value)
    except Exception:
        text = f"<{type(value).__name__} that cannot be printed>"
    return storable_text(text, cap)


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs an operator's listing or bulk action names; an empty field matches all."""

    statuses: tuple[str, ...] = ()
    queue: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Depths:
    """Waiting (SCHEDULED) and RUNNING jobs per queue (store/census.py).

    `estimated` names the queues deeper than the live count's cap: their waiting figure
    is the last census's, counted at the time given, or a floor (the cap + 1, "more
    than that") with None when no census has counted them yet.
    """

    counts: dict[str, dict[str, int]]
    estimated: dict[str, float | None] = dataclasses.field(default_factory=dict)


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

    home: Home  # the host's files of the home (journals, kill notes) sit beside it
    url: str | None  # the shared store's URL (PostgreSQL), or None for SQLite in the home
    # How the store runs its long lock-free reads (store/rows.py); None: in the caller.
    slow_reads: Callable[[Callable[[], Any]], Any] | None

    def close(self) -> None: ...
    def lock_budget(self, seconds: float) -> contextlib.AbstractContextManager[None]:
        """Writes of this thread inside the block wait at most `seconds` for the locks."""
        ...

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
    def job_ids(self, status: str | None, queue: str | None, limit: int) -> list[int]:
        """The ids `list_jobs` would give, newest first (app.jobs: handles read fresh)."""
        ...
    def cancel(self, job_id: int, terminate: bool, now: float) -> tuple[bool, str | None]: ...
    def retry(self, job_id: int, now: float) -> bool: ...
    def running_owners(self) -> list[str]: ...
    def kill_requests(self, owners: Sequence[str]) -> list[tuple[int, str]]: ...
    def clear_owner(self, job_id: int) -> None: ...
    def next_exec_at(self, queues: Sequence[str] | None) -> float | None: ...
    def queue_depths(self) -> dict[str, dict[str, int]]:
        """`depths().counts`: waiting and running jobs per queue (store/census.py)."""
        ...

    def depths(self) -> Depths:
        """The depths, exact up to DEPTH_CAP a queue, the last census's beyond it."""
        ...

    def take_census(self, now: float) -> int:
        """The leader's exact count of the queues too deep to count live; how many."""
        ...

    def purge(self, before: float) -> int: ...
    def expire_due(self, now: float, limit: int = 500) -> int:
        """Cancel up to `limit` waiting jobs past their `expires` deadline; how many."""
        ...

    # workflows (store/deps.py)
    def push_linked(
        self, jobs: Sequence[NewJob], deps: Sequence[Sequence[int]], group_id: str | None,
        now: float,
    ) -> list[int]: ...
    def links(self, job_id: int) -> tuple[list[int], list[int]]: ...
    def group_members(self, group_id: str) -> list[int]: ...
    def outcomes_of(self, ids: Sequence[int]) -> list[tuple[int, str, bytes | None]]: ...
    # metrics (store/counters.py)
    def metric_counts(self, now: float) -> MetricCounts:
        """The job counters summed over processes, and each queue's oldest due job."""
        ...

    def fold_counters(self) -> int:
        """Merge the counter rows of processes that are gone; how many processes' rows."""
        ...

    # progress (store/progress.py): only the running owner writes, anyone reads
    def set_progress(
        self, job_id: int, owner: str, value: float | None, meta: str | None
    ) -> bool: ...
    def progress_of(
        self, job_id: int
    ) -> tuple[float | None, dict[str, Any] | None] | None: ...

    # the operator's views (store/listing.py): keyset pages, bulk actions, the last hour
    def job_page(self, where: JobFilter, before_id: int | None, limit: int) -> list[JobRecord]:
        """Matching jobs newest first, with ids below `before_id` (keyset pagination)."""
        ...
    def job_row(self, job_id: int) -> dict[str, object] | None:
        """Every column of one job, by name (columns later versions add included)."""
        ...
    def purge_matching(self, where: JobFilter, before: float) -> int: ...
    def finished_per_minute(self, since: float) -> list[tuple[int, str, int]]:
        """(minute since the epoch, status, jobs) for jobs finished since `since`."""
        ...

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
