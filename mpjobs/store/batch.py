"""A bulk push as runs of alike jobs: one template row and a payload per job.

`push_many` of plain builders and `task.map` make one of these instead of a `NewJob`
per job: 100,000 jobs of one task differ only in their arguments (and sometimes their
due time), so building and then comparing 100,000 rows of 13 columns is most of what a
bulk push used to cost. A `Batch` is still a `Sequence[NewJob]`, so every store takes
it through its ordinary `push`; the SQL stores read its runs directly (sql.py's
`grouped_inserts`, PostgreSQL's COPY), and any other reader gets real `NewJob`s.

Only plain jobs go in runs: no unique_key (each is checked against the live keys one
by one) and no gates (their columns are computed per job from its arguments).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterator, Sequence
from typing import ClassVar, overload

from mpjobs.store.base import NewJob

__all__ = ["Batch", "Run"]


@dataclasses.dataclass(slots=True)
class Run:
    """Jobs equal to `template` but for their payloads (and exec_ats, when given)."""

    template: NewJob
    payloads: list[bytes | None]
    exec_ats: list[float] | None = None  # None: every job is due at template.exec_at

    def __post_init__(self) -> None:
        t = self.template
        if t.unique_key is not None or t.gated:
            raise ValueError("a run holds plain jobs only: no unique_key, no control gates")
        if self.exec_ats is not None and len(self.exec_ats) != len(self.payloads):
            raise ValueError("a run needs one exec_at per payload")

    def job(self, i: int) -> NewJob:
        """The i-th job as a NewJob of its own (for readers that want rows)."""
        at = self.template.exec_at if self.exec_ats is None else self.exec_ats[i]
        return dataclasses.replace(self.template, payload=self.payloads[i], exec_at=at)


class Batch(Sequence[NewJob]):
    """Runs of alike jobs, in push order; a Sequence[NewJob] to whoever iterates it."""

    __slots__ = ("_starts", "_total", "runs")
    # No job of a batch has a unique key or gates: stores test this instead of reading
    # every job (`getattr(jobs, "plain", False)`), without importing this module.
    plain: ClassVar[bool] = True

    def __init__(self, runs: list[Run]) -> None:
        self.runs = runs
        self._starts: list[int] = []
        total = 0
        for r in runs:
            self._starts.append(total)
            total += len(r.payloads)
        self._total = total

    def __len__(self) -> int:
        return self._total

    @overload
    def __getitem__(self, index: int) -> NewJob: ...

    @overload
    def __getitem__(self, index: slice) -> list[NewJob]: ...

    def __getitem__(self, index: int | slice) -> NewJob | list[NewJob]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._total))]
        if index < 0:
            index += self._total
        if not 0 <= index < self._total:
            raise IndexError("batch index out of range")
        k = bisect.bisect_right(self._starts, index) - 1
        return self.runs[k].job(index - self._starts[k])

    def __iter__(self) -> Iterator[NewJob]:
        for r in self.runs:
            for i in range(len(r.payloads)):
                yield r.job(i)

    def templates(self) -> list[NewJob]:
        """One template per job (the same object repeated): for per-job counts by name
        and queue, without making a row per job."""
        out: list[NewJob] = []
        for r in self.runs:
            out.extend([r.template] * len(r.payloads))
        return out
