"""The decision a claim makes for each due job that has a control option.

One `Gate` lives for one claim transaction: it is asked about candidates in queue order
and answers take, expire, or wait (on a full rate window, or a full concurrency key),
counting what it lets through, so the twentieth job of a "20/s" window is taken and the
twenty-first waits within the same claim. The SQL stores and the in-memory store both
ask it, so the rule is written once; the stores only move rows as it says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mpjobs.control.rate import RateLimit

__all__ = ["EXPIRE", "TAKE", "WAIT_KEY", "WAIT_RATE", "Candidate", "Gate"]

TAKE = "take"
EXPIRE = "expire"
WAIT_RATE = "wait-rate"
WAIT_KEY = "wait-key"

# The columns of a candidate, in this order, as the stores read them.
CANDIDATE_COLS = (
    "id, priority, exec_at, name, expires_at, concurrency_key, concurrency_limit, "
    "rate_limit, rate_period"
)


@dataclass(slots=True)
class Candidate:
    id: int
    priority: int
    exec_at: float
    name: str
    expires_at: float | None
    concurrency_key: str | None
    concurrency_limit: int | None
    rate_limit: int | None
    rate_period: float | None

    @property
    def order(self) -> tuple[int, float, int]:
        return (self.priority, self.exec_at, self.id)


@dataclass(slots=True)
class _Window:
    start: float
    used: int
    loaded: tuple[float, int]  # as read: written back only if it changed


class Gate:
    """Decisions over one claim. `window(name)` reads a task's (window_start, used), or
    None; `running(key)` counts the RUNNING jobs with a key. Both are read once per
    name or key per claim, under the claim's write lock."""

    def __init__(
        self,
        now: float,
        window: Callable[[str], tuple[float, int] | None],
        running: Callable[[str], int],
    ) -> None:
        self.now = now
        self._read_window = window
        self._count = running
        self._windows: dict[str, _Window] = {}
        self._keys: dict[str, int] = {}
        self.full_rates: dict[str, float] = {}  # task name -> when its window ends
        self.full_keys: set[str] = set()

    def decide(self, c: Candidate) -> str:
        if c.expires_at is not None and c.expires_at <= self.now:
            return EXPIRE
        key = c.concurrency_key
        if key is not None:
            if key not in self._keys:
                self._keys[key] = self._count(key)
            if self._keys[key] >= (c.concurrency_limit or 1):
                self.full_keys.add(key)
                return WAIT_KEY
        w = None
        if c.rate_limit is not None and c.rate_period:
            rate = RateLimit(c.rate_limit, c.rate_period)
            w = self._window(c.name, rate)
            if w.used >= rate.count:
                self.full_rates[c.name] = w.start + rate.period
                return WAIT_RATE
        if key is not None:
            self._keys[key] += 1
        if w is not None:
            w.used += 1
        return TAKE

    def untake(self, c: Candidate) -> None:
        """Give back what `decide` counted for a job that the claim did not take after all."""
        if c.concurrency_key is not None:
            self._keys[c.concurrency_key] -= 1
        if c.rate_limit is not None and c.name in self._windows:
            self._windows[c.name].used -= 1
            self.full_rates.pop(c.name, None)

    def _window(self, name: str, rate: RateLimit) -> _Window:
        w = self._windows.get(name)
        start = rate.window(self.now)
        if w is None:
            row = self._read_window(name)
            loaded = row if row is not None else (float("nan"), 0)
            w = self._windows[name] = _Window(loaded[0], loaded[1], loaded)
        if w.start != start:  # a new window: its count starts again
            w.start, w.used = start, 0
        return w

    def changed_windows(self) -> list[tuple[str, float, int]]:
        """(name, window_start, used) of every window this claim moved, to write back."""
        return [
            (name, w.start, w.used)
            for name, w in self._windows.items()
            if (w.start, w.used) != w.loaded
        ]
