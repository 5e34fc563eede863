"""The dashboard's JSON API: each route reads or acts through mpjobs.operations, the
same functions the CLI calls, in a thread (the store's calls block)."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mpjobs import operations
from mpjobs.dashboard.http import HttpError, Request, Response
from mpjobs.job import JobStatus
from mpjobs.store.base import JobFilter

if TYPE_CHECKING:
    from mpjobs.app import App


def _statuses(req: Request, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    out = []
    for raw in req.args("status"):
        try:
            out.append(JobStatus(raw.upper()).value)
        except ValueError:
            raise HttpError(400, f"unknown status {raw!r}") from None
    return tuple(out) or default


def _int(raw: object, what: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(str(raw))
    except ValueError:
        raise HttpError(400, f"{what} must be an integer, got {raw!r}") from None


def _filter(req: Request, default: tuple[str, ...] = ()) -> JobFilter:
    return JobFilter(_statuses(req, default), req.arg("queue"), req.arg("task"))


def _body_filter(body: dict[str, Any], default: tuple[str, ...]) -> JobFilter:
    raw = body.get("status") or list(default)
    statuses = [raw] if isinstance(raw, str) else list(raw)
    try:
        st = tuple(JobStatus(str(s).upper()).value for s in statuses)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    return JobFilter(st, body.get("queue") or None, body.get("task") or None)


class Api:
    def __init__(self, app: App, allow_actions: bool) -> None:
        self.app = app
        self.allow_actions = allow_actions

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, self.app, *args)

    async def get(self, req: Request) -> Response:
        path = req.path
        if path == "/api/config":
            return Response.json({
                "actions": self.allow_actions,
                "home": str(self.app.home.path),
                "statuses": [s.value for s in JobStatus],
                "failures": list(operations.FAILURES),
            })  # fmt: skip
        if path == "/api/overview":
            return Response.json(await self._call(operations.overview))
        if path in ("/api/jobs", "/api/failures"):
            default = operations.FAILURES if path == "/api/failures" else ()
            page = await self._call(
                operations.job_page, _filter(req, default), req.arg("q"),
                _int(req.arg("before"), "before"), _int(req.arg("limit"), "limit") or 50,
            )  # fmt: skip
            return Response.json(page)
        if path.startswith("/api/jobs/"):
            job_id = _int(path[len("/api/jobs/") :], "a job id")
            detail = await self._call(operations.job_detail, job_id)
            if detail is None:
                raise HttpError(404, f"no job {job_id}")
            return Response.json(detail)
        if path == "/api/schedules":
            return Response.json(await self._call(operations.schedules))
        if path == "/metrics":
            metrics = importlib.import_module("mpjobs.observability.metrics")
            body, content_type = await self._call(metrics.exposition)
            return Response(200, body, content_type)
        raise HttpError(404, f"no such page {path!r}")

    async def post(self, req: Request) -> Response:
        if not self.allow_actions:
            raise HttpError(403, "actions are off: start the dashboard with --allow-actions")
        path, body = req.path, req.json()
        if path in ("/api/jobs/retry", "/api/jobs/cancel"):
            if path.endswith("retry"):
                where = _body_filter(body, operations.FAILURES)
                tally = await self._call(operations.retry_matching, where)
            else:
                where = _body_filter(body, ("SCHEDULED",))
                tally = await self._call(
                    operations.cancel_matching, where, bool(body.get("terminate"))
                )
            return Response.json(tally.as_dict())
        if path.startswith("/api/jobs/"):
            raw_id, _, verb = path[len("/api/jobs/") :].partition("/")
            job_id = _int(raw_id, "a job id")
            if verb == "retry":
                ok = await self._call(operations.retry_one, job_id)
            elif verb == "cancel":
                ok = await self._call(operations.cancel_one, job_id, bool(body.get("terminate")))
            else:
                raise HttpError(404, f"no action {verb!r} on jobs")
            return Response.json({"ok": ok}, 200 if ok else 409)
        if path.startswith("/api/schedules/"):
            sid, _, verb = path[len("/api/schedules/") :].rpartition("/")
            if verb not in operations.SCHEDULE_ACTIONS:
                raise HttpError(404, f"no action {verb!r} on schedules")
            job_id = await self._call(operations.schedule_action, sid, verb)
            return Response.json({"ok": True, "job_id": job_id})
        raise HttpError(404, f"no such action {path!r}")
