"""The watchdog's side of limits (runtime/watchdog.py): report lines in, kill verdicts out."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mpjobs.runtime.reaping import Child
from mpjobs.runtime.watchdog import Watchdog

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

HOLD = (
    "import sys, time; b = bytearray(int(sys.argv[1]) << 20); b[::4096] = b'x' * len(b[::4096]);"
    " print(flush=True); time.sleep(120)"
)


@pytest.fixture
def holder() -> Iterator[subprocess.Popen[bytes]]:
    """A real process holding 48 MiB, standing in for a worker running a job."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, "48"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"\n"
        yield proc
    finally:
        proc.kill()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def worker(proc: subprocess.Popen[bytes]) -> dict[int, Child]:
    child = Child(proc.pid, "worker", 0, "w0", time.monotonic(), proc=psutil.Process(proc.pid))
    return {proc.pid: child}


@pytest.fixture
def reports() -> Iterator[tuple[Watchdog, int]]:
    """A watchdog reading a non-blocking report pipe, and the pipe's write end."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        yield Watchdog(r), w
    finally:
        os.close(r)
        os.close(w)


def test_reports_split_across_reads_become_watches_and_end(
    holder: subprocess.Popen[bytes], reports: tuple[Watchdog, int]
) -> None:
    dog, w = reports
    children = worker(holder)
    child = children[holder.pid]
    dog.read_reports(children)  # nothing written: nothing happens
    assert not child.booted and not child.watches
    os.write(w, f"R {holder.pid}\nS {holder.pid} 7 0 ".encode())
    dog.read_reports(children)
    assert child.booted and not child.watches  # the start line is not whole yet
    os.write(w, f"1048576\nS {holder.pid} 8 30 0\n".encode())
    dog.read_reports(children)
    assert child.watches[7].memory_limit == 1 << 20 and child.watches[7].timeout is None
    assert child.watches[8].timeout == 30 and child.watches[8].memory_limit is None
    os.write(w, f"E {holder.pid} 7\nE 999999999 8\n".encode())  # the 2nd: no such child
    dog.read_reports(children)
    assert list(child.watches) == [8]


def test_a_tree_over_its_memory_limit_is_named_and_one_under_it_is_not(
    holder: subprocess.Popen[bytes], reports: tuple[Watchdog, int]
) -> None:
    dog, w = reports
    children = worker(holder)
    os.write(w, f"S {holder.pid} 1 0 {1 << 30}\nS {holder.pid} 2 0 {32 << 20}\n".encode())
    dog.read_reports(children)
    verdicts = list(dog.over_limit(children))
    assert [(c.pid, watch.job_id) for c, watch, _ in verdicts] == [(holder.pid, 2)]
    reason = verdicts[0][2]
    assert reason.startswith("memory limit of 32.0 MiB exceeded"), reason
    # both watches were sampled together: one sample of the tree, one peak
    watches = children[holder.pid].watches
    assert watches[1].peak == watches[2].peak >= 48 << 20
    os.write(w, f"E {holder.pid} 2\n".encode())
    dog.read_reports(children)
    watches[1].next_sample = 0.0
    assert list(dog.over_limit(children)) == []
