"""`concurrency_key` + `concurrency_limit`: at most N jobs RUNNING per key, home-wide.

The key is a string, or a callable of the job's arguments given to `@app.task`; it is
evaluated at push, in the pushing process, so workers never call user code to decide a
claim and the key is visible in the row (`mpjobs jobs show`). A slot is a RUNNING row
with the key: it is freed when the job is settled, by its worker or, for a killed
worker, by recovery; there is no separate counter that a crash could leave wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mpjobs.errors import ConfigError

__all__ = ["KeySpec", "check_concurrency", "key_of"]

KeySpec = str | Callable[..., Any]
MAX_KEY = 500  # characters: a key is an index entry, not a payload


def check_concurrency(key: object, limit: object) -> tuple[KeySpec | None, int | None]:
    """The key and limit as given, checked; a key without a limit means a limit of 1."""
    if key is None:
        if limit is not None:
            raise ConfigError("concurrency_limit needs a concurrency_key to count by")
        return None, None
    if not (isinstance(key, str) and key) and not callable(key):
        raise ConfigError(
            f"concurrency_key must be a non-empty string or a callable of the job's "
            f"arguments, got {key!r}"
        )
    if limit is None:
        limit = 1
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"concurrency_limit must be an int >= 1, got {limit!r}")
    return key, limit


def key_of(spec: KeySpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The key of one job; a callable's answer must be a non-empty string."""
    key = spec(*args, **kwargs) if callable(spec) else spec
    if not isinstance(key, str) or not key:
        raise ConfigError(f"concurrency_key {spec!r} gave {key!r}, not a non-empty string")
    if len(key) > MAX_KEY:
        raise ConfigError(f"concurrency_key {key[:40]!r}... is over {MAX_KEY} characters")
    return key
