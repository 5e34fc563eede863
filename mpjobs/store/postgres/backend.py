"""The PostgreSQL backend: rows, liveness, leadership and doorbell for many hosts.

`PgBackend(home, url)` presents the pieces through the seam (store/backend.py):

- the store: the shared query modules over `PgConnector` (queries.py);
- liveness: each process holds a session advisory lock named by its token, plus the
  local flock of the SQLite backend, so that what is local (a supervisor's look at
  its children, the leader's heartbeat file) keeps working as on one host;
- leadership: the candidates wait in `pg_advisory_lock` on a dedicated session, and
  the winner bumps the epoch of the `leader` row, which fences every leader write;
- the doorbell: the local file doorbell, fed from other hosts by the relay.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mpjobs.backoff import Backoff
from mpjobs.coordination import leader, listener, notify
from mpjobs.coordination.locks import LivenessLock, is_alive
from mpjobs.errors import OwnerAlive, StoreError
from mpjobs.home import Home
from mpjobs.store import backend, base
from mpjobs.store.census import CensusQueries
from mpjobs.store.jobs import JobQueries
from mpjobs.store.listing import ListingQueries
from mpjobs.store.postgres.connection import UNAVAILABLE, PgConnector, advisory_key, dead_after
from mpjobs.store.postgres.queries import PgQueries
from mpjobs.store.postgres.relay import Relay
from mpjobs.store.postgres.schema import migrate
from mpjobs.store.postgres.sessions import SessionLock, SessionLost, is_free, ping_every
from mpjobs.store.postgres.url import StoreUrl, parse
from mpjobs.store.progress import ProgressQueries
from mpjobs.store.schedules import ProcessQueries, ScheduleQueries

log = logging.getLogger("mpjobs.store")

OWNER_WAIT = 2.0  # the longest a settlement waits for a dead owner's session to close
RELOCK_WINDOW = 3.0  # seconds a process with a lost session tries to take its lock again
RENEW_EVERY = 5.0  # a supervisor looks at its session this often, at most
RENEW_PING = 0.25  # and waits this long for the answer


def relock_window() -> float:
    """How long a process that lost its session tries to take its lock back."""
    return min(RELOCK_WINDOW, dead_after() / 5)


class PgStore(
    PgQueries, JobQueries, ProgressQueries, ListingQueries, CensusQueries, ScheduleQueries,
    ProcessQueries, base.Store,
):
    """A `Store` over the app's schema in a PostgreSQL database."""

    def _insert_many(self, conn: Any, jobs: Sequence[base.NewJob], now: float) -> list[int]:
        """Workflows' batch insert (store/deps.py): COPY, ids drawn in push order."""
        return self._copy(conn, jobs, now)

    def _owner_gone(self, conn: Any, owner: str) -> None:
        """Settle `owner` only while holding its lock, and drop its process row with it.

        The lock (a transaction lock, released at commit) keeps an owner that comes
        back (its session restored after a server restart) from taking it during the
        settlement; the row's removal in the same transaction tells it afterwards that
        its jobs were settled without it (PgHeld._regain). A process that was just
        reaped may still hold its lock for a few milliseconds, while the server closes
        its session: the lock is tried for up to the caller's lock budget (at most
        OWNER_WAIT), then OwnerAlive says to try again later, journal kept.
        """
        key = advisory_key(self.target.schema, owner)
        deadline = time.monotonic() + min(OWNER_WAIT, self._budget())
        pause = 0.001
        while not is_free(conn, key):
            if time.monotonic() >= deadline:
                raise OwnerAlive(f"process {owner} still holds its liveness in the store")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        conn.execute("DELETE FROM processes WHERE token = ?", (owner,))


def host_id(home: Home) -> str:
    """Names this host's commits in notifications, so its relay skips its own."""
    digest = hashlib.blake2b(str(home.path).encode(), digest_size=6).hexdigest()
    return f"{re.sub(r'[^A-Za-z0-9.-]', '', socket.gethostname())[:40]}-{digest}"


