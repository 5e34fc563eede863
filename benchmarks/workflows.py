"""Workflows' cost: a 10,000-member group with a chord against 10,000 independent jobs.

    python -m benchmarks.workflows [--n 10000] [--store postgresql://...]
    python -m benchmarks.run --only workflows [--quick]

For each shape, on a fresh home (or a fresh schema of `--store`): the push rate (jobs
per second of the push call: `push_many` for the independent jobs, `app.group` plus
`group.then` for the chord) and the completion rate (members per second from the
moment a 2-worker pool is ready until the last job, the chord included, has ended; the
same 10 ms poll of the live count for both). The chord's own job is not counted.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import mpjobs

POLL = 0.01
NOOP = "benchmarks.tasks:noop"


def _live(app: mpjobs.App) -> int:
    return sum(sum(c.values()) for c in app.store.queue_depths().values())


def _app(root: Path, name: str, store: str | None) -> mpjobs.App:
    """A fresh home, and a fresh schema of `store` if given."""
    home = root / name
    home.mkdir(mode=0o700)
    url = None
    if store:
        sep = "&" if "?" in store else "?"
        url = f"{store}{sep}schema=bench_{uuid.uuid4().hex[:12]}"
    return mpjobs.App(home, url)


def _drain(app: mpjobs.App, n: int, timeout: float = 600.0) -> float:
    """Members per second, from a 2-worker pool ready to no live job left."""
    with app.start(workers=2) as pool:
        pool.wait_ready(timeout=30, workers=2)
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        while _live(app):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{_live(app)} jobs still live after {timeout} s")
            time.sleep(POLL)
        return n / (time.perf_counter() - t0)


def run(root: Path, n: int = 10_000, store: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    app = _app(root, "independent", store)
    builders = [app.schedule(NOOP) for _ in range(n)]
    t0 = time.perf_counter()
    app.push_many(builders)
    out["wf_independent_push_per_s"] = round(n / (time.perf_counter() - t0))
    out["wf_independent_complete_per_s"] = round(_drain(app, n))
    app = _app(root, "chord", store)
    builders = [app.schedule(NOOP) for _ in range(n)]
    t0 = time.perf_counter()
    group = app.group(builders)
    chord = group.then(app.schedule(len))
    out["wf_group_chord_push_per_s"] = round(n / (time.perf_counter() - t0))
    out["wf_group_chord_complete_per_s"] = round(_drain(app, n))
    if chord.result() != n:
        raise AssertionError(f"the chord saw {chord.result()} results, not {n}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workflows", description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--store", help="a postgresql:// URL (default: SQLite in a temp home)")
    args = parser.parse_args(argv)
    logging.getLogger("mpjobs").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="mpjobs-wf-bench-") as tmp:
        print(json.dumps(run(Path(tmp), args.n, args.store), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
