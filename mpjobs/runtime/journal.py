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
import errno
import json
import os
import pickle
import struct
from pathlib import Path

from mpjobs.files import write_json_atomic
from mpjobs.store.base import SUCCESS, Completion

_HEADER = struct.Struct("<IBq")  # payload length, kind, job id
_STARTED, _DONE_NONE, _DONE, _NOT_BEGUN = 1, 2, 3, 4


class Journal:
    """Append-only records of one worker, and whether they are all committed yet.

    `dirty` is what tells a worker's exit whether the file may go: it is set by every
    record and cleared only by `clear()`, which the worker calls once the store has
    the results. A journal removed while dirty would lose finished results, and the
    settler would run those jobs again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.ftruncate(self._fd, 0)
        self._size = 0
        self.dirty = False
        self.open_start: int | None = None  # journaled as started, no outcome yet

    def started(self, job_id: int) -> None:
        self._append(_HEADER.pack(0, _STARTED, job_id))
        self.open_start = job_id

    def not_begun(self, job_id: int) -> None:
        """Take back a start: the worker is leaving without having begun that job.

        Starts are journaled before the worker's last look at the job (so a
        terminate-cancel is never missed); if the worker's loop fails in between, this
        record lets the settler give the job back without charging an attempt.
        """
        self._append(_HEADER.pack(0, _NOT_BEGUN, job_id))
        self.open_start = None

    def completed(self, c: Completion, next_id: int | None = None) -> None:
        """Journal a result, and with `next_id` the start of the next job in the same write."""
        if c.status == SUCCESS and c.result is None and c.schedule_id is None:
            data = _HEADER.pack(0, _DONE_NONE, c.job_id)
        else:
            body = pickle.dumps((c.status, c.exec_at, c.result, c.exc, c.error,
                                 c.refund_attempt, c.schedule_id), 5)  # fmt: skip
            data = _HEADER.pack(len(body), _DONE, c.job_id) + body
        if next_id is not None:
            data += _HEADER.pack(0, _STARTED, next_id)
        self._append(data)
        self.open_start = next_id

    def _append(self, data: bytes) -> None:
        """One write(), all or nothing: a short write (a full disk) is cut off again.

        A torn record followed by whole ones would make the reader misparse them, so a
        write the kernel took only in part is truncated away and reported as ENOSPC;
        the worker then retries the whole record.
        """
        self.dirty = True
        try:
            n = os.write(self._fd, data)
        except OSError:
            os.ftruncate(self._fd, self._size)
            raise
        if n != len(data):
            os.ftruncate(self._fd, self._size)
            raise OSError(errno.ENOSPC, f"short write to {self.path} ({n} of {len(data)} bytes)")
        self._size += n

    def clear(self) -> None:
        """Everything journaled so far is committed to the store."""
        os.ftruncate(self._fd, 0)
        self._size = 0
        self.dirty = False
        self.open_start = None

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
        size, kind, job_id = _HEADER.unpack_from(data, pos)
        body = data[pos + _HEADER.size : pos + _HEADER.size + size]
        if len(body) < size:
            break
        pos += _HEADER.size + size
        if kind == _STARTED:
            started.add(job_id)
        elif kind == _NOT_BEGUN:
            started.discard(job_id)
        elif kind == _DONE_NONE:
            done[job_id] = Completion(job_id, SUCCESS)
        elif kind == _DONE:
            try:
                st, exec_at, result, exc, error, refund, sid = pickle.loads(body)
            except Exception:
                break
            done[job_id] = Completion(job_id, st, exec_at, result, exc, error, refund, sid)
        else:
            break
    return started, done


def remove_journal(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def write_kill_note(path: Path, target: tuple[int, str, str] | None, deliberate: bool) -> None:
    """Say why a worker is about to be killed, before the kill, atomically.

    Two processes may settle a dead worker (its supervisor when it reaps it, the leader
    when its sweep finds the owner dead), and only the supervisor knows why it killed
    it. The note, next to the journal and never touched by the worker, makes whoever
    settles first decide as the supervisor would: TIMEOUT, not "worker lost".
    """
    write_json_atomic(path, {"target": target, "deliberate": deliberate})


def read_kill_note(path: Path) -> tuple[tuple[int, str, str] | None, bool]:
    """(target, deliberate) from a kill note; (None, False) when there is none."""
    try:
        with open(path) as f:
            note = json.load(f)
        raw = note.get("target")
        target = (int(raw[0]), str(raw[1]), str(raw[2])) if raw else None
        return target, bool(note.get("deliberate"))
    except (OSError, ValueError, TypeError, LookupError, AttributeError):
        return None, False  # no note, or not one we wrote: settle as if there were none
