"""ASGI lifespan: one pool per home, even under `uvicorn --workers N`.

    api = FastAPI(lifespan=app.lifespan)                  # Starlette / FastAPI
    api = LifespanMiddleware(asgi_app, app)               # any ASGI app

uvicorn offers no master hooks: each web process runs the lifespan on its own. So the
web processes elect the pool's owner among themselves with an flock on `pool.lock` in
the home. Each process runs a `PoolKeeper`, one daemon thread that

1. tries the lock without blocking; the winner starts the pool (`app.start()`) and
   keeps it running (restarting it, with backoff, should the supervisor die);
2. a loser blocks in flock() in that thread. The kernel wakes it the instant the owner
   dies (nothing polls), and it becomes the owner: it waits, bounded by
   `handover_timeout`, for the previous supervisor (named in `pool.json`) to finish
   draining, then starts a pool of its own. That is the handover.

The previous supervisor always goes away with its owner: it was started with
PR_SET_PDEATHSIG bound to the owner's keeper thread, which lives as long as the pool.
On lifespan shutdown the owner stops its pool gracefully and then releases the lock;
a loser just marks itself stopping, so winning the lock during shutdown starts nothing.

The keeper thread makes the web process multi-threaded, so the pool is started by
fork+exec of `python -m mpjobs run MODULE:APP` and the mpjobs App must be a module-level
name. No signal handler is installed: signals belong to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from mpjobs.backoff import Backoff
from mpjobs.contrib import start_pool
from mpjobs.coordination.locks import FileLock
from mpjobs.files import write_json_atomic
from mpjobs.pool import Pool

if TYPE_CHECKING:  # App.lifespan imports this module: no import back at run time
    from mpjobs.app import App

__all__ = ["LifespanMiddleware", "PoolKeeper", "lifespan_for"]

log = logging.getLogger("mpjobs.contrib.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

POOL_INFO = "pool.json"
SUPERVISE_EVERY = 0.5
RESTART_BACKOFF = (1.0, 30.0)


class PoolKeeper:
    """Competes for the home's pool lock; while it holds it, it runs the pool."""

    def __init__(
        self,
        app: App,
        *,
        handover_timeout: float = 10.0,
        stop_timeout: float | None = None,
        **pool_options: Any,
    ) -> None:
        self.app = app
        self.handover_timeout = handover_timeout
        self.pool_options = pool_options
        grace = float(pool_options.get("graceful_timeout", 30.0))
        self.stop_timeout = grace + 10.0 if stop_timeout is None else stop_timeout
        self.pool: Pool | None = None
        self._lock = FileLock(app.home.pool_lock)
        self._mutex = threading.Lock()
        self._stopping = False
        self._stop = threading.Event()
        self._decided = threading.Event()  # owner with a started pool, or waiting
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def owner(self) -> bool:
        return self._lock.held

    # -- lifecycle, called by the server ---------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start competing; returns once this process owns a started pool or waits for one."""
        self._thread = threading.Thread(target=self._run, name="mpjobs-pool-keeper", daemon=True)
        self._thread.start()
        self._decided.wait(timeout)
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float | None = None) -> None:
        """Stop the pool if we own it (graceful), then release the lock."""
        with self._mutex:
            self._stopping = True
            owner = self._lock.held
        self._stop.set()
        if owner and self._thread is not None:
            self._thread.join(self.stop_timeout + 5.0 if timeout is None else timeout)

    # -- the keeper thread -----------------------------------------------------------

    def _run(self) -> None:
        try:
            if not self._acquire():
                return
            self._own()
        except BaseException as exc:
            self._error = exc
            log.exception("mpjobs pool keeper failed")
        finally:
            self._decided.set()
            self._lock.release()

    def _acquire(self) -> bool:
        """Take the pool lock, blocking as long as another process holds it."""
        while True:
            with self._mutex:
                if self._stopping:
                    return False
                if self._lock.acquire(blocking=False):
                    return True
            self._decided.set()
            waiter = FileLock(self.app.home.pool_lock)
            waiter.acquire(blocking=True)  # woken by the kernel when the owner dies
            waiter.release()  # and race the other waiters for the real lock above

    def _own(self) -> None:
        self._wait_for_previous()
        backoff = Backoff(*RESTART_BACKOFF)
        while True:
            with self._mutex:
                if self._stopping:
                    return
                self.pool = start_pool(self.app, **self.pool_options)
            self._write_info(self.pool)
            log.info("mpjobs: process %d runs the pool (supervisor %d) for %s",
                     os.getpid(), self.pool.pid, self.app.home.path)  # fmt: skip
            self._decided.set()
            started = time.monotonic()
            while not self._stop.wait(SUPERVISE_EVERY):
                if not self.pool.is_alive():
                    break
            if self._stop.is_set():
                self.pool.stop(timeout=self.stop_timeout)
                return
            if time.monotonic() - started > 60:
                backoff.reset()  # it had lived: not a pool that keeps dying
            wait = backoff.next()
            log.error("mpjobs: pool supervisor %d exited; restarting it in %.0fs",
                      self.pool.pid, wait)  # fmt: skip
            if self._stop.wait(wait):
                return

    def _wait_for_previous(self) -> None:
        """Let the previous owner's supervisor finish draining, bounded by handover_timeout."""
        info = self._read_info() or {}
        token = info.get("token")
        if not isinstance(token, str):
            return
        backend = self.app.backend
        deadline = time.monotonic() + self.handover_timeout
        with backend.doorbell.watcher() as watcher:
            while backend.liveness.alive(token) and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("mpjobs: previous pool supervisor %s still draining; "
                                "starting a new pool beside it", info.get("pid"))  # fmt: skip
                    return
                watcher.wait(min(left, 0.1))

    def _write_info(self, pool: Pool) -> None:
        info = {"pid": pool.pid, "token": pool.token, "owner_pid": os.getpid()}
        write_json_atomic(self.app.home.path / POOL_INFO, info)

    def _read_info(self) -> dict[str, Any] | None:
        try:
            with open(self.app.home.path / POOL_INFO) as f:
                info = json.load(f)
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None


