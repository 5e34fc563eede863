"""Django's Tasks framework, from Django itself (6.0+) or from the django-tasks backport.

Everything the backend uses of the framework comes through here, and only names that
both have: so the backend runs unchanged on Django 5.2 with `django-tasks` and on
Django 6 with the built-in `django.tasks`. The backport spells two exceptions with an
`Error` suffix that Django dropped; they are given Django's names here.
"""

from __future__ import annotations

from typing import Any

try:
    from django.tasks import exceptions as _exceptions
    from django.tasks import task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django.tasks.signals import task_enqueued, task_finished, task_started

    BUILTIN = True
except ImportError:  # Django < 6: the backport
    from django_tasks import exceptions as _exceptions
    from django_tasks import task_backends
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import (
        Task,
        TaskContext,
        TaskError,
        TaskResult,
        TaskResultStatus,
    )
    from django_tasks.signals import (
        task_enqueued,
        task_finished,
        task_started,
    )

    BUILTIN = False

InvalidTask: type[Exception] = (
    getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError
)
TaskResultDoesNotExist: type[Exception] = _exceptions.TaskResultDoesNotExist

__all__ = [
    "BUILTIN",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "exception_path",
    "normalize_json",
    "set_field",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]


def _json_normaliser() -> Any:
    """Django's own `normalize_json` (what its backends apply to arguments and results)."""
    try:
        from django.utils.json import normalize_json

        return normalize_json
    except ImportError:
        pass
    try:
        from django_tasks.utils import normalize_json

        return normalize_json
    except ImportError:  # neither: the same effect for plain data, through the json module
        import json

        return lambda value: json.loads(json.dumps(value))


normalize_json: Any = _json_normaliser()


def exception_path(exc_type: type[BaseException]) -> str:
    """The dotted path Django's `TaskError.exception_class_path` holds for a class."""
    return f"{exc_type.__module__}.{exc_type.__qualname__}"


def set_field(obj: Any, name: str, value: Any) -> None:
    """Set a field of one of Django's frozen dataclasses, as Django's own backends do."""
    object.__setattr__(obj, name, value)
