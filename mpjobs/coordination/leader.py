"""Leader election: whoever holds the flock on `leader.lock` leads.

The kernel releases the lock the instant its holder dies, and a candidate blocked in
flock() is woken at that instant, so failover needs no lease, no heartbeat and no poll
period, and two leaders can never overlap. `leader.json` only tells others who leads;
it is written atomically and always verified against the leader's liveness lock.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from mpjobs.coordination.locks import FileLock, is_alive
from mpjobs.home import Home


class Leadership:
    def __init__(self, home: Home, token: str) -> None:
        self.home = home
        self.token = token
        self.lock = FileLock(home.leader_lock)

    def campaign(self) -> None:
        """Block until this process leads (interrupt with a signal handler that raises)."""
        self.lock.acquire(blocking=True)
        info = {"token": self.token, "pid": os.getpid(), "since": time.time()}
        tmp = self.home.leader_info.with_name(f"leader.json.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, self.home.leader_info)

    def resign(self) -> None:
        self.lock.release()


def current_leader(home: Home) -> dict[str, Any] | None:
    """Who leads now, or None; a stale leader.json of a dead process does not count."""
    try:
        with open(home.leader_info) as f:
            info: dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        return None
    token = info.get("token")
    if not isinstance(token, str) or not is_alive(home.proc_lock(token)):
        return None
    return info
