"""Leader election: whoever holds the flock on `leader.lock` leads, while it shows signs of life.

The kernel releases the lock the instant its holder dies, and a candidate blocked in
flock() is woken at that instant, so failover after a death needs no lease and no poll
period, and two leaders can never overlap. But a leader that is stopped (SIGSTOP, Ctrl-Z,
a debugger) or stuck keeps its lock, so it also beats: it rewrites `leader.beat` a few
times a second. A leader whose beat is older than the bound (`leader_timeout()`, default
10 s, gunicorn's worker timeout is the model) has given no sign of life; a candidate that
finds one, or the leader's own supervisor, checks it is still the same process and
SIGKILLs it. That frees the lock only once the frozen process is gone, so the replacement
never overlaps it. `leader.json` only tells others who leads; it is written atomically
and always verified against the leader's liveness lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from mpjobs.coordination.locks import FileLock, is_alive
from mpjobs.files import write_json_atomic
from mpjobs.home import Home
from mpjobs.scheduling.durations import duration_from_env

log = logging.getLogger("mpjobs.leader")

DEFAULT_TIMEOUT = 10.0
TIMEOUT_ENV = "MPJOBS_LEADER_TIMEOUT"
BEAT_EVERY = 0.5  # at most; a short bound beats more often (five beats per bound)
CHECK_EVERY = 1.0  # how often a candidate looks at the beat, at most (four looks per bound)


def leader_timeout() -> float:
    """The bound, in seconds, on a leader's silence before it is made to give way.

    `MPJOBS_LEADER_TIMEOUT` (seconds, or a duration such as "30s") overrides the default.
    Every process of a home must agree on it, so it is an environment setting rather
    than an option of one pool.
    """
    return duration_from_env(TIMEOUT_ENV, DEFAULT_TIMEOUT, 0)


def beat_path(home: Home) -> Path:
    return home.path / "leader.beat"


def _start_time(pid: int) -> float | None:
    """When `pid` started, which tells it from a later process that reuses its pid."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


@dataclass(frozen=True)
class Beat:
    """One sign of life: who wrote it (token, pid, the pid's start time) and when.

    `at` is time.monotonic(), one clock for every process of the host (CLOCK_MONOTONIC),
    so a wall-clock step cannot make a live leader look frozen.
    """

    token: str
    pid: int
    started: float
    at: float

    @property
    def age(self) -> float:
        return time.monotonic() - self.at

    def encode(self) -> bytes:
        body = f"{self.at!r} {self.pid} {self.started!r} {self.token}"
        return f"{body} {zlib.crc32(body.encode()):08x}\n".encode()

    @classmethod
    def decode(cls, data: bytes) -> Beat | None:
        """The record, or None if it is absent, a leader's "resigned" mark, or torn.

        A reader may see a pwrite() half done; the checksum turns that into "cannot
        tell", never into a wrong age.
        """
        line = data.split(b"\n", 1)[0].decode(errors="replace")
        body, _, crc = line.rpartition(" ")
        try:
            if f"{zlib.crc32(body.encode()):08x}" != crc:
                return None
            at, pid, started, token = body.split(" ")
            beat = cls(token, int(pid), float(started), float(at))
        except ValueError:
            return None
        return beat if beat.pid > 0 else None


