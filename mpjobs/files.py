"""Small files that other processes read while we may be rewriting them.

`leader.json`, a kill note and `pool.json` are read by processes that may look at any
moment, including the instant their writer is killed. Each is therefore written to a
temporary file in the same directory (same filesystem, so the rename is atomic) and
renamed over the old one: a reader sees the old content or the new, never half of
either. No fsync: these files describe live processes, and after a crash of the host
nothing they said is true any more.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_json_atomic"]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` by temp file and rename; leave no temp file behind.

    The temp name carries the pid, so two processes writing the same file at once each
    rename a whole file of their own and the last one wins.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
