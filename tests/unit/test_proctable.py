"""The incremental process table of the memory watchdog (runtime/proctable.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from mpjobs.limits import tree_rss
from mpjobs.runtime.proctable import ProcTable
from tests.conftest import wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

# A parent that starts a child holding `mb` MiB, and tells us when the child holds it.
FAMILY = textwrap.dedent(
    """
    import subprocess, sys, time
    from pathlib import Path
    ready, mb = Path(sys.argv[1]), int(sys.argv[2])
    child = subprocess.Popen([sys.executable, "-c",
        "import sys, time; from pathlib import Path; b = bytearray(%d << 20); "
        "b[::4096] = b'x' * len(b[::4096]); Path(sys.argv[1]).write_text('x'); "
        "time.sleep(120)" % mb, str(ready)])
    child.wait()
    """
)


def test_tree_rss_counts_a_grandchild_that_appears_later(tmp_path: Path) -> None:
    table = ProcTable()
    ready = tmp_path / "ready"
    parent = subprocess.Popen([sys.executable, "-c", FAMILY, str(ready), "64"])
    try:
        table.new_pass()
        first = table.tree_rss(parent.pid)  # before the child exists, or as it starts
        assert first is not None
        wait_for(ready.exists, 30, what="the child to hold its memory")
        table.new_pass()
        later = table.tree_rss(parent.pid)
        assert later is not None and later >= 64 << 20, later
        expected = tree_rss(psutil.Process(parent.pid))
        assert abs(later - expected) < 8 << 20, (later, expected)
    finally:
        for proc in psutil.Process(parent.pid).children(recursive=True):
            proc.kill()
        parent.kill()
        parent.wait(30)


def test_a_gone_process_and_a_reused_pid_count_nothing(tmp_path: Path) -> None:
    table = ProcTable()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    table.new_pass()
    assert (table.tree_rss(proc.pid) or 0) > 0
    proc.kill()
    proc.wait(30)
    table.new_pass()
    assert table.tree_rss(proc.pid) == 0
    # A member whose recorded parent is not its parent now is someone else's process.
    table._parent[proc.pid] = 1
    table._children.setdefault(123456789, []).append(proc.pid)
    assert table.tree_rss(123456789) == 0


def test_without_proc_the_caller_falls_back_to_psutil() -> None:
    table = ProcTable()
    table.usable = False
    assert table.tree_rss(1) is None
