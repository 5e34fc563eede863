"""Where mpjobs' log lines go and how they look: text or one JSON object per line.

`configure` is called once by the process that starts a pool (the CLI, or a user's own
program), before the fork: the handler it installs is inherited by the supervisor, the
coordinator and every worker, so all of them write to one stream. A log file is opened
with O_APPEND and each record is written by one write() of a whole line, so lines of
many processes interleave line by line, never inside a line.

Dependencies log a lot at DEBUG (filelock one line per lock call): their loggers stay
at WARNING, whatever level mpjobs' own loggers get, unless MPJOBS_LOG_LIBS=1 asks for
them too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from typing import Any

from mpjobs.errors import ConfigError

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
# The loggers of dependencies quieted to WARNING (the root level would let them through).
LIBRARIES = ("filelock", "psycopg", "psycopg.pool", "asyncio", "urllib3", "httpx", "httpcore",
             "uvicorn", "gunicorn", "watchfiles", "multipart")  # fmt: skip
_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}  # fmt: skip
_installed: list[logging.Handler] = []  # the handler this module installed, to replace it


def parse_level(raw: str | int, source: str = "MPJOBS_LOG_LEVEL") -> int:
    """A logging level from a name (any case) or a number; ConfigError naming `source`."""
    if isinstance(raw, int):
        return raw
    name = raw.strip().upper()
    if name.isdigit():
        return int(name)
    level = logging.getLevelName(name)  # a name's number; for an unknown name, a string
    if not isinstance(level, int):
        raise ConfigError(
            f"unknown log level {raw!r} in {source}; expected DEBUG, INFO, WARNING, ERROR "
            "or CRITICAL"
        )
    return level


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, pid, message and the record's fields.

    Fields come from `extra=` (mpjobs' job lines pass id, task, queue, attempt, ...); a
    traceback goes in "error" (a job's, as text) or "exc_info" (the logging call's).
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with a job's traceback (a multi-line `error` field) below it."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        error = getattr(record, "error", None)
        if isinstance(error, str) and "\n" in error.rstrip():
            return f"{line}\n{error.rstrip()}"
        return line


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record, newline included, in one write() to an O_APPEND descriptor.

    Python's StreamHandler writes the message and the terminator separately through a
    buffer; with many processes on one file, that buffer is what splits lines.
    """

    def __init__(self, fd: int, owned: bool) -> None:
        super().__init__(sys.stderr)
        self.fd = fd
        self.owned = owned

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            while data:
                data = data[os.write(self.fd, data) :]
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        if self.owned:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.owned = False
        super().close()


_chosen: dict[str, str] = {}  # what the last configure() chose, as MPJOBS_LOG_* variables


def exec_env() -> dict[str, str]:
    """The MPJOBS_LOG_* settings of this process's configure(), for a pool started by
    exec; empty if configure() was never called (the child then reads the environment)."""
    return dict(_chosen)


def configure(level: int | None = None, fmt: str | None = None, file: str | None = None) -> None:
    """Send mpjobs' logs to `file` (default $MPJOBS_LOG_FILE, else stderr) as `fmt`.

    `fmt`: "text" or "json" (default $MPJOBS_LOG_FORMAT, else text); `level`: default
    $MPJOBS_LOG_LEVEL, else INFO. Calling it again replaces what it installed before.
    The choices are kept for a pool started by exec (`exec_env`).
    """
    if fmt is None:
        fmt = os.environ.get("MPJOBS_LOG_FORMAT") or "text"
        source = "MPJOBS_LOG_FORMAT"
    else:
        source = "the log format"
    if fmt not in FORMATS:
        raise ConfigError(f"unknown log format {fmt!r} in {source}; expected text or json")
    if level is None:
        level = parse_level(os.environ.get("MPJOBS_LOG_LEVEL") or "INFO")
    if file is None:
        file = os.environ.get("MPJOBS_LOG_FILE") or None
    libs = os.environ.get("MPJOBS_LOG_LIBS", "")
    if libs not in ("", "0", "1"):
        raise ConfigError(f"MPJOBS_LOG_LIBS must be 0 or 1, got {libs!r}")
    if file is None:
        fd, owned = sys.stderr.fileno(), False
    else:
        try:
            fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open the log file {file!r}: {exc.strerror}") from exc
        owned = True
    handler = LineHandler(fd, owned)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    # A pool started by exec (app.start() from a process with threads runs `mpjobs run`)
    # is given these (`exec_env`), so it logs as this process does. Not os.environ: a
    # library call must not change what every later subprocess of the program inherits.
    _chosen.clear()
    _chosen.update(MPJOBS_LOG_FORMAT=fmt, MPJOBS_LOG_LEVEL=str(level))
    if file is not None:
        _chosen["MPJOBS_LOG_FILE"] = file
    reset()
    _installed.append(handler)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.NOTSET if libs == "1" else max(level, logging.WARNING)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(quiet)


def iso(ts: float) -> str:
    """`ts` (epoch seconds) as an ISO 8601 UTC time, to the millisecond."""
    ms = round(ts % 1 * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{ms:03d}Z"


def reset() -> None:
    """Remove the handler `configure` installed (and close its file)."""
    root = logging.getLogger()
    for old in _installed:
        root.removeHandler(old)
        old.close()
    _installed.clear()
