"""The supervisor's store work, in short tries, so its loop never stalls on the store.

The supervisor is the watchdog of time and memory limits and the process that turns
SIGTERM into a stop. If it waited on the store like everyone else (up to 30 s behind a
client stopped inside a transaction), limits would fire late and a stop would hang. So
every store call it makes gets a short lock budget, and whatever cannot be done now
(settling a dead worker, dropping a process row) is kept here and tried again on the
next turns of the loop. Nothing is lost if the supervisor dies with work still queued:
the dead worker's journal and kill note stay in the home, and the leader, or the next
supervisor to start, settles them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mpjobs.rules.recovery import Target
from mpjobs.runtime.recovery import settle
from mpjobs.store.base import Store

log = logging.getLogger("mpjobs.supervisor")

BUDGET = 0.05  # seconds one store call of the supervisor may wait for the locks
QUIET = 5.0  # seconds between repeats of the same complaint in the log

T = TypeVar("T")


@dataclass
class _Pending:
    pid: int
    how: str
    target: Target | None
    deliberate: bool
    settle: bool


class Ledger:
    """Store calls that may fail or wait, made without ever blocking the caller for long."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: dict[str, _Pending] = {}
        self._said: dict[str, float] = {}

    def attempt(self, what: str, fn: Callable[..., T], *args: Any) -> tuple[bool, T | None]:
        """Call `fn` with a short lock budget: (True, its result), or (False, None) on error.

        Any exception is caught and logged (not too often), not only store errors: a
        supervisor that died of one would take every job of its pool down with it (its
        workers die with it).
        """
        try:
            with self.store.lock_budget(BUDGET):
                result = fn(*args)
        except Exception as exc:
            now = time.monotonic()
            if now - self._said.get(what, -QUIET) >= QUIET:
                self._said[what] = now
                log.error("supervisor: cannot %s yet (%s); will retry", what, exc)
            return False, None
        self._said.pop(what, None)
        return True, result

    def bury(
        self, token: str, pid: int, how: str, target: Target | None, deliberate: bool,
        settle: bool,
    ) -> None:  # fmt: skip
        """Settle a dead child's jobs (for a worker) and drop its process row, now or later."""
        self.pending[token] = _Pending(pid, how, target, deliberate, settle)
        self._bury(token)

    def retry(self) -> None:
        """Try again whatever could not be done before (called on every housekeeping turn)."""
        for token in list(self.pending):
            self._bury(token)

    def _bury(self, token: str) -> None:
        p = self.pending[token]
        if p.settle:
            ok, _ = self.attempt(
                f"settle the jobs of worker {p.pid}",
                lambda: settle(self.store, token, how=p.how, target=p.target,
                               deliberate=p.deliberate),
            )  # fmt: skip
            if not ok:
                return
            p.settle = False
        ok, _ = self.attempt(f"unregister process {p.pid}", self.store.unregister_process, token)
        if ok:
            del self.pending[token]
