"""What becomes of the jobs of a dead owner: decided from its journal and how it died.

The settler (mpjobs/runtime/recovery.py) reads the journal and the kill note and asks the store
to apply these answers to every job the owner still holds; the answers are the same
whichever process settles, whatever backend holds the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpjobs.rules import outcomes
from mpjobs.store.base import Completion, JobRecord

Target = tuple[int, str, str]  # (job id, terminal status, reason): a job killed on purpose

SUPERVISOR_FIRST = 1.0  # seconds a live supervisor has to settle its own dead worker


@dataclass(frozen=True, slots=True)
class Account:
    """What is known of a dead owner's last moments.

    `started` and `done` come from its journal (jobs begun; outcomes not yet committed),
    `target` is a job it was killed for (a time or memory limit), `deliberate` says it
    was stopped on purpose (a shutdown, a reload, a neighbour's cancel), and `how` is
    how it died, for the error of a job it lost.
    """

    started: frozenset[int]
    done: dict[int, Completion]
    how: str
    target: Target | None = None
    deliberate: bool = False


def without_journal(running: list[JobRecord], how: str) -> Account:
    """The account of an owner whose journal is out of reach: it ran on another host.

    With a store shared by hosts (PostgreSQL), the host that settles a dead host's
    workers cannot read their journals. A worker runs its claimed jobs in claim order
    (priority, due time, id), so the first of them still RUNNING is the one it had
    begun: it is charged the attempt (a job that kills its host must not be retried for
    ever), and the rest, never begun, go back with theirs refunded. An outcome it had
    journaled but not yet committed is lost with its host, so that job runs again.
    """
    first = min(running, key=lambda j: (j.priority, j.exec_at, j.id), default=None)
    return Account(frozenset() if first is None else frozenset({first.id}), {}, how)


def settle(account: Account, job: JobRecord, now: float) -> Completion:
    """The new state of `job`, still RUNNING under the dead owner of `account`.

    A finished job's outcome is kept as it was (it is never run again); the job it was
    killed for fails with that status; a job it had begun counts a failed attempt
    (retried while attempts remain), unless it was stopped on purpose; and a job it had
    claimed but not begun goes back with its attempt refunded.
    """
    if job.id in account.done:
        return account.done[job.id]
    target = account.target
    if target is not None and job.id == target[0]:
        return outcomes.failure(job, target[2], now, status=target[1])
    if job.id in account.started and not account.deliberate:
        return outcomes.lost(job, account.how, now)
    return outcomes.requeue(job, now)


def lost_in_flight(account: Account, job: JobRecord) -> bool:
    """Whether `job` was running, unfinished, when its owner died (worth a warning)."""
    return job.id not in account.done and job.id in account.started


def wait_for_parent(waited: float) -> bool:
    """Whether the leader should still leave a dead worker to its live supervisor.

    The supervisor reaps its worker at once and knows how it died (its exit status, its
    own kills), so its account is the better one; the leader waits SUPERVISOR_FIRST
    seconds (`waited` since it first saw the worker dead) and then settles it itself.
    """
    return waited < SUPERVISOR_FIRST
