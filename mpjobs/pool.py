"""`app.start()`: a supervisor in a background process, and the handle to it.

The supervisor is forked when this process has a single thread, which is cheap and
keeps everything already imported. With other threads running a fork is unsafe (a
thread may hold a lock the child inherits forever), so the pool is started with
fork+exec of `mpjobs run` instead, which needs the app to be findable by import path.

Either way the options are checked in the caller, and `app.start()` returns once the
supervisor has registered in the store (a few ms for a fork), or raises with the reason
the supervisor gave, on a pipe, for dying before that.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mpjobs.coordination.listener import foreign_thread_count, foreign_thread_names, safe_to_fork
from mpjobs.coordination.notify import deadline_left
from mpjobs.coordination.processes import die_with_parent, new_token
from mpjobs.errors import MpjobsError, WaitTimeout
from mpjobs.observability import logs

if TYPE_CHECKING:
    from mpjobs.app import App


_MAIN_NAMES = ("__main__", "__mp_main__", "__mpjobs_main__")
START_TIMEOUT = 30.0  # how long app.start() waits for the supervisor to register


def fork_is_safe() -> bool:
    """Whether `app.start()` may fork this process: only when no other thread runs.

    The one place that decides it. The shared listener thread of `Job.wait()` holds no
    lock across a fork and is dropped in the child, so it does not count.
    """
    return safe_to_fork()


def report_failure(fd: int, exc: BaseException) -> None:
    """Tell the starter why this pool failed to start: one line on its report pipe."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    with contextlib.suppress(OSError):
        os.write(fd, text.encode(errors="backslashreplace")[:4000])


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
        self._status: int | None = None  # the forked child's exit code, once reaped

    @classmethod
    def start(
        cls, app: App, workers: int | None = None, queues: Sequence[str] | None = None, **opts: Any
    ) -> Pool:
        """Start the supervisor and return once it is up (not its workers: `wait_ready`).

        A bad option raises here, in the caller, as it would for `app.run()`; a supervisor
        that dies before it is up makes this raise MpjobsError with the child's reason.
        """
        from mpjobs.runtime.supervisor import Supervisor

        token = new_token("supervisor")
        app.home  # noqa: B018 - create and vet the home before forking
        app.store  # noqa: B018
        if fork_is_safe():
            # Supervisor() only checks and keeps its arguments, so building it here puts
            # every option error at the call site; the child runs this very object.
            sup = Supervisor(app, workers=workers, queues=queues, token=token, **opts)
            report_r, report_w = os.pipe2(os.O_CLOEXEC)
            pid = os.fork()
            if pid == 0:
                os.close(report_r)
                code = 0
                try:
                    os.setpgid(0, 0)  # a terminal's Ctrl-C goes to the caller, not the pool
                    die_with_parent(signal.SIGTERM, os.getppid())
                    sup.run()
                except BaseException as exc:
                    import traceback

                    traceback.print_exc()
                    report_failure(report_w, exc)
                    code = 1
                finally:
                    os._exit(code)
            os.close(report_w)
            pool = cls(app, pid, token, None)
        else:
            pool, report_r = cls._exec(app, token, workers, queues, opts)
        try:
            pool._await_supervisor(report_r)
        finally:
            os.close(report_r)
        return pool

    @classmethod
    def _exec(
        cls, app: App, token: str, workers: int | None, queues: Sequence[str] | None, opts: Any
    ) -> tuple[Pool, int]:
        """Start `mpjobs run` for `app`; return the pool and the read end of its report pipe."""
        from mpjobs.runtime.supervisor import Supervisor

        target = find_app_target(app)
        if target is None:
            names = ", ".join(sorted(foreign_thread_names()))
            raise MpjobsError(
                f"cannot start a pool from a process running {foreign_thread_count() + 1} threads "
                f"(other than this one: {names}): "
                "forking it is unsafe, and the app is not a module-level name to re-import. "
                "Call app.start() before starting threads, or define the app at module level."
            )
        parent = os.getpid()
        # Checked here as the child will build it, so a bad option raises in the caller.
        Supervisor(app, workers=workers, queues=queues, token=token, parent_pid=parent, **opts)
        try:
            options = json.dumps(opts)
        except TypeError as exc:
            raise TypeError(
                f"app.start() options {opts!r} must be plain values from a threaded process, "
                f"which starts the pool with exec: {exc}"
            ) from None
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        argv = [sys.executable, "-m", "mpjobs", "run", target, "--home", str(app.home.path),
                "--token", token, "--parent-pid", str(parent), "--report-fd", str(report_w),
                "--supervisor-options", options]  # fmt: skip
        if workers is not None:
            argv += ["--workers", str(workers)]
        if queues:
            argv += ["--queues", ",".join(queues)]
        try:
            env = {**os.environ, **logs.exec_env()}  # it logs as this process was told to
            proc = subprocess.Popen(argv, start_new_session=True, pass_fds=(report_w,), env=env)
        except BaseException:
            os.close(report_r)
            raise
        finally:
            os.close(report_w)
        return cls(app, proc.pid, token, proc), report_r

    def _await_supervisor(self, report_fd: int) -> None:
        """Wait, bounded, until the supervisor has registered in the store.

        It registers at the top of `Supervisor.run`, before it forks anyone, so until then
        the report pipe's only writer is the supervisor: it says why it failed there, and
        its end of file means it is gone. Workers are not waited for.

        The store is polled with a growing interval (1 ms, 2 ms, ... 50 ms) rather than
        watched: registering takes a few ms, and closing an inotify watcher can itself
        take 10-20 ms (the kernel waits for an RCU grace period), which would triple the
        cost of `app.start()`.
        """
        deadline = time.monotonic() + START_TIMEOUT
        reason = b""
        watch = [report_fd]
        pause = 0.001
        while True:
            if any(p.token == self.token for p in self.app.store.list_processes()):
                return
            if not self.is_alive():
                with contextlib.suppress(BlockingIOError):
                    os.set_blocking(report_fd, False)
                    reason += os.read(report_fd, 65536)
                why = reason.decode(errors="backslashreplace").strip() or self._exit_text()
                raise MpjobsError(f"pool supervisor {self.pid} exited before it was up: {why}")
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop(timeout=5.0)
                raise MpjobsError(
                    f"pool supervisor {self.pid} was not up after {START_TIMEOUT:g} s, "
                    "so it was stopped"
                )
            ready, _, _ = select.select(watch, [], [], min(left, pause))
            pause = min(pause * 2, 0.05)
            if ready:
                chunk = os.read(report_fd, 65536)
                reason += chunk
                if not chunk:
                    watch = []  # end of file: it exited, and the next turn reaps it

    def _exit_text(self) -> str:
        code = self._proc.returncode if self._proc is not None else self._status
        if code is None:
            return "no reason given"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    # -- inspecting ------------------------------------------------------------------

    def workers(self) -> list[int]:
        """Pids of this pool's live job workers."""
        return [
            p.pid
            for p in self.app.store.list_processes()
            if p.parent == self.token
            and p.kind == "worker"
            and self.app.backend.liveness.alive(p.token)
        ]

    def coordinator(self) -> int | None:
        for p in self.app.store.list_processes():
            if (
                p.parent == self.token
                and p.kind == "coordinator"
                and self.app.backend.liveness.alive(p.token)
            ):
                return p.pid
        return None

    def wait_ready(self, timeout: float = 30.0, workers: int | None = None) -> Pool:
        """Block until the pool's workers have registered (handy in tests and scripts)."""
        deadline = time.monotonic() + timeout
        with self.app.backend.doorbell.watcher() as watcher:
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
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid != 0:
            self._status = os.waitstatus_to_exitcode(status)
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
