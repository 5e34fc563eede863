"""gunicorn config: the mpjobs pool runs beside the web workers, owned by the arbiter.

    gunicorn -c gunicorn.conf.py wsgi:application
"""

import os

from mpjobs.contrib.gunicorn import *  # noqa: F403  when_ready, post_fork, worker_exit, on_reload, on_exit

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = 3
# A worker forked while the arbiter is already stopping can miss its TERM (it still has
# the arbiter's handler until it sets up its own) and is then killed only at this bound.
graceful_timeout = 10
control_socket_disable = True

mpjobs_app = "jobs:app"  # the arbiter imports it in when_ready (preload_app not needed)
mpjobs_pool = {"workers": 2, "graceful_timeout": 10.0}  # app.start() options
mpjobs_reload = "workers"  # kill -HUP gunicorn also replaces the pool's job workers
