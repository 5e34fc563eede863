"""Checking the data a config file holds, entry by entry, into a `Config`.

`load.py` reads the file; this turns the table it found into `Config` and `JobSpec`,
rejecting unknown keys and wrong types with the file, entry and field named, and
`check_config` adds the checks that need a whole entry. Nothing here imports a handler.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from mpjobs.config.spec import (
    Config,
    JobSpec,
    Where,
    check,
    parse_frequency,
    parse_initial_delay,
    parse_timeout,
)
from mpjobs.options import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, DEFAULT_QUEUE
from mpjobs.scheduling.durations import parse_bytes
from mpjobs.scheduling.triggers import DailyTrigger

__all__ = ["build_config", "check_config"]

_SECTIONS = ("mpjobs", "core_lib")
_TOP_KEYS = ("app", "home", "workers", "queues", "imports", "jobs")
_JOB_KEYS = (
    "id",
    "handler",
    "args",
    "kwargs",
    "initial_delay",
    "frequency",
    "tz",
    "queue",
    "priority",
    "max_attempts",
    "timeout",
    "memory_limit",
)
_HANDLER_KEYS = ("class", "params")

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_OBJECT_PATH_RE = re.compile(rf"^{_DOTTED}(?::{_DOTTED})?$")
_MODULE_RE = re.compile(rf"^{_DOTTED}$")
_APP_RE = re.compile(r"^.+:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


def build_config(data: object, where: Where) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise where.error("expected a table/mapping at the top level")
    present = [name for name in _SECTIONS if name in data]
    if len(present) > 1:
        raise where.error("both 'mpjobs' and 'core_lib' sections are present; keep one")
    if not present:
        raise where.error("no 'mpjobs' section (a top-level [mpjobs] table or 'mpjobs:' key)")
    section_name = present[0]
    section = data[section_name]
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise where.error(f"section {section_name!r} must be a table/mapping")
    # A core-lib file keeps the whole application's config under `core_lib` (data sources,
    # caches, ...), so only our own section is strict about unknown keys.
    if section_name == "mpjobs":
        _reject_unknown(section, _TOP_KEYS, where, "setting")

    app = _opt_str(section, "app", where)
    if app is not None and not _APP_RE.match(app):
        raise where.error(f"expected MODULE:APP (e.g. 'myproject.jobs:app'), got {app!r}", "app")
    home = _opt_str(section, "home", where)
    workers = _opt_int(section, "workers", where, minimum=1)
    queues = _str_list(section, "queues", where, allow_csv=True)
    imports = _str_list(section, "imports", where, allow_csv=False) or []
    for name in imports:
        if not _MODULE_RE.match(name):
            raise where.error(f"invalid module name {name!r}", "imports")

    raw_jobs = section.get("jobs")
    if raw_jobs is None:
        raw_jobs = []
    if not isinstance(raw_jobs, list):
        raise where.error("expected a list of job tables ([[mpjobs.jobs]])", "jobs")
    jobs: list[JobSpec] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(raw_jobs):
        job = _build_job(entry, where.at(f"jobs[{index}]"))
        if job.id in seen:
            raise where.at(f"jobs[{index}] ({job.id!r})").error(
                f"duplicate job id {job.id!r} (also jobs[{seen[job.id]}]);"
                " give each job a unique 'id'",
                "id",
            )
        seen[job.id] = index
        jobs.append(job)
    return Config(
        path=where.path,
        app=app,
        home=home,
        workers=workers,
        queues=queues,
        imports=imports,
        jobs=jobs,
    )


def _build_job(entry: object, where: Where) -> JobSpec:
    if not isinstance(entry, Mapping):
        raise where.error("expected a table/mapping")
    handler, kind, params = _handler(entry, where)
    job_id = _opt_str(entry, "id", where)
    if job_id is None:
        job_id = handler
    elif not job_id.strip():
        raise where.error("must not be empty", "id")
    where = Where(where.path, f"{where.entry} ({job_id!r})")
    _reject_unknown(entry, _JOB_KEYS, where, "field")

    args = entry.get("args")
    if args is None:
        args = []
    if not isinstance(args, list):
        raise where.error(f"expected a list, got {args!r}", "args")
    kwargs = entry.get("kwargs")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise where.error(f"expected a table of keyword arguments, got {kwargs!r}", "kwargs")
    if kind == "class" and (args or kwargs):
        raise where.error(
            "a class handler takes its arguments from handler.params, not args/kwargs",
            "args" if args else "kwargs",
        )

    tz = _opt_str(entry, "tz", where)
    if tz is not None:
        check(lambda: DailyTrigger(0, 0, tz), where, "tz")  # is it a known zone?
    frequency_kind, frequency = parse_frequency(entry.get("frequency"), tz, where)
    if tz is not None and frequency_kind not in ("cron", "daily"):
        raise where.error("only applies to a cron or HH:MM frequency", "tz")

    queue = _opt_str(entry, "queue", where)
    if queue is not None and not queue.strip():
        raise where.error("must not be empty", "queue")
    priority = _opt_int(entry, "priority", where)
    max_attempts = _opt_int(entry, "max_attempts", where, minimum=1)
    timeout = entry.get("timeout")
    memory_limit = entry.get("memory_limit")
    return JobSpec(
        id=job_id,
        handler=handler,
        handler_kind=kind,
        params=params,
        args=list(args),
        kwargs=dict(kwargs),
        initial_delay=parse_initial_delay(entry.get("initial_delay"), where),
        frequency_kind=frequency_kind,
        frequency=frequency,
        tz=tz,
        queue=DEFAULT_QUEUE if queue is None else queue,
        priority=DEFAULT_PRIORITY if priority is None else priority,
        max_attempts=DEFAULT_MAX_ATTEMPTS if max_attempts is None else max_attempts,
        timeout=parse_timeout(timeout, where),
        memory_limit=None
        if memory_limit is None
        else check(lambda: parse_bytes(memory_limit, what="memory limit"), where, "memory_limit"),
    )


def _handler(
    entry: Mapping[str, Any], where: Where
) -> tuple[str, Literal["function", "class"], dict[str, Any]]:
    if "handler" not in entry:
        raise where.error("missing required field 'handler'")
    value = entry["handler"]
    if isinstance(value, str):
        if not _is_object_path(value):
            raise where.error(
                f"expected a function path such as 'pkg.mod:func' or 'pkg.mod.func', got {value!r}",
                "handler",
            )
        return value, "function", {}
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in _HANDLER_KEYS)
        if unknown:
            raise where.error(
                f"unknown key(s) {', '.join(map(repr, unknown))}; expected 'class' and 'params'",
                "handler",
            )
        class_path = value.get("class")
        if not isinstance(class_path, str) or not _is_object_path(class_path):
            raise where.error(
                f"expected handler.class such as 'pkg.mod.MyJob', got {class_path!r}", "handler"
            )
        params = value.get("params")
        if params is None:
            params = {}
        if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
            raise where.error(f"expected handler.params to be a table, got {params!r}", "handler")
        return class_path, "class", dict(params)
    raise where.error(
        f"expected a function path or a table with 'class' and 'params', got {value!r}",
        "handler",
    )


def _is_object_path(value: str) -> bool:
    return bool(_OBJECT_PATH_RE.match(value)) and (":" in value or "." in value)


def _reject_unknown(
    table: Mapping[Any, Any], known: tuple[str, ...], where: Where, noun: str
) -> None:
    unknown = [str(k) for k in table if k not in known]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise where.error(
            f"unknown {noun}{'s' if len(unknown) > 1 else ''} {names}"
            f" (known: {', '.join(known)})"
        )


def _opt_str(table: Mapping[str, Any], key: str, where: Where) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise where.error(f"expected a string, got {value!r}", key)
    return value


def _opt_int(
    table: Mapping[str, Any], key: str, where: Where, *, minimum: int | None = None
) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(f"expected an integer, got {value!r}", key)
    if minimum is not None and value < minimum:
        raise where.error(f"must be at least {minimum}, got {value!r}", key)
    return value


def _str_list(
    table: Mapping[str, Any], key: str, where: Where, *, allow_csv: bool
) -> list[str] | None:
    value = table.get(key)
    if value is None:
        return None
    if allow_csv and isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise where.error(f"expected a list of non-empty strings, got {value!r}", key)
    return [v.strip() for v in value]


def check_config(cfg: Config) -> None:
    """Checks that need the whole entry, beyond what `build_config` validates."""
    for index, spec in enumerate(cfg.jobs):
        delay = spec.initial_delay
        if spec.frequency_kind in ("cron", "daily") and isinstance(delay, (int, float)):
            kind = "cron expression" if spec.frequency_kind == "cron" else "daily HH:MM time"
            raise Where(cfg.path, f"jobs[{index}] ({spec.id!r})").error(
                f"a delay ({delay:g}s) cannot be combined with a {kind} frequency"
                f" ({spec.frequency!r}): its runs are fixed by the clock, so a delay would"
                " only silently skip runs; use 'startup' to also run it once at start,"
                " or remove initial_delay",
                "initial_delay",
            )
