"""gunicorn config of the test project: mpjobs' hooks run the Django backend's pool."""

import os

from mpjobs.contrib.gunicorn import *  # noqa: F403

bind = os.environ["WEB_BIND"]
workers = 2
preload_app = os.environ.get("WEB_PRELOAD") == "1"
graceful_timeout = 10
control_socket_disable = True
mpjobs_app = "mpjobs.contrib.django.registry:default"
mpjobs_pool = {"workers": 2, "graceful_timeout": 10.0}