class PgHeld:
    """A process's liveness: its session lock, and the local flock beside it."""

    def __init__(self, local: LivenessLock, lock: SessionLock, store: PgConnector) -> None:
        self.local = local
        self.lock = lock
        self.store = store
        self.token = lock.name
        self._next_renew = 0.0

    def release(self) -> None:
        self.lock.release()
        self.local.release()

    def watch(self, on_lost: Callable[[str], None]) -> None:
        """Call `on_lost(why)` if the session is gone for good (see `_regain`)."""

        def lost(why: SessionLost) -> None:
            if not why.silent and self._regain(str(why)):
                self.watch(on_lost)
            else:
                on_lost(str(why))

        self.lock.watch(lost)

    def renew(self) -> bool:
        """For a process without a watcher (a supervisor): True if it had to take its
        lock again, so it can register itself again.

        The supervisor calls this from its loop, which must not stall: the check is
        bounded by RENEW_PING, and a lost lock is sought again at most every RENEW_EVERY.
        """
        now = time.monotonic()
        if now < self._next_renew:
            return False
        self._next_renew = now + RENEW_EVERY
        try:
            self.lock.ping(RENEW_PING)
            return False
        except SessionLost as exc:
            # A supervisor owns no jobs: a settlement meanwhile only dropped its row,
            # which the caller writes again.
            return not exc.silent and self._regain(str(exc), RENEW_PING, settled_ok=True)

    def _regain(self, why: str, window: float | None = None, settled_ok: bool = False) -> bool:
        """Take the lock again on a new session (a server restart), within RELOCK_WINDOW.

        True only if nobody settled this process meanwhile: a settlement removes its
        process row in the same transaction (PgStore._owner_gone), so a row still there
        once the lock is ours again means its jobs are still its own.
        """
        log.warning("process %d lost its store session (%s); taking its lock again",
                    os.getpid(), why)  # fmt: skip
        window = relock_window() if window is None else window
        deadline = time.monotonic() + window
        self.lock.release()
        while True:
            try:
                if self.lock.acquire(blocking=False):
                    conn = self.lock.connection
                    assert conn is not None
                    row = conn.execute(
                        f"SELECT 1 FROM {self.store.target.schema}.processes WHERE token = %s",
                        (self.token,),
                    ).fetchone()
                    if row is None and not settled_ok:
                        log.error("process %d: its jobs were settled while it was cut off",
                                  os.getpid())  # fmt: skip
                        return False
                    log.warning("process %d: store session restored; carrying on", os.getpid())
                    return True
            except Exception as exc:
                log.debug("cannot take the lock again yet: %s", exc)
            if time.monotonic() + 0.1 >= deadline:
                return False
            time.sleep(0.1)


class PgLiveness:
    """Liveness as session advisory locks, named by token within the app's schema."""

    def __init__(self, owner: PgBackend) -> None:
        self._owner = owner
        # Tokens whose local flock this process found free: dead, on the kernel's word.
        self.died_here: set[str] = set()

    def hold(self, token: str) -> PgHeld:
        local = LivenessLock(self._owner.home.proc_lock(token))
        local.acquire()
        lock = SessionLock(self._owner.target, token, "liveness")
        try:
            if not lock.acquire(blocking=False):
                raise RuntimeError(f"the liveness lock of {token} is already held")
        except BaseException:
            local.release()
            raise
        return PgHeld(local, lock, self._owner.store)

    def alive(self, token: str) -> bool:
        """Alive if its local flock is held (a process of this host, even while its
        session is being restored), else if its session lock is held."""
        path = self._owner.home.proc_lock(token)
        existed = path.exists()
        if is_alive(path):
            return True
        if existed or self._owner.home.journal(token).exists():
            # A flock found free, or a worker's journal left in this home with no flock
            # beside it: a process of this host, dead on its kernel's word.
            self.died_here.add(token)
            return False
        key = advisory_key(self._owner.target.schema, token)
        return not is_free(self._owner.store._conn(), key)


class PgLeadership(leader.Leadership):
    """The file-based election's logic (a local heartbeat for local supervisors), with the
    lock on the server: one leader across every host of the store."""

    def __init__(self, owner: PgBackend, token: str) -> None:
        super().__init__(owner.home, token)
        self._owner = owner
        self.lock = SessionLock(owner.target, "leader", "leader")  # type: ignore[assignment]

    def campaign(self) -> None:
        """Wait for the lock on the server; a lost connection (a restart) is waited out.

        The wait itself can be broken only by a signal handler that raises.
        """
        failing = Backoff(0.1, 2.0)
        while True:
            try:
                super().campaign()
                break
            except StoreError as exc:  # SessionLost, or no connection yet
                delay = failing.next()
                if failing.failures == 1:
                    log.warning("candidate: lost the store while waiting to lead (%s); "
                                "waiting again", exc)  # fmt: skip
                time.sleep(delay)
        lock: SessionLock = self.lock  # type: ignore[assignment]
        conn = lock.connection
        assert conn is not None
        schema = self._owner.target.schema
        row = conn.execute(
            f"UPDATE {schema}.leader SET epoch = epoch + 1, token = %s, pid = %s, host = %s, "
            "since = %s WHERE id = 1 RETURNING epoch",
            (self.token, os.getpid(), socket.gethostname(), time.time()),
        ).fetchone()
        assert row is not None
        self._owner.store.fence_epoch = int(row[0])
        log.info("leader epoch %d on %s", row[0], self._owner.target.redacted)

    def watch(self, on_lost: Callable[[str], None]) -> None:
        lock: SessionLock = self.lock  # type: ignore[assignment]
        lock.watch(lambda why: on_lost(str(why)))

    def resign(self) -> None:
        self._owner.store.fence_epoch = None
        super().resign()


