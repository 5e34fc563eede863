"""The mpjobs side of the example: an App and its tasks, importable by module path."""

import mpjobs

app = mpjobs.App()  # home: $MPJOBS_HOME, else ./.mpjobs


@app.task(max_attempts=3)
def make_thumbnail(name: str, size: int) -> str:
    return f"{name}@{size}px"
