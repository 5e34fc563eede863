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
  the App, not the WSGI app). The arbiter closes its store connection before it forks,
  so no pool or web worker inherits SQLite state.
- A pool that dies comes back by itself, as under uvicorn. gunicorn has no hook for the
  death of a child that is not a web worker (its `waitpid(-1)` reaps our supervisor and
  ignores it), so `when_ready` wraps this arbiter's `manage_workers`, which its main
  loop calls on every turn, and checks the pool first. SIGCHLD wakes the loop at once
  and it turns at least once a second, so a dead pool is seen at once, at the latest
  within ~1 s, and replaced in that turn (a warning says how it died: `reap_workers` is
  wrapped too, to read the exit status before gunicorn's waitpid(-1) discards it). The
  check is a pidfd of the supervisor, so a supervisor gunicorn already reaped counts as
  dead and a reused pid is never taken for it. The first restart is immediate; a pool
  that dies within `STABLE_AFTER` s of its start makes the next one wait (1 s doubling
  to 30 s), so a pool that cannot boot costs one fork every 30 s, never a busy loop.
  Nothing is restarted once gunicorn stops: its loop no longer turns, and `on_exit`
  marks the pool as stopping before anything else. With gunicorn's control socket on
  (its default), the arbiter has a thread by then, so a restarted pool is started by
  fork+exec of `mpjobs run`, which needs the mpjobs App to be a module-level name.
- `post_fork` / `worker_exit` run in web workers, which hold nothing of mpjobs: they
  open their own store connection, and the pool handle is dropped.
- `on_reload` (gunicorn HUP): the pool belongs to the arbiter, which survives a HUP, so
  the pool is neither orphaned nor duplicated. With `mpjobs_reload = "workers"` (the
  default) the HUP is forwarded to the pool supervisor, which replaces its job workers
  one by one (running jobs finish first). They are forked from the supervisor, so like
  web workers under `preload_app` they do not re-import task code; restart gunicorn to
  deploy new task code. `"none"` leaves the pool alone. A dead pool is restarted at
  once, even while a restart waits out its back-off.
- `on_exit` runs after the web workers have stopped, so their last requests could still
  wait on jobs; it then stops the pool gracefully (running jobs finish, unstarted ones
  stay SCHEDULED for the next start).
- If the arbiter itself is killed (even by SIGKILL), the kernel SIGTERMs a forked pool
  (`PR_SET_PDEATHSIG`), and an exec'd one sees its parent gone within a second: either
  drains and exits, and the jobs it was running are settled by the next pool.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mpjobs.app import App
from mpjobs.backoff import doubling
from mpjobs.contrib import start_pool
from mpjobs.loading import load_app
from mpjobs.pool import Pool

__all__ = ["on_exit", "on_reload", "post_fork", "when_ready", "worker_exit"]

log = logging.getLogger("mpjobs.contrib.gunicorn")

RELOAD_MODES = ("workers", "none")
RESTART_BACKOFF = (1.0, 30.0)  # first and longest wait before restarting a pool that died young
STABLE_AFTER = 60.0  # a pool that lived this long (s) died of something new: restart at once


@dataclass
class Settings:
    app: App | str | None = None
    pool: dict[str, Any] = field(default_factory=dict)
    reload: str = "workers"
    stop_timeout: float | None = None


# -- finding the app -----------------------------------------------------------------


def _config_namespace(server: Any) -> dict[str, Any]:
    """The gunicorn config module's globals (gunicorn keeps only the settings it knows)."""
    location = str(getattr(server.cfg, "config", None) or "")
    if location.startswith("python:"):
        return vars(importlib.import_module(location[len("python:") :]))
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
    return load_app(app)


# -- the pool and its keeper ---------------------------------------------------------


def _reap(pidfd: int) -> str | None:
    """How the supervisor behind `pidfd` ended (reaping it), or None while it runs."""
    try:
        info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return "is gone"  # reaped by someone else: its status is lost
    except (OSError, AttributeError):  # no waitid on pidfds (Linux < 5.4)
        return None
    if info is None:
        return None
    if info.si_code == os.CLD_EXITED:
        return f"exited with status {info.si_status}"
    with contextlib.suppress(ValueError):
        return f"was killed by {signal.Signals(info.si_status).name}"
    return f"was killed by signal {info.si_status}"


class _Owner:
    """The arbiter's pool, and what it takes to bring it back when it dies.

    Module state, so it survives gunicorn re-reading its config on HUP. Used only from
    the arbiter's main thread (hooks and the main loop), so it needs no lock.
    """

    def __init__(self) -> None:
        self.pool: Pool | None = None
        self.settings: Settings | None = None
        self.stopping = False
        self.restart_at: float | None = None  # monotonic time a dead pool is due back
        self.watching: Any = None  # the Arbiter whose main loop checks the pool
        self._pidfd = -1
        self._how: str | None = None  # how our supervisor ended, once it has
        self._started = 0.0
        self._young_deaths = 0  # pools in a row that died before STABLE_AFTER

    def start(self, server: Any, settings: Settings) -> None:
        if settings.reload not in RELOAD_MODES:
            raise ValueError(
                f"mpjobs_reload must be one of {RELOAD_MODES}, got {settings.reload!r}"
            )
        app = _load(settings.app)
        self.settings = settings
        self._forget()
        # Open, vet and migrate the store here (a bad home fails in the arbiter, clearly),
        # then close it: the arbiter keeps no SQLite state that a pool or a web worker it
        # forks could inherit (SQLite forbids it: the child would take no locks of its own).
        app.store.close()
        self.pool = start_pool(app, **settings.pool)
        # No reap can happen between the fork and this line (gunicorn reaps only in this
        # thread), so the pidfd names our supervisor even if it has already exited.
        with contextlib.suppress(OSError, AttributeError):
            self._pidfd = os.pidfd_open(self.pool.pid)
        self._started = time.monotonic()
        self.restart_at = None
        server.log.info("mpjobs: pool supervisor %d started for %s", self.pool.pid, app.home.path)

    def alive(self) -> bool:
        """Whether our supervisor runs; a supervisor reaped by gunicorn is dead."""
        if self.pool is None or self._how is not None:
            return False
        if self._pidfd < 0:
            return self.pool.is_alive()
        exited, _, _ = select.select([self._pidfd], [], [], 0)
        return not exited

    def collect(self) -> None:
        """Reap our supervisor if it ended, before gunicorn's waitpid(-1) takes its status."""
        if self._pidfd >= 0 and self._how is None:
            self._how = _reap(self._pidfd)

    def note_death(self, server: Any) -> None:
        """Log the death of our supervisor and decide when its successor starts."""
        assert self.pool is not None
        self.collect()
        how = self._how or "is gone"
        self.pool.is_alive()  # lets a Popen (an exec'd pool) record its end
        lived = time.monotonic() - self._started
        delay = self._next_delay(lived)
        server.log.warning(
            "mpjobs: pool supervisor %d %s after %.1f s; starting a new pool%s",
            self.pool.pid, how, lived, f" in {delay:.0f} s" if delay else "",
        )  # fmt: skip
        self._forget()
        self.restart_at = time.monotonic() + delay

    def _next_delay(self, lived: float) -> float:
        if lived >= STABLE_AFTER:
            self._young_deaths = 0
        n, self._young_deaths = self._young_deaths, self._young_deaths + 1
        return doubling(*RESTART_BACKOFF, n)  # the first restart is at once (n == 0)

    def keep(self, server: Any, at_once: bool = False) -> None:
        """One turn of the arbiter's loop: restart a pool that died (never while stopping)."""
        if self.stopping or self.settings is None:
            return
        if self.restart_at is None:
            if self.alive():
                return
            self.note_death(server)
        assert self.restart_at is not None
        if time.monotonic() < self.restart_at and not at_once:
            return
        try:
            self.start(server, self.settings)
        except Exception as exc:
            delay = self._next_delay(0.0)  # a start that failed counts as a young death
            self.restart_at = time.monotonic() + delay
            server.log.error(
                "mpjobs: cannot start a new pool (%s: %s); retrying in %.0f s",
                type(exc).__name__, exc, delay,
            )  # fmt: skip

    def stop(self, server: Any, timeout: float) -> None:
        self.stopping = True
        self.restart_at = None
        pool, alive = self.pool, self.alive()
        self._forget()
        if pool is not None and alive:
            server.log.info("mpjobs: stopping pool supervisor %d", pool.pid)
            pool.stop(timeout=timeout)

    def signal(self, sig: int) -> None:
        if self.pool is not None and self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pool.pid, sig)

    def drop_in_child(self) -> None:
        """In a web worker (a copy of the arbiter): the pool is not its to stop or restart."""
        self.stopping = True
        self.restart_at = None
        self._forget()

    def _forget(self) -> None:
        self.pool, self._how = None, None
        if self._pidfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = -1


