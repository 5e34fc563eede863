"""The host's process tree, kept up to date incrementally for the memory watchdog.

A memory limit is checked against the RSS of a worker's whole process tree, 50 times a
second. psutil finds a process's descendants by reading /proc/<pid>/stat of every
process on the host, which on a host of a hundred processes costs about 0.8 ms per
sample: 16 memory-limited jobs then use most of the supervisor's core. This table reads
the parent of each process once, when it first appears in /proc, so a sample costs one
listing of /proc plus one read per process of the tree itself.

A pid is reused only after the kernel's pid counter wraps; a process that died and whose
pid went to a new child of a watched tree between two listings would keep its old
parent here. Every FULL_EVERY seconds the table is therefore read afresh, which bounds
how long such a child can hide to a quarter of a second, and the members of a tree are
checked against their recorded parent on every sample (their stat line is read anyway).
Where /proc cannot be listed (not Linux), `tree_rss` answers None and the caller falls
back to psutil.
"""

from __future__ import annotations

import os
import time

FULL_EVERY = 0.25  # seconds between complete re-reads of every process's parent
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, RSS in bytes) from /proc/<pid>/stat, or None if it is gone."""
    try:  # os.open and one read: half the cost of a buffered open() (50 Hz x a tree)
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        line = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after
    # the last ')'. Counting from `state` as 0: ppid is 1, rss (pages) is 21.
    fields = line[line.rfind(b")") + 2 :].split()
    try:
        return int(fields[1]), int(fields[21]) * _PAGE
    except (IndexError, ValueError):
        return None


class ProcTable:
    """Parent of every process of the host; children of any of them, by one lookup."""

    def __init__(self) -> None:
        self._parent: dict[int, int] = {}
        self._children: dict[int, list[int]] = {}
        self._full_at = 0.0
        self._fresh = False
        self._names: list[str] = []  # the last listing of /proc
        self.usable = os.path.isdir("/proc/self")

    def new_pass(self) -> None:
        """Mark the table stale: the next `tree_rss` of this pass lists /proc again."""
        self._fresh = False

    def _refresh(self) -> None:
        try:
            names = os.listdir("/proc")
        except OSError:
            self.usable = False
            return
        now = time.monotonic()
        if names == self._names and now < self._full_at:
            self._fresh = True  # no process came or went since the last pass
            return
        self._names = names
        pids = {int(n) for n in names if n.isdigit()}
        if now >= self._full_at:
            self._parent.clear()
            self._full_at = now + FULL_EVERY
        parent = self._parent
        for gone in parent.keys() - pids:
            del parent[gone]
        for pid in pids - parent.keys():
            stat = _stat(pid)
            if stat is not None:
                parent[pid] = stat[0]
        children: dict[int, list[int]] = {}
        for pid, ppid in parent.items():
            children.setdefault(ppid, []).append(pid)
        self._children = children
        self._fresh = True

    def tree_rss(self, root: int) -> int | None:
        """RSS of `root` and all its descendants; None if /proc cannot be used here."""
        if not self.usable:
            return None
        if not self._fresh:
            self._refresh()
            if not self.usable:
                return None
        total = 0
        stack: list[tuple[int, int | None]] = [(root, None)]
        while stack:
            pid, expected_parent = stack.pop()
            stat = _stat(pid)
            if stat is None or (expected_parent is not None and stat[0] != expected_parent):
                continue  # gone, or its pid now belongs to someone else's child
            total += stat[1]
            stack.extend((child, pid) for child in self._children.get(pid, ()))
        return total
