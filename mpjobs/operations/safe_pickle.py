"""Showing a pickle without running it: what the dashboard and `mpjobs jobs show` print.

A job's arguments, result and exception are pickles, and unpickling runs whatever
callable the pickle names (`__reduce__`): showing a stranger's job must never do that.
`SafeUnpickler` loads only plain builtin data (None, bool, int, float, complex, str,
bytes, bytearray, list, tuple, dict, set, frozenset): the opcodes for those name no
global, and of globals only the few builtin containers are allowed. Anything else is
refused before it is called, and shown as a description instead: its size and the
classes and functions it names, read by `pickletools` without executing anything.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from typing import Any

# The only globals a plain-data pickle needs (older protocols spell these as calls).
_ALLOWED = {("builtins", n) for n in ("set", "frozenset", "bytearray", "complex")} | {
    ("__builtin__", n) for n in ("set", "frozenset", "bytearray", "complex")
}
MAX_SHOWN = 1 << 20  # bytes: a larger pickle is described, not loaded
MAX_REPR = 20_000  # characters of a shown value


class Refused(pickle.UnpicklingError):
    """The pickle names something other than plain builtin data."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """How protocols 0-2 spell bytes (`_codecs.encode(str, "latin1")`), and nothing else:
    any other codec (zlib, bz2...) could turn a small pickle into a huge value."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise Refused(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        raise Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise Refused("a persistent id")


def safe_loads(data: bytes) -> Any:
    """The value of a plain-data pickle; Refused (or UnpicklingError) for anything else."""
    if len(data) > MAX_SHOWN:
        raise Refused(f"{len(data)} bytes")
    return SafeUnpickler(io.BytesIO(data)).load()


def globals_named(data: bytes, cap: int = 20) -> list[str]:
    """The classes and functions a pickle names, read from its opcodes, not run."""
    names: list[str] = []
    strings: list[str] = []  # STACK_GLOBAL takes the two strings pushed before it
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                names.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
            if len(names) >= cap:
                break
    except Exception:  # a damaged or truncated pickle: show what was read
        names.append("(unreadable past this point)")
    return list(dict.fromkeys(names))


def describe(data: bytes | None) -> dict[str, Any]:
    """What to show of a pickle: {"value": repr} if plain data, else a description."""
    if data is None:
        return {"safe": True, "repr": "None"}
    try:
        value = safe_loads(data)
    except Exception as exc:
        names = globals_named(data)
        what = ", ".join(names) if names else type(exc).__name__
        return {
            "safe": False,
            "repr": f"<pickle of {len(data)} bytes, not loaded: it names {what}>",
            "names": names,
        }
    text = repr(value)
    if len(text) > MAX_REPR:
        text = text[:MAX_REPR] + f"... [{len(text) - MAX_REPR} characters more]"
    return {"safe": True, "repr": text}
