"""Django integration: mpjobs as the backend of Django's Tasks framework.

    TASKS = {"default": {"BACKEND": "mpjobs.contrib.django.MpjobsBackend",
                         "QUEUES": ["default"], "OPTIONS": {"home": "/var/lib/app/jobs"}}}
    INSTALLED_APPS += ["mpjobs.contrib.django"]   # for `manage.py mpjobs run|status|jobs`

See docs/django.md. Names are loaded lazily, so that listing this package in
INSTALLED_APPS imports nothing of Django's task framework before the app registry runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MpjobsBackend", "MpjobsTask", "with_options"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mpjobs.contrib.django import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
