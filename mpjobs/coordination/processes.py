"""Which processes of a home are alive, and how to reach a worker's supervisor."""

from __future__ import annotations

import os
import signal
import uuid

from mpjobs.coordination.locks import is_alive
from mpjobs.store.sqlite import SqliteStore

# SIGUSR1 to a supervisor means "look in the store for jobs to kill".
POKE_SIGNAL = signal.SIGUSR1


def new_token(kind: str) -> str:
    """A process identity that, unlike a pid, is never reused."""
    return f"{kind[0]}{os.getpid()}-{uuid.uuid4().hex[:12]}"


def token_alive(store: SqliteStore, token: str) -> bool:
    return is_alive(store.home.proc_lock(token))


def poke_supervisor_of(store: SqliteStore, worker_token: str) -> bool:
    """Ask the supervisor of `worker_token` to act on a kill request now."""
    procs = {p.token: p for p in store.list_processes()}
    worker = procs.get(worker_token)
    sup = procs.get(worker.parent) if worker is not None and worker.parent else None
    if sup is None or not token_alive(store, sup.token):
        return False
    try:
        os.kill(sup.pid, POKE_SIGNAL)
    except ProcessLookupError:
        return False
    return True


def die_with_parent(sig: int, expected_parent: int) -> None:
    """Have the kernel send `sig` when our parent dies (Linux), and check it has not already.

    Without this a supervisor killed with -9 would leave its workers running jobs
    nobody watches. Elsewhere the worker's idle loop checks getppid() instead.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != expected_parent:
        os.kill(os.getpid(), sig)
