"""gunicorn server hooks: the arbiter owns one mpjobs pool beside its web workers.

In a gunicorn config file::

    from mpjobs.contrib.gunicorn import *  # when_ready, post_fork, worker_exit, on_reload, on_exit
    mpjobs_app = "myproject.jobs:app"       # or set MPJOBS_APP; or an mpjobs.App object
    mpjobs_pool = {"workers": 4}            # optional: app.start() options
    mpjobs_reload = "workers"               # optional: what gunicorn's HUP does to the pool

or, to keep your own hooks, `globals().update(hooks("myproject.jobs:app", workers=4))`
and call the returned functions from yours.

- `when_ready` runs in the arbiter once it listens and before it forks any web worker,
  while it is single-threaded (gunicorn starts its control-socket thread later), so the
  pool supervisor is forked from the arbiter. It works with and without `preload_app`:
  without it the arbiter imports the mpjobs app itself (only the module that defines
  the App, not the WSGI app). The pool is told to SIGTERM itself if the arbiter dies.
- `post_fork` / `worker_exit` run in web workers, which hold nothing of mpjobs: the
  store reopens its SQLite connection per pid, and the pool handle is dropped.
- `on_reload` (gunicorn HUP): the pool belongs to the arbiter, which survives a HUP, so
  the pool is neither orphaned nor duplicated. With `mpjobs_reload = "workers"` (the
  default) the HUP is forwarded to the pool supervisor, which replaces its job workers
  one by one (running jobs finish first). They are forked from the supervisor, so like
  web workers under `preload_app` they do not re-import task code; restart gunicorn to
  deploy new task code. `"none"` leaves the pool alone. A pool that died is restarted.
- `on_exit` runs after the web workers have stopped, so their last requests could still
  wait on jobs; it then stops the pool gracefully (running jobs finish, unstarted ones
  stay SCHEDULED for the next start).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mpjobs.app import App
from mpjobs.contrib import start_pool
from mpjobs.pool import Pool

__all__ = ["on_exit", "on_reload", "post_fork", "when_ready", "worker_exit"]

log = logging.getLogger("mpjobs.contrib.gunicorn")

RELOAD_MODES = ("workers", "none")


@dataclass
class Settings:
    app: App | str | None = None
    pool: dict[str, Any] = field(default_factory=dict)
    reload: str = "workers"
    stop_timeout: float | None = None


class _Owner:
    """The arbiter's pool. Module state, so it survives gunicorn re-reading its config on HUP."""

    pool: Pool | None = None
    settings: Settings | None = None


_owner = _Owner()


# -- finding the app -----------------------------------------------------------------


def _config_namespace(server: Any) -> dict[str, Any]:
    """The gunicorn config module's globals (gunicorn keeps only the settings it knows)."""
    location = str(getattr(server.cfg, "config", None) or "")
    if location.startswith("python:"):
        return vars(importlib.import_module(location[len("python:"):]))
    module = sys.modules.get("__config__")
    return vars(module) if module is not None else {}


def settings_from_config(server: Any) -> Settings:
    ns = _config_namespace(server)
    return Settings(
        app=ns.get("mpjobs_app") or os.environ.get("MPJOBS_APP"),
        pool=dict(ns.get("mpjobs_pool") or {}),
        reload=str(ns.get("mpjobs_reload", "workers")),
        stop_timeout=ns.get("mpjobs_stop_timeout"),
    )


def _load(app: App | str | None) -> App:
    if isinstance(app, App):
        return app
    if not app:
        raise RuntimeError(
            "mpjobs.contrib.gunicorn: no mpjobs app to run. Set mpjobs_app = 'pkg.module:app' "
            "in the gunicorn config file, or the MPJOBS_APP environment variable."
        )
    from mpjobs.cli import load_app

    return load_app(app)


# -- the hooks, bound to settings ----------------------------------------------------


def _start(server: Any, settings: Settings) -> None:
    if settings.reload not in RELOAD_MODES:
        raise ValueError(f"mpjobs_reload must be one of {RELOAD_MODES}, got {settings.reload!r}")
    app = _load(settings.app)
    _owner.settings = settings
    _owner.pool = start_pool(app, **settings.pool)
    server.log.info("mpjobs: pool supervisor %d started for %s", _owner.pool.pid, app.home.path)


def _when_ready(server: Any, settings: Settings) -> None:
    if _owner.pool is not None and _owner.pool.is_alive():
        return
    _start(server, settings)


def _on_reload(server: Any, settings: Settings) -> None:
    pool = _owner.pool
    if pool is None:
        return
    if not pool.is_alive():
        server.log.warning("mpjobs: pool supervisor %d is gone; starting a new pool", pool.pid)
        _start(server, _owner.settings or settings)
        return
    if settings.reload == "workers":
        server.log.info("mpjobs: forwarding HUP to pool supervisor %d", pool.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pool.pid, signal.SIGHUP)


def _on_exit(server: Any, settings: Settings) -> None:
    pool, _owner.pool = _owner.pool, None
    if pool is None:
        return
    used = _owner.settings or settings
    timeout = used.stop_timeout
    if timeout is None:
        timeout = float(used.pool.get("graceful_timeout", 30.0)) + 10.0
    server.log.info("mpjobs: stopping pool supervisor %d", pool.pid)
    pool.stop(timeout=timeout)


def _post_fork(server: Any, worker: Any) -> None:
    # A web worker is a copy of the arbiter: the pool is not its to stop or signal.
    _owner.pool = None


def _worker_exit(server: Any, worker: Any) -> None:
    """Nothing to release: web workers hold no mpjobs lock or process."""


def hooks(
    app: App | str | None = None,
    *,
    reload: str = "workers",
    stop_timeout: float | None = None,
    **pool_options: Any,
) -> dict[str, Callable[..., None]]:
    """gunicorn hooks bound to `app` ('pkg.module:app' or an App) and app.start() options."""
    settings = Settings(app, dict(pool_options), reload, stop_timeout)
    if reload not in RELOAD_MODES:
        raise ValueError(f"reload must be one of {RELOAD_MODES}, got {reload!r}")

    def when_ready(server: Any) -> None:
        _when_ready(server, settings)

    def on_reload(server: Any) -> None:
        _on_reload(server, settings)

    def on_exit(server: Any) -> None:
        _on_exit(server, settings)

    return {
        "when_ready": when_ready,
        "post_fork": _post_fork,
        "worker_exit": _worker_exit,
        "on_reload": on_reload,
        "on_exit": on_exit,
    }


# -- the same hooks for `from mpjobs.contrib.gunicorn import *` ----------------------


def when_ready(server: Any) -> None:
    _when_ready(server, settings_from_config(server))


def on_reload(server: Any) -> None:
    _on_reload(server, settings_from_config(server))


def on_exit(server: Any) -> None:
    _on_exit(server, settings_from_config(server))


def post_fork(server: Any, worker: Any) -> None:
    _post_fork(server, worker)


def worker_exit(server: Any, worker: Any) -> None:
    _worker_exit(server, worker)
