"""Start gunicorn with the mpjobs hooks, make one request, stop it; exit 0 on success.

    python examples/gunicorn_app/run_example.py
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, deadline: float) -> bytes:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # the server is still starting


def main() -> int:
    port = free_port()
    env = {**os.environ, "BIND": f"127.0.0.1:{port}"}
    env.setdefault("MPJOBS_HOME", tempfile.mkdtemp(prefix="mpjobs-gunicorn-"))
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:application"],
        cwd=HERE, env=env,
    )
    try:
        body = get(f"http://127.0.0.1:{port}/?name=dog.png", time.monotonic() + 20)
        print("response:", body.decode())
        assert b"dog.png@128px" in body
    finally:
        server.send_signal(signal.SIGTERM)  # graceful: web workers, then the pool
        code = server.wait(timeout=60)  # within gunicorn's graceful_timeout, and more
    print("gunicorn exited with", code)
    return code


if __name__ == "__main__":
    sys.exit(main())
