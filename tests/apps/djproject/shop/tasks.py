"""The test project's Django tasks: each writes a Record with the ORM where it runs."""

import os
import time
from pathlib import Path

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task

from djproject.shop.models import Record


@task
def add(x: int, y: int) -> int:
    Record.objects.create(label="add", value=x + y, pid=os.getpid())
    return x + y


@task
def mark(label: str) -> int:
    """Run order: the Record ids grow in the order the tasks ran."""
    return Record.objects.create(label=label, pid=os.getpid()).id


@task
def hold(gate: str) -> str:
    """Hold the worker until the file `gate` exists (the test's go signal)."""
    Path(gate + ".started").write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # bounded: a file written by the test process
    return "released"


@task
async def async_add(x: int, y: int) -> dict[str, int]:
    row = await Record.objects.acreate(label="async", value=x + y, pid=os.getpid())
    return {"sum": x + y, "row": row.id}


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task(takes_context=True)
def whoami(context, tag: str) -> dict[str, object]:
    return {"attempt": context.attempt, "id": context.task_result.id, "tag": tag}


@task(takes_context=True, mpjobs={"max_attempts": 2, "retry_backoff": 0.05})
def survive(context, marker: str) -> dict[str, object]:
    """Attempt 1 writes its pid and waits to be SIGKILLed; attempt 2 completes."""
    if context.attempt == 1:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(60)  # the test kills this process long before
    Record.objects.create(label="survived", value=context.attempt, pid=os.getpid())
    return {"attempt": context.attempt}


@task
def noop() -> None:
    """For the overhead figure in docs/django.md: a task that does nothing."""
