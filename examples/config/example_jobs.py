"""The handlers that examples/config/mpjobs.toml and mpjobs.yaml name.

Plain module-level functions and a class: the config refers to them by import path.
`mpjobs run --config` puts the config file's directory on sys.path, so this module
is found as `example_jobs` wherever you run the command from.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("example_jobs")


def heartbeat() -> float:
    """A cheap recurring job."""
    now = time.time()
    log.info("heartbeat from pid %d", os.getpid())
    return now


def warm_cache(size: int = 100) -> int:
    """A job that runs once each time the system starts."""
    return sum(range(size))


def cleanup(older_than_days: int) -> str:
    """A nightly cron job (not run during the example: it fires at 03:00)."""
    return f"removed files older than {older_than_days} days"


class Report:
    """A class handler: built with the entry's `params`, then `run()` is called."""

    def __init__(self, title: str, recipients: list[str]) -> None:
        self.title = title
        self.recipients = recipients

    def run(self) -> str:
        message = f"report {self.title!r} sent to {', '.join(self.recipients)}"
        log.info(message)
        return message
