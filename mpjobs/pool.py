"""`app.start()`: a supervisor in a background process, and the handle to it.

The supervisor is forked when this process has a single thread, which is cheap and
keeps everything already imported. With other threads running a fork is unsafe (a
thread may hold a lock the child inherits forever), so the pool is started with
fork+exec of `mpjobs run` instead, which needs the app to be findable by import path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mpjobs.coordination.notify import Watcher, deadline_left
from mpjobs.coordination.processes import die_with_parent, new_token, token_alive
from mpjobs.errors import MpjobsError, WaitTimeout

if TYPE_CHECKING:
    from mpjobs.app import App


_MAIN_NAMES = ("__main__", "__mp_main__", "__mpjobs_main__")


def find_app_target(app: App) -> str | None:
    """'module:attr' under which `app` can be imported, else 'path/to/script.py:attr'.

    An importable module is preferred: loading a script by path runs it again in the
    new process, which, like multiprocessing's spawn, needs an `if __name__ == "__main__"`
    guard around whatever the script does when run.
    """
    script = None
    for name, module in list(sys.modules.items()):
        for attr, value in list(getattr(module, "__dict__", {}).items()):
            if value is not app or attr.startswith("_"):
                continue
            if name not in _MAIN_NAMES:
                return f"{name}:{attr}"
            path = getattr(module, "__file__", None)
            if path and script is None:
                script = f"{os.path.abspath(path)}:{attr}"
    return script


class Pool:
    """A running supervisor. Stopping it drains gracefully; leaving `with` stops it."""

    def __init__(
        self, app: App, pid: int, token: str, proc: subprocess.Popen[bytes] | None
    ) -> None:
        self.app = app
        self.pid = pid
        self.token = token
        self._proc = proc

    @classmethod
    def start(
        cls, app: App, workers: int | None = None, queues: Sequence[str] | None = None, **opts: Any
    ) -> Pool:
        token = new_token("supervisor")
        app.home  # noqa: B018 - create and vet the home before forking
        app.store  # noqa: B018
        if threading.active_count() == 1:
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    os.setpgid(0, 0)  # a terminal's Ctrl-C goes to the caller, not the pool
                    die_with_parent(signal.SIGTERM, os.getppid())
                    from mpjobs.supervisor import Supervisor

                    Supervisor(app, workers=workers, queues=queues, token=token, **opts).run()
                except BaseException:
                    import traceback

                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            return cls(app, pid, token, None)
        target = find_app_target(app)
        if target is None:
            raise MpjobsError(
                f"cannot start a pool from a process running {threading.active_count()} threads: "
                "forking it is unsafe, and the app is not a module-level name to re-import. "
                "Call app.start() before starting threads, or define the app at module level."
            )
        argv = [sys.executable, "-m", "mpjobs", "run", target, "--home", str(app.home.path),
                "--token", token, "--parent-pid", str(os.getpid())]  # fmt: skip
        if workers is not None:
            argv += ["--workers", str(workers)]
        if queues:
            argv += ["--queues", ",".join(queues)]
        for key, value in opts.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        proc = subprocess.Popen(argv, start_new_session=True)
        return cls(app, proc.pid, token, proc)

    # -- inspecting ------------------------------------------------------------------

    def workers(self) -> list[int]:
        """Pids of this pool's live job workers."""
        return [
            p.pid
            for p in self.app.store.list_processes()
            if p.parent == self.token
            and p.kind == "worker"
            and token_alive(self.app.store, p.token)
        ]

    def coordinator(self) -> int | None:
        for p in self.app.store.list_processes():
            if (
                p.parent == self.token
                and p.kind == "coordinator"
                and token_alive(self.app.store, p.token)
            ):
                return p.pid
        return None

    def wait_ready(self, timeout: float = 30.0, workers: int | None = None) -> Pool:
        """Block until the pool's workers have registered (handy in tests and scripts)."""
        deadline = time.monotonic() + timeout
        with Watcher(self.app.home.path) as watcher:
            while True:
                alive = self.workers()
                want = workers if workers is not None else 1
                if len(alive) >= want:
                    return self
                if not self.is_alive():
                    raise MpjobsError(f"pool supervisor {self.pid} exited before it was ready")
                left = deadline_left(deadline)
                if left == 0:
                    raise WaitTimeout(f"pool not ready after {timeout} s ({len(alive)} workers)")
                watcher.wait(0.1 if left is None else min(left, 0.1))

    def is_alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        return pid == 0

    # -- stopping --------------------------------------------------------------------

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the supervisor (graceful drain) and wait; SIGKILL it after `timeout` s."""
        if not self.is_alive():
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not self._wait(timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._wait(5.0)

    def _wait(self, timeout: float) -> bool:
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        fd = os.pidfd_open(self.pid) if hasattr(os, "pidfd_open") else -1
        try:
            while True:
                try:
                    pid, _ = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:
                    return True
                if pid != 0:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if fd >= 0:
                    import select

                    select.select([fd], [], [], left)
                else:
                    time.sleep(min(left, 0.01))
        finally:
            if fd >= 0:
                os.close(fd)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
