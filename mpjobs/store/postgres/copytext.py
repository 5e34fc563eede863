"""A Batch (store/batch.py) as COPY text: the shared columns formatted once per run.

psycopg's `write_row` formats every value of every row in Python, about 10 µs for a job
row of 16 columns: most of a bulk push. The jobs of a run differ only in id, payload
and perhaps exec_at, so each row here is those three, formatted by C-level methods
(`int.__str__`, `bytes.hex`, `float.__repr__`), and one preformatted tail.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from mpjobs.store.base import SCHEDULED
from mpjobs.store.batch import Batch

__all__ = ["COPY_RUN_COLS", "copy_text", "runs_text"]

# id, payload and exec_at first: what varies per row, then the run's shared columns.
COPY_RUN_COLS = (
    "id, payload, exec_at, name, func, func_pickle, queue, priority, max_attempts, "
    "retry_backoff, timeout, memory_limit, unique_key, schedule_id, status, created_at"
)
_CHUNK = 5000  # rows per write: bounded memory, few calls
_HEX = "\\\\x"  # a bytea in hex, its backslash escaped for COPY
_NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(value: Any) -> str:
    """One value in COPY's text format (NULL is \\N; bytea in hex, its backslash doubled)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\\\x" + bytes(value).hex()
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same double
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("PostgreSQL text cannot hold a NUL character")
        return value.translate(_ESCAPES)
    raise TypeError(f"no COPY text for {value!r}")


def runs_text(ids: Sequence[int], batch: Batch, now: float) -> Iterator[str]:
    """The rows of `batch` with these ids, in COPY_RUN_COLS order, in chunks of text."""
    k = 0
    for r in batch.runs:
        t = r.template
        shared = (t.name, t.func, t.func_pickle, t.queue, t.priority, t.max_attempts,
                  t.retry_backoff, t.timeout, t.memory_limit, None, t.schedule_id,
                  SCHEDULED, now)  # fmt: skip
        tail = "\t" + "\t".join(map(copy_text, shared)) + "\n"
        n = len(r.payloads)
        ats = [repr(float(t.exec_at))] * n if r.exec_ats is None else list(map(repr, r.exec_ats))
        for lo in range(0, n, _CHUNK):
            hi = min(n, lo + _CHUNK)
            yield "".join([
                f"{ids[k + i]}\t{'' if p is None else _HEX}{_NULL if p is None else p.hex()}"
                f"\t{ats[i]}{tail}"
                for i, p in zip(range(lo, hi), r.payloads[lo:hi], strict=True)
            ])  # fmt: skip
        k += n

