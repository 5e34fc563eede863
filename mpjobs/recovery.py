"""Settling the jobs of a process that died, whoever killed it and whenever it is noticed.

An owner is dead when its liveness lock can be taken: the kernel's word, not a guess
from pids or timestamps. Its journal says what it finished (those results are kept),
what it had started (those attempts count) and, by omission, what it never started
(those go back without using an attempt). Any process may settle a dead owner; the
store's conditional updates make concurrent settling harmless, so the leader sweeps
often and every supervisor settles its own children the moment it reaps them.
"""

from __future__ import annotations

import logging
import time

from mpjobs import outcomes
from mpjobs.coordination.processes import token_alive
from mpjobs.errors import StoreError
from mpjobs.journal import read_journal, read_kill_note, remove_journal
from mpjobs.store.base import Completion, JobRecord
from mpjobs.store.sqlite import SqliteStore

log = logging.getLogger("mpjobs.recovery")

Target = tuple[int, str, str]  # (job id, terminal status, reason): a job killed on purpose


def settle(
    store: SqliteStore,
    token: str,
    *,
    how: str = "its process died",
    target: Target | None = None,
    deliberate: bool = False,
) -> list[tuple[JobRecord, Completion]]:
    """Settle every job still owned by the dead process `token`.

    `target` is a job the caller killed on purpose (time or memory limit), and
    `deliberate` means the process was stopped on purpose (shutdown, reload, a
    neighbour's cancel), so its interrupted job is put back without using an attempt.
    """
    path = store.home.journal(token)
    try:
        started, done = read_journal(path)
    except OSError as exc:  # what it finished is unknown: settle later, not now
        raise StoreError(f"cannot read the journal {path}: {exc}") from exc
    noted_target, noted_deliberate = read_kill_note(store.home.kill_note(token))
    target = target or noted_target
    deliberate = deliberate or noted_deliberate
    now = time.time()

    def decide(job: JobRecord) -> Completion:
        if job.id in done:
            return done[job.id]
        if target is not None and job.id == target[0]:
            return outcomes.failure(job, target[2], now, status=target[1])
        if job.id in started and not deliberate:
            return outcomes.lost(job, how, now)
        return outcomes.requeue(job, now)

    settled = store.recover(token, decide, now)  # never raises for one bad row
    for done_with in (path, store.home.kill_note(token)):
        try:
            remove_journal(done_with)
        except OSError as exc:  # settled already: a leftover file is only read again
            log.warning("cannot remove %s: %s", done_with, exc)
    for job, c in settled:
        if job.id not in done and job.id in started:
            log.warning("job %s (%s): %s; now %s", job.id, job.name,
                        c.error.splitlines()[0] if c.error else how, c.status)  # fmt: skip
    return settled


SUPERVISOR_FIRST = 1.0  # seconds a live supervisor has to settle its own dead worker


def recover_dead_owners(store: SqliteStore, first_seen: dict[str, float] | None = None) -> int:
    """Settle the jobs of every dead owner; returns how many jobs were settled.

    With `first_seen` (the leader's memory between sweeps), a dead worker whose
    supervisor is alive is left to that supervisor for SUPERVISOR_FIRST seconds: it
    reaps the worker at once and knows how it died (its exit status, its own kills),
    so its account is the better one. The leader remains the backstop.
    """
    count = 0
    owners = [o for o in store.running_owners() if not token_alive(store, o)]
    if not owners:
        return 0
    parents = {p.token: p.parent for p in store.list_processes()}
    now = time.monotonic()
    for owner in owners:
        parent = parents.get(owner)
        if (
            first_seen is not None
            and parent
            and token_alive(store, parent)
            and now - first_seen.setdefault(owner, now) < SUPERVISOR_FIRST
        ):
            continue
        count += len(settle(store, owner))
        store.unregister_process(owner)
        if first_seen is not None:
            first_seen.pop(owner, None)
    return count


def forget_dead_processes(store: SqliteStore) -> None:
    """Drop process rows (for `mpjobs status`) whose process is gone."""
    for proc in store.list_processes():
        if not token_alive(store, proc.token):
            settle(store, proc.token)
            store.unregister_process(proc.token)
