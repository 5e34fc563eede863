"""Passing results along a chain or to a chord: the job calls `fed`, which calls yours.

A job made by `job.then(b)` or `group.then(b)` stores `fed` as its function and the
builder's function, arguments and the parents' ids as its argument. `fed` runs in the
worker like any job function: it reads the parents' results from the store (they all
succeeded, or this job would have been cancelled, not released) and calls the function
with them first. So neither the worker loop nor the executors know about workflows, and
a job's record keeps the builder's name and options (retries, time limits, queue).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mpjobs import serialization
from mpjobs.errors import MpjobsError
from mpjobs.home import Home
from mpjobs.store.backends import open_backend
from mpjobs.store.base import SUCCESS, Store

if TYPE_CHECKING:
    from mpjobs.app import JobBuilder

FEED = "mpjobs.workflows.feed:fed"


def fed(spec: tuple[Any, ...]) -> Any:
    """Call the builder's function with its parents' results as first argument."""
    home, url, ids, many, func, func_pickle, args, kwargs = spec
    store = open_backend(Home.resolve(home), url).store
    outcomes = store.outcomes_of(ids)
    bad = [(i, st) for i, st, _ in outcomes if st != SUCCESS]
    if len(outcomes) != len(ids) or bad:
        raise MpjobsError(f"a dependency has not succeeded: {bad or 'purged'}")
    values = [None if r is None else serialization.loads(r) for _, _, r in outcomes]
    fn = serialization.load_callable(func, func_pickle)
    return fn(values if many else values[0], *args, **kwargs)


def feeding(store: Store, builder: JobBuilder[Any], ids: list[int], many: bool) -> JobBuilder[Any]:
    """`builder` as a job that receives the results of `ids` of `store` (a list if `many`)."""
    spec = (str(store.home.path), store.url, ids, many, builder.func, builder.func_pickle,
            builder.args, builder.kwargs)  # fmt: skip
    fed_b = type(builder)(builder.app, FEED, None, builder.name, (spec,), {}, builder._options)
    fed_b._exec_at = builder._exec_at
    return fed_b
