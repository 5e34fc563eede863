"""Job config files (TOML or YAML) for `mpjobs run --config`: read, check, apply.

- `load.py` reads a file (TOML, or YAML with PyYAML) and `check.py` checks what it holds
  into the data of `spec.py`: `Config`, `JobSpec`, and the `frequency` grammar;
- `apply.py` turns a `Config` into an App and declares its schedules and jobs;
- `run.py` is what a worker runs for a class handler.

Workers import this package at run time: a class handler's job stores the path
`mpjobs.config:run_class_handler`. So only `run` is imported here; the rest is imported
on first use of its name (PEP 562), and a worker never loads the file parsing, the
checks or the App machinery it does not use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mpjobs.config.run import run_class_handler
from mpjobs.serialization import resolve_path as import_object

if TYPE_CHECKING:
    from mpjobs.config.apply import apply_config, apply_jobs, check_config, check_file
    from mpjobs.config.load import load_config
    from mpjobs.config.spec import Config, JobSpec

__all__ = [
    "Config",
    "JobSpec",
    "apply_config",
    "apply_jobs",
    "check_config",
    "check_file",
    "import_object",
    "load_config",
    "run_class_handler",
]

_LAZY = {
    "Config": "mpjobs.config.spec",
    "JobSpec": "mpjobs.config.spec",
    "load_config": "mpjobs.config.load",
    "apply_config": "mpjobs.config.apply",
    "apply_jobs": "mpjobs.config.apply",
    "check_config": "mpjobs.config.check",
    "check_file": "mpjobs.config.apply",
}


def __getattr__(name: str) -> object:
    """Import a lazily exported name's module on first use (see the module docstring)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mpjobs.config' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
