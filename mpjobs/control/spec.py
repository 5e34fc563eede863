"""The control options a job carries to its worker: retry_on, dont_retry_on, soft_timeout.

They travel inside the job's pickled payload, as a third element after the arguments
(`(args, kwargs, Control.astuple())`), only when a job has any: a task without them keeps its
two-element payload (or none at all), so the push and claim paths and the store's
columns are unchanged. A schedule stores its jobs' payload, so its fired jobs carry
them too.

Exception classes are kept as qualified names ("builtins.ConnectionError") and matched
against the names along the live exception's MRO in the worker. Nothing is imported
there, a subclass matches its base, and a class the client could not import (or an
exception that cannot be pickled) is judged all the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mpjobs.errors import ConfigError, Retry
from mpjobs.scheduling.durations import parse_duration

__all__ = ["CONTROL_OPTIONS", "Control", "check_soft", "control_of", "qualified_name"]

CONTROL_OPTIONS = frozenset({"retry_on", "dont_retry_on", "soft_timeout"})


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True, slots=True)
class Control:
    """A job's control options, resolved and checked; hashable (part of a batch key)."""

    retry_on: tuple[str, ...] | None = None  # None: every exception is retried
    dont_retry_on: tuple[str, ...] = ()
    soft_timeout: float | None = None

    def astuple(self) -> tuple[tuple[str, ...] | None, tuple[str, ...], float | None]:
        """How it is pickled in a payload (`Control(*t)` makes it again)."""
        return (self.retry_on, self.dont_retry_on, self.soft_timeout)

    def retries(self, exc: BaseException) -> bool:
        """Whether `exc` may be retried (attempts permitting); `Retry` always may."""
        if isinstance(exc, Retry):
            return True
        names = {qualified_name(c) for c in type(exc).__mro__}
        if names.intersection(self.dont_retry_on):
            return False
        if self.retry_on is None:
            return True
        return bool(names.intersection(self.retry_on))


def _classes(value: Any, what: str) -> tuple[str, ...]:
    items: Iterable[Any] = value if isinstance(value, (tuple, list, set, frozenset)) else (value,)
    out = []
    for cls in items:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise ConfigError(f"{what} must be an exception class or a tuple of them, got {cls!r}")
        out.append(qualified_name(cls))
    return tuple(sorted(set(out)))


def control_of(options: dict[str, Any]) -> Control | None:
    """The Control of a job's merged options, or None when it sets none (the usual case).

    Raises ConfigError for a bad value, and for a soft_timeout not below the hard
    `timeout` (it could never fire first).
    """
    if not CONTROL_OPTIONS.intersection(options):
        return None
    retry_on = options.get("retry_on")
    dont = options.get("dont_retry_on")
    soft = options.get("soft_timeout")
    retry = None if retry_on is None else _classes(retry_on, "retry_on")
    dont_names = () if dont is None else _classes(dont, "dont_retry_on")
    soft_s = None
    if soft is not None:
        try:
            soft_s = parse_duration(soft, what="soft_timeout")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if soft_s <= 0:
            raise ConfigError(f"soft_timeout must be more than 0 seconds, got {soft!r}")
    if retry is None and not dont_names and soft_s is None:
        return None
    return Control(retry, dont_names, soft_s)


def check_soft(control: Control | None, timeout: float | None) -> None:
    """soft_timeout must be below the hard timeout when both are set."""
    if control is None or control.soft_timeout is None or timeout is None:
        return
    if control.soft_timeout >= timeout:
        raise ConfigError(
            f"soft_timeout ({control.soft_timeout:g} s) must be less than timeout "
            f"({timeout:g} s): the hard limit would end the job before the soft one fires"
        )
