"""Start `uvicorn --workers 3` on the FastAPI app, make requests, stop it; exit 0 on success.

    python examples/fastapi_app/run_example.py
"""

import json
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


def request(url: str, deadline: float, method: str = "GET") -> dict:
    while True:
        try:
            req = urllib.request.Request(url, method=method)
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # the server is still starting


def main() -> int:
    port = free_port()
    env = {**os.environ}
    env.setdefault("MPJOBS_HOME", tempfile.mkdtemp(prefix="mpjobs-fastapi-"))
    # the pool is started with `python -m mpjobs run main:app`, which must import main
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "main:api", "--workers", "3",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=HERE, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        created = request(f"{base}/summaries?text=hello+from+mpjobs", time.monotonic() + 25, "POST")
        print("created:", created)
        assert created["summary"] == {"words": 3, "first": "hello"}
        fetched = request(f"{base}/summaries/{created['job']}", time.monotonic() + 5)
        print("fetched:", fetched)
        assert fetched["status"] == "SUCCESS"
    finally:
        server.send_signal(signal.SIGTERM)  # graceful: each web process runs its lifespan exit
        code = server.wait(timeout=40)
    print("uvicorn exited with", code)
    return code


if __name__ == "__main__":
    sys.exit(main())
