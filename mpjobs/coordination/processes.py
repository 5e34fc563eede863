"""Which processes of a home are alive, and how to reach a worker's supervisor."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable
from typing import Any

from mpjobs.store.backend import Backend, Held, Liveness

BOOT_ERROR = 3  # exit code of a child that could not start: its supervisor backs off

# SIGUSR1 to a supervisor means "look in the store for jobs to kill".
POKE_SIGNAL = signal.SIGUSR1


def new_token(kind: str) -> str:
    """A process identity that, unlike a pid, is never reused."""
    return f"{kind[0]}{os.getpid()}-{uuid.uuid4().hex[:12]}"


def poke_supervisor_of(backend: Backend, worker_token: str) -> bool:
    """Ask the supervisor of `worker_token` to act on a kill request now."""
    procs = {p.token: p for p in backend.store.list_processes()}
    worker = procs.get(worker_token)
    sup = procs.get(worker.parent) if worker is not None and worker.parent else None
    if sup is None or not backend.liveness.alive(sup.token):
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


def boot_child(
    on_term: Callable[[int, Any], None],
    parent_pid: int,
    death_signal: int,
    liveness: Liveness,
    token: str,
) -> tuple[int, Held]:
    """The common start of a supervisor's forked child (worker or coordinator).

    It dies with its parent, leaves Ctrl-C and SIGHUP to the supervisor, turns signals
    into a readable fd for its select() loop, and takes its liveness lock, which it
    holds for life. Returns (the signal fd, the liveness lock).
    """
    die_with_parent(death_signal, parent_pid)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    return wake_r, liveness.hold(token)
