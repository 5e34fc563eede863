"""The control options of a task or `.options()` call, checked once and resolved per job.

`Gates.of` runs where the options are given (the decorator, `.options()`), so a bad
rate or a naive datetime fails at the call site; `Gates.columns` runs per push and
only evaluates what differs per job (the deadline from the due time, a key callable).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from mpjobs.control.concurrency import KeySpec, check_concurrency, key_of
from mpjobs.control.expiry import Expires, check_expires, deadline
from mpjobs.control.rate import RateLimit, parse_rate
from mpjobs.store.base import NewJob

__all__ = ["GATE_OPTIONS", "Gates", "apply_schedule_spec", "check_gates", "schedule_spec"]

GATE_OPTIONS = frozenset({"expires", "rate_limit", "concurrency_key", "concurrency_limit"})


@dataclass(frozen=True, slots=True)
class Gates:
    expires: Expires | None
    rate: RateLimit | None
    key: KeySpec | None
    limit: int | None

    @classmethod
    def of(cls, options: dict[str, Any]) -> Gates | None:
        """The options' control part, checked; None when no control option is set."""
        expires = options.get("expires")
        rate = options.get("rate_limit")
        key, limit = check_concurrency(
            options.get("concurrency_key"), options.get("concurrency_limit")
        )
        if expires is None and rate is None and key is None:
            return None
        return cls(
            None if expires is None else check_expires(expires),
            None if rate is None else parse_rate(rate),
            key,
            limit,
        )

    def columns(
        self, due: float, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[float | None, str | None, int | None, int | None, float | None]:
        """(expires_at, concurrency_key, concurrency_limit, rate_limit, rate_period) of a job."""
        rate = self.rate
        return (
            deadline(self.expires, due),
            None if self.key is None else key_of(self.key, args, kwargs),
            self.limit,
            None if rate is None else rate.count,
            None if rate is None else rate.period,
        )


def check_gates(options: dict[str, Any]) -> None:
    """Check each control option given, alone: `.options(concurrency_limit=3)` may add a
    limit to a task's key, so a limit without a key is refused by `Gates.of` instead,
    on the merged options (when the job is built)."""
    if options.get("expires") is not None:
        check_expires(options["expires"])
    if options.get("rate_limit") is not None:
        parse_rate(options["rate_limit"])
    key = options.get("concurrency_key")
    check_concurrency(key if key is not None else "-", options.get("concurrency_limit"))


def schedule_spec(control: Gates | None, args: tuple[Any, ...], kwargs: dict[str, Any]
                  ) -> dict[str, Any] | None:  # fmt: skip
    """The control options as a schedule stores them (JSON), for its fires.

    A schedule's arguments are fixed, so a key callable is evaluated once, here; a
    duration stays relative (to each fire's time), a datetime stays absolute.
    """
    if control is None:
        return None
    exp, rate = control.expires, control.rate
    return {
        "expires": exp.timestamp() if isinstance(exp, datetime.datetime) else exp,
        "expires_absolute": isinstance(exp, datetime.datetime),
        "key": None if control.key is None else key_of(control.key, args, kwargs),
        "limit": control.limit,
        "rate": None if rate is None else [rate.count, rate.period],
    }


def apply_schedule_spec(job: NewJob, spec: dict[str, Any] | None) -> NewJob:
    """Set a fired job's control columns from its schedule's `schedule_spec`."""
    if spec:
        exp = spec.get("expires")
        if exp is not None:
            job.expires_at = exp if spec.get("expires_absolute") else job.exec_at + exp
        job.concurrency_key, job.concurrency_limit = spec.get("key"), spec.get("limit")
        if spec.get("rate"):
            job.rate_limit, job.rate_period = int(spec["rate"][0]), float(spec["rate"][1])
    return job
