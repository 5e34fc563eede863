"""Job config files (TOML or YAML) in the style of core-lib's JobScheduler.

Loading only reads and validates: handlers are checked for syntax but not imported, so a
config can be checked (`mpjobs run --config x.toml`, CI) without the application's
dependencies, and a typo is reported with its file, entry and field instead of as a
traceback from a worker.

Layout: a top-level table `mpjobs` (or `core_lib`, so core-lib seed files load as they
are) with optional `app`, `home`, `workers`, `queues`, `imports` and a list of `jobs`.
See `JobSpec` for the job fields.

`frequency` is read, in this order, as: nothing (absent, null, "none"/"null": run once),
a number of seconds, "HH:MM" (every day at that wall-clock time), a duration string
("30m", "2h 32m"), or a cron expression (5 fields, or 6 with seconds last, or @hourly,
@daily, ...). Durations are tried before cron because both may contain spaces.

YAML 1.1 reads an unquoted `frequency: 16:00` as the sexagesimal integer 960. core-lib
takes that as 16 minutes; mpjobs deliberately reads it as 16:00 every day, exactly like
the quoted "16:00", by loading YAML with a loader that keeps `H:MM`-style scalars as
strings. A plain integer frequency therefore always means seconds.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from mpjobs.errors import ConfigError
from mpjobs.scheduling.durations import parse_bytes, parse_daily_time, parse_duration
from mpjobs.scheduling.triggers import CronTrigger, DailyTrigger, IntervalTrigger, Trigger

__all__ = ["Config", "JobSpec", "import_object", "load_config", "run_class_handler"]

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
_NONE_WORDS = ("none", "null", "~", "")
_STARTUP_WORDS = ("startup", "boot")


@dataclass(frozen=True)
class JobSpec:
    """One `[[mpjobs.jobs]]` entry, validated and normalised.

    `handler` is "pkg.mod:func" / "pkg.mod.func" for functions (called with args/kwargs),
    or the class path for classes (instantiated with **params, then `.run()` is called,
    see `run_class_handler`). `initial_delay` is seconds, "startup" (run once at start),
    or None. `frequency` is seconds for "interval", the expression for "cron", "HH:MM"
    for "daily", or None (with frequency_kind None) for a job that runs once.
    """

    id: str
    handler: str
    handler_kind: Literal["function", "class"]
    params: dict[str, Any] = field(default_factory=dict)
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    initial_delay: float | Literal["startup"] | None = None
    frequency_kind: Literal["interval", "cron", "daily"] | None = None
    frequency: str | float | None = None
    tz: str | None = None
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 1
    timeout: float | None = None
    memory_limit: int | None = None

    def make_trigger(self, anchor: float) -> Trigger | None:
        """Build the recurring trigger (None for a run-once job).

        `anchor` is the first fire of an interval job (e.g. start time + initial_delay);
        cron and daily jobs ignore it because their fire times come from the clock.
        """
        if self.frequency_kind == "interval":
            assert isinstance(self.frequency, float)
            return IntervalTrigger(self.frequency, anchor)
        if self.frequency_kind == "cron":
            assert isinstance(self.frequency, str)
            return CronTrigger(self.frequency, self.tz)
        if self.frequency_kind == "daily":
            assert isinstance(self.frequency, str)
            hour, minute = (int(part) for part in self.frequency.split(":"))
            return DailyTrigger(hour, minute, self.tz)
        return None


@dataclass(frozen=True)
class Config:
    """A whole config file; None means "not set here", leaving the CLI's or App's default."""

    path: Path
    app: str | None
    home: str | None
    workers: int | None
    queues: list[str] | None
    imports: list[str]
    jobs: list[JobSpec]


class _Where:
    """Builds error messages that name the file, the entry and the field."""

    def __init__(self, path: Path, entry: str = "") -> None:
        self.path = path
        self.entry = entry

    def at(self, entry: str) -> _Where:
        return _Where(self.path, entry)

    def error(self, message: str, key: str | None = None) -> ConfigError:
        parts = [str(self.path)]
        if self.entry:
            parts.append(self.entry)
        if key is not None:
            parts.append(f"field {key!r}")
        return ConfigError(": ".join([*parts, message]))


# ---------------------------------------------------------------------------------------
# Reading files


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a .toml, .yaml or .yml config file; raise ConfigError if bad."""
    p = Path(path)
    where = _Where(p)
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise where.error(f"unsupported config file type {p.suffix!r}: use .toml, .yaml or .yml")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise where.error(f"cannot read config file: {exc.strerror or exc}") from exc
    data = _parse_toml(raw, where) if suffix == ".toml" else _parse_yaml(raw, where)
    return _build_config(data, where)


