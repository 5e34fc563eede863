"""Doubling waits between tries of something that keeps failing: the one back-off.

A worker that cannot write the store, a leader facing a full disk, a slot whose worker
fails to boot, a lifecycle task that raised, a pool that keeps dying under a web server:
each retries after 1, 2, 4, ... times a first wait, up to a cap, and starts over once
the thing works again. Written once so that every loop backs off the same way.
"""

from __future__ import annotations

from dataclasses import dataclass


def doubling(first: float, cap: float, failures: int) -> float:
    """The wait after the `failures`-th failure in a row (0 after none)."""
    if failures <= 0:
        return 0.0
    return float(min(cap, first * 2 ** min(failures - 1, 64)))


@dataclass
class Backoff:
    """A back-off that counts its own failures: `next()` after each, `reset()` on success."""

    first: float
    cap: float
    failures: int = 0

    def next(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        self.failures += 1
        return doubling(self.first, self.cap, self.failures)

    def reset(self) -> None:
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.failures > 0
