"""An app whose module fails to import when $MPJOBS_TEST_BREAK_IMPORT is set.

A test imports it, then sets the variable: a pool started from it by exec (a threaded
caller) re-imports the module in the child, which dies there, as a broken deploy would.
"""

from __future__ import annotations

import os
from pathlib import Path

import mpjobs

if os.environ.get("MPJOBS_TEST_BREAK_IMPORT"):
    raise RuntimeError("breakable: broken at import, as asked")

app = mpjobs.App()


def make_app(home: Path | str) -> mpjobs.App:
    app._home_arg, app._home = str(home), None
    return app


@app.task
def hello() -> str:
    return "hello"
