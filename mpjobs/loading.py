"""Finding the App a user names as MODULE:APP, for `mpjobs run`, config files and gunicorn.

`mpjobs run myproject.jobs:app`, a config file's `app = "..."` and gunicorn's
`mpjobs_app = "..."` all name an App the same way, so they share this one loader: a
module path is imported with `serialization.resolve_path` (the importer workers use for
job paths), and a file path (`path/to/jobs.py:app`) is run as a script. Either way the
current directory (or the file's) is importable first, as `python -m` would make it.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from mpjobs.app import App
from mpjobs.errors import MpjobsError
from mpjobs.serialization import resolve_path

__all__ = ["UsageError", "load_app"]


class UsageError(MpjobsError):
    """A mistake on the command line or in a setting that names something: exit 2, one line."""


def load_app(target: str) -> App:
    """Import 'pkg.module:app' or 'path/to/file.py:app' and check it is an mpjobs.App."""
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        raise UsageError(f"expected MODULE:APP (for example myproject.jobs:app), got {target!r}")
    obj: object
    if module_part.endswith(".py") or os.sep in module_part:
        path = Path(module_part)
        if not path.is_file():
            raise UsageError(f"cannot load {target!r}: no file {path}")
        sys.path.insert(0, str(path.parent.absolute()))
        namespace = runpy.run_path(str(path), run_name="__mpjobs_main__")
        if attr not in namespace:
            raise UsageError(f"cannot load {target!r}: {module_part!r} has no attribute {attr!r}")
        obj = namespace[attr]
    else:
        sys.path.insert(0, os.getcwd())
        try:
            obj = resolve_path(target)
        except (ImportError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
    if not isinstance(obj, App):
        raise UsageError(f"{target!r} is a {type(obj).__name__}, not an mpjobs.App")
    return obj
