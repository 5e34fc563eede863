"""Time and memory limits, enforced from outside the job's process.

A job stuck in C code never returns to the interpreter, so no thread of its own can stop
it. The supervisor watches instead: it learns from its worker when a limited job starts,
sleeps exactly until the deadline, samples the RSS of the worker's whole process tree
while a memory limit is set (from its /proc files, runtime/proctable.py; with psutil
where there is no /proc), and kills the tree when a limit is broken.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil

from mpjobs.scheduling.durations import parse_bytes, parse_duration

if TYPE_CHECKING:
    from mpjobs.runtime.proctable import ProcTable

MEMORY_SAMPLE_INTERVAL = 0.02  # 50 Hz: an allocation spree cannot overshoot by much


class Limit:
    """A resource limit in the style of Chancy: `Limit(Limit.Type.MEMORY, 512 * 1024**2)`."""

    class Type(enum.Enum):
        MEMORY = "memory"
        TIME = "time"

    def __init__(self, type: Limit.Type, value: float | int | str) -> None:
        if not isinstance(type, Limit.Type):
            raise TypeError(
                f"Limit type must be Limit.Type.MEMORY or Limit.Type.TIME, not {type!r}"
            )
        self.type = type
        if type is Limit.Type.MEMORY:
            self.value: float = float(parse_bytes(value))  # type: ignore[arg-type]
        else:
            self.value = parse_duration(value, what="time limit")
        if self.value <= 0:
            raise ValueError(f"{type.value} limit must be positive, got {value!r}")

    def __repr__(self) -> str:
        return f"Limit(Limit.Type.{self.type.name}, {self.value:g})"


def resolve_limits(
    timeout: float | str | None, memory_limit: int | str | None, limits: list[Limit] | None
) -> tuple[float | None, int | None]:
    """Merge the keyword and seed-style spellings into (seconds, bytes); the smaller wins."""
    t = None if timeout is None else parse_duration(timeout, what="timeout")
    m = None if memory_limit is None else parse_bytes(memory_limit)
    for limit in limits or ():
        if limit.type is Limit.Type.TIME:
            t = limit.value if t is None else min(t, limit.value)
        else:
            m = int(limit.value) if m is None else min(m, int(limit.value))
    if t is not None and t <= 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    return t, m


def tree_rss(proc: psutil.Process) -> int:
    """RSS of a process and all its descendants, so a job cannot hide memory in a child."""
    total = 0
    try:
        total = proc.memory_info().rss
        children = proc.children(recursive=True)
    except psutil.Error:
        return total
    for child in children:
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant it has, children first gone with it."""
    try:
        proc = psutil.Process(pid)
        victims = [*proc.children(recursive=True), proc]
    except psutil.Error:
        return
    for p in victims:
        with contextlib.suppress(psutil.Error):
            p.kill()


@dataclass
class Watch:
    """One running limited job, as the supervisor sees it.

    A worker running N jobs at once is one process, so a memory limit is checked
    against the RSS of the worker's whole tree: the limit of any job in flight there
    bounds them all, and breaking it kills the worker (its other jobs are put back).
    """

    job_id: int
    started: float
    timeout: float | None
    memory_limit: int | None
    proc: psutil.Process
    grace: float = 0.0  # an async job's cancelled task gets this long before the kill
    peak: int = 0
    next_sample: float = field(default=0.0)

    @property
    def deadline(self) -> float | None:
        return None if self.timeout is None else self.started + self.timeout + self.grace

    def next_check(self) -> float:
        times = [t for t in (self.deadline, self.next_sample if self.memory_limit else None) if t]
        return min(times) if times else float("inf")

    def check(self, now: float, rss: Callable[[], int] | None = None) -> str | None:
        """None while within limits, else the reason the job must die.

        `rss` gives the tree's RSS; the watches of one worker share one sample per pass
        (`shared_rss`), so N memory-limited jobs in flight cost one sampler, not N.
        """
        if self.deadline is not None and now >= self.deadline:
            if self.grace:
                return (f"time limit of {self.timeout:g} s exceeded, and the job did not end "
                        f"within {self.grace:g} s of its cancellation")  # fmt: skip
            return f"time limit of {self.timeout:g} s exceeded"
        if self.memory_limit is not None and now >= self.next_sample:
            self.next_sample = now + MEMORY_SAMPLE_INTERVAL
            now_rss = rss() if rss is not None else tree_rss(self.proc)
            self.peak = max(self.peak, now_rss)
            if now_rss > self.memory_limit:
                return (
                    f"memory limit of {_mb(self.memory_limit)} exceeded: the job's process tree "
                    f"reached {_mb(self.peak)} RSS"
                )
        return None


def shared_rss(proc: psutil.Process, table: ProcTable | None = None) -> Callable[[], int]:
    """The tree's RSS, sampled on first use and then remembered: one per supervisor pass.

    With a `table` (runtime/proctable.py) the tree is found without reading every
    process of the host; psutil's walk is the fallback where /proc cannot be listed.
    """
    memo: list[int] = []

    def sample() -> int:
        if not memo:
            rss = None if table is None else table.tree_rss(proc.pid)
            memo.append(tree_rss(proc) if rss is None else rss)
        return memo[0]

    return sample


def align(watch: Watch, others: Iterable[Watch]) -> None:
    """Sample a new memory watch with the worker's others, so they share each sample."""
    for other in others:
        if other.memory_limit is not None and watch.memory_limit is not None:
            watch.next_sample = other.next_sample
            return


def _mb(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"
