"""A jobs module as users write them: an App() without a home, a schedule declared at import.

`mpjobs run import_schedules:app --home H` must put that schedule in H (issue 9, item 11).
Only `mpjobs run` subprocesses import it: in a test process it would declare into
whatever home the environment names.
"""

from __future__ import annotations

import mpjobs

app = mpjobs.App()


@app.task
def tick() -> str:
    return "tick"


tick.schedule().options(id="tick").every(0.2, start="startup")
