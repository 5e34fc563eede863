"""Handlers named by the config files of tests/integration/test_config_run.py.

Every observation is one line "label pid" appended with a single O_APPEND write, so lines
from several workers and supervisors never tear. Handlers are plain module-level
functions and classes: the config refers to them by import path only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import mpjobs

app = mpjobs.App()  # for `app = "config_tasks:app"`; the config or --home re-homes it


def note(out: str, label: str) -> str:
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{label} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return label


def labels(out: str | Path) -> list[str]:
    try:
        return [line.split()[0] for line in Path(out).read_text().splitlines()]
    except FileNotFoundError:
        return []


def once(out: str, label: str, release: str, timeout: float = 30.0) -> str:
    """Record "<label>-start", wait (bounded) until `release` exists, record "<label>-end".

    Holding the job RUNNING lets a test start a second supervisor while the first copy
    is still live, which is when unique_key must stop a second copy.
    """
    note(out, f"{label}-start")
    deadline = time.monotonic() + timeout
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} never appeared")
        time.sleep(0.005)
    return note(out, f"{label}-end")


class Greeter:
    """A class handler: built with the entry's params, then run()."""

    def __init__(self, out: str, greeting: str, name: str = "world") -> None:
        self.out = out
        self.greeting = greeting
        self.name = name

    def run(self) -> str:
        return note(self.out, f"{self.greeting}-{self.name}")
