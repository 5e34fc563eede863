"""Waiters on both sides of a fork, for tests/integration/test_waiters.py.

    python fork_waiter.py HOME OUT

Pushes three jobs nobody runs yet. While an asyncio task and a thread wait on the first
two (so the process's listener, its thread and its inotify fd exist), forks from inside
the event loop. The child waits on the first job on an event loop of its own and on the
third from its thread; the parent keeps waiting on its own two. Each side writes a JSON
report, OUT.child and OUT.parent; OUT.forked appears once the child is under way.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import tasks
from idle_waiters import inotify_instances

from mpjobs.coordination import listener


def both_asleep() -> bool:
    """Both waiters parked on the process's shared listener (coordination/listener.py)."""
    return listener.parked() >= 2


async def main(home: str, out: Path) -> None:
    app = tasks.make_app(home)
    a, b, c = app.push_many(tasks.noop.schedule() for _ in range(3))
    inherited = asyncio.create_task(a.wait_async(60))
    thread = threading.Thread(target=b.wait, args=(60,))
    thread.start()
    deadline = time.monotonic() + 30
    while not both_asleep():
        if time.monotonic() > deadline:
            raise SystemExit("the two waiters never both parked on the listener")
        await asyncio.sleep(0.01)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            report = {"inotify_after_fork": inotify_instances(os.getpid())}
            tasks.write_marker(f"{out}.forked", "")
            # asyncio drops the running loop in a forked child: a new loop, then a thread
            asyncio.run(a.wait_async(60))
            c.wait(60)
            report.update(ok=True, inotify=inotify_instances(os.getpid()))
            tasks.write_marker(f"{out}.child", json.dumps(report))
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    await asyncio.wait_for(inherited, 60)
    thread.join(60)
    report = {"child_status": status, "thread_done": not thread.is_alive(), "a": str(a.status)}
    tasks.write_marker(f"{out}.parent", json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
