"""Push-time checks of dependencies, and pushing jobs that have some.

What is checked here, before any write: each dependency is a Job of this very store
(home and store URL), or a job id. What is checked in the push transaction itself
(store/deps.py): that each dependency exists, and whether it has already ended. A cycle
cannot form: a dependency must already exist when its dependent is pushed, so every edge
points from an older job to a newer one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from mpjobs.errors import ConfigError
from mpjobs.job import Job
from mpjobs.store.base import Store

if TYPE_CHECKING:
    from mpjobs.app import JobBuilder

OPTION = "depends_on"


def check_depends_on(value: Any) -> None:
    """The early check of `.options(depends_on=...)`: a list of Jobs or job ids."""
    if isinstance(value, (str, bytes, Job)) or not isinstance(value, Iterable):
        raise TypeError(f"depends_on must be a list of Jobs or job ids, got {value!r}")
    for item in value:
        if not isinstance(item, (Job, int, str)) or isinstance(item, bool):
            raise TypeError(f"depends_on: {item!r} is not a Job or a job id")
        if isinstance(item, str) and not item.isdigit():
            raise ValueError(f"depends_on: {item!r} is not a job id")


def _same_store(a: Store, b: Store) -> bool:
    """One PostgreSQL store is shared by the homes of many hosts; SQLite is the home's."""
    return a.url == b.url and (a.url is not None or a.home.path == b.home.path)


def dep_ids(store: Store, deps: Iterable[Any]) -> list[int]:
    """The ids of `deps`; ConfigError for a Job of another home or store."""
    out: list[int] = []
    for d in deps:
        if isinstance(d, Job):
            if not _same_store(d._store, store):
                raise ConfigError(
                    f"cannot depend on job {d.id} of another home or store ({d._where()}); "
                    "a job can only wait for jobs of its own store"
                )
            out.append(int(d.id))
        else:
            out.append(int(d))
    return out


def deps_of(store: Store, builder: JobBuilder[Any]) -> list[int]:
    return dep_ids(store, builder.opt(OPTION) or ())


def has_deps(builders: Sequence[JobBuilder[Any]]) -> bool:
    return any(b.opt(OPTION) for b in builders)


def push_linked(
    store: Store,
    builders: Sequence[JobBuilder[Any]],
    extra: Sequence[Sequence[int]] | None = None,
    group_id: str | None = None,
    exec_at: float | None = None,
) -> list[Job[Any]]:
    """Push builders with their dependencies (and `extra` ones each) in one transaction."""
    if not builders:
        return []
    now = time.time()
    rows = [b.new_job(now, exec_at) for b in builders]
    deps = [deps_of(store, b) for b in builders]
    if extra is not None:
        deps = [d + list(e) for d, e in zip(deps, extra, strict=True)]
    return [Job(store, i) for i in store.push_linked(rows, deps, group_id, now)]


def link_lines(store: Store, job_id: int, most: int = 10) -> list[str]:
    """What `mpjobs jobs show` prints of a job's dependencies and dependents (none: [])."""
    parents, children = store.links(job_id)
    out: list[str] = []
    if parents:
        shown = ", ".join(f"{i} ({st})" for i, st, _ in store.outcomes_of(parents[:most]))
        more = f", ... and {len(parents) - most} more" if len(parents) > most else ""
        out.append(f"  depends on: {shown}{more}")
    if children:
        more = f", ... and {len(children) - most} more" if len(children) > most else ""
        out.append(f"  dependents: {', '.join(map(str, children[:most]))}{more}")
    return out
