"""Running a pool from inside someone else's server: gunicorn hooks and the ASGI lifespan.

What both integrations share lives here: `start_pool`, which starts `app.start()` with
one extra precaution for a server process. A forked pool would otherwise inherit the
server's listening sockets and keep the port bound (accepting nothing) for as long as
it drains after the server stopped; the forked child swaps each listening socket for
/dev/null right after the fork. The exec path needs nothing: it closes every fd.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mpjobs.app import App
    from mpjobs.pool import Pool

__all__ = ["close_listening_sockets", "start_pool"]

_local = threading.local()


def _after_fork_in_child() -> None:
    # Thread-local: only the fork made by start_pool() in this very thread qualifies.
    if getattr(_local, "forking_pool", False):
        _local.forking_pool = False
        close_listening_sockets()


os.register_at_fork(after_in_child=_after_fork_in_child)


def start_pool(
    app: App, workers: int | None = None, queues: Sequence[str] | None = None, **opts: Any
) -> Pool:
    """`app.start(...)` for a server process: the pool keeps none of the server's sockets."""
    _local.forking_pool = True
    try:
        return app.start(workers=workers, queues=queues, **opts)
    finally:
        _local.forking_pool = False


def _open_fds() -> list[int]:
    for where in ("/proc/self/fd", "/dev/fd"):
        try:
            return sorted(int(name) for name in os.listdir(where))
        except (OSError, ValueError):
            continue
    return []


def close_listening_sockets() -> int:
    """Replace every listening socket of this process by /dev/null; return how many.

    The fd numbers stay taken, so a socket object of the server still lying around in
    this process can never close an unrelated file that reused its number.
    """
    closed = 0
    devnull = -1
    try:
        for fd in _open_fds():
            try:
                if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                    continue
                sock = socket.socket(fileno=fd)
            except OSError:
                continue
            try:
                listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            except OSError:
                listening = 0
            finally:
                sock.detach()
            if listening:
                if devnull < 0:
                    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                os.dup2(devnull, fd)
                closed += 1
    finally:
        if devnull >= 0:
            os.close(devnull)
    return closed
