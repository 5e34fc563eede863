"""A dependency-free WSGI app for the gunicorn tests: the endpoints push and wait through mpjobs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from web_jobs import add, app, slow_add

import mpjobs


def _result(job_id: str, timeout: float, mark: str | None) -> dict[str, Any]:
    """The job's status and result once it ends, or {"timeout": true}."""
    job = app.get_job(job_id)
    assert job is not None, job_id
    if mark:  # tell the test this request is now waiting
        with open(f"{mark}.tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(f"{mark}.tmp", mark)
    try:
        job.wait(timeout=timeout)
    except mpjobs.WaitTimeout:
        return {"timeout": True, "web_pid": os.getpid()}
    ok = job.status == mpjobs.JobStatus.SUCCESS
    return {"status": job.status.value, "result": job.result() if ok else job.error,
            "attempts": job.attempts, "web_pid": os.getpid()}  # fmt: skip


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    body: Any
    if path == "/add":  # push, wait, return the result
        job = add.schedule(int(q.get("x", 1)), int(q.get("y", 2))).now()
        body = {"result": job.wait(timeout=30).result(), "web_pid": os.getpid()}
    elif path == "/push":  # push only
        job = slow_add.schedule(int(q.get("x", 1)), 1, float(q.get("s", 0.2))).now()
        body = {"id": job.id}
    elif path == "/result":  # wait on a job pushed elsewhere, by id
        body = _result(q["id"], float(q.get("timeout", 30)), q.get("mark"))
    elif path == "/noop":
        body = {}
    elif path == "/pid":
        body = {"pid": os.getpid()}
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])  # fmt: skip
    return [data]
