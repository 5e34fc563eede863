"""Settings of the test project: SQLite (WAL) for Django's data, mpjobs for its tasks."""

import os
from urllib.parse import parse_qs, urlparse

import django

SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "djproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    # The backport is an app of its own before Django 6; Django 6 has django.tasks built in.
    *(["django_tasks"] if django.VERSION < (6,) else []),
    "mpjobs.contrib.django",
    "djproject.shop",
]


def _database() -> dict[str, object]:
    pg = os.environ.get("DJ_PG_URL")
    if pg:  # postgresql://user@host:port/db?schema=...: Django's database on the same server
        u = urlparse(pg)
        q = parse_qs(u.query)
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": u.path.lstrip("/"),
            "USER": u.username or "",
            "HOST": u.hostname or q.get("host", [""])[0],
            "PORT": str(u.port or q.get("port", [""])[0]),
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJ_DB", "/nonexistent/db.sqlite3"),
        # Workers write while the web side reads: WAL, and writers queue for the lock.
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;",
        },
    }


DATABASES = {"default": _database()}

TASKS = {
    "default": {
        "BACKEND": "mpjobs.contrib.django.MpjobsBackend",
        "QUEUES": ["default", "other"],
        "OPTIONS": {
            "home": os.environ.get("DJ_HOME"),
            "enqueue_in_transaction": bool(os.environ.get("DJ_PG_URL")),
        },
    }
}
