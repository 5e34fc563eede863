"""The web dashboard: a plain ASGI app over mpjobs.operations, with its pages in
static/ (no build step, no CDN), served by `mpjobs dashboard` or mounted by the user.

    app.mount("/jobs", mpjobs_app.dashboard(token="..."))   # Starlette / FastAPI

Safe by default: actions (retry, cancel, schedule changes) are off unless asked for,
`mpjobs dashboard` binds 127.0.0.1, and with a token every request must carry it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mpjobs.dashboard.server import Dashboard

if TYPE_CHECKING:
    from mpjobs.app import App

__all__ = ["Dashboard", "create"]


def create(app: App, *, allow_actions: bool = False, token: str | None = None) -> Dashboard:
    """The dashboard of `app` as an ASGI app (what `App.dashboard()` returns)."""
    return Dashboard(app, allow_actions=allow_actions, token=token)
