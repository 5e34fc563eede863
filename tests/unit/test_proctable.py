"""The process table of the memory watchdog (runtime/proctable.py), on real process trees."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mpjobs.limits import tree_rss
from mpjobs.runtime import proctable
from mpjobs.runtime.proctable import ProcTable
from tests.conftest import wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

MB = 1 << 20

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

# A process that obeys one command a line on stdin and answers one line on stdout:
#   child MB      a child holding MB MiB (answers its pid once it holds them)
#   thread MB     the same, started from a thread that then ends
#   grand MB      a child that starts a grandchild holding MB MiB (answers both pids)
#   orphan        the last `grand` child exits: its grandchild is reparented out of the tree
#   kill PID      kill that child and reap it
HOLDER = (
    "import sys, time; from pathlib import Path; b = bytearray(int(sys.argv[1]) << 20); "
    "b[::4096] = b'x' * len(b[::4096]); print('held', flush=True); time.sleep(120)"
)
SERVANT = textwrap.dedent(
    f"""
    import subprocess, sys, threading
    HOLDER = {HOLDER!r}
    kids = {{}}

    def hold(mb):
        p = subprocess.Popen([sys.executable, "-c", HOLDER, mb], stdout=subprocess.PIPE)
        assert p.stdout.readline() == b"held\\n"
        kids[p.pid] = p
        return p

    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "child":
            print(hold(args[0]).pid, flush=True)
        elif cmd == "thread":
            out = []
            t = threading.Thread(target=lambda: out.append(hold(args[0])))
            t.start()
            t.join()
            print(out[0].pid, flush=True)
        elif cmd == "grand":
            code = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
                    "sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE); "
                    "assert p.stdout.readline() == b'held\\\\n'; print(p.pid, flush=True); "
                    "sys.stdin.readline()")
            p = subprocess.Popen([sys.executable, "-c", code, HOLDER, args[0]],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            kids[p.pid] = p
            last = p
            print(p.pid, int(p.stdout.readline()), flush=True)
        elif cmd == "orphan":
            last.stdin.close()
            last.wait()
            print("ok", flush=True)
        elif cmd == "kill":
            p = kids.pop(int(args[0]))
            p.kill()
            p.wait()
            print("ok", flush=True)
    """
)


class Servant:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVANT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.pid = self.proc.pid

    def ask(self, line: str) -> list[int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().split()
        assert answer, f"the servant died on {line!r}"
        return [int(word) for word in answer if word.isdigit()]

    def family(self) -> set[int]:
        return {self.pid} | {p.pid for p in psutil.Process(self.pid).children(recursive=True)}

    def close(self) -> None:
        for proc in psutil.Process(self.pid).children(recursive=True):
            proc.kill()
        self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def servant() -> Iterator[Servant]:
    s = Servant()
    try:
        yield s
    finally:
        s.close()


def sample(table: ProcTable, root: int) -> int:
    table.new_pass()
    rss = table.tree_rss(root)
    assert rss is not None
    return rss


def members(table: ProcTable, root: int) -> set[int]:
    return set(table._trees[root].members)


def no_walks(table: ProcTable, root: int) -> None:
    """From now on the tree must be kept up to date by probes of new pids alone."""
    table._trees[root].walk_at = float("inf")


def near_psutil(table: ProcTable, root: int) -> None:
    # psutil reads each process at another instant: allow for a few pages of drift
    ours, theirs = sample(table, root), tree_rss(psutil.Process(root))
    assert abs(ours - theirs) < 4 * MB, (ours, theirs)


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


@pytest.mark.parametrize("how", ["probe", "walk", "listing"])
def test_children_grandchildren_and_thread_children_are_found(servant: Servant, how: str) -> None:
    """A real tree, found three ways: probing new pids, walking the children files, and
    walking one listing of /proc (kernels without children files)."""
    table = ProcTable()
    if how == "listing":
        table._children_files = False
    if how != "probe":
        table._trust_cursor = False  # every pass walks the tree
    base = sample(table, servant.pid)
    if how == "probe":
        no_walks(table, servant.pid)
    child = servant.ask("child 16")[0]
    middle, grand = servant.ask("grand 32")
    by_thread = servant.ask("thread 8")[0]  # its parent thread has ended: the child stays
    rss = sample(table, servant.pid)
    assert {child, middle, grand, by_thread} <= members(table, servant.pid)
    assert members(table, servant.pid) == servant.family()
    assert rss >= base + 56 * MB, (rss, base)
    near_psutil(table, servant.pid)


def test_a_child_that_comes_and_goes_between_samples(servant: Servant) -> None:
    table = ProcTable()
    base = sample(table, servant.pid)
    for _ in range(3):
        child = servant.ask("child 32")[0]
        assert sample(table, servant.pid) >= base + 32 * MB
        assert child in members(table, servant.pid)
        servant.ask(f"kill {child}")
        after = sample(table, servant.pid)
        assert after < base + 16 * MB, (after, base)
        assert members(table, servant.pid) == {servant.pid}
    # and no file stays open for a process that is gone
    assert len(table._fds - {table._cursor_fd}) == len(table._trees[servant.pid].members)


def test_an_orphaned_grandchild_leaves_the_tree(servant: Servant) -> None:
    """Its parent exits: the kernel reparents it outside, and it counts no more."""
    table = ProcTable()
    middle, grand = servant.ask("grand 48")
    assert sample(table, servant.pid) >= 48 * MB
    no_walks(table, servant.pid)  # the leaving is seen on the sample itself
    servant.ask("orphan")
    try:
        assert psutil.Process(grand).ppid() != middle
        sample(table, servant.pid)
        assert grand not in members(table, servant.pid)
        assert members(table, servant.pid) == servant.family()
    finally:
        psutil.Process(grand).kill()


def test_a_pid_gone_mid_walk_or_recorded_under_a_wrong_parent_counts_nothing(
    servant: Servant,
) -> None:
    table = ProcTable()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    child = servant.ask("child 16")[0]
    real = table._children

    def with_a_dead_one(pid: int) -> tuple[list[int], bool]:
        children, complete = real(pid)
        return ([gone.pid, *children] if pid == servant.pid else children), complete

    table._children = with_a_dead_one  # type: ignore[method-assign]
    rss = sample(table, servant.pid)
    assert members(table, servant.pid) == {servant.pid, child}
    assert rss >= 16 * MB
    # A member whose parent is not the one recorded is not counted; the tree is walked.
    table._trees[servant.pid].members[child].parent = 1
    table._trees[servant.pid].walk_at = float("inf")
    again = sample(table, servant.pid)
    assert abs(again - rss) < 4 * MB
    assert table._trees[servant.pid].members[child].parent == servant.pid


def test_a_gone_root_counts_nothing() -> None:
    table = ProcTable()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    assert sample(table, proc.pid) > 0
    proc.kill()
    proc.wait(30)
    assert sample(table, proc.pid) == 0
    assert table._fds <= {table._cursor_fd}


def test_members_past_max_held_are_read_by_path(
    servant: Servant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proctable, "MAX_HELD", 2)  # the root's file and the counter's
    table = ProcTable()
    base = sample(table, servant.pid)
    first = servant.ask("child 16")[0]
    middle, grand = servant.ask("grand 16")
    assert sample(table, servant.pid) >= base + 32 * MB
    assert {m.fd for p, m in table._trees[servant.pid].members.items() if p != servant.pid} == {-1}
    assert members(table, servant.pid) == {servant.pid, first, middle, grand}
    near_psutil(table, servant.pid)


def test_idle_trees_are_let_go_and_a_forked_child_holds_no_file(servant: Servant) -> None:
    table = ProcTable()
    servant.ask("child 8")
    sample(table, servant.pid)
    held = set(table._fds)
    assert len(held) >= 3
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: every inherited /proc file of the table is closed already
        try:
            still_open = [fd for fd in held if _is_open(fd)]
            os.write(w, b"clean" if not still_open and not table._fds else b"leak")
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 16) == b"clean"
    os.close(r)
    os.waitpid(pid, 0)
    assert all(_is_open(fd) for fd in held)  # ours are untouched
    table._trees[servant.pid].used_at -= 2 * proctable.IDLE_DROP
    table._sweep_at = 0.0
    table.new_pass()
    assert not table._trees
    assert table._fds <= {table._cursor_fd}


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_without_proc_the_caller_falls_back_to_psutil() -> None:
    table = ProcTable()
    table.usable = False
    assert table.tree_rss(1) is None
