"""Reading job config files (TOML or YAML) in the style of core-lib's JobScheduler.

Loading only reads and validates: handlers are checked for syntax but not imported, so a
config can be checked (`mpjobs run --config x.toml`, CI) without the application's
dependencies, and a typo is reported with its file, entry and field instead of as a
traceback from a worker.

Layout: a top-level table `mpjobs` (or `core_lib`, so core-lib seed files load as they
are) with optional `app`, `home`, `workers`, `queues`, `imports` and a list of `jobs`.
See `JobSpec` for the job fields and `spec` for the `frequency` grammar.

YAML 1.1 reads an unquoted `frequency: 16:00` as the sexagesimal integer 960. core-lib
takes that as 16 minutes; mpjobs deliberately reads it as 16:00 every day, exactly like
the quoted "16:00", by loading YAML with a loader that keeps `H:MM`-style scalars as
strings. A plain integer frequency therefore always means seconds.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from mpjobs.config.check import build_config
from mpjobs.config.spec import Config, Where

__all__ = ["load_config"]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a .toml, .yaml or .yml config file; raise ConfigError if bad."""
    p = Path(path)
    where = Where(p)
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise where.error(f"unsupported config file type {p.suffix!r}: use .toml, .yaml or .yml")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise where.error(f"cannot read config file: {exc.strerror or exc}") from exc
    data = _parse_toml(raw, where) if suffix == ".toml" else _parse_yaml(raw, where)
    return build_config(data, where)


def _parse_toml(raw: bytes, where: Where) -> object:
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


def _parse_yaml(raw: bytes, where: Where) -> object:
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
