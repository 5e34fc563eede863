"""The ASGI entry: the token guard, the static pages, then the API (api.py)."""

from __future__ import annotations

import logging
from importlib import resources
from typing import TYPE_CHECKING

from mpjobs.dashboard.api import Api
from mpjobs.dashboard.http import (
    HttpError,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    read_body,
    same_origin,
    token_cookie,
    token_given,
    token_ok,
)
from mpjobs.errors import ConfigError, MpjobsError, NotFoundError

if TYPE_CHECKING:
    from mpjobs.app import App

log = logging.getLogger("mpjobs.dashboard")

STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


def _static(name: str) -> Response:
    data = resources.files("mpjobs.dashboard").joinpath("static").joinpath(name).read_bytes()
    return Response(200, data, STATIC[name])


class Dashboard:
    """An ASGI app; every request is checked for the token before anything is read."""

    def __init__(self, app: App, *, allow_actions: bool = False, token: str | None = None) -> None:
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ConfigError("the dashboard token must be a non-empty string")
        self.app = app
        self.token = token
        self.allow_actions = bool(allow_actions)
        self.api = Api(app, self.allow_actions)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        try:
            body = await read_body(receive)
            req = Request.of(scope, body)
            response = await self._handle(req)
        except HttpError as exc:
            response = Response.error(exc.status, str(exc))
        await response.send(send)

    async def _handle(self, req: Request) -> Response:
        extra: list[tuple[bytes, bytes]] = []
        if self.token is not None:
            given, in_query = token_given(req)
            if not token_ok(self.token, given):
                r = Response.error(401, "this dashboard needs its token")
                r.headers.append((b"www-authenticate", b'Bearer realm="mpjobs"'))
                return r
            if in_query:
                extra.append(token_cookie(self.token, req.root))
                if req.method == "GET" and not req.path.startswith(("/api/", "/metrics")):
                    # Once: the cookie carries it from now on, and the address bar,
                    # history and logs no longer show it.
                    rest = req.query_without("token")
                    where = (req.root + (req.path or "/")) + (f"?{rest}" if rest else "")
                    return Response(303, b"", "text/plain", [*extra, (b"location", where.encode())])
        response = await self._route(req)
        response.headers.extend(extra)
        return response

    async def _route(self, req: Request) -> Response:
        if req.path == "":
            return Response(307, b"", "text/plain", [(b"location", (req.root + "/").encode())])
        if req.method == "GET" and req.path in ("/", "/index.html"):
            return _static("index.html")
        if req.method == "GET" and req.path.startswith("/static/"):
            name = req.path[len("/static/") :]
            if name not in STATIC:
                raise HttpError(404, "no such file")
            return _static(name)
        try:
            if req.method == "GET":
                return await self.api.get(req)
            if req.method == "POST":
                if not same_origin(req):
                    raise HttpError(403, "cross-origin request refused")
                return await self.api.post(req)
        except NotFoundError as exc:
            raise HttpError(404, str(exc)) from None
        except (MpjobsError, ValueError) as exc:
            raise HttpError(400, str(exc)) from None
        except ImportError as exc:
            raise HttpError(501, f"not available: {exc}") from None
        raise HttpError(405, f"method {req.method} not allowed")
