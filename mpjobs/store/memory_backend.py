"""The rest of the in-memory backend: liveness, doorbell and leadership in one process.

See memory.py: a fake for unit tests of the rules. `MemoryLiveness.die(token)` plays
a process's death, so a test can settle a "dead" owner without killing anything.
"""

from __future__ import annotations

import asyncio
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from mpjobs.errors import StoreError
from mpjobs.home import Home
from mpjobs.store import backend, base
from mpjobs.store.memory import MemoryStore


class _Token:
    def __init__(self, tokens: set[str], token: str) -> None:
        self._tokens, self._token = tokens, token
        tokens.add(token)

    def release(self) -> None:
        self._tokens.discard(self._token)

    def watch(self, on_lost: Callable[[str], None]) -> None:
        pass

    def renew(self) -> bool:
        return False


class MemoryLiveness:
    """Tokens held in this process; `die(token)` plays a process's death."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()

    def hold(self, token: str) -> _Token:
        return _Token(self.tokens, token)

    def alive(self, token: str) -> bool:
        return token in self.tokens

    def die(self, token: str) -> None:
        self.tokens.discard(token)


class MemoryWatcher:
    """Wakes when the store's generation moves (checked every 5 ms) or an fd is ready."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._seen = store.generation

    def wait(self, timeout: float | None, extra: tuple[int, ...] = ()) -> list[int]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._store.generation != self._seen:
                self._seen = self._store.generation
                return [-1]
            left = 0.005 if deadline is None else min(0.005, deadline - time.monotonic())
            if left <= 0:
                return []
            ready, _, _ = select.select(list(extra), [], [], left)
            if ready:
                return ready

    def close(self) -> None:
        pass

    def __enter__(self) -> MemoryWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class MemoryListener:
    """A waiter on the store's generation, for threads and (by polling) event loops."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def generation(self) -> int:
        return self._store.generation

    def wait(self, seen: int, timeout: float | None) -> None:
        with self._store.changed:
            self._store.changed.wait_for(lambda: self._store.generation != seen, timeout)

    async def wait_async(self, seen: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._store.generation == seen:
            if deadline is not None and time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.005)

    def close(self) -> None:
        pass

    def __enter__(self) -> MemoryListener:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class MemoryDoorbell:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def watcher(self) -> MemoryWatcher:
        return MemoryWatcher(self._store)

    def listen(self) -> MemoryListener:
        return MemoryListener(self._store)


class MemoryLeadership:
    """A candidacy on the backend's one lock; leaders never freeze here."""

    timeout = 10.0

    def __init__(self, owner: MemoryBackend, token: str) -> None:
        self._owner, self._token = owner, token

    def campaign(self) -> None:
        self._owner.leader_lock.acquire()
        self._owner.leader = {"token": self._token, "pid": 0, "since": time.time()}

    def start_heartbeat(self, healthy: Callable[[], str | None]) -> None:
        pass

    def watch(self, on_lost: Callable[[str], None]) -> None:
        pass

    def resign(self) -> None:
        if self._owner.leader is not None and self._owner.leader["token"] == self._token:
            self._owner.leader = None
            self._owner.leader_lock.release()


class MemoryBackend:
    """The whole seam in memory: `MemoryBackend(Home(path))` (the path is never used)."""

    def __init__(self, home: Home) -> None:
        self._home = home
        self._store = MemoryStore(home)
        self._liveness = MemoryLiveness()
        self._doorbell = MemoryDoorbell(self._store)
        self.leader_lock = threading.Lock()
        self.leader: dict[str, Any] | None = None

    @property
    def home(self) -> Home:
        return self._home

    @property
    def store(self) -> MemoryStore:
        return self._store

    @property
    def liveness(self) -> MemoryLiveness:
        return self._liveness

    @property
    def doorbell(self) -> MemoryDoorbell:
        return self._doorbell

    def leadership(self, token: str) -> MemoryLeadership:
        return MemoryLeadership(self, token)

    def current_leader(self) -> dict[str, Any] | None:
        return self.leader

    def silent_leader(self, timeout: float) -> backend.SilentLeader | None:
        return None

    def settle_grace(self, token: str) -> float:
        return 0.0  # a lock of this backend is free only once its holder is dead

    @property
    def unavailable(self) -> tuple[type[Exception], ...]:
        return (StoreError,)

    def abort_waits_when(self, predicate: Callable[[], bool] | None) -> None:
        pass

    def close(self) -> None:
        pass


def _conforms(b: MemoryBackend, s: MemoryStore) -> tuple[backend.Backend, base.Store]:
    """Never called: mypy checks here that the fakes provide the whole seam."""
    return b, s
