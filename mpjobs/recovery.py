"""Recovery of jobs whose owner died, whoever killed it and whenever it is noticed.

An owner is dead when its liveness lock can be taken: the kernel's word, not a guess
from pids or timestamps. Any process may run a sweep; the store's conditional updates
make concurrent sweeps harmless, so the leader sweeps often and every supervisor
sweeps at start.
"""

from __future__ import annotations

import logging
import time

from mpjobs import outcomes
from mpjobs.coordination.processes import token_alive
from mpjobs.store.base import Completion, JobRecord
from mpjobs.store.sqlite import SqliteStore

log = logging.getLogger("mpjobs.recovery")


def _settle(store: SqliteStore, token: str) -> list[JobRecord]:
    now = time.time()

    def decide(job: JobRecord) -> Completion:
        return outcomes.lost(job, "its process died", now)

    return store.recover(token, decide, now)


def recover_dead_owners(store: SqliteStore) -> int:
    """Settle the jobs of every dead owner; returns how many started jobs were recovered."""
    count = 0
    for owner in store.running_owners():
        if token_alive(store, owner):
            continue
        jobs = _settle(store, owner)
        for job in jobs:
            log.warning("job %s (%s): owner %s died; %s", job.id, job.name, owner,
                        "retrying" if job.attempts < job.max_attempts else "failed")  # fmt: skip
        store.unregister_process(owner)
        count += len(jobs)
    return count


def forget_dead_processes(store: SqliteStore) -> None:
    """Drop process rows (for `mpjobs status`) whose process is gone."""
    for proc in store.list_processes():
        if not token_alive(store, proc.token):
            _settle(store, proc.token)
            store.unregister_process(proc.token)
