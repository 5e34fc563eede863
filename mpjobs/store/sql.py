"""SQL that every query module shares: the job columns, the statuses as literals, and
the INSERT of jobs (one statement per run of alike jobs, the rest bound per row).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from mpjobs.store.base import RUNNING, SCHEDULED, TERMINAL, JobRecord, NewJob
from mpjobs.store.batch import Batch

JOB_COLS = ", ".join(f.name for f in JobRecord.__dataclass_fields__.values())
# The columns a plain claim returns: a job without control options has NULL in the
# rest (JobRecord's defaults), and five columns fewer per row is 5% of a no-op claim.
CONTROL_COLS = ("expires_at", "concurrency_key", "concurrency_limit", "rate_limit", "rate_period")
PLAIN_COLS = ", ".join(c for c in JOB_COLS.split(", ") if c not in CONTROL_COLS)
_INSERT_COLS = (
    "name, func, func_pickle, payload, queue, priority, exec_at, "
    "max_attempts, retry_backoff, timeout, memory_limit, unique_key, schedule_id, "
    "status, created_at"
)
INSERT_JOB = (
    f"INSERT INTO jobs ({_INSERT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'{SCHEDULED}',?)"
)
INSERT_JOB_ID = INSERT_JOB + " RETURNING id"
# A job with a control option (store/gated.py): its columns, and gated = 1.
GATE_COLS = "expires_at, concurrency_key, concurrency_limit, rate_limit, rate_period, gated"
INSERT_GATED = (
    f"INSERT INTO jobs ({_INSERT_COLS}, {GATE_COLS}) "
    f"VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'{SCHEDULED}',?,?,?,?,?,?,1)"
)
# Statuses are spelled into the SQL (from base's constants, once, here), not bound:
# SQLite uses a partial index (schema.py) only for a query whose WHERE names the same
# literal, and the claim and completion statements are the hot path.
LIVE_SQL = f"('{SCHEDULED}', '{RUNNING}')"
FINISHED_SQL = "(" + ", ".join(f"'{s}'" for s in sorted(TERMINAL)) + ")"



def job_params(j: NewJob, now: float) -> tuple[Any, ...]:
    return (
        j.name, j.func, j.func_pickle, j.payload, j.queue, j.priority, j.exec_at,
        j.max_attempts, j.retry_backoff, j.timeout, j.memory_limit, j.unique_key,
        j.schedule_id, now,
    )  # fmt: skip


def gate_params(j: NewJob) -> tuple[Any, ...]:
    return (j.expires_at, j.concurrency_key, j.concurrency_limit, j.rate_limit, j.rate_period)


def insert_of(j: NewJob, now: float) -> tuple[str, tuple[Any, ...]]:
    """The INSERT (without RETURNING) of one job and its parameters, gated or plain."""
    if j.gated:
        return INSERT_GATED, job_params(j, now) + gate_params(j)
    return INSERT_JOB, job_params(j, now)


# Rows per multi-row INSERT of a run: executemany steps a statement once per row, and
# that step (reset, bind, VDBE setup) costs more than the insert of a small row; one
# statement of RUN_ROWS rows is about twice the rate. At most 2 parameters per row plus
# the shared ones stay below SQLite's oldest limit of 999 bound parameters.
RUN_ROWS = 400
# The columns a run shares, bound once per statement: name, func, func_pickle, queue,
# priority, max_attempts, retry_backoff, timeout, memory_limit, schedule_id, created_at.
_RUN_COLS = (
    "name, func, func_pickle, queue, priority, max_attempts, retry_backoff, timeout, "
    "memory_limit, schedule_id, created_at"
)


@functools.lru_cache(maxsize=64)
def _insert_for(rows: int, varying_at: bool) -> str:
    """A multi-row INSERT of `rows` alike jobs: the shared columns bound once, then one
    payload per row (and one exec_at, when they differ), in push order.

    The text depends only on its two arguments, so it is prepared once per process and
    kept in the connection's statement cache, whatever the task or the time.
    """
    shared = ", ".join("?" * 11)
    if varying_at:
        cols, values = "column2, column1", ",".join(["(?,?)"] * rows)
    else:
        cols, values = "?, column1", ",".join(["(?)"] * rows)
    return (
        f"INSERT INTO jobs ({_RUN_COLS}, exec_at, payload, status) "
        f"SELECT {shared}, {cols}, '{SCHEDULED}' FROM (VALUES {values})"
    )


def run_inserts(
    t: NewJob, payloads: Sequence[bytes | None], exec_ats: Sequence[float] | None, now: float
) -> list[tuple[str, list[Any]]]:
    """The statements inserting a run of jobs like `t`, with these payloads (and due
    times; None: all due at t.exec_at), in push order."""
    shared: tuple[Any, ...] = (t.name, t.func, t.func_pickle, t.queue, t.priority,
                               t.max_attempts, t.retry_backoff, t.timeout, t.memory_limit,
                               t.schedule_id, now)  # fmt: skip
    if exec_ats is None:
        shared += (t.exec_at,)
        flat: Sequence[Any] = payloads
        per = 1
    else:
        flat = [None] * (2 * len(payloads))
        flat[0::2] = payloads
        flat[1::2] = exec_ats
        per = 2
    n = len(payloads)
    full, tail = divmod(n, RUN_ROWS)
    step = RUN_ROWS * per
    out: list[tuple[str, list[Any]]] = []
    if full:
        chunks = [shared + tuple(flat[i : i + step]) for i in range(0, full * step, step)]
        out.append((_insert_for(RUN_ROWS, per == 2), chunks))
    if tail:
        out.append((_insert_for(tail, per == 2), [shared + tuple(flat[full * step :])]))
    return out


def grouped_inserts(jobs: Sequence[NewJob], now: float) -> list[tuple[str, list[Any]]]:
    """Batch inserts binding only what differs per job, in push order.

    Binding 14 parameters per row costs more than SQLite's insert itself: a run of
    jobs that share every column but their arguments (same task, same options) is
    inserted by multi-row statements binding the shared columns once (`run_inserts`).
    A `Batch` (batch.py) arrives as runs already; plain NewJobs are split into runs by
    their batch keys. Jobs with control gates are bound per row, with their columns.
    """
    if isinstance(jobs, Batch):
        out: list[tuple[str, list[Any]]] = []
        for r in jobs.runs:
            out += run_inserts(r.template, r.payloads, r.exec_ats, now)
        return out
    runs: list[tuple[Any, list[NewJob]]] = []
    last: object = object()
    for j in jobs:
        key = j.batch_key if j.batch_key is not None else id(j)
        if key != last:
            runs.append((key, []))
            last = key
        runs[-1][1].append(j)
    out = []
    for _key, run in runs:
        j = run[0]
        if j.gated:  # a run shares its options: bound per row, with the control columns
            out.append((INSERT_GATED, [job_params(x, now) + gate_params(x) for x in run]))
            continue
        at = j.exec_at
        same_time = all(x.exec_at == at for x in run)
        exec_ats = None if same_time else [x.exec_at for x in run]
        out += run_inserts(j, [x.payload for x in run], exec_ats, now)
    return out


def queue_filter(queues: Sequence[str] | None) -> tuple[str, list[Any]]:
    if not queues:
        return "", []
    return f" AND queue IN ({','.join('?' * len(queues))})", list(queues)


def expired_rows(cond: str = "") -> str:
    """The ids of jobs that finished before ? (and match `cond`), for a purge, oldest
    first: read from jobs_finished (ordered by finished_at), a purge of nothing is one
    seek. The newest row is always kept, so a rowid (a job id) is never handed out twice.
    """
    return (
        f"SELECT id FROM jobs WHERE finished_at < ? AND status NOT IN {LIVE_SQL}{cond} "
        "AND id < (SELECT max(id) FROM jobs) ORDER BY finished_at"
    )