# -- Starlette / FastAPI `lifespan=` -------------------------------------------------


def lifespan_for(
    app: App, *, pool: bool = True, **options: Any
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan (`asgi_app -> async context manager`) that runs one pool per home.

    `options` are PoolKeeper's (`handover_timeout`, `stop_timeout`) and app.start()'s
    (`workers`, `queues`, `graceful_timeout`, ...). With pool=False the web processes
    only push and wait, and a pool must be run elsewhere (`mpjobs run`).
    """

    @contextlib.asynccontextmanager
    async def lifespan(asgi_app: Any = None) -> AsyncIterator[None]:
        if not pool:
            yield
            return
        keeper = PoolKeeper(app, **options)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, keeper.start)
        try:
            yield
        finally:
            await loop.run_in_executor(None, keeper.stop)

    return lifespan


# -- any ASGI app ----------------------------------------------------------------------


class LifespanMiddleware:
    """Runs `lifespan_for(mpjobs_app)` around any ASGI app's own lifespan (if it has one).

    The pool starts before the wrapped app's startup and stops after its shutdown, so
    the app can push jobs in both.
    """

    def __init__(self, asgi_app: ASGIApp, mpjobs_app: App, **options: Any) -> None:
        self.app = asgi_app
        self.lifespan = lifespan_for(mpjobs_app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        ctx = self.lifespan(self.app)
        state = {"entered": False, "spoke": False, "shutdown_asked": False}

        async def exit_ctx() -> None:
            if state["entered"]:
                state["entered"] = False
                await ctx.__aexit__(None, None, None)

        async def inner_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await ctx.__aenter__()
                state["entered"] = True
            elif message["type"] == "lifespan.shutdown":
                state["shutdown_asked"] = True
            return message

        async def inner_send(message: Message) -> None:
            kind = message["type"]
            state["spoke"] = True
            if kind in ("lifespan.startup.failed", "lifespan.shutdown.complete",
                          "lifespan.shutdown.failed"):  # fmt: skip
                await exit_ctx()
            await send(message)

        try:
            await self.app(scope, inner_receive, inner_send)
        except BaseException:
            if state["spoke"]:
                await exit_ctx()
                raise
            # The wrapped app does not speak lifespan: speak it for both of us.
            if not state["entered"]:
                message = await receive()
                if message["type"] != "lifespan.startup":
                    return
                try:
                    await ctx.__aenter__()
                    state["entered"] = True
                except BaseException as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
            await send({"type": "lifespan.startup.complete"})
            if not state["shutdown_asked"]:
                await receive()  # lifespan.shutdown
            await exit_ctx()
            await send({"type": "lifespan.shutdown.complete"})
        else:
            await exit_ctx()
