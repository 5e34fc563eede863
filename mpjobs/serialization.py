"""How callables, arguments and results travel through the store.

A callable goes by import path when it has one, so a worker runs the code it has
installed, and by cloudpickle otherwise. Data goes by the C pickler when that is safe,
because it is several times faster than cloudpickle on the push path, and by cloudpickle
when it contains something the C pickler would only store by a reference the worker
cannot resolve (lambdas, local functions, anything defined in __main__).
"""

from __future__ import annotations

import functools
import importlib
import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle

from mpjobs.errors import SerializationError

_PROTOCOL = 5


def dumps(obj: object, what: str = "value") -> bytes:
    """Pickle `obj`, raising SerializationError that says what could not be pickled."""
    try:
        data = pickle.dumps(obj, _PROTOCOL)
        if b"__main__" not in data:
            return data
    except Exception:
        pass
    try:
        return bytes(cloudpickle.dumps(obj, _PROTOCOL))
    except Exception as exc:
        raise SerializationError(f"cannot pickle {what}: {type(exc).__name__}: {exc}") from exc


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def import_path_of(fn: Callable[..., Any]) -> str | None:
    """'module:qualname' when a worker could import `fn` by that path, else None."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    try:
        return f"{module}:{qualname}" if resolve_path(f"{module}:{qualname}") is fn else None
    except Exception:
        return None


def split_path(path: str) -> tuple[str, str]:
    """Split 'pkg.mod:attr.sub' (or 'pkg.mod.attr') into module and attribute parts."""
    if ":" in path:
        module, _, attr = path.partition(":")
    else:
        module, _, attr = path.rpartition(".")
    if (
        not module
        or not attr
        or not all(p.isidentifier() for p in (module + "." + attr).split("."))
    ):
        raise ValueError(f"invalid import path {path!r}: expected 'package.module:function'")
    return module, attr


def resolve_path(path: str) -> Any:
    """Import the object named by 'pkg.mod:attr.sub' (or 'pkg.mod.attr'); the one importer.

    Workers resolve job paths with it, config files their handler classes, and `mpjobs
    run` its MODULE:APP, so all three accept the same paths and fail with the same words:
    an ImportError naming the module and the path when the module cannot be imported,
    or the attribute it lacks. A malformed path is a ValueError (see `split_path`).
    """
    module_name, attr = split_path(path)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import {module_name!r} (from {path!r}): {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ImportError(
                f"cannot import {path!r}: {module_name!r} has no attribute {attr!r}"
            ) from exc
    return obj


@functools.lru_cache(maxsize=512)
def _resolve_cached(path: str) -> Callable[..., Any]:
    obj = resolve_path(path)
    fn = getattr(obj, "fn", obj)  # a @app.task wrapper runs its undecorated function
    if not callable(fn):
        raise TypeError(f"{path!r} is not callable")
    return fn  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=256)
def _unpickle_cached(data: bytes) -> Callable[..., Any]:
    fn = pickle.loads(data)
    return getattr(fn, "fn", fn)  # type: ignore[no-any-return]


def load_callable(path: str | None, pickled: bytes | None) -> Callable[..., Any]:
    """The function a job runs; cached, because the same few tasks run over and over."""
    if path is not None:
        return _resolve_cached(path)
    if pickled is None:
        raise SerializationError("job has neither an import path nor a pickled callable")
    return _unpickle_cached(pickled)


def callable_ref(fn: Callable[..., Any]) -> tuple[str | None, bytes | None]:
    """(import path, None) or (None, cloudpickle bytes) for storing `fn`."""
    path = import_path_of(fn)
    if path is not None:
        return path, None
    try:
        return None, bytes(cloudpickle.dumps(fn, _PROTOCOL))
    except Exception as exc:
        raise SerializationError(f"cannot pickle callable {fn!r}: {exc}") from exc
