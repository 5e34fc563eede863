"""SQL that every query module shares: the job columns, the statuses as literals, and
the INSERT of jobs (one statement per run of alike jobs, the rest bound per row).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

from mpjobs.store.base import RUNNING, SCHEDULED, TERMINAL, JobRecord, NewJob

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


def _literal(value: object) -> str:
    """An SQL literal for a value that is the same in every row of a batch."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str) and "\x00" not in value:
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    raise ValueError(f"no SQL literal for {value!r}")


@functools.lru_cache(maxsize=64)
def _insert_for(shape: tuple[Any, ...], now: float, exec_at: float | None) -> str:
    """An INSERT with every shared column as a literal; exec_at too when given."""
    name, func, func_pickle, queue, priority, max_attempts, backoff, timeout, memory, sid = shape
    values = (name, func, func_pickle, queue, priority, max_attempts, backoff, timeout, memory)
    consts = ", ".join(_literal(v) for v in (*values, sid, now))
    at = "?" if exec_at is None else _literal(exec_at)
    return (
        "INSERT INTO jobs (payload, exec_at, name, func, func_pickle, queue, priority, "
        "max_attempts, retry_backoff, timeout, memory_limit, schedule_id, created_at, status) "
        f"VALUES (?, {at}, {consts}, '{SCHEDULED}')"
    )


def grouped_inserts(jobs: Sequence[NewJob], now: float) -> list[tuple[str, list[Any]]]:
    """Batch inserts binding only what differs per job, in push order.

    Binding 14 parameters per row costs more than SQLite's insert itself; the columns
    that are the same for a whole run of jobs (same task, same options) become literals
    of a statement that is cached and reused, and so does exec_at when a run shares it.
    """
    runs: list[tuple[Any, list[NewJob]]] = []
    last: object = object()
    for j in jobs:
        key = j.batch_key if j.batch_key is not None else id(j)
        if key != last:
            runs.append((key, []))
            last = key
        runs[-1][1].append(j)
    out: list[tuple[str, list[Any]]] = []
    for _key, run in runs:
        j = run[0]
        if j.gated:  # a run shares its options: bound per row, with the control columns
            out.append((INSERT_GATED, [job_params(x, now) + gate_params(x) for x in run]))
            continue
        shape = (j.name, j.func, j.func_pickle, j.queue, j.priority, j.max_attempts,
                 j.retry_backoff, j.timeout, j.memory_limit, j.schedule_id)  # fmt: skip
        at = j.exec_at
        same_time = all(x.exec_at == at for x in run)
        try:
            sql = _insert_for(shape, now, at if same_time else None)
        except ValueError:
            out.append((INSERT_JOB, [job_params(x, now) for x in run]))
            continue
        if same_time:
            out.append((sql, [(x.payload,) for x in run]))
        else:
            out.append((sql, [(x.payload, x.exec_at) for x in run]))
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
