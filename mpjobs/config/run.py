"""What a worker runs for a config file's class handler (`handler = { class = ... }`).

A worker imports this module at run time (through `mpjobs.config:run_class_handler`,
the path stored in such jobs), so it imports nothing of the config file machinery:
no file parsing, no checks, nothing of `apply.py`.
"""

from __future__ import annotations

from mpjobs.serialization import resolve_path

__all__ = ["run_class_handler"]


def run_class_handler(class_path: str, params: dict[str, object]) -> object:
    """Instantiate the class at `class_path` with **params and return its `.run()`.

    This is what a worker executes for a `handler = { class = ..., params = ... }` job; it
    is a plain module-level function so the job pickles as a reference, not as code.
    """
    cls = resolve_path(class_path)
    if not callable(cls):
        raise ImportError(f"cannot use {class_path!r} as a job class: it is not callable")
    instance = cls(**params)
    run = getattr(instance, "run", None)
    if not callable(run):
        raise TypeError(f"{class_path} instance has no run() method")
    return run()