def _parse_toml(raw: bytes, where: _Where) -> object:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 only
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise where.error(f"not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise where.error(f"invalid TOML: {exc}") from exc


_yaml_loader: type[Any] | None = None


def _yaml_loader_class() -> type[Any]:
    """A SafeLoader that leaves sexagesimal-looking scalars ("16:00", "1:30:00") as strings.

    YAML 1.1 would turn `16:00` into 960 and `1:30:00` into 5400; in a job config those are
    times of day, and an int there would silently mean "every 960 seconds".
    """
    global _yaml_loader
    if _yaml_loader is None:
        import yaml

        class _MpjobsLoader(yaml.SafeLoader):
            pass

        resolvers = {
            key: list(value) for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }
        sexagesimal = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
        for first in "-+0123456789":
            resolvers.setdefault(first, []).insert(0, ("tag:yaml.org,2002:str", sexagesimal))
        _MpjobsLoader.yaml_implicit_resolvers = resolvers
        _yaml_loader = _MpjobsLoader
    return _yaml_loader


def _parse_yaml(raw: bytes, where: _Where) -> object:
    try:
        import yaml
    except ImportError as exc:
        raise where.error(
            "YAML config files need PyYAML: install mpjobs[yaml] (pip install 'mpjobs[yaml]')"
        ) from exc
    try:
        return yaml.load(raw.decode("utf-8"), Loader=_yaml_loader_class())  # a SafeLoader
    except UnicodeDecodeError as exc:
        raise where.error(f"not UTF-8 text: {exc}") from exc
    except yaml.YAMLError as exc:  # one line, like TOML's: "<problem> (at line L, column C)"
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        mark = getattr(exc, "problem_mark", None)
        at = f" (at line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise where.error(f"invalid YAML: {problem}{at}") from exc


# ---------------------------------------------------------------------------------------
# Validation


def _build_config(data: object, where: _Where) -> Config:
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


def _build_job(entry: object, where: _Where) -> JobSpec:
    if not isinstance(entry, Mapping):
        raise where.error("expected a table/mapping")
    handler, kind, params = _handler(entry, where)
    job_id = _opt_str(entry, "id", where)
    if job_id is None:
        job_id = handler
    elif not job_id.strip():
        raise where.error("must not be empty", "id")
    where = _Where(where.path, f"{where.entry} ({job_id!r})")
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
        _check(lambda: DailyTrigger(0, 0, tz), where, "tz")  # is it a known zone?
    frequency_kind, frequency = _frequency(entry.get("frequency"), tz, where)
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
        initial_delay=_initial_delay(entry.get("initial_delay"), where),
        frequency_kind=frequency_kind,
        frequency=frequency,
        tz=tz,
        queue="default" if queue is None else queue,
        priority=0 if priority is None else priority,
        max_attempts=1 if max_attempts is None else max_attempts,
        timeout=_opt_timeout(timeout, where),
        memory_limit=None
        if memory_limit is None
        else _check(lambda: parse_bytes(memory_limit, what="memory limit"), where, "memory_limit"),
    )


