"""Overhead of mpjobs inside a web request: push, and push-then-wait, vs an empty endpoint.

    python -m benchmarks.web_overhead [--requests 200] [--server uvicorn|gunicorn|both]

Starts the real servers the integration tests use (tests/apps: FastAPI under uvicorn
with `lifespan=app.lifespan`; a WSGI app under gunicorn with 3 sync
workers and the mpjobs hooks), sends sequential requests from one httpx client and
prints p50/p99 latency of:

  /noop   an endpoint that does nothing (the server's own cost)
  /push   push one job (one SQLite transaction), return its id
  /add    push one job and wait for its result (`await job.wait_async()` / `job.wait()`)

Overhead = endpoint latency - /noop latency at the same percentile. Not a test: the
figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "apps"
sys.path.insert(0, str(APPS))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(APPS), str(ROOT), os.environ.get("PYTHONPATH")) if p
)

from web_helpers import Server  # noqa: E402

SERVERS = {
    # one web process: with --workers N, uvicorn 0.54's inherited sockets miss TCP_NODELAY
    # and every response waits ~40 ms for a delayed ACK, which would drown the figures
    "uvicorn": ["uvicorn", "web_fastapi:api", "--workers", "1", "--host", "127.0.0.1",
                "--port", "{port}", "--log-level", "warning", "--no-access-log"],
    "gunicorn": ["gunicorn", "-c", str(APPS / "web_gunicorn_conf.py"), "web_wsgi:application",
                 "--log-level", "warning"],
}  # fmt: skip
PATHS = {"noop": "/noop", "push": "/push?x=1&s=0", "push+wait": "/add?x=1&y=2"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(server: Server, path: str, n: int) -> list[float]:
    for _ in range(20):  # warm up: connections, imports, SQLite pages
        server.get(path)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        server.get(path)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def run(name: str, n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mpjobs-web-bench-") as tmp:
        home = Path(tmp) / "home"
        server = Server(SERVERS[name], home, Path(tmp), {"WEB_TICK_EVERY": "60"})
        try:
            server.wait_up(timeout=60)
            server.get("/add")  # the pool is up
            results = {label: measure(server, path, n) for label, path in PATHS.items()}
        finally:
            server.stop(signal.SIGTERM)
            server.kill_all()
    base50, base99 = pct(results["noop"], 0.5), pct(results["noop"], 0.99)
    print(f"\n{name}: {n} sequential requests per endpoint (ms)")
    print(f"  {'endpoint':<10} {'p50':>7} {'p99':>7} {'mean':>7}   overhead p50 / p99")
    for label, values in results.items():
        p50, p99 = pct(values, 0.5), pct(values, 0.99)
        extra = "" if label == "noop" else f"   {p50 - base50:+.2f} / {p99 - base99:+.2f}"
        print(f"  {label:<10} {p50:7.2f} {p99:7.2f} {statistics.mean(values):7.2f}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--server", choices=["uvicorn", "gunicorn", "both"], default="both")
    args = parser.parse_args()
    for name in ("uvicorn", "gunicorn") if args.server == "both" else (args.server,):
        run(name, args.requests)


if __name__ == "__main__":
    main()
