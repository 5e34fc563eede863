"""Workflows in the in-memory store: the same rules as deps.py, over dicts.

Kept apart from memory.py so that module keeps one reason to change; `MemoryStore`
mixes this in and calls `_resolve` where the SQL stores do (completions, recovery,
cancel), under its one lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mpjobs.errors import ConfigError, NotFoundError
from mpjobs.store.base import CANCELLED, SCHEDULED, SUCCESS, TERMINAL, NewJob
from mpjobs.store.deps import WAITING_AT

if TYPE_CHECKING:
    import contextlib

    from mpjobs.store.base import JobRecord


class MemoryDeps:
    _jobs: dict[int, JobRecord]

    def _tx(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def _insert(self, j: NewJob, now: float) -> int:
        raise NotImplementedError

    def _deps_tables(self) -> tuple[dict[int, dict[int, bool]], dict[int, list[float]],
                                    dict[str, list[int]]]:
        """(edges parent -> {child: done}, waits child -> [remaining, exec_at], groups)."""
        if not hasattr(self, "_edges"):
            self._edges: dict[int, dict[int, bool]] = {}
            self._waits: dict[int, list[float]] = {}
            self._groups: dict[str, list[int]] = {}
        return self._edges, self._waits, self._groups

    def push_linked(
        self, jobs: Sequence[NewJob], deps: Sequence[Sequence[int]], group_id: str | None,
        now: float,
    ) -> list[int]:
        if len(deps) != len(jobs):
            raise ValueError("push_linked: one list of dependencies per job")
        if any(j.unique_key is not None for j in jobs):
            raise ConfigError("unique_key cannot be combined with depends_on or a group")
        edges, waits, groups = self._deps_tables()
        with self._tx():
            for p in sorted({p for d in deps for p in d}):
                if p not in self._jobs:
                    raise NotFoundError(f"cannot depend on job {p}: no such job in this store")
            ids = []
            for j, parents in zip(jobs, deps, strict=True):
                parents = sorted(set(parents))
                open_ = [p for p in parents if self._jobs[p].status != SUCCESS]
                failed = [p for p in open_ if self._jobs[p].status in TERMINAL]
                at = j.exec_at
                if open_ and not failed:
                    j.exec_at = WAITING_AT
                try:
                    child = self._insert(j, now)
                finally:
                    j.exec_at = at
                ids.append(child)
                for p in parents:
                    edges.setdefault(p, {})[child] = p not in open_ or p in failed
                if failed:
                    st = self._jobs[failed[0]].status
                    self._doom(child, f"dependency job {failed[0]} ended {st}", now)
                elif open_:
                    waits[child] = [len(open_), at]
            if group_id is not None:
                groups.setdefault(group_id, []).extend(ids)
            return ids

    def _resolve(self, finished: Sequence[int], now: float) -> None:
        edges, waits, _ = self._deps_tables()
        frontier = list(finished)
        while frontier:
            found: list[tuple[int, int]] = []
            for p in frontier:
                r = self._jobs.get(p)
                if r is None or r.status not in TERMINAL:
                    continue
                for c, done in edges.get(p, {}).items():
                    if not done:
                        edges[p][c] = True
                        found.append((p, c))
            frontier = []
            met = Counter(c for p, c in found if self._jobs[p].status == SUCCESS)
            for p, c in found:
                st = self._jobs[p].status
                if st != SUCCESS and self._doom(c, f"dependency job {p} ended {st}", now):
                    frontier.append(c)
            for c, n in met.items():
                w = waits.get(c)
                if w is None:
                    continue
                w[0] -= n
                if w[0] <= 0:
                    del waits[c]
                    r = self._jobs.get(c)
                    if r is not None and r.status == SCHEDULED:
                        r.exec_at = w[1]

    def _doom(self, child: int, why: str, now: float) -> bool:
        r = self._jobs.get(child)
        if r is None or r.status != SCHEDULED:
            return False
        r.status, r.finished_at, r.error = CANCELLED, now, f"cancelled: {why}"
        return True

    def links(self, job_id: int) -> tuple[list[int], list[int]]:
        edges, _, _ = self._deps_tables()
        parents = sorted(p for p, cs in edges.items() if job_id in cs)
        return parents, sorted(edges.get(job_id, {}))

    def group_members(self, group_id: str) -> list[int]:
        return sorted(self._deps_tables()[2].get(group_id, []))

    def outcomes_of(self, ids: Sequence[int]) -> list[tuple[int, str, bytes | None]]:
        return [(i, self._jobs[i].status, self._jobs[i].result) for i in ids if i in self._jobs]
