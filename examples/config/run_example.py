"""Run examples/config/mpjobs.toml and mpjobs.yaml the way you would in production.

For each file: start `python -m mpjobs run --config FILE --home HOME` as a subprocess,
wait (at most 30 s) until the store shows that its jobs ran, stop it with SIGTERM as a
service manager would, and check that it exited 0. Prints what ran.

    python examples/config/run_example.py   # homes under $MPJOBS_HOME if set, else a temp dir
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mpjobs

HERE = Path(__file__).resolve().parent
OWN_HOME = not os.environ.get("MPJOBS_HOME")
BASE = Path(os.environ.get("MPJOBS_HOME") or tempfile.mkdtemp(prefix="mpjobs-config-"))


def ran(app: mpjobs.App, since: float) -> dict[str, int]:
    """How many jobs of each config entry (the job name is the entry's id) succeeded,
    of those made since `since` (a PostgreSQL store may hold an earlier run's too)."""
    counts: dict[str, int] = {}
    for rec in app.store.list_jobs("SUCCESS", None, 1000):
        if rec.created_at >= since:
            counts[rec.name] = counts.get(rec.name, 0) + 1
    return counts


def wait_until_ran(
    app: mpjobs.App, proc: subprocess.Popen[bytes], timeout: float
) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    since = time.time()
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mpjobs run exited early with code {proc.returncode}")
        # Not before the pool has made the store (SQLite in the home; a PostgreSQL
        # store named by $MPJOBS_STORE is elsewhere, and ready once the pool is up).
        if app.store_url is not None or (app.home.path / "mpjobs.db").exists():
            counts = ran(app, since)
            if (
                counts.get("heartbeat", 0) >= 2
                and "daily-report" in counts
                and "warm-cache" in counts
            ):
                return counts
        time.sleep(0.1)
    raise SystemExit(f"jobs did not run within {timeout:.0f} s; so far: {counts}")


def run_config(config: Path, home: Path) -> None:
    cmd = [sys.executable, "-m", "mpjobs", "run", "--config", str(config), "--home", str(home)]
    print("$", " ".join(cmd[2:]), flush=True)
    proc = subprocess.Popen(cmd)
    try:
        counts = wait_until_ran(mpjobs.App(home=home), proc, timeout=30)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0:
        raise SystemExit(f"mpjobs run exited with {code} after SIGTERM")
    app = mpjobs.App(home=home)
    print(f"{config.name}: jobs that ran: {counts}")
    for sched in app.schedules():
        nrt = sched.next_run_time
        print(
            f"  schedule {sched.id:<13} {sched.trigger:<40} next {nrt.astimezone() if nrt else '-'}"
        )
    print(f"{config.name}: stopped cleanly with SIGTERM (exit 0)\n", flush=True)


def main() -> None:
    try:
        run_config(HERE / "mpjobs.toml", BASE / "toml")
        run_config(HERE / "mpjobs.yaml", BASE / "yaml")
    finally:
        if OWN_HOME:
            shutil.rmtree(BASE, ignore_errors=True)


if __name__ == "__main__":
    main()
