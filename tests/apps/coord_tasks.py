"""Apps, lifecycle tasks and job functions for the coordination tests.

Every observation is a line appended with O_APPEND (one write(2) per line, so lines from
different processes never tear): "pid event clock [extra...]" where clock is
time.monotonic(), which on Linux is one system-wide clock, so lines written by different
processes can be ordered against each other and against the test's own clock.

The apps are built per test and inherited by the pools through fork; the job functions
are plain module-level functions that workers import as `coord_tasks:<name>`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import mpjobs


def record(path: str | Path, event: str, *extra: object) -> None:
    line = " ".join(str(x) for x in (os.getpid(), event, repr(time.monotonic()), *extra)) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def events(path: str | Path) -> list[tuple[int, str, float, list[str]]]:
    """(pid, event, monotonic time, extra fields), in file order."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        pid, event, t, *extra = line.split()
        out.append((int(pid), event, float(t), extra))
    return out


# -- lifecycle apps --------------------------------------------------------------------


def ticker_app(home: str | Path, out: str | Path, every: float = 0.05, scope: str = "leader",
               asynchronous: bool = False) -> mpjobs.App:  # fmt: skip
    """An app with one lifecycle task that records its setup, each tick and its cleanup."""
    app = mpjobs.App(home)
    if asynchronous:

        @app.lifecycle(every=every, scope=scope)
        async def aticker() -> AsyncIterator[None]:
            record(out, "setup")
            try:
                while True:
                    yield
                    await asyncio.sleep(0)
                    record(out, "tick")
            finally:
                record(out, "cleanup")

    else:

        @app.lifecycle(every=every, scope=scope)
        def ticker() -> Iterator[None]:
            record(out, "setup")
            try:
                while True:
                    yield
                    record(out, "tick")
            finally:
                record(out, "cleanup")

    return app


def crashing_app(
    home: str | Path, out: str | Path, every: float = 0.05, fail_at: int = 3
) -> mpjobs.App:
    """A leader lifecycle task whose every run raises at its `fail_at`-th tick."""
    app = mpjobs.App(home)

    @app.lifecycle(every=every, scope="leader")
    def crasher() -> Iterator[None]:
        record(out, "setup")
        n = 0
        try:
            while True:
                yield
                n += 1
                record(out, "tick")
                if n == fail_at:
                    raise RuntimeError("lifecycle boom")
        finally:
            record(out, "cleanup")

    return app


def slow_ticker_app(home: str | Path, out: str | Path, every: float, work: float) -> mpjobs.App:
    """Each tick takes `work` seconds: cadence must stay start + k*every regardless."""
    app = mpjobs.App(home)

    @app.lifecycle(every=every, scope="leader")
    def slow() -> Iterator[None]:
        record(out, "setup")
        while True:
            yield
            record(out, "tick")
            time.sleep(work)

    return app


# -- job functions (imported by workers as coord_tasks:<name>) -------------------------


def stamp(path: str, label: str = "job") -> int:
    record(path, label)
    return os.getpid()


def slow(path: str, seconds: float) -> None:
    """Records its start and end, so tests can check that runs never overlap."""
    record(path, "start")
    time.sleep(seconds)
    record(path, "end")


def boom(path: str) -> None:
    record(path, "boom")
    raise RuntimeError("scheduled failure")


def declare_stable(home: str) -> None:
    """What a module does at import time in every process: declare its schedules."""
    app = mpjobs.App(home)
    app.schedule("coord_tasks:stamp", "/dev/null").options(id="stable-report").every(60)
    app.schedule("coord_tasks:stamp", "/dev/null", "derived").every(60)
