"""Groups and chords: many jobs pushed as one, waited for as one, followed by one.

A group's members are pushed in one transaction and recorded under its id (a uuid),
so `app.get_group(id)` finds them from any process. A chord (`group.then(b)`) is a job
that depends on every member; releasing it costs O(1) per member's completion (a
counter, store/deps.py), never a scan of the group.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mpjobs import serialization
from mpjobs.coordination.notify import deadline_left
from mpjobs.errors import WaitTimeout
from mpjobs.job import Job
from mpjobs.store.base import SUCCESS, Store
from mpjobs.workflows import links
from mpjobs.workflows.feed import feeding

if TYPE_CHECKING:
    from mpjobs.app import App, JobBuilder


class Group:
    """A handle to a group of jobs: its id, its members in push order, their outcome."""

    __slots__ = ("_store", "id", "jobs")

    def __init__(self, store: Store, group_id: str, jobs: list[Job[Any]]) -> None:
        self._store = store
        self.id = group_id
        self.jobs = jobs

    def __repr__(self) -> str:
        return f"<Group {self.id} of {len(self.jobs)} jobs>"

    def __len__(self) -> int:
        return len(self.jobs)

    def wait(self, timeout: float | None = None) -> Group:
        """Block until every member has ended; WaitTimeout after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in self.jobs:
            left = deadline_left(deadline)
            if left == 0 and not job.is_done():
                raise WaitTimeout(f"group {self.id} not done after {timeout} s")
            try:
                job.wait(left)
            except WaitTimeout:
                raise WaitTimeout(f"group {self.id} not done after {timeout} s") from None
        return self

    async def wait_async(self, timeout: float | None = None) -> Group:
        """`wait` for asyncio code: sleeps on the event loop, never blocks it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in self.jobs:
            left = deadline_left(deadline)
            if left == 0 and not job.is_done():
                raise WaitTimeout(f"group {self.id} not done after {timeout} s")
            try:
                await job.wait_async(left)
            except WaitTimeout:
                raise WaitTimeout(f"group {self.id} not done after {timeout} s") from None
        return self

    def results(self) -> list[Any]:
        """The members' results in push order; raises like Job.result() for the first
        member (in push order) that has not succeeded."""
        ids = [int(j.id) for j in self.jobs]
        out: list[Any] = []
        for (i, status, raw), job in zip(self._store.outcomes_of(ids), self.jobs, strict=False):
            if status != SUCCESS or str(i) != job.id:
                job.result()  # raises the error Job.result() raises for it
            out.append(None if raw is None else serialization.loads(raw))
        if len(out) != len(self.jobs):
            self.jobs[len(out)].result()  # purged: NotFoundError
        return out

    def then(self, builder: JobBuilder[Any]) -> Job[Any]:
        """A chord: `builder`'s job runs once every member succeeded, with the list of
        their results (push order) as first argument; cancelled if one fails for good."""
        ids = [int(j.id) for j in self.jobs]
        fed = feeding(self._store, builder, ids, many=True)
        (job,) = links.push_linked(self._store, [fed], extra=[ids])
        return job

    def cancel(self, terminate: bool = False) -> int:
        """Cancel the members not started (with `terminate`, running ones too) and, by
        that, the chord and every other dependent; the number of members cancelled."""
        return sum(job.cancel(terminate) for job in self.jobs)


def push_group(app: App, builders: Iterable[JobBuilder[Any]]) -> Group:
    """`app.group(...)`: every member in one transaction, under a new group id."""
    todo = list(builders)
    if not todo:
        raise ValueError("a group needs at least one job")
    for b in todo:
        if not callable(getattr(b, "new_job", None)):  # a JobBuilder (no import: no cycle)
            raise TypeError(f"app.group() takes job builders (task.schedule(...)): {b!r} "
                            "is not a job builder")
    gid = uuid.uuid4().hex
    store = app.store
    return Group(store, gid, links.push_linked(store, todo, group_id=gid))


def get_group(app: App, group_id: str) -> Group | None:
    store = app.store
    ids = store.group_members(group_id)
    return Group(store, group_id, [Job(store, i) for i in ids]) if ids else None


def then(job: Job[Any], builder: JobBuilder[Any]) -> Job[Any]:
    """`job.then(builder)`: a chain link receiving `job`'s result as first argument."""
    store = builder.app.store
    (parent,) = links.dep_ids(store, [job])
    fed = feeding(store, builder, [parent], many=False)
    (child,) = links.push_linked(store, [fed], extra=[[parent]])
    return child
