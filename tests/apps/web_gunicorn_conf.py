"""gunicorn config for the tests: the mpjobs hooks plus a few test-only settings."""

import os

from mpjobs.contrib.gunicorn import *  # noqa: F403

bind = os.environ["WEB_BIND"]
workers = 3
preload_app = os.environ.get("WEB_PRELOAD") == "1"
graceful_timeout = 10
# gunicorn's control socket (on by default) runs a thread in the arbiter once its first
# web workers are up; its default path is shared by every gunicorn of this user, so a
# test that wants it (a threaded arbiter) names its own path.
if os.environ.get("WEB_CONTROL_SOCKET"):
    control_socket = os.environ["WEB_CONTROL_SOCKET"]
else:
    control_socket_disable = True

mpjobs_app = "web_jobs:app"
mpjobs_pool = {"workers": 2, "graceful_timeout": 10.0}
