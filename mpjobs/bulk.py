"""Bulk pushes: `push_many` of plain builders and `task.map`, as runs of alike jobs.

A bulk push of 100,000 jobs of one task is one template row and 100,000 pickled
argument tuples (store/batch.py), inserted by multi-row statements that bind the shared
columns once (store/sql.py). What made it slow was per-job Python: a NewJob of 13
columns per job, a payload check per job, ten fields compared per job to group them.
Here each job costs its pickle, a few identity tests and its handle.

Jobs with a unique_key, control gates (expires, rate_limit, concurrency_key) or
depends_on take the general path (a NewJob each, checked one by one): `batch_of`
returns None for a batch holding any.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any

from mpjobs import serialization
from mpjobs.errors import ConfigError
from mpjobs.job import Job
from mpjobs.options import (
    JOB_OPTIONS,
    TIMING_OPTIONS,
    WORKFLOW_OPTIONS,
    Shape,
    check_options,
    check_timing,
)
from mpjobs.store.base import NewJob, Store
from mpjobs.store.batch import Batch, Run

if TYPE_CHECKING:
    from mpjobs.tasks import JobBuilder, Task

__all__ = ["batch_of", "gc_paused", "handles", "pickled", "push_map", "pusher"]

_PROTOCOL = 5  # serialization.dumps' protocol: the same bytes either way


def pickled(values: Sequence[object | None], what: Callable[[int], str]) -> list[bytes | None]:
    """`serialization.dumps` of each value (None stays None), at C-pickler speed.

    `dumps` scans each pickle for `__main__` (a reference a worker cannot resolve, to be
    pickled by value instead); here the scan is done once over all of them, and only on
    a hit are the pickles that hold it redone one by one. A value that cannot be pickled
    raises SerializationError naming `what(i)`, before anything is written.
    """
    dumps = pickle.dumps
    out: list[bytes | None] = []
    add = out.append
    for i, v in enumerate(values):
        if v is None:
            add(None)
            continue
        try:
            add(dumps(v, _PROTOCOL))
        except Exception:
            add(serialization.dumps(v, what(i)))  # cloudpickle, or the error naming i
    if b"__main__" in b"".join(p for p in out if p is not None):
        for i, p in enumerate(out):
            if p is not None and b"__main__" in p:
                out[i] = serialization.dumps(values[i], what(i))
    return out


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a bulk push allocates its handles and tuples.

    A push of 100,000 jobs makes hundreds of thousands of objects that all live until
    it returns; each allocation-triggered collection walks all of them, and those walks
    were a third of the push. A push makes no cycles, so nothing is left for later but
    what other threads make meanwhile (collected once it is re-enabled). A collector
    already off (the caller's choice) stays off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def pusher(store: Store, connection: Any) -> Callable[[Sequence[NewJob], float], Any]:
    """`store.push`, or with a caller's psycopg `connection` the push inside the caller's
    transaction (PostgreSQL only: `push_in`); see docs/multihost.md."""
    if connection is None:
        return store.push
    push_in = getattr(store, "push_in", None)
    if push_in is None:
        raise ConfigError(
            "a push with connection=... needs a PostgreSQL store; with SQLite "
            "every push is its own transaction"
        )
    return functools.partial(push_in, connection)


def handles(store: Store, pushed: list[tuple[int, bool]]) -> list[Job[Any]]:
    """A handle per pushed job, in order (ids become the handles' strings in C)."""
    return list(map(Job, repeat(store), map(str, [i for i, _ in pushed])))


def _template(shape: Shape, func: str | None, func_pickle: bytes | None, due: float) -> NewJob:
    return NewJob(shape.name, func, func_pickle, None, shape.queue, shape.priority, due,
                  shape.max_attempts, shape.retry_backoff, shape.timeout, shape.memory_limit,
                  None)  # fmt: skip


def batch_of(builders: Sequence[JobBuilder[Any]], now: float) -> Batch | None:
    """The builders as runs of alike jobs, in order; None if one is not plain.

    Consecutive builders of one task with the same options (the same Shape object, as
    `task.schedule` hands out) make one run; their due times go per job only when they
    differ.
    """
    runs: list[Run] = []
    values: list[object | None] = []
    ats: list[float] = []
    starts: list[int] = []  # where each run's jobs begin in `values`
    last_shape: Shape | None = None
    last_func: object = None
    last_pickle: object = None
    for b in builders:
        shape = b._shape or b._shape_of()
        if shape.unique_key is not None or shape.gates is not None:
            return None
        func, func_pickle = b.func, b.func_pickle
        if shape is not last_shape or func is not last_func or func_pickle is not last_pickle:
            if not (shape == last_shape and func == last_func and func_pickle == last_pickle):
                runs.append(_run_head(shape, func, func_pickle))
                starts.append(len(values))
            last_shape, last_func, last_pickle = shape, func, func_pickle
        when = b._exec_at  # b.due(now), inlined: this loop is the push's Python cost
        if when is None:
            o = b._options
            when = o["at"] if "at" in o else now + o["delay"] if "delay" in o else now
        ats.append(when)
        args, kwargs, control = b.args, b.kwargs, shape.control
        if control is not None:  # a plain tuple: it unpickles faster than the dataclass
            values.append((args, kwargs, control.astuple()))
        else:
            values.append((args, kwargs) if args or kwargs else None)
    if not runs:
        return Batch([])
    payloads = pickled(values, lambda i: f"arguments of {builders[i].name} (job {i})")
    starts.append(len(values))
    for k, r in enumerate(runs):
        lo, hi = starts[k], starts[k + 1]
        r.payloads = payloads[lo:hi]
        first = ats[lo]
        r.template.exec_at = first
        if any(a != first for a in ats[lo:hi]):
            r.exec_ats = ats[lo:hi]
    return Batch(runs)


def _run_head(shape: Shape, func: str | None, func_pickle: bytes | None) -> Run:
    """An empty run (payloads and due times are filled in once all are pickled)."""
    return Run(_template(shape, func, func_pickle, 0.0), [])


def push_map(
    task: Task[Any, Any],
    items: Iterable[tuple[Any, ...]],
    kwargs: Mapping[str, Any] | None,
    options: dict[str, Any],
    connection: Any = None,
) -> list[Job[Any]]:
    """`task.map`: one run of jobs of `task`, one per tuple of positional arguments."""
    timing = check_timing(options) if not TIMING_OPTIONS.isdisjoint(options) else {}
    rest = {k: v for k, v in options.items() if k not in TIMING_OPTIONS}
    check_options(rest, JOB_OPTIONS | WORKFLOW_OPTIONS)
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"{task.name}.map: kwargs must be a mapping, got {kwargs!r}")
    kw = dict(kwargs) if kwargs else {}
    arglist = items if isinstance(items, list) else list(items)
    for i, a in enumerate(arglist):
        if not isinstance(a, tuple):
            raise TypeError(
                f"{task.name}.map: item {i} is {a!r}, not a tuple of positional arguments "
                "(for one argument x, give (x,))"
            )
    if not arglist:
        return []
    if rest:
        merged = {**task.options, **rest}
        shape = Shape.of(merged, task.name)
    else:
        merged = task.options
        shape = task._shape or Shape.of(merged, task.name)
    if shape.unique_key is not None or shape.gates is not None or "depends_on" in rest:
        return _map_general(task, arglist, kw, options, connection)
    path, func_pickle = task._ref or task.ref()
    control = shape.control
    store = task.app.store
    push = pusher(store, connection)
    with gc_paused():
        if control is not None:
            ctl = control.astuple()
            values: list[object | None] = [(a, kw, ctl) for a in arglist]
        elif kw:
            values = [(a, kw) for a in arglist]
        else:
            values = [(a, kw) if a else None for a in arglist]
        payloads = pickled(values, lambda i: f"arguments of {task.name} (item {i} of the map)")
        del values
        now = time.time()
        due = timing["at"] if "at" in timing else now + timing.get("delay", 0.0)
        batch = Batch([Run(_template(shape, path, func_pickle, due), payloads)])
        return handles(store, push(batch, now))


def _map_general(
    task: Task[Any, Any], arglist: list[tuple[Any, ...]], kw: dict[str, Any],
    options: dict[str, Any], connection: Any,
) -> list[Job[Any]]:  # fmt: skip
    """A map whose jobs are checked one by one (unique_key, gates, depends_on)."""
    if "unique_key" in options:
        raise ConfigError(
            f"{task.name}.map: unique_key= would give every job the same key (only the "
            "first would be pushed); push builders with a key each through app.push_many"
        )
    proto = task.schedule().options(**options)
    return task.app.push_many([proto.with_args(a, kw) for a in arglist], connection)
