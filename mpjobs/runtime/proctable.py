"""Each watched worker's process tree, kept from one sample to the next, for the memory watchdog.

A memory limit is checked against the RSS of a worker's whole process tree, 50 times a
second. psutil finds a process's descendants by reading /proc/<pid>/stat of every
process on the host (0.8 ms a sample with a hundred processes), and even listing /proc
costs 70 µs; 16 memory-limited jobs then use a large share of the supervisor's core.
In the steady state this table does neither:

- It keeps an open file on each member's /proc entry and reads it again in place
  (pread of a worker's statm: 2 µs, against 11 µs to open, read and close its stat).
- Once a pass it reads the pid the kernel allocated last (the last field of
  /proc/loadavg, 2 µs). Every new process (and thread) takes a new pid, so while that
  number stays put no tree can have grown. When it moved by at most MAX_PROBE, only
  those new pids are looked at: one whose parent is a member joins that tree (a thread
  is told from a process by its exit signal, -1).
- A tree is walked afresh from its root on a bigger jump or a wrap of the counter, when
  a member is gone or has a new parent, and every FULL_EVERY seconds while anything is
  born on the host: through /proc/<pid>/task/<tid>/children of every thread (a child
  belongs to the thread that forked it), or, on a kernel without those files, through
  one listing of /proc.

Why the answer stays right while processes come and go. An open /proc/<pid> file refers
to that process, not to its number: once the process is gone, reads fail (ESRCH), even
after the number went to another process. So a member's file cannot report a stranger's
memory, and pid reuse matters only in the instant between finding a pid and opening it;
the member's parent is checked through the open file then, and again on every sample (a
child whose parent died is reparented out of the tree, and the tree is walked again).
What can hide a child for a while: a fork whose pid was allocated but not yet visible
when it was probed (the counter moved, so the periodic walk comes), or a /proc/loadavg
that is not the kernel's (LXCFS mounts its own: then the counter is not used, and every
pass walks the trees). A thread that ends while its children are read makes the next
sample walk again. So no child hides for more than FULL_EVERY seconds, the bound the
table had before (docs/limits.md); the old bound's cause, a stale parent recorded for a
reused pid, is gone.

The open files are this process's own: a forked child closes its copies at once (a
worker must not inherit the supervisor's), trees not sampled for IDLE_DROP seconds are
forgotten with their files, and at most MAX_HELD are open; members past that are read
by path, their parent checked on every read. Where /proc cannot be used (not Linux),
`tree_rss` answers None and the caller falls back to psutil.
"""

from __future__ import annotations

import contextlib
import os
import time
import weakref

FULL_EVERY = 0.25  # seconds between walks of a tree from its root, whatever the counter says
MAX_PROBE = 64  # new pids looked at one by one in a pass; past that the trees are walked
IDLE_DROP = 1.0  # seconds without a sample after which a tree and its files are let go
MAX_HELD = 256  # open /proc files at most (the supervisor's descriptors are not ours only)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_ROOT = 0  # the parent recorded for a root: not checked, the caller names its own child

_TABLES: weakref.WeakSet[ProcTable] = weakref.WeakSet()


def _forget_in_child() -> None:
    for table in list(_TABLES):
        table.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _pread(fd: int) -> bytes | None:
    """The file read from its start, again: a /proc file is regenerated on each read."""
    try:
        return os.pread(fd, 4096, 0)
    except OSError:
        return None  # ESRCH: the process is gone (its number may be someone else's now)


def _read_path(path: str) -> bytes | None:
    fd = _open(path)
    if fd is None:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):  # a children list can exceed one page
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _parse_stat(line: bytes | None) -> tuple[int, int, int] | None:
    """(parent pid, RSS in bytes, exit signal) from a /proc/<pid>/stat line."""
    if not line:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after
    # the last ')'. Counting from `state` as 0: ppid is 1, rss (pages) 21, exit_signal 35.
    fields = line[line.rfind(b")") + 2 :].split()
    try:
        return int(fields[1]), int(fields[21]) * _PAGE, int(fields[35])
    except (IndexError, ValueError):
        return None


