"""Lifecycle tasks: one leader among several supervisors, failover, and per-worker tasks.

Starts two pools (two supervisors, as if two services shared one home). A leader-scoped
lifecycle task ticks in exactly one process; the example SIGKILLs that process and shows
another one taking over with its own setup. A worker-scoped task runs in every worker
and cleans up when the pools stop gracefully. Prints a short summary and exits 0.

    python examples/lifecycle.py        # uses $MPJOBS_HOME if set, else a temp dir
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import mpjobs
from mpjobs.coordination.leader import current_leader

OWN_HOME = not os.environ.get("MPJOBS_HOME")
HOME = Path(os.environ.get("MPJOBS_HOME") or tempfile.mkdtemp(prefix="mpjobs-lifecycle-"))
LOG = Path(tempfile.mkdtemp(prefix="mpjobs-lifecycle-log-")) / "events"
app = mpjobs.App(home=HOME)


def note(what: str) -> None:
    # O_APPEND: one write per line, so lines from different processes never mix.
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{os.getpid()} {what} {time.time():.3f}\n".encode())
    finally:
        os.close(fd)


@app.lifecycle(every="0.2s", scope="leader")
def refresher() -> Iterator[None]:
    """Runs in the leader only: setup on becoming leader, a tick every 0.2 s, cleanup."""
    note("leader-setup")  # e.g. open a connection
    try:
        while True:
            yield
            note("leader-tick")  # e.g. refresh a cache shared through the store
    finally:
        note("leader-cleanup")  # runs on a graceful stop, not after SIGKILL


@app.lifecycle(every="0.5s", scope="worker")
async def heartbeat() -> AsyncIterator[None]:
    """Async generators work too; scope="worker" runs one copy in each worker."""
    note("worker-setup")
    try:
        while True:
            yield
            note("worker-tick")
    finally:
        note("worker-cleanup")


def events() -> list[tuple[int, str, float]]:
    if not LOG.exists():
        return []
    rows = (line.split() for line in LOG.read_text().splitlines())
    return [(int(p), w, float(t)) for p, w, t in rows]


def wait_until(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("example timed out")
        time.sleep(0.02)


def main() -> None:
    pools = [app.start(workers=2, graceful_timeout=5.0) for _ in range(2)]
    try:
        for p in pools:
            p.wait_ready(timeout=20, workers=2)
        wait_until(lambda: sum(w == "leader-tick" for _, w, _ in events()) >= 3)
        leader = current_leader(app.home)
        assert leader is not None
        print(f"leader: coordinator pid {leader['pid']} (one of {len(pools)} candidates)")

        killed = leader["pid"]
        t_kill = time.time()
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: any(w == "leader-tick" and p != killed for p, w, _ in events()))
        new_setup = next(t for p, w, t in events() if w == "leader-setup" and p != killed)
        new = current_leader(app.home)
        print(f"SIGKILL of {killed}: pid {new['pid'] if new else '?'} took over, "
              f"setup {1000 * (new_setup - t_kill):.0f} ms after the kill")  # fmt: skip
    finally:
        for p in pools:
            p.stop(timeout=20)

    evs = events()
    ticks = Counter(p for p, w, _ in evs if w == "leader-tick")
    print(f"leader ticks per process: {dict(ticks)} (never two at once)")
    workers = {p for p, w, _ in evs if w == "worker-setup"}
    cleaned = {p for p, w, _ in evs if w == "worker-cleanup"}
    print(f"worker-scoped task: set up in {len(workers)} workers, cleaned up in {len(cleaned)}")
    if workers != cleaned or len(ticks) < 2:
        raise SystemExit("unexpected lifecycle events")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(LOG.parent, ignore_errors=True)
        if OWN_HOME:
            shutil.rmtree(HOME, ignore_errors=True)
