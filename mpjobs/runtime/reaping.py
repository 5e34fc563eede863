"""A supervisor's children, and what happens when one of them dies.

Kept apart from the arbiter's loop (supervisor.py) because it is the part with rules:
how a death is described, whether it was a failed boot (respawn with a back-off) or a
lost worker (replace at once), and how a dead worker's jobs are settled. Settling goes
through the ledger, so a store that cannot be written now never stalls the loop.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from mpjobs.backoff import doubling
from mpjobs.coordination.locks import is_alive
from mpjobs.coordination.processes import BOOT_ERROR
from mpjobs.home import Home
from mpjobs.limits import Watch
from mpjobs.runtime.journal import read_journal, remove_journal
from mpjobs.runtime.ledger import Ledger

if TYPE_CHECKING:
    from mpjobs.store.backend import Backend

BOOT_GRACE = 1.0  # a worker crashing outside a job sooner than this after its fork loops
BACKOFF = (0.5, 30.0)  # seconds before a failed slot is forked again: doubling, capped


@dataclass
class Child:
    pid: int
    kind: str  # "worker" | "coordinator"
    slot: int
    token: str
    born: float
    retiring: bool = False
    booted: bool = False  # a worker says so over the report pipe once it can serve
    kill: tuple[int | None, str, str] | None = None  # (job to settle, status, reason)
    watches: dict[int, Watch] = field(default_factory=dict)  # limited jobs running, by id
    proc: psutil.Process | None = field(default=None, repr=False)


def how_it_died(child: Child, code: int) -> str:
    """'exited with code 7', 'was killed by SIGKILL (by someone else, ...)'."""
    how = f"exited with code {code}" if code >= 0 else f"was killed by {signal.Signals(-code).name}"
    if code == -signal.SIGKILL and child.kill is None:
        how += " (by someone else, or the kernel's OOM killer)"
    return how


def failed_boot(child: Child, code: int, in_job: bool) -> bool:
    """Did the child fail to start (respawn with a back-off), or was it lost (at once)?

    A kill from outside is never a failed boot. A worker that said it booted and then
    died inside a job (its journal shows a job begun, not finished: `os._exit()` in the
    job, a segfault in C code) is a lost worker. One that booted and died outside any
    job within BOOT_GRACE is crashing in a loop, and is treated like a failed boot.
    """
    if code <= 0:
        return False
    young = time.monotonic() - child.born < BOOT_GRACE
    if child.kind != "worker":
        return code == BOOT_ERROR or young
    return not child.booted or (young and not in_job)


def backoff(failures: int) -> float:
    """Seconds before the `failures`-th consecutive failed boot of a slot is retried."""
    return doubling(*BACKOFF, failures)


def bury(ledger: Ledger, backend: Backend, child: Child, how: str, stopping: bool) -> bool:
    """Settle a dead child's jobs and forget it; True if it died inside a job.

    Its journal is read first (finished results are kept, a started job is charged an
    attempt), and its kill note, if we killed it, decides a job killed at a limit.
    """
    home = backend.store.home
    with contextlib.suppress(OSError):
        # Only the local file: taking its free lock removes it. Never the backend's
        # liveness here, which on PostgreSQL asks the server: a supervisor must not
        # fail to bury a child because the store cannot be reached.
        is_alive(home.proc_lock(child.token))
    if child.kind != "worker":
        remove_journal(home.kill_note(child.token))  # notes are for settling workers
        ledger.bury(child.token, child.pid, how, None, False, settle=False)
        return False
    started, done = read_journal(home.journal(child.token))
    kill = child.kill
    target = None
    if kill is not None and kill[0] is not None and kill[1]:
        target = (kill[0], kill[1], kill[2])
    deliberate = kill is not None or stopping or child.retiring
    ledger.bury(child.token, child.pid, f"worker pid {child.pid} {how}", target, deliberate,
                settle=True)  # fmt: skip
    return bool(started - done.keys())


def idle_file(home: Home, supervisor_token: str) -> Path:
    """The lock whose holder is the one idle worker of a supervisor that listens."""
    return home.path / "procs" / f"{supervisor_token}.idle"


def forget_idle_files(home: Home, alive: Callable[[str], bool]) -> None:
    """Remove the idle-turn lock files of supervisors that are gone.

    Deleting a lock file is safe here although its holders may still be dying: the file
    is named by a dead supervisor's token, which nobody will ever use again.
    """
    for path in home.path.glob("procs/*.idle"):
        with contextlib.suppress(OSError):
            if not alive(path.stem):
                path.unlink()
