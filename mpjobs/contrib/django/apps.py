"""The Django app of `mpjobs.contrib.django`: it only makes `manage.py mpjobs` exist."""

from __future__ import annotations

from django.apps import AppConfig


class MpjobsConfig(AppConfig):  # type: ignore[misc]
    name = "mpjobs.contrib.django"
    label = "mpjobs"
    verbose_name = "mpjobs"
