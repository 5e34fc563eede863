"""`mpjobs`: run a supervisor, and look at or act on a home from the shell.

Errors a user can fix (a bad MODULE:APP or option, a bad config, a home that is unsafe,
missing or cannot be created) exit 2 with one line naming the problem, not a traceback.
Only `run` creates a home; the other commands act on one that exists.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence

from mpjobs.cli.common import log_level
from mpjobs.cli.parser import build_parser
from mpjobs.errors import MpjobsError
from mpjobs.loading import UsageError
from mpjobs.operations import status_data
from mpjobs.store.postgres.url import STORE_ENV, store_from

__all__ = ["build_parser", "main", "status_data"]

log = logging.getLogger("mpjobs.cli")
LOG_FORMATS = ("text", "json")


def _configure_logging(level: int, fmt: str | None, file: str | None) -> None:
    """Text lines on stderr by default; --log-format/--log-file go to mpjobs.observability."""
    if fmt is not None and fmt not in LOG_FORMATS:
        raise UsageError(f"unknown log format {fmt!r}; expected one of {', '.join(LOG_FORMATS)}")
    if fmt is None and file is None:
        logging.basicConfig(
            level=level, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
        )
        return
    from mpjobs.cli.serve import observability

    observability("logs").configure(level=level, fmt=fmt, file=file)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "store", None):
            # Checked here, then handed on the way the home is: through the environment,
            # so the app a module creates at import and every process it starts agree.
            os.environ[STORE_ENV] = str(store_from(args.store))
        if args.log_level is not None:
            level = log_level(args.log_level)
        else:
            level = log_level(os.environ.get("MPJOBS_LOG_LEVEL") or "INFO", "MPJOBS_LOG_LEVEL")
        fmt = getattr(args, "log_format", None) or os.environ.get("MPJOBS_LOG_FORMAT") or None
        file = getattr(args, "log_file", None) or os.environ.get("MPJOBS_LOG_FILE") or None
        _configure_logging(level, fmt, file)
        code = int(args.func(args))
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except (MpjobsError, ValueError) as exc:
        print(f"mpjobs: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Whoever read our output stopped (`mpjobs jobs list | head -1`): stop quietly,
        # as a tool killed by SIGPIPE would, and keep the exit-time flush from failing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
