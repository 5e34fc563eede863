"""Functions that multiprocessing children run in test_multiprocessing (importable for spawn)."""

from __future__ import annotations

import os

import web_jobs


def push_and_wait(args: tuple[str, str, int, int]) -> list[tuple[str, int]]:
    """Push n `mark` jobs (half one by one, half with push_many), wait for them here.

    Returns (job id, pid of the process that ran it) for each.
    """
    home, directory, start, n = args
    app = web_jobs.app
    if app._home_arg != home:  # a spawned child imports the module afresh
        app._home_arg, app._home = home, None
    half = n // 2
    jobs = [web_jobs.mark.schedule(directory, f"job-{i}").now() for i in range(start, start + half)]
    jobs += app.push_many(
        web_jobs.mark.schedule(directory, f"job-{i}") for i in range(start + half, start + n)
    )
    out = []
    for job in jobs:
        job.wait(timeout=60)
        out.append((job.id, int(job.result())))
    assert all(pid != os.getpid() for _, pid in out)
    return out
