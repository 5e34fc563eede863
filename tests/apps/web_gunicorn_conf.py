"""gunicorn config for the tests: the mpjobs hooks plus a few test-only settings."""

import os

from mpjobs.contrib.gunicorn import *  # noqa: F403

bind = os.environ["WEB_BIND"]
workers = 3
preload_app = os.environ.get("WEB_PRELOAD") == "1"
graceful_timeout = 10
control_socket_disable = True  # the default socket path is shared by every gunicorn of this user

mpjobs_app = "web_jobs:app"
mpjobs_pool = {"workers": 2, "graceful_timeout": 10.0}
