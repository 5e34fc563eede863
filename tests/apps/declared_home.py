"""An app declared with an explicit home, taken from $DECLARED_HOME at import."""

from __future__ import annotations

import os

import mpjobs

app = mpjobs.App(home=os.environ["DECLARED_HOME"])


@app.task
def hello() -> str:
    return "hello"
