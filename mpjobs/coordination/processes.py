"""Which processes of a home are alive, and how to reach a worker's supervisor."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable
from typing import Any

from mpjobs.store.backend import Backend, Held, Liveness

log = logging.getLogger("mpjobs.supervisor")

BOOT_ERROR = 3  # exit code of a child that could not start: its supervisor backs off

# SIGUSR1 to a supervisor means "look in the store for jobs to kill".
POKE_SIGNAL = signal.SIGUSR1


def new_token(kind: str) -> str:
    """A process identity that, unlike a pid, is never reused."""
    return f"{kind[0]}{os.getpid()}-{uuid.uuid4().hex[:12]}"


@functools.cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return socket.gethostname()


def host_info(**info: Any) -> str:
    """A process row's info: `info`, plus the host it runs on.

    A pid means something only on its own kernel: with a store shared by hosts (on
    PostgreSQL), `mpjobs status` reads a process's memory, and a cancel signals its
    supervisor, only where the row's kernel (boot id) is this one.
    """
    return json.dumps({**info, "host": socket.gethostname(), "boot": _boot_id()})


def on_this_host(info: str) -> bool:
    """Whether the process a row describes runs on this kernel (see `host_info`)."""
    try:
        boot = json.loads(info or "{}").get("boot")
    except (ValueError, AttributeError):
        return True
    return boot is None or boot == _boot_id()


def poke_supervisor_of(backend: Backend, worker_token: str) -> bool:
    """Ask the supervisor of `worker_token` to act on a kill request now.

    Only a supervisor on this host can be signalled; one elsewhere finds the request
    in the store on its next look (about once a second).
    """
    procs = {p.token: p for p in backend.store.list_processes()}
    worker = procs.get(worker_token)
    sup = procs.get(worker.parent) if worker is not None and worker.parent else None
    if sup is None or not on_this_host(sup.info) or not backend.liveness.alive(sup.token):
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
    held = liveness.hold(token)
    held.watch(stop_on_lost_session)
    return wake_r, held


def stop_on_lost_session(why: str) -> None:
    """A child whose liveness was lost (its host cut off from the store) stops at once.

    Others now count it as dead and recover its jobs, so going on would run them twice:
    it kills its job's whole process tree and itself, and its supervisor, which sees a
    killed child, settles its journal (a late result is refused by the store) and
    replaces it.
    """
    log.error(
        "process %d lost its liveness in the store (%s): killing its process tree so its "
        "jobs cannot run twice; its supervisor replaces it", os.getpid(), why,
    )  # fmt: skip
    import psutil

    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    os.kill(os.getpid(), signal.SIGKILL)
