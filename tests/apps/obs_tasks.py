"""Tasks and hooks of the observability tests (job log lines, hooks, metrics).

The hooks are registered here, at import, in the test process that starts the pool,
as a user's app module would: forked workers inherit them. Each hook appends one JSON
line per call to the file named by $OBS_HOOK_LOG, read when the hook runs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import mpjobs
from mpjobs.observability.hooks import JobInfo, Middleware, Outcome, WorkerInfo

app = mpjobs.App()
RAISING = "OBS_RAISING_HOOK"  # set to make a hook raise (the isolation test)


def make_app(home: Path | str) -> mpjobs.App:
    app._home_arg, app._home = str(home), None
    return app


def _record(event: str, **fields: Any) -> None:
    path = os.environ.get("OBS_HOOK_LOG")
    if path:
        line = json.dumps({"event": event, "pid": os.getpid(), "t": time.time(), **fields})
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def events(path: Path | str) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


class Recorder(Middleware):
    def before_job(self, job: JobInfo) -> None:
        _record("before_job", id=job.id, task=job.task, attempt=job.attempt)

    def after_job(self, job: JobInfo, outcome: Outcome) -> None:
        result = outcome.result if outcome.succeeded else None
        _record("after_job", id=job.id, status=outcome.status, result=result,
                error=outcome.error, duration=outcome.duration)  # fmt: skip

    def on_failure(self, job: JobInfo, outcome: Outcome) -> None:
        exc = outcome.exception
        _record("on_failure", id=job.id, status=outcome.status, exc=type(exc).__name__)

    def on_retry(self, job: JobInfo, outcome: Outcome) -> None:
        _record("on_retry", id=job.id, retry_at=outcome.retry_at)

    def on_worker_start(self, worker: WorkerInfo) -> None:
        _record("on_worker_start", slot=worker.slot, concurrency=worker.concurrency)

    def on_worker_stop(self, worker: WorkerInfo) -> None:
        _record("on_worker_stop", slot=worker.slot)


app.middleware([Recorder()])


@app.on("after_job")
def maybe_raise(job: JobInfo, outcome: Outcome) -> None:
    if os.environ.get(RAISING):
        raise RuntimeError(f"hook broke on job {job.id}")


@app.task
def ok(x: int) -> int:
    return x * 2


@app.task
async def aok(x: int) -> int:
    return x * 3


@app.task(max_attempts=1)
def boom(msg: str) -> None:
    raise ValueError(msg)


@app.task(max_attempts=2, retry_backoff=30)
def flaky() -> None:
    raise KeyError("try again")


@app.task
def hold(marker: str, release: str, timeout: float = 60.0) -> int:
    """Mark that it runs, then wait for `release` to exist (bounded)."""
    tmp = Path(f"{marker}.{os.getpid()}.tmp")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, marker)  # atomically: a test that sees the file never reads it empty
    deadline = time.monotonic() + timeout
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()