def _cursor_trusted() -> bool:
    """Is /proc/loadavg the kernel's? LXCFS mounts its own, whose last field is no counter."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            return not any(line.split()[4:5] == ["/proc/loadavg"] for line in f)
    except OSError:
        return False


class _Member:
    __slots__ = ("fd", "parent")

    def __init__(self, parent: int, fd: int) -> None:
        self.parent = parent  # _ROOT for the root
        self.fd = fd  # open on /proc/<pid>/statm (root) or stat (the others); -1: by path


class _Tree:
    __slots__ = ("dirty", "members", "root", "used_at", "walk_at", "walked_at_pid")

    def __init__(self, root: int) -> None:
        self.root = root
        self.members: dict[int, _Member] = {}
        self.walk_at = 0.0
        self.walked_at_pid: int | None = None  # the counter when it was walked last
        self.used_at = 0.0
        self.dirty = True  # walk it before the next sample


class ProcTable:
    """The process trees of the roots sampled lately, each summed in a few reads a pass."""

    def __init__(self) -> None:
        self.usable = os.path.isdir("/proc/self")
        self._trees: dict[int, _Tree] = {}
        self._fds: set[int] = set()  # every file this table holds open
        self._cursor_fd: int | None = None
        self._cursor: int | None = None  # the last pid allocated, at this pass's read
        self._before: int | None = None  # the same at the pass before
        self._trust_cursor = self.usable and _cursor_trusted()
        me = os.getpid()
        self._children_files = os.path.exists(f"/proc/{me}/task/{me}/children")
        self._advanced = False  # this pass has read the counter
        self._listing: dict[int, list[int]] | None = None  # this pass's scan, without those
        self._sweep_at = 0.0
        _TABLES.add(self)

    def new_pass(self) -> None:
        """Start a pass: its first `tree_rss` checks whether any process was born since."""
        self._advanced = False
        self._listing = None
        now = time.monotonic()
        if now >= self._sweep_at:
            self._sweep_at = now + IDLE_DROP
            for root, tree in list(self._trees.items()):
                if tree.used_at < now - IDLE_DROP:
                    self._release(tree)
                    del self._trees[root]

    def close(self) -> None:
        """Let every tree and file go (also done in a forked child, whose copies they are)."""
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        self._trees.clear()
        self._cursor_fd = self._cursor = self._before = None

    def tree_rss(self, root: int) -> int | None:
        """RSS of `root` and all its descendants; None if /proc cannot be used here."""
        if not self.usable:
            return None
        if not self._advanced:
            self._advance()
        now = time.monotonic()
        tree = self._trees.get(root)
        if tree is None:
            tree = self._trees[root] = _Tree(root)
        tree.used_at = now
        if tree.dirty or (now >= tree.walk_at and tree.walked_at_pid != self._cursor):
            self._walk(tree, now)
        total, consistent = self._sum(tree)
        if not consistent:  # a member died or moved since the walk: walk, and read again
            self._walk(tree, now)
            total, consistent = self._sum(tree)
            tree.dirty = tree.dirty or not consistent
        return total

    # -- one sample --------------------------------------------------------------------

    def _sum(self, tree: _Tree) -> tuple[int, bool]:
        """The members' RSS, and whether every one of them was found where it was."""
        total = 0
        consistent = True
        for pid, member in tree.members.items():
            if member.parent == _ROOT:
                statm = _pread(member.fd)
                if statm is None:
                    consistent = False
                else:  # "size resident shared ...", in pages; all 0 for a zombie
                    total += int(statm.split(None, 2)[1]) * _PAGE
                continue
            fd = member.fd
            stat = _parse_stat(_pread(fd) if fd >= 0 else _read_path(f"/proc/{pid}/stat"))
            if stat is None or stat[0] != member.parent:
                consistent = False  # gone, or reparented out of the tree when its parent died
            else:
                total += stat[1]
        return total, consistent

    # -- births: the pid counter -------------------------------------------------------

    def _advance(self) -> None:
        """Bring every tree up to date with the processes born since the last pass."""
        self._advanced = True
        last = self._read_cursor()
        old = self._before = self._cursor
        self._cursor = last
        if last is not None and last == old:
            return  # nobody was born anywhere
        if last is None or old is None or not 0 < last - old <= MAX_PROBE:
            for tree in self._trees.values():  # no counter, a wrap, or too many births
                tree.dirty = True
            return
        for pid in range(old + 1, last + 1):
            self._probe(pid)

    def _read_cursor(self) -> int | None:
        if not self._trust_cursor:
            return None
        if self._cursor_fd is None:
            self._cursor_fd = self._hold("/proc/loadavg")
            if self._cursor_fd is None:
                self._trust_cursor = False
                return None
        data = _pread(self._cursor_fd)  # "0.61 0.83 1.62 1/150 14005"
        try:
            return int(data.rsplit(None, 1)[1]) if data else None
        except (IndexError, ValueError):
            self._trust_cursor = False
            return None

    def _probe(self, pid: int) -> None:
        """A new pid: a member of the tree whose member is its parent, if any is."""
        found = self._look(pid)
        if found is None:
            return  # gone already, or not visible yet (the periodic walk finds that one)
        fd, stat = found
        parent = -1 if stat is None or stat[2] == -1 else stat[0]  # -1: a thread, not new
        homes = [t for t in self._trees.values() if parent in t.members]
        if not homes or pid in homes[0].members:
            self._close(fd)
            return
        homes[0].members[pid] = _Member(parent, fd)
        for nested in homes[1:]:  # a root below another root: its next walk adds it
            nested.dirty = True

    # -- walks: the tree as the kernel has it now --------------------------------------

    def _walk(self, tree: _Tree, now: float) -> None:
        tree.walk_at = now + FULL_EVERY
        # The counter *before* this pass: a pid allocated since may not have been visible
        # yet to this walk, so the next periodic walk is due even if nothing else is born.
        tree.walked_at_pid = self._before
        tree.dirty = False
        old, tree.members = tree.members, {}
        root = old.pop(tree.root, None)
        self._release_members(old)  # the others are found and opened afresh below
        if root is not None and _pread(root.fd) is None:  # gone: its number is another's
            self._close(root.fd)
            root = None
        if root is None:
            fd = self._hold(f"/proc/{tree.root}/statm")
            if fd is None:
                tree.dirty = True  # no such process (yet): look again at the next sample
                return
            root = _Member(_ROOT, fd)
        tree.members[tree.root] = root
        queue = [tree.root]
        for parent in queue:  # breadth first; `queue` grows as children are found
            children, complete = self._children(parent)
            if not complete:  # a thread ended as its children were read: again soon
                tree.dirty = True
            for pid in children:
                if pid in tree.members:
                    continue
                found = self._look(pid)
                if found is None:
                    continue
                fd, stat = found
                if stat is None or stat[0] != parent:  # gone, its number reused since
                    self._close(fd)
                    continue
                tree.members[pid] = _Member(parent, fd)
                queue.append(pid)

    def _children(self, pid: int) -> tuple[list[int], bool]:
        """Its children, and False if one of its threads ended while they were read.

        A thread's children go to another thread of the process when it ends, perhaps one
        whose list was read already: then the caller walks again at the next sample.
        """
        if not self._children_files:
            return self._scan().get(pid, []), True
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return [], True  # the process is gone: the sample of its parent notices
        out: list[int] = []
        complete = True
        for tid in tids:
            data = _read_path(f"/proc/{pid}/task/{tid}/children")
            if data is None:
                complete = False
            else:
                out.extend(int(child) for child in data.split())
        return out, complete

    def _scan(self) -> dict[int, list[int]]:
        """Children of every process, from one listing of /proc: once a pass at most."""
        if self._listing is None:
            children: dict[int, list[int]] = {}
            try:
                names = os.listdir("/proc")
            except OSError:
                names = []
            for name in names:
                if name.isdigit():
                    stat = _parse_stat(_read_path(f"/proc/{name}/stat"))
                    if stat is not None:
                        children.setdefault(stat[0], []).append(int(name))
            self._listing = children
        return self._listing

    # -- files ---------------------------------------------------------------------------

    def _look(self, pid: int) -> tuple[int, tuple[int, int, int] | None] | None:
        """(its stat file held open, or -1 past MAX_HELD; its stat) or None if no such pid."""
        path = f"/proc/{pid}/stat"
        if len(self._fds) >= MAX_HELD:
            line = _read_path(path)
            return None if line is None else (-1, _parse_stat(line))
        fd = self._hold(path)
        if fd is None:
            return None
        line = _pread(fd)
        if line is None:
            self._close(fd)
            return None
        return fd, _parse_stat(line)

    def _hold(self, path: str) -> int | None:
        fd = _open(path)
        if fd is not None:
            self._fds.add(fd)
        return fd

    def _close(self, fd: int) -> None:
        if fd >= 0 and fd in self._fds:
            self._fds.discard(fd)
            os.close(fd)

    def _release_members(self, members: dict[int, _Member]) -> None:
        for member in members.values():
            self._close(member.fd)

    def _release(self, tree: _Tree) -> None:
        self._release_members(tree.members)
        tree.members = {}
