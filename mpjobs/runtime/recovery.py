"""Settling the jobs of a process that died, whoever killed it and whenever it is noticed.

An owner is dead when the backend's liveness says so: the kernel's word (a free lock),
not a guess from pids or timestamps. Its journal says what it finished (those results
are kept), what it had started (those attempts count) and, by omission, what it never
started (those go back without using an attempt). What each job becomes is decided by
rules/recovery.py; this module gathers the facts and has the store apply the answers.
Any process may settle a dead owner; the store's conditional updates make concurrent
settling harmless, so the leader sweeps often and every supervisor settles its own
children the moment it reaps them.
"""

from __future__ import annotations

import logging
import time

from mpjobs.errors import OwnerAlive, StoreError
from mpjobs.rules import recovery as rules
from mpjobs.rules.recovery import Target
from mpjobs.runtime.journal import read_journal, read_kill_note, remove_journal
from mpjobs.store.backend import Backend
from mpjobs.store.base import Completion, JobRecord, Store

log = logging.getLogger("mpjobs.recovery")


def settle(
    store: Store,
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
    if store.url is not None and not path.exists() and target is None:
        # A shared store: a worker of this host always has its journal until it has
        # nothing left to settle, so a missing one means it ran on another host.
        running = [r for r in store.list_jobs("RUNNING", None, 100_000) if r.owner == token]
        account = rules.without_journal(running, f"{how} (on another host)")
    else:
        try:
            started, done = read_journal(path)
        except OSError as exc:  # what it finished is unknown: settle later, not now
            raise StoreError(f"cannot read the journal {path}: {exc}") from exc
        noted_target, noted_deliberate = read_kill_note(store.home.kill_note(token))
        account = rules.Account(
            frozenset(started), done, how, target or noted_target, deliberate or noted_deliberate
        )
    now = time.time()
    settled = store.recover(token, lambda job: rules.settle(account, job, now), now)
    for done_with in (path, store.home.kill_note(token)):
        try:
            remove_journal(done_with)
        except OSError as exc:  # settled already: a leftover file is only read again
            log.warning("cannot remove %s: %s", done_with, exc)
    for job, c in settled:
        if rules.lost_in_flight(account, job):
            log.warning("job %s (%s): %s; now %s", job.id, job.name,
                        c.error.splitlines()[0] if c.error else how, c.status)  # fmt: skip
    return settled


def recover_dead_owners(backend: Backend, first_seen: dict[str, float] | None = None) -> int:
    """Settle the jobs of every dead owner; returns how many jobs were settled.

    With `first_seen` (the leader's memory between sweeps), a dead worker whose
    supervisor is alive is left to that supervisor for a moment (rules/recovery.py,
    `wait_for_parent`). The leader remains the backstop.
    """
    store, alive = backend.store, backend.liveness.alive
    count = 0
    owners = [o for o in store.running_owners() if not alive(o)]
    if first_seen is not None:  # one that came back, or was settled, starts afresh
        for gone in set(first_seen) - set(owners):
            del first_seen[gone]
    if not owners:
        return 0
    parents = {p.token: p.parent for p in store.list_processes()}
    now = time.monotonic()
    for owner in owners:
        parent = parents.get(owner)
        if first_seen is not None:
            dead_for = now - first_seen.setdefault(owner, now)
            if dead_for < backend.settle_grace(owner):
                continue  # it may be taking its liveness back (a server restart)
            if parent and alive(parent) and rules.wait_for_parent(dead_for):
                continue
        try:
            count += len(settle(store, owner))
        except OwnerAlive:
            continue  # its session is still closing, or it came back: look again later
        store.unregister_process(owner)
        if first_seen is not None:
            first_seen.pop(owner, None)
    return count


def forget_dead_processes(backend: Backend, first_seen: dict[str, float] | None = None) -> None:
    """Drop process rows (for `mpjobs status`) whose process is gone (for the backend's
    settle grace, with the leader's `first_seen`)."""
    store = backend.store
    now = time.monotonic()
    dead = [p.token for p in store.list_processes() if not backend.liveness.alive(p.token)]
    if first_seen is not None:
        for back in set(first_seen) - set(dead):
            del first_seen[back]
    for token in dead:
        if first_seen is not None and now - first_seen.setdefault(token, now) < (
            backend.settle_grace(token)
        ):
            continue
        try:
            settle(store, token)
        except OwnerAlive:
            continue
        store.unregister_process(token)
