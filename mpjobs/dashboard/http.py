"""The little of HTTP the dashboard needs, over plain ASGI: requests, responses, and the
two guards every request passes (the token) and every action passes (same origin).

No framework: the dashboard mounts inside any ASGI app (Starlette, FastAPI) or runs
under uvicorn alone, and adds no dependency to mpjobs.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

COOKIE = "mpjobs_dashboard_token"
MAX_BODY = 64 << 10
SECURITY_HEADERS = [
    # Nothing but our own files: an injected <script> or inline handler would not run.
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; "
     b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]  # fmt: skip


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    path: str  # below the mount point, starting with "/" (or "" at the bare mount point)
    root: str  # the mount point
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""
    scheme: str = "http"

    @classmethod
    def of(cls, scope: Scope, body: bytes) -> Request:
        root = scope.get("root_path", "") or ""
        path = scope.get("path", "") or ""
        if root and path.startswith(root):
            path = path[len(root) :]
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            headers[k.decode("latin-1").lower()] = v.decode("latin-1")
        query = parse_qs((scope.get("query_string") or b"").decode("latin-1"))
        return cls(scope["method"], path, root, query, headers, body, scope.get("scheme", "http"))

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values and values[-1] != "" else None

    def args(self, name: str) -> list[str]:
        return [v for v in self.query.get(name, []) if v]

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            data = json.loads(self.body)
        except ValueError:
            raise HttpError(400, "the request body is not JSON") from None
        if not isinstance(data, dict):
            raise HttpError(400, "the request body must be a JSON object")
        return data

    def cookie(self, name: str) -> str | None:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except Exception:
            return None
        morsel = jar.get(name)
        return None if morsel is None else morsel.value

    def query_without(self, name: str) -> str:
        return urlencode([(k, v) for k, vs in self.query.items() if k != name for v in vs])


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(data, default=str).encode())

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        return cls.json({"error": message}, status)

    async def send(self, send: Send) -> None:
        headers = [
            (b"content-type", self.content_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
            (b"cache-control", b"no-store"),
            *SECURITY_HEADERS,
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise HttpError(413, "request body too large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def token_given(req: Request) -> tuple[str | None, bool]:
    """The token a request carries, and whether it came in the query (`?token=`)."""
    auth = req.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), False
    if req.arg("token") is not None:
        return req.arg("token"), True
    return req.cookie(COOKIE), False


def token_ok(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def token_cookie(token: str, root: str) -> tuple[bytes, bytes]:
    """HttpOnly (no script reads it), SameSite=Strict (no other site's request sends it)."""
    value = f"{COOKIE}={token}; Path={root or '/'}; HttpOnly; SameSite=Strict"
    return (b"set-cookie", value.encode("latin-1"))


def same_origin(req: Request) -> bool:
    """Whether a POST comes from the dashboard's own pages (or from no browser at all).

    A browser says where a request comes from: Sec-Fetch-Site, and Origin on every
    POST. A cross-site form or fetch is refused by either; a client that sends neither
    (curl, a script) is not a browser a page could have steered.
    """
    site = req.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = req.headers.get("origin")
    if origin is None:
        return True
    host = req.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")