class PgWatcher(notify.Watcher):
    """The local doorbell's watcher, keeping the host's relay up (see Relay.cap)."""

    def __init__(self, directory: Path, relay: Relay) -> None:
        super().__init__(directory)
        self._relay = relay

    def wait(self, timeout: float | None, extra: tuple[int, ...] = ()) -> list[int]:
        return super().wait(self._relay.cap(timeout), extra)


class PgListener(listener.Listener):
    def __init__(self, directory: Path, relay: Relay) -> None:
        super().__init__(directory)
        self._relay = relay

    def wait(self, seen: int, timeout: float | None) -> None:
        super().wait(seen, self._relay.cap(timeout))

    async def wait_async(self, seen: int, timeout: float | None) -> None:
        await super().wait_async(seen, self._relay.cap(timeout))


class PgDoorbell:
    def __init__(self, owner: PgBackend) -> None:
        self._owner = owner

    def watcher(self) -> PgWatcher:
        return PgWatcher(self._owner.home.path, self._owner.relay)

    def listen(self) -> PgListener:
        return PgListener(self._owner.home.path, self._owner.relay)


class PgBackend:
    """The backend of a home whose store is a PostgreSQL URL (see the module docstring)."""

    def __init__(self, home: Home, url: str) -> None:
        self._home = home
        self.target: StoreUrl = parse(url)
        self.host_id = host_id(home)
        self._store: PgStore | None = None
        self._store_lock = threading.Lock()
        self._liveness = PgLiveness(self)
        self._doorbell = PgDoorbell(self)
        self.relay = Relay(home, self.target, f"mpjobs_{self.target.schema}", self.host_id)

    @property
    def home(self) -> Home:
        return self._home

    @property
    def store(self) -> PgStore:
        store = self._store
        if store is None:
            with self._store_lock:
                if self._store is None:
                    migrate(self.target)
                    self._store = PgStore(self._home, self.target, self.host_id)
                store = self._store
        return store

    @property
    def liveness(self) -> PgLiveness:
        return self._liveness

    @property
    def doorbell(self) -> PgDoorbell:
        return self._doorbell

    def leadership(self, token: str) -> PgLeadership:
        return PgLeadership(self, token)

    def current_leader(self) -> dict[str, Any] | None:
        row = self.store._conn().execute(
            "SELECT token, pid, host, since, epoch FROM leader WHERE id = 1"
        ).fetchone()
        if row is None or row[0] is None or not self._liveness.alive(row[0]):
            return None
        return {"token": row[0], "pid": row[1], "host": row[2], "since": row[3], "epoch": row[4]}

    def silent_leader(self, timeout: float) -> leader.Beat | None:
        return leader.stale_leader(self._home, timeout)

    def settle_grace(self, token: str) -> float:
        """None for a process of this host whose flock its death freed; else long
        enough for a live process to notice a lost session and take its lock back (a
        check, then RELOCK_WINDOW), plus a second: see PgHeld._regain."""
        if token in self._liveness.died_here:
            return 0.0
        return ping_every() + relock_window() + 1.0

    @property
    def unavailable(self) -> tuple[type[Exception], ...]:
        return UNAVAILABLE

    def abort_waits_when(self, predicate: Callable[[], bool] | None) -> None:
        """Nothing to cut short: every wait on the server is bounded by lock_timeout."""

    def close(self) -> None:
        self.relay.close()
        if self._store is not None:
            self._store.close_all()


def _conforms(b: PgBackend, s: PgStore) -> tuple[backend.Backend, base.Store]:
    """Never called: mypy checks here that the PostgreSQL backend provides the whole seam."""
    return b, s

