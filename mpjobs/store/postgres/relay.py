"""The doorbell across hosts: one LISTEN per host, rung into the host's local doorbell.

Every commit sends one NOTIFY carrying its host's id (connection.py). On each host one
process, whichever holds the home's `pg-relay.lock`, listens on a dedicated connection
and, for every notification from another host, rings the home's local doorbell (the
same file SQLite homes ring), so idle workers and `Job.wait()` callers of that host
wake within milliseconds of a commit anywhere, with one server connection per host.

The relay is started by whoever first needs wake-ups (an idle worker's watcher, a
waiter's listener) and taken over by the next one if its process dies: every wait
here is capped at FALLBACK_POLL, and each wait retries the lock, so at worst a lost
notification or a dead relay costs one poll of about a second.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from typing import Any

import psycopg

from mpjobs.coordination.locks import FileLock
from mpjobs.home import Home
from mpjobs.store.postgres.connection import connect
from mpjobs.store.postgres.url import StoreUrl

log = logging.getLogger("mpjobs.store")

FALLBACK_POLL = 1.0  # the longest any PostgreSQL-backed wait sleeps without a wake-up
IDLE_AFTER = 10.0  # a relay nobody waited on for this long stops (and frees its connection)


class RelayThread(threading.Thread):
    """Marked so that `app.start()` may still fork: it holds none of our locks while it
    waits, its flock is closed in a child (locks.py) and its socket detached (connection.py)."""

    mpjobs_fork_safe = True


class Relay:
    """This process's side of the host's relay: `ensure()` takes it up if nobody has."""

    def __init__(self, home: Home, target: StoreUrl, channel: str, host_id: str) -> None:
        self.home = home
        self.target = target
        self.channel = channel
        self.host_id = host_id
        self._lock = FileLock(home.path / "pg-relay.lock")
        self._thread: RelayThread | None = None
        self._mutex = threading.Lock()
        self._pid = os.getpid()
        self._bell: int | None = None
        self._used = time.monotonic()
        self._stop = threading.Event()
        self._atexit = False

    def close(self) -> None:
        """Stop relaying: the thread ends within FALLBACK_POLL, freeing its connection
        and its lock (not waited for: nothing depends on the moment)."""
        self._stop.set()

    def cap(self, timeout: float | None) -> float | None:
        """How long a wait of this process may sleep: if this process relays, up to half
        of IDLE_AFTER (each wait is a use, so the relay does not idle out under a long
        wait); else FALLBACK_POLL at most, so that a relay that died elsewhere is taken
        over and nothing waits on it for long."""
        most = IDLE_AFTER / 2 if self.ensure() else FALLBACK_POLL
        return most if timeout is None else min(timeout, most)

    def ensure(self) -> bool:
        """Run the relay in this process unless some process of the host already does;
        True if this process runs it."""
        if self._pid != os.getpid():  # a forked child inherits no relay
            self._pid, self._thread, self._mutex = os.getpid(), None, threading.Lock()
            self._lock = FileLock(self._lock.path)
        self._used = time.monotonic()
        thread = self._thread
        if thread is not None and thread.is_alive():
            return True
        with self._mutex:
            if self._thread is not None and self._thread.is_alive():
                return True
            try:
                if not self._lock.acquire(blocking=False):
                    return False
            except OSError as exc:
                log.warning("cannot take %s: %s", self._lock.path, exc)
                return False
            self._stop.clear()
            if not self._atexit:
                atexit.register(self._stop.set)
                self._atexit = True
            self._thread = RelayThread(target=self._run, name="mpjobs-pg-relay", daemon=True)
            self._thread.start()
            return True

    def _ring(self) -> None:
        if self._bell is None:
            self._bell = os.open(
                self.home.write_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        os.pwrite(self._bell, b"\0", 0)

    def _idle(self) -> bool:
        return self._stop.is_set() or time.monotonic() - self._used > IDLE_AFTER

    def _run(self) -> None:
        try:
            self._relay()
        finally:
            self._lock.release()

    def _relay(self) -> None:
        """Ring the local doorbell for other hosts' commits, until idle for IDLE_AFTER s."""
        pid = os.getpid()
        failures = 0
        while os.getpid() == pid and not self._idle():
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = connect(self.target, "relay", search_path=False)
                conn.execute(f"LISTEN {self.channel}")
                if failures:
                    log.warning("store %s: the notification relay is back", self.target.redacted)
                    self._ring()  # notifications may have been missed meanwhile
                failures = 0
                while not self._idle():
                    for note in conn.notifies(timeout=FALLBACK_POLL):
                        if note.payload != self.host_id:
                            self._ring()
            except Exception as exc:
                if self._idle():
                    return  # closing (at exit the server may be going first): say nothing
                failures += 1
                if failures == 1:
                    log.warning("store %s: the notification relay lost its connection (%s); "
                                "reconnecting, waits poll every %.0fs meanwhile",
                                self.target.redacted, exc, FALLBACK_POLL)  # fmt: skip
                self._stop.wait(min(2.0, 0.1 * failures))
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