def read_beat(home: Home) -> Beat | None:
    try:
        fd = os.open(beat_path(home), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return Beat.decode(os.pread(fd, 512, 0))
    except OSError:
        return None
    finally:
        os.close(fd)


def _same_process(beat: Beat) -> bool:
    started = _start_time(beat.pid)
    return started is not None and abs(started - beat.started) < 0.01


def stale_leader(home: Home, timeout: float | None = None) -> Beat | None:
    """The leader, if it has shown no sign of life for `timeout` s (default: the bound).

    None when the beat is fresh, unreadable, or from a process that is gone (its
    liveness lock is free, or its pid now names another process): only a live,
    identified, silent leader is returned. A supervisor calls this to decide whether to
    kill its own coordinator; candidates call it while they wait for the lock.
    """
    timeout = leader_timeout() if timeout is None else timeout
    beat = read_beat(home)
    if beat is None or beat.age < timeout:
        return None
    if not is_alive(home.proc_lock(beat.token)) or not _same_process(beat):
        return None
    return beat


def kill_frozen(home: Home, beat: Beat, timeout: float) -> bool:
    """SIGKILL the silent leader `beat` names, if it still is that process and silent.

    SIGKILL ends a stopped process too, and the kernel frees its flocks only when it is
    gone, so whoever takes the lock next cannot overlap it. Through a pidfd the signal
    reaches the process that was checked, even if it died and its pid was reused since.
    """
    pidfd: int | None = None
    try:
        pidfd = os.pidfd_open(beat.pid)
    except ProcessLookupError:
        return False
    except (OSError, AttributeError):  # an old kernel, or not Linux: check, then kill
        pidfd = None
    try:
        again = stale_leader(home, timeout)
        if again is None or again.token != beat.token:
            return False
        log.error(
            "leader pid %d (%s) has shown no sign of life for %.1fs (bound %.1fs, %s); "
            "killing it so that another process can lead",
            beat.pid, beat.token, again.age, timeout, TIMEOUT_ENV,
        )  # fmt: skip
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            else:
                os.kill(beat.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


class Heartbeat:
    """The leader's sign of life: a thread that rewrites `leader.beat` while all is well.

    It beats from a thread of its own, not from the leader's loop, so a leader whose loop
    waits on the store (another process holds the write lock; those waits are bounded by
    the store) is not taken for frozen: replacing it would gain nothing, its successor
    would wait on the same lock. `healthy()` decides: it returns why the leader should
    stay silent (a lifecycle tick past its bound, a loop that stopped turning), or None.
    A stopped process runs no thread, so SIGSTOP silences it whatever `healthy` says.
    """

    def __init__(self, home: Home, token: str, interval: float) -> None:
        self.home = home
        self.token = token
        self.interval = interval
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._silent: str | None = None
        self.started = _start_time(os.getpid()) or 0.0

    def beat(self) -> None:
        if self._fd is None:
            self._fd = os.open(
                beat_path(self.home), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        record = Beat(self.token, os.getpid(), self.started, time.monotonic())
        os.pwrite(self._fd, record.encode(), 0)

    def start(self, healthy: Callable[[], str | None]) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(healthy,), name="mpjobs-leader-heartbeat", daemon=True
        )
        self._thread.start()

    def _run(self, healthy: Callable[[], str | None]) -> None:
        while not self._stop.wait(self.interval):
            try:
                why = healthy()
            except Exception:  # a bug of ours: stay silent rather than vouch blindly
                log.exception("leader: its health check failed")
                why = "its health check failed"
            if why is None:
                try:
                    self.beat()
                except OSError as exc:  # a full disk: the leader still leads
                    log.error("leader: cannot write its heartbeat: %s", exc)
            elif why != self._silent:
                log.error("leader: withholding its heartbeat: %s", why)
            self._silent = why

    def stop(self) -> None:
        """Stop beating and mark the file "resigned", so nobody kills a leader that left."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.pwrite(self._fd, Beat("-", 0, 0.0, 0.0).encode(), 0)
            os.close(self._fd)
            self._fd = None


class Leadership:
    """One candidate's side of the election on `leader.lock` (the SQLite backend's)."""

    def __init__(self, home: Home, token: str, timeout: float | None = None) -> None:
        self.home = home
        self.token = token
        self.lock = FileLock(home.leader_lock)
        self.timeout = leader_timeout() if timeout is None else timeout
        self.heartbeat = Heartbeat(home, token, min(BEAT_EVERY, self.timeout / 5))

    def campaign(self) -> None:
        """Block until this process leads; meanwhile make a silent leader give way.

        The wait is a plain blocking flock(), so the kernel hands over the lock the
        instant its holder dies or is killed. Beside it a watcher thread looks at the
        leader's beat every `CHECK_EVERY` s (a quarter of the bound, when that is
        shorter) and kills a frozen leader; a thread, not a signal that breaks the
        flock(), so no exception can land between taking the lock and knowing it.
        Interrupt the wait with a signal handler that raises.
        """
        done = threading.Event()
        watcher = threading.Thread(
            target=self._watch, args=(done,), name="mpjobs-leader-watch", daemon=True
        )
        watcher.start()
        try:
            self.lock.acquire(blocking=True)
        finally:
            done.set()
            watcher.join(5.0)
        # Beat before anything else, so no candidate judges us by our predecessor's beat.
        try:
            self.heartbeat.beat()
        except OSError as exc:  # a full disk: lead anyway; the beat thread retries
            log.error("leader: cannot write its heartbeat: %s", exc)
        info = {"token": self.token, "pid": os.getpid(), "since": time.time(),
                "started": self.heartbeat.started}  # fmt: skip
        write_json_atomic(self.home.leader_info, info)

    def start_heartbeat(self, healthy: Callable[[], str | None]) -> None:
        """Beat from a thread while `healthy()` returns None (see Heartbeat)."""
        self.heartbeat.start(healthy)

    def _watch(self, done: threading.Event) -> None:
        every = min(CHECK_EVERY, self.timeout / 4)
        while not done.wait(every):
            try:
                frozen = stale_leader(self.home, self.timeout)
                if frozen is not None and frozen.pid != os.getpid():
                    kill_frozen(self.home, frozen, self.timeout)
            except Exception:  # keep watching: a bad look must not end the campaign's eyes
                log.exception("candidate: cannot check the leader's heartbeat")

    def watch(self, on_lost: Callable[[str], None]) -> None:
        """The flock cannot be lost while this process lives: nothing to watch."""

    def resign(self) -> None:
        if self.lock.held:
            self.heartbeat.stop()
        self.lock.release()


def current_leader(home: Home) -> dict[str, Any] | None:
    """Who leads now, or None; a stale leader.json of a dead process does not count."""
    try:
        with open(home.leader_info) as f:
            info: dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        return None
    token = info.get("token")
    if not isinstance(token, str) or not is_alive(home.proc_lock(token)):
        return None
    return info
