"""An app whose workers import boot_gate at boot (see there)."""

from __future__ import annotations

from pathlib import Path

import tasks

import mpjobs

app = mpjobs.App(imports=["boot_gate"])


@app.task
def hold(marker: str, release: str) -> str:
    """tasks.block, on this app."""
    return tasks.block(marker, release)


def make_app(home: Path | str) -> mpjobs.App:
    app._home_arg, app._home = str(home), None
    return app
