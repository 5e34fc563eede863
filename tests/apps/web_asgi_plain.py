"""A bare ASGI app that does not speak lifespan, wrapped in mpjobs' LifespanMiddleware."""

from __future__ import annotations

import json
import os
from typing import Any

from web_jobs import add
from web_jobs import app as jobs

from mpjobs.contrib.asgi import LifespanMiddleware


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope {scope['type']}")
    if scope["path"] == "/add":
        job = add.schedule(20, 22).now()
        await job.wait_async(timeout=30)
        body: dict[str, Any] = {"result": job.result(), "web_pid": os.getpid()}
    else:
        body = {"pid": os.getpid()}
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
    await send({"type": "http.response.body", "body": data})


app = LifespanMiddleware(bare, jobs, workers=1, graceful_timeout=5.0)
