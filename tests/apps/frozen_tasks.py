"""Apps for the frozen-leader tests: a leader lifecycle ticker, and a task that hangs.

Lines are recorded with coord_tasks.record ("pid event clock"), so the tests can tell
which process ticked when, on the host's one monotonic clock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import coord_tasks
from coord_tasks import record

import mpjobs


def ticker_app(
    home: str | Path, out: str | Path, every: float = 0.05, hang_marker: str | Path | None = None,
    hang_timeout: float | None = None,
) -> mpjobs.App:  # fmt: skip
    """A leader ticker recording setup/tick/cleanup; with `hang_marker`, a second leader
    task whose first tick in the whole home (the one that creates the marker) blocks
    forever in user code, and whose later ticks, in any leader, do nothing."""
    app = coord_tasks.ticker_app(home, out, every)

    if hang_marker is not None:
        marker = str(hang_marker)

        bound = {} if hang_timeout is None else {"timeout": hang_timeout}

        @app.lifecycle(every=every, scope="leader", **bound)
        def hanger() -> Iterator[None]:
            while True:
                yield
                try:
                    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    continue
                os.close(fd)
                record(out, "hang")
                threading.Event().wait()  # user code that never returns

    return app
