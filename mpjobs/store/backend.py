"""The backend seam: everything the processes of a home share, behind one interface.

A backend is four things, and every process of mpjobs reaches them through this
interface only, never through a concrete class:

- **the store** (`Store`, base.py): jobs, schedules and the process table, each
  operation one transaction;
- **leadership**: one holder at a time, and the holder's death frees it at once (no
  lease to run out), plus a sign of life so a frozen holder can be made to give way;
- **liveness**: whether the process behind a token is alive, decided by something
  its death ends at once (the kernel's word, not a guess from pids or clocks);
- **the doorbell**: a wake-up after every commit, for idle workers and waiters.

SQLite-plus-files (sqlite.py) is one implementation: an SQLite file, flocks and inotify
on files of the home. Another (PostgreSQL: rows, advisory locks held by a session,
LISTEN/NOTIFY) plugs in here, and `backends.open_backend` is the one place that picks it.

What a backend does not decide is what happens to a job: the rules (mpjobs/rules/)
decide, and a backend only moves rows as they say.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mpjobs.home import Home
    from mpjobs.store.base import Store


class Held(Protocol):
    """A lock this process holds until `release()` or its death."""

    def release(self) -> None: ...

    def watch(self, on_lost: Callable[[str], None]) -> None:
        """Call `on_lost(why)` from a thread if the lock is lost while this process lives.

        A flock cannot be lost; a session lock can (its host was cut off from the
        server), and then this process must stop acting as its holder.
        """
        ...

    def renew(self) -> bool:
        """Take a lost lock again, for a holder that cannot run a watching thread (a
        supervisor, which forks); True if it had to."""
        ...


class Liveness(Protocol):
    """Tokens of live processes: a token is alive while its holder has not released it."""

    def hold(self, token: str) -> Held:
        """Take `token`'s liveness for this process, for as long as it lives."""
        ...

    def alive(self, token: str) -> bool:
        """True while the process that holds `token` lives (False once it died)."""
        ...


class Watcher(Protocol):
    """One waiting thread's wake-up: readable when the home changes (a context manager)."""

    def wait(self, timeout: float | None, extra: tuple[int, ...] = ()) -> list[int]:
        """Block until a change, one of `extra` fds is readable, or `timeout` passes."""
        ...

    def close(self) -> None: ...
    def __enter__(self) -> Watcher: ...
    def __exit__(self, *exc: object) -> None: ...


class Listener(Protocol):
    """A waiter's share of the process's one listener: see coordination/notify.py."""

    def generation(self) -> int: ...
    def wait(self, seen: int, timeout: float | None) -> None: ...
    async def wait_async(self, seen: int, timeout: float | None) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Listener: ...
    def __exit__(self, *exc: object) -> None: ...


class Doorbell(Protocol):
    """The change notification: rung by the store after every commit."""

    def watcher(self) -> Watcher:
        """A wake-up of one's own (an idle worker's select loop)."""
        ...

    def listen(self) -> Listener:
        """A share of the process's one listener (job handles' waits)."""
        ...


class Leadership(Protocol):
    """One candidate's side of the election (the coordinator's)."""

    @property
    def timeout(self) -> float:
        """Seconds of silence after which a leader counts as frozen."""
        ...

    def campaign(self) -> None:
        """Block until this process leads; a signal handler that raises ends the wait."""
        ...

    def start_heartbeat(self, healthy: Callable[[], str | None]) -> None:
        """Show signs of life while `healthy()` returns None (why not to, otherwise)."""
        ...

    def watch(self, on_lost: Callable[[str], None]) -> None:
        """Call `on_lost(why)` from a thread if leadership is lost while this process leads."""
        ...

    def resign(self) -> None: ...


class SilentLeader(Protocol):
    """A leader that has shown no sign of life for too long."""

    @property
    def pid(self) -> int: ...
    @property
    def token(self) -> str: ...
    @property
    def age(self) -> float: ...


class Backend(Protocol):
    """What a backend provides; `backends.open_backend(home)` gives the one of a home."""

    @property
    def home(self) -> Home:
        """The directory of this host's files (journals, kill notes, idle turns)."""
        ...

    @property
    def store(self) -> Store: ...

    @property
    def liveness(self) -> Liveness: ...

    @property
    def doorbell(self) -> Doorbell: ...

    def leadership(self, token: str) -> Leadership:
        """The candidacy of the process `token` (it must hold that token's liveness)."""
        ...

    def current_leader(self) -> dict[str, Any] | None:
        """Who leads now (token, pid, since), or None; a dead leader does not count."""
        ...

    def silent_leader(self, timeout: float) -> SilentLeader | None:
        """The leader, if it is alive and has shown no sign of life for `timeout` s."""
        ...

    def settle_grace(self, token: str) -> float:
        """Seconds the owner `token` must stay dead before the leader settles it (0: at
        once).

        Where a live process can lose its liveness for a moment (a server restart
        ends every session), the leader gives it this long to take it back, so the
        jobs of a live process are not settled under it; a death this host's kernel
        vouches for needs no grace.
        """
        ...

    @property
    def unavailable(self) -> tuple[type[Exception], ...]:
        """The errors that mean the store cannot be used now (a full disk, a lock held
        too long, a lost connection): the caller keeps what it holds and tries later."""
        ...

    def close(self) -> None:
        """Let go of what this process holds open for the backend (connections, a relay);
        the next use opens again."""
        ...

    def abort_waits_when(self, predicate: Callable[[], bool] | None) -> None:
        """Cut this process's long waits for the store short once `predicate()` holds.

        A process told to stop must not sit out a long wait behind a stopped one.
        """
        ...

