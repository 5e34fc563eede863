"""A worker's journal: what it started and finished since its last commit to the store.

Committing every result to SQLite before starting the next job costs a write
transaction per job, and a transaction costs far more than a no-op job. Instead a
worker appends one record per start and per result to a file of its own, a single
write() that survives kill -9 of the process (the data is in the kernel's page cache),
and commits results in batches. Whoever settles a dead worker's jobs reads its journal
first, so a result that was journaled is never re-run, and a job that was started is
charged one attempt, however the worker died.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
from pathlib import Path

from mpjobs.store.base import Completion

_HEADER = struct.Struct("<I")


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.ftruncate(self._fd, 0)

    def _append(self, record: tuple[object, ...]) -> None:
        data = pickle.dumps(record, 5)
        os.write(self._fd, _HEADER.pack(len(data)) + data)

    def started(self, job_id: int) -> None:
        self._append(("S", job_id))

    def completed(self, c: Completion) -> None:
        self._append(("C", c.job_id, c.status, c.exec_at, c.result, c.exc, c.error))

    def clear(self) -> None:
        """Everything journaled so far is committed to the store."""
        os.ftruncate(self._fd, 0)

    def close(self, remove: bool) -> None:
        os.close(self._fd)
        if remove:
            remove_journal(self.path)


def read_journal(path: Path) -> tuple[set[int], dict[int, Completion]]:
    """(started job ids, completions by job id) from a journal; a torn tail is ignored."""
    started: set[int] = set()
    done: dict[int, Completion] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return started, done
    pos = 0
    while pos + _HEADER.size <= len(data):
        (size,) = _HEADER.unpack_from(data, pos)
        chunk = data[pos + _HEADER.size : pos + _HEADER.size + size]
        if len(chunk) < size:
            break
        pos += _HEADER.size + size
        try:
            rec = pickle.loads(chunk)
        except Exception:
            break
        if rec[0] == "S":
            started.add(rec[1])
        elif rec[0] == "C":
            _, job_id, status, exec_at, result, exc, error = rec
            done[job_id] = Completion(job_id, status, exec_at, result, exc, error)
    return started, done


def remove_journal(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