_owner = _Owner()


def _watch(server: Any) -> None:
    """Have the arbiter's main loop check the pool on every turn, before its own work.

    `manage_workers` is called on every turn of the loop; the check goes before gunicorn's
    own work, so between gunicorn reaping our supervisor and the check it forks nothing:
    the dead supervisor's pid cannot be a new child yet. `reap_workers` is wrapped too,
    only to read our supervisor's exit status before gunicorn's waitpid(-1) discards it.
    """
    if _owner.watching is server:
        return
    turn, reap = getattr(server, "manage_workers", None), getattr(server, "reap_workers", None)
    if not callable(turn):
        server.log.warning("mpjobs: this gunicorn has no manage_workers(); a pool that dies "
                           "is restarted only by a HUP")  # fmt: skip
        return

    def manage_workers() -> None:
        try:
            _owner.keep(server)
        except Exception:
            server.log.exception("mpjobs: checking the pool failed")
        turn()

    server.manage_workers = manage_workers
    if callable(reap):
        reap_all: Callable[[], None] = reap

        def reap_workers() -> None:
            with contextlib.suppress(Exception):
                _owner.collect()
            reap_all()

        server.reap_workers = reap_workers
    _owner.watching = server


# -- the hooks, bound to settings ----------------------------------------------------


def _when_ready(server: Any, settings: Settings) -> None:
    if _owner.pool is None or not _owner.alive():
        _owner.start(server, settings)
    _watch(server)


def _on_reload(server: Any, settings: Settings) -> None:
    if _owner.stopping or _owner.settings is None:
        return
    if _owner.pool is None or not _owner.alive():
        _owner.keep(server, at_once=True)  # a HUP asks for the pool now, back-off or not
        return
    if settings.reload == "workers":
        assert _owner.pool is not None
        server.log.info("mpjobs: forwarding HUP to pool supervisor %d", _owner.pool.pid)
        _owner.signal(signal.SIGHUP)


def _on_exit(server: Any, settings: Settings) -> None:
    used = _owner.settings or settings
    timeout = used.stop_timeout
    if timeout is None:
        timeout = float(used.pool.get("graceful_timeout", 30.0)) + 10.0
    _owner.stop(server, timeout)


def _post_fork(server: Any, worker: Any) -> None:
    _owner.drop_in_child()


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
