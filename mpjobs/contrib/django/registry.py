"""One mpjobs App per Django task backend alias, and the pre-fork close of Django's connections.

Django builds a backend object per thread (its connection handler is thread-local);
they must all push to one App, so the Apps live here, one per alias and settings.

`registry:<alias>` is importable as an mpjobs target (`mpjobs run
mpjobs.contrib.django.registry:default`, gunicorn's `mpjobs_app`): the attribute is
made on first access, after `django.setup()` if Django is not set up yet (an exec'd
`mpjobs run`, gunicorn's arbiter), and then kept as a module attribute, so that
`app.start()` can find it again by name when it must fork+exec.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from mpjobs.app import App

if TYPE_CHECKING:
    from mpjobs.contrib.django.backend import BackendSettings

__all__ = ["app_for", "close_connections_before_fork"]

_apps: dict[str, tuple[BackendSettings, App]] = {}
_lock = threading.Lock()
_fork_hook = False


def app_for(alias: str, settings: BackendSettings) -> App:
    """The App of backend `alias`; a new one only if its settings changed (tests do)."""
    with _lock:
        known = _apps.get(alias)
        if known is not None and known[0] == settings:
            return known[1]
        app = App(home=settings.home, store=settings.store, result_ttl=settings.result_ttl)
        _apps[alias] = (settings, app)
        return app


def _close_django_connections() -> None:
    from django.db import connections

    connections.close_all()


def close_connections_before_fork() -> None:
    """From now on, close this thread's Django connections before any fork (idempotent).

    A database connection is a socket and a session: a forked child sharing it with
    its parent interleaves both sides' traffic. mpjobs has no pre-fork hook of its own,
    so this is `os.register_at_fork`. It is called only in processes that run a pool
    (`manage.py mpjobs run`, a process that loads `registry:<alias>`), never merely on
    import, because closing a connection mid-transaction would end the caller's work.
    Django's connections are per thread: the supervisor forks from its only thread.
    """
    global _fork_hook
    with _lock:
        if not _fork_hook:
            os.register_at_fork(before=_close_django_connections)
            _fork_hook = True


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    from mpjobs.contrib.django.compat import task_backends

    try:
        backend = task_backends[name]
    except Exception as exc:
        raise AttributeError(f"no task backend {name!r} in settings.TASKS: {exc}") from None
    app = getattr(backend, "app", None)  # an MpjobsBackend (not imported: backend imports us)
    if not isinstance(app, App):
        raise AttributeError(f"TASKS[{name!r}] is a {type(backend).__name__}, not an MpjobsBackend")
    close_connections_before_fork()
    globals()[name] = app  # findable by name from now on (find_app_target)
    return app
