"""Coordination figures: leader failover and schedule lag, with two real supervisors.

    python -m benchmarks.coord_bench [--kills 20] [--every 0.05] [--lag-for 6]

Failover: a leader lifecycle task (tick every `--every` s) appends "pid event time" lines.
The leader coordinator (found with current_leader) is SIGKILLed; we report kill -> the
new leader's setup, and kill -> its first tick (setup + one period, by design: ticks
come at start + k*every, and k starts at 1). Each kill waits until the killed
supervisor has a replacement coordinator older than 1.1 s, so the next kill is not
mistaken for a boot failure (which the supervisor answers with a back-off).

Schedule lag: an `every` schedule (0.05 s) for `--lag-for` seconds; lag = the job's
started_at - its exec_at (the due time), read from the store.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

import mpjobs
from mpjobs.coordination.leader import current_leader
from mpjobs.coordination.notify import Watcher

OUT = Path(os.environ.get("COORD_BENCH_OUT", "/dev/null"))


def record(event: str) -> None:
    fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{os.getpid()} {event} {time.monotonic()!r}\n".encode())
    finally:
        os.close(fd)


def events() -> list[tuple[int, str, float]]:
    if not OUT.exists():
        return []
    rows = (ln.split() for ln in OUT.read_text().splitlines())
    return [(int(p), e, float(t)) for p, e, t in rows]


def noop() -> None:
    return None


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def wait(pred: object, timeout: float, home: Path) -> object:
    deadline = time.monotonic() + timeout
    with Watcher(home) as w:
        while True:
            v = pred()  # type: ignore[operator]
            if v:
                return v
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark wait timed out")
            w.wait(0.005)


def failover(kills: int, every: float) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="coord-bench-"))
    global OUT
    OUT = tmp / "ticks"
    app = mpjobs.App(tmp / "home")

    @app.lifecycle(every=every, scope="leader")
    def ticker() -> Iterator[None]:
        record("setup")
        while True:
            yield
            record("tick")

    pools = [app.start(workers=1, graceful_timeout=5.0) for _ in range(2)]
    home = app.home.path
    to_setup: list[float] = []
    to_tick: list[float] = []
    to_lock: list[float] = []
    try:
        for p in pools:
            p.wait_ready(20)
        for _ in range(kills):

            def ready() -> dict[str, object] | None:
                info = current_leader(app.home)
                coords = [p.coordinator() for p in pools]
                if info is None or not all(coords):
                    return None
                try:
                    old = all(time.time() - psutil.Process(c).create_time() > 1.1 for c in coords)  # type: ignore[arg-type]
                except psutil.Error:
                    return None
                return info if old else None

            info = wait(ready, 30, home)
            pid = int(info["pid"])  # type: ignore[index]
            t_kill, t_kill_wall = time.monotonic(), time.time()
            os.kill(pid, signal.SIGKILL)

            def new_tick(t_kill: float = t_kill, pid: int = pid) -> bool:
                return any(e == "tick" and p != pid and t > t_kill for p, e, t in events())

            wait(new_tick, 30, home)
            evs = [(p, e, t) for p, e, t in events() if t > t_kill and p != pid]
            to_setup.append((next(t for p, e, t in evs if e == "setup") - t_kill) * 1000)
            to_tick.append((next(t for p, e, t in evs if e == "tick") - t_kill) * 1000)
            new = current_leader(app.home)
            if new is not None and new["pid"] != pid:  # leader.json: when the flock was won
                to_lock.append((float(new["since"]) - t_kill_wall) * 1000)
    finally:
        for p in pools:
            p.stop(20)
    return {
        "kills": kills,
        "failover_lock_p50_ms": pct(to_lock, 50), "failover_lock_p99_ms": pct(to_lock, 99),
        "failover_setup_p50_ms": pct(to_setup, 50), "failover_setup_p99_ms": pct(to_setup, 99),
        "failover_tick_p50_ms": pct(to_tick, 50), "failover_tick_p99_ms": pct(to_tick, 99),
        "tick_every_ms": every * 1000,
    }  # fmt: skip


def schedule_lag(duration: float, every: float = 0.05) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="coord-bench-"))
    app = mpjobs.App(tmp / "home")
    pools = [app.start(workers=1, graceful_timeout=5.0) for _ in range(2)]
    try:
        for p in pools:
            p.wait_ready(20)
        sch = app.schedule("benchmarks.coord_bench:noop").options(id="lag").every(every)
        time.sleep(duration)  # a benchmark, not a test: it measures what happens meanwhile
        sch.pause()
        wait(lambda: app.store.active_count("lag") == 0, 20, app.home.path)
        rows = app.store.list_jobs("SUCCESS", None, 100_000, schedule_id="lag")
    finally:
        for p in pools:
            p.stop(20)
    lags = [((r.started_at or 0) - r.exec_at) * 1000 for r in rows]
    return {"fires": len(lags), "schedule_lag_p50_ms": pct(lags, 50),
            "schedule_lag_p99_ms": pct(lags, 99), "schedule_lag_max_ms": max(lags)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--every", type=float, default=0.05)
    ap.add_argument("--lag-for", type=float, default=6.0)
    args = ap.parse_args()
    out = {**failover(args.kills, args.every), **schedule_lag(args.lag_for)}
    for k, v in out.items():
        print(f"{k:<24} {v:10.2f}" if isinstance(v, float) else f"{k:<24} {v:>10}")


if __name__ == "__main__":
    main()
