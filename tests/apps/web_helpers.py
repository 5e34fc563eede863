"""Helpers for the real-server tests: start a server on a free loopback port, read the
leader's tick file, find our processes, and prove none is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A real server process (gunicorn or uvicorn) in its own session, logging to a file."""

    def __init__(self, argv: Sequence[str], home: Path, workdir: Path, env: dict[str, str]) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ticks = workdir / "ticks.log"
        self.log = workdir / "server.log"
        full_env = {
            **os.environ,
            "MPJOBS_HOME": str(home),
            "WEB_TICK_FILE": str(self.ticks),
            "WEB_BIND": f"127.0.0.1:{self.port}",
            **env,
        }
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *argv], cwd=workdir, env=full_env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def get(self, path: str) -> dict[str, object]:
        r = self.client.get(path)
        r.raise_for_status()
        data: dict[str, object] = r.json()
        return data

    def wait_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise AssertionError(f"server exited with {code}:\n{self.output()}")
            try:
                self.client.get("/pid", timeout=1.0)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    msg = f"server not up after {timeout}s:\n{self.output()}"
                    raise AssertionError(msg) from None
                time.sleep(0.05)  # bounded wait for a port we cannot be notified about

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def tree(self) -> list[psutil.Process]:
        """The server process and everything below it."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 45.0) -> int:
        """Signal the server and wait (bounded) for it to exit; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            msg = f"server did not stop within {timeout}s:\n{self.output()}"
            raise AssertionError(msg) from None

    def kill_all(self) -> None:
        """Last-resort cleanup: SIGKILL the whole tree and anything of our home."""
        procs = self.tree() + ours(self.home)
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(procs, timeout=5)
        self.client.close()


def ours(home: Path) -> list[psutil.Process]:
    """Live processes that mention the home in their command line or MPJOBS_HOME."""
    found = []
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.pid == me or p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(p.info["cmdline"] or ())
            if str(home) in cmdline or p.environ().get("MPJOBS_HOME") == str(home):
                found.append(p)
        except psutil.Error:
            continue
    return found


def ticks(path: Path) -> list[tuple[int, float]]:
    """(pid, time) of every complete tick line written so far."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines(keepends=True):
        if line.endswith("\n"):
            pid, ts = line.split()
            out.append((int(pid), float(ts)))
    return out


def wait_until(predicate, timeout: float, what: str, interval: float = 0.01):  # type: ignore[no-untyped-def]
    """Bounded wait for conditions outside the store (files, processes, HTTP)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def supervisors(app: object) -> list[dict[str, object]]:
    """Live supervisors of the app's home, as `mpjobs status --json` reports them."""
    from mpjobs.cli import status_data

    return [p for p in status_data(app)["processes"] if p["kind"] == "supervisor"]  # type: ignore[arg-type]


def coordinators(app: object) -> list[dict[str, object]]:
    from mpjobs.cli import status_data

    return [p for p in status_data(app)["processes"] if p["kind"] == "coordinator"]  # type: ignore[arg-type]


def measure_failover(tick_file: Path, timeout: float = 10.0) -> tuple[int, int, float]:
    """SIGKILL the process that ticks now; (old pid, new pid, seconds until the new one ticked)."""

    def settled():  # type: ignore[no-untyped-def]
        # past the supervisor's boot grace (1 s), a death counts as a crash, not a boot failure
        t = ticks(tick_file)
        return t and [x for x in t if x[0] == t[-1][0] and x[1] < time.time() - 1.2]

    old = wait_until(settled, 10, "a ticker that is past its boot")[0][0]
    os.kill(old, signal.SIGKILL)
    killed_at = time.time()

    def moved():  # type: ignore[no-untyped-def]
        return [t for t in ticks(tick_file) if t[0] != old and t[1] > killed_at]

    first = wait_until(moved, timeout, "ticking to move to another process")[0]
    return old, first[0], first[1] - killed_at


def assert_one_ticker_at_a_time(lines: list[tuple[int, float]]) -> list[int]:
    """Ticks form one run per process, never interleaved; the pids of the runs in order."""
    runs: list[int] = []
    for pid, _ in lines:
        if not runs or runs[-1] != pid:
            assert pid not in runs, f"process {pid} ticked again after another took over: {runs}"
            runs.append(pid)
    return runs


def assert_no_job_lost(app: object, ids: Sequence[str], expected: Sequence[object]) -> None:
    """After a graceful server stop: every pushed job exists and ended SUCCESS, or was left
    SCHEDULED for the next start, which then runs it; the results are `expected`."""
    import mpjobs

    assert isinstance(app, mpjobs.App)
    jobs = [app.get_job(str(i)) for i in ids]
    assert len(jobs) == len(expected) and all(j is not None for j in jobs), jobs
    done = [j for j in jobs if j is not None]
    statuses = {j.status for j in done}
    assert statuses <= {mpjobs.JobStatus.SUCCESS, mpjobs.JobStatus.SCHEDULED}, statuses
    if mpjobs.JobStatus.SCHEDULED in statuses:  # left for the next start: run them now
        with app.start(workers=2, graceful_timeout=5.0):
            for j in done:
                j.wait(timeout=30)
    assert [j.result() for j in done] == list(expected)
