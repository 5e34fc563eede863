"""The peer: the same no-op task on SqliteHuey, for `huey_consumer ... -k process -w 2`.

The database file and fsync choice come from the environment, set by benchmarks.run.
"""

from __future__ import annotations

import os

from huey import SqliteHuey

_fsync = os.environ.get("MPJOBS_BENCH_HUEY_FSYNC", "")
huey = SqliteHuey(
    "bench",
    filename=os.environ.get("MPJOBS_BENCH_HUEY_DB", "/tmp/mpjobs-bench-huey.db"),
    fsync=None if _fsync == "" else _fsync == "1",
)


@huey.task()
def noop() -> None:
    return None
