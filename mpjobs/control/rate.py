"""`rate_limit="100/m"`: at most that many starts of a task per window, home-wide.

Windows are fixed and aligned on the epoch (a "10/s" window is one whole second,
[k, k+1)), so every process and host computes the same window from its clock alone,
and the count of a window is one row (`rate_windows`) updated inside the claim. A fixed
window allows a burst of up to twice the limit across a boundary; that is the price of
one row per task and no history, and is what the issue's "within ±1 window" allows.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mpjobs.errors import ConfigError

__all__ = ["RateLimit", "parse_rate"]

_PERIODS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0,
            "d": 86400.0, "day": 86400.0}  # fmt: skip
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-z]+)\s*$")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`count` starts per window of `period` seconds."""

    count: int
    period: float

    def window(self, now: float) -> float:
        """The start of the window `now` falls in."""
        return math.floor(now / self.period) * self.period

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s"


def parse_rate(value: object) -> RateLimit:
    """ "100/m", "10/s", "1000/h", "5/10s" (5 per 10 seconds); a clear error otherwise."""
    if isinstance(value, RateLimit):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"rate_limit must be a string such as '100/m', got {value!r}")
    m = _RATE_RE.match(value.lower())
    unit = _PERIODS.get(m.group(3)) if m else None
    if m is None or unit is None:
        raise ConfigError(
            f"invalid rate_limit {value!r}: expected COUNT/UNIT such as '10/s', '100/m', "
            "'1000/h' (units s, m, h, d; '5/10s' for 5 per 10 seconds)"
        )
    count = int(m.group(1))
    mult = float(m.group(2)) if m.group(2) not in ("", ".") else 1.0
    if count < 1 or mult <= 0:
        raise ConfigError(f"invalid rate_limit {value!r}: count and window must be > 0")
    return RateLimit(count, mult * unit)