def _handler(
    entry: Mapping[str, Any], where: _Where
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


def _frequency(
    value: object, tz: str | None, where: _Where
) -> tuple[Literal["interval", "cron", "daily"] | None, str | float | None]:
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        return None, None
    key = "frequency"
    expected = "expected a duration, a cron expression, HH:MM or none"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise where.error(f"{expected}, got {value!r}", "frequency")
    if isinstance(value, (int, float)):
        seconds = _check(lambda: parse_duration(value, what="frequency"), where, "frequency")
        if seconds <= 0:
            raise where.error(f"invalid frequency {value!r}: must be greater than zero", key)
        return "interval", seconds
    text = " ".join(value.split())
    daily = _check(lambda: parse_daily_time(text), where, "frequency")
    if daily is not None:
        return "daily", f"{daily[0]:02d}:{daily[1]:02d}"
    try:
        seconds = parse_duration(text, what="frequency")
    except ValueError as exc:
        # Not a duration ("2h 32m" has spaces too, so durations are tried first).
        if " " in text or text.startswith("@"):
            _check(lambda: CronTrigger(text, tz), where, "frequency")
            return "cron", text
        raise where.error(
            f"invalid frequency {value!r}: expected a duration ('30m', '2h32m'), a cron"
            " expression ('*/5 * * * *'), a time of day ('16:00') or none",
            "frequency",
        ) from exc
    if seconds <= 0:
        raise where.error(f"invalid frequency {value!r}: must be greater than zero", "frequency")
    return "interval", seconds


def _initial_delay(value: object, where: _Where) -> float | Literal["startup"] | None:
    if value is None:
        return None
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _STARTUP_WORDS:
            return "startup"
        if word in _NONE_WORDS:
            return None
    if not isinstance(value, (int, float, str)):
        raise where.error(f"expected a duration or 'startup', got {value!r}", "initial_delay")
    return _check(lambda: parse_duration(value, what="initial_delay"), where, "initial_delay")


def _opt_timeout(value: object, where: _Where) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float, str)):
        raise where.error(f"expected a duration, got {value!r}", "timeout")
    seconds = _check(lambda: parse_duration(value, what="timeout"), where, "timeout")
    if seconds <= 0:
        raise where.error(f"invalid timeout {value!r}: must be greater than zero", "timeout")
    return seconds


_T = TypeVar("_T")


def _check(fn: Callable[[], _T], where: _Where, key: str) -> _T:
    """Run a validator from durations/triggers, re-raising its ValueError as ConfigError."""
    try:
        return fn()
    except ValueError as exc:
        raise where.error(str(exc), key) from exc


def _reject_unknown(
    table: Mapping[Any, Any], known: tuple[str, ...], where: _Where, noun: str
) -> None:
    unknown = [str(k) for k in table if k not in known]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise where.error(
            f"unknown {noun}{'s' if len(unknown) > 1 else ''} {names}"
            f" (known: {', '.join(known)})"
        )


def _opt_str(table: Mapping[str, Any], key: str, where: _Where) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise where.error(f"expected a string, got {value!r}", key)
    return value


def _opt_int(
    table: Mapping[str, Any], key: str, where: _Where, *, minimum: int | None = None
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
    table: Mapping[str, Any], key: str, where: _Where, *, allow_csv: bool
) -> list[str] | None:
    value = table.get(key)
    if value is None:
        return None
    if allow_csv and isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise where.error(f"expected a list of non-empty strings, got {value!r}", key)
    return [v.strip() for v in value]


# ---------------------------------------------------------------------------------------
# Running class handlers


def import_object(path: str) -> object:
    """Import "pkg.mod:attr.sub" or "pkg.mod.attr"; raise ImportError naming `path`."""
    if ":" in path:
        module_name, _, attr_path = path.partition(":")
        attrs = attr_path.split(".") if attr_path else []
    else:
        module_name, _, attr = path.rpartition(".")
        attrs = [attr]
    if not module_name or not attrs or not all(attrs):
        raise ImportError(f"cannot import {path!r}: expected 'pkg.mod:name' or 'pkg.mod.name'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import {path!r}: {exc}") from exc
    for attr in attrs:
        try:
            obj = getattr(obj, attr)
        except AttributeError as exc:
            raise ImportError(f"cannot import {path!r}: no attribute {attr!r}") from exc
    return obj


def run_class_handler(class_path: str, params: dict[str, object]) -> object:
    """Instantiate the class at `class_path` with **params and return its `.run()`.

    This is what a worker executes for a `handler = { class = ..., params = ... }` job; it
    is a plain module-level function so the job pickles as a reference, not as code.
    """
    cls = import_object(class_path)
    if not callable(cls):
        raise ImportError(f"cannot use {class_path!r} as a job class: it is not callable")
    instance = cls(**params)
    run = getattr(instance, "run", None)
    if not callable(run):
        raise TypeError(f"{class_path} instance has no run() method")
    return run()
