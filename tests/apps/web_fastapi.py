"""The FastAPI app for the uvicorn tests: `lifespan=app.lifespan`, async push and wait."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from web_jobs import add, app, slow_add

api = FastAPI(lifespan=app.lifespan)


@api.get("/add")
async def add_endpoint(x: int = 1, y: int = 2) -> dict[str, Any]:
    job = add.schedule(x, y).now()
    await job.wait_async(timeout=30)
    return {"result": job.result(), "web_pid": os.getpid()}


@api.get("/push")
async def push_endpoint(x: int = 1, s: float = 0.2) -> dict[str, Any]:
    return {"id": slow_add.schedule(x, 1, s).now().id}


@api.get("/noop")
async def noop_endpoint() -> dict[str, Any]:
    return {}


@api.get("/pid")
async def pid_endpoint() -> dict[str, Any]:
    return {"pid": os.getpid()}
