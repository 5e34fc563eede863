"""procrastinate and Chancy, driven the way benchmarks/postgres.py measures mpjobs on PostgreSQL.

The worker processes import this module by path, so the apps are module-level and read
their connection string from the environment (`PROCRASTINATE_DSN_ENV`, `CHANCY_DSN_ENV`)
when a connection is first needed: the benchmark process sets it before it starts them.

How each system runs its workers (the bench asks for 2 of them):
- procrastinate: 2 `procrastinate worker --concurrency 1` processes (its CLI), with its
  defaults otherwise (LISTEN/NOTIFY on, 5 s polling fallback, jobs kept on completion).
- Chancy: 1 `chancy worker start` process (its CLI) serving a queue of concurrency 2 on its
  default ProcessExecutor, so 2 child processes run the jobs: that is how Chancy spreads
  jobs over processes. The queue has `eager_polling=True`; without it a worker fetches
  `concurrency` jobs, then sleeps the polling interval (5 s) unless a push notifies it, and
  a 5,000-job drain would take hours. Its default plugins stay on, and so does its
  ProcessExecutor's default of a fresh (spawned) child every 100 jobs; turning that off
  (`maximum_jobs_per_worker=None`) did not change its drain rate here (about 100 jobs/s,
  the worker, its multiprocessing Manager and the 2 children sharing the 2 cores).

Jobs are no-ops, or `stamp(path)`, which writes the wall-clock time it started to `path`
(the latency scenario polls for the file; neither system is asked to store a result).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import procrastinate
import psycopg
from chancy import Chancy, Queue, job

ROOT = Path(__file__).resolve().parent.parent
PROCRASTINATE_DSN_ENV = "MPJOBS_BENCH_PROCRASTINATE_DSN"
CHANCY_DSN_ENV = "MPJOBS_BENCH_CHANCY_DSN"


def write_stamp(path: str) -> None:
    """Write time.time() to `path` in one rename, so a reader never sees half a number."""
    now = time.time()
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(repr(now))
    os.replace(tmp, path)


# -- procrastinate -----------------------------------------------------------------------

procrastinate_app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get(PROCRASTINATE_DSN_ENV, ""))
)


@procrastinate_app.task(name="noop")
def p_noop() -> None:
    return None


@procrastinate_app.task(name="stamp")
def p_stamp(path: str) -> None:
    write_stamp(path)


# -- Chancy ------------------------------------------------------------------------------


def chancy_app() -> Chancy:
    """What `chancy --app benchmarks.pg_competitors.chancy_app` calls in the worker."""
    return Chancy(os.environ[CHANCY_DSN_ENV])


@job()  # type: ignore[untyped-decorator]
def c_noop() -> None:
    return None


@job()  # type: ignore[untyped-decorator]
def c_stamp(path: str) -> None:
    write_stamp(path)


CHANCY_QUEUE = Queue("default", concurrency=2, eager_polling=True, polling_interval=1)


# -- drivers -----------------------------------------------------------------------------


class Competitor(Protocol):
    """What the PostgreSQL bench asks of a system; one implementation per system."""

    name: str
    workers_note: str

    def setup(self) -> None: ...
    def reset(self) -> None: ...
    def push_one(self) -> None: ...
    def push_many(self, n: int, batch: int) -> None: ...
    def push_stamp(self, path: str) -> None: ...
    def remaining(self) -> int: ...
    def workers(self) -> contextlib.AbstractContextManager[None]: ...
    def close(self) -> None: ...


@contextlib.contextmanager
def processes(
    cmds: list[list[str]], env: dict[str, str]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start the worker processes, each in a session of its own, and always stop them.

    SIGTERM first (both systems stop gracefully on it); after 10 s, SIGKILL to the
    session, which also reaches Chancy's executor children. Only these sessions are
    signalled: their ids are the pids started here.
    """
    procs = [
        subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        for cmd in cmds
    ]  # fmt: skip
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    """run.py's bounded poll, every 10 ms (the competitors offer nothing to wait on).

    Imported here, not at the top: the competitors' workers import this module as
    their app, and need none of the bench."""
    from benchmarks import run

    return run.wait_until(pred, timeout, what, every=0.01)


class _Observed:
    """What both drivers share: an observer's connection counting unfinished jobs, and
    their workers started as CLI processes with the DSN in the environment."""

    remaining_sql = ""
    dsn_env = ""
    dsn: str
    obs: psycopg.Connection[Any]

    def remaining(self) -> int:
        row = self.obs.execute(self.remaining_sql).fetchone()
        return int(row[0]) if row else 0

    def _workers(self, cmds: list[list[str]]) -> contextlib.AbstractContextManager[object]:
        return processes(cmds, {**os.environ, self.dsn_env: self.dsn})


class Procrastinate(_Observed):
    name = "procrastinate"
    remaining_sql = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
    dsn_env = PROCRASTINATE_DSN_ENV
    workers_note = "2 processes x concurrency 1 (`procrastinate worker`)"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        # The module's connector was built at import, with whatever the environment held
        # then; this process swaps in one for `dsn` (the workers get it from the environment).
        self._stack = contextlib.ExitStack()
        connector = procrastinate.PsycopgConnector(conninfo=dsn)
        self.app = self._stack.enter_context(procrastinate_app.replace_connector(connector))
        self._stack.enter_context(self.app.open())
        self.obs = psycopg.connect(dsn, autocommit=True)

    def setup(self) -> None:
        self.app.schema_manager.apply_schema()

    def reset(self) -> None:
        self.obs.execute("TRUNCATE procrastinate_jobs, procrastinate_events CASCADE")

    def push_one(self) -> None:
        p_noop.defer()

    def push_many(self, n: int, batch: int) -> None:
        for start in range(0, n, batch):
            p_noop.batch_defer(*({} for _ in range(min(batch, n - start))))

    def push_stamp(self, path: str) -> None:
        p_stamp.defer(path=path)

    @contextlib.contextmanager
    def workers(self) -> Iterator[None]:
        cmd = [
            sys.executable,
            "-m",
            "procrastinate",
            "--app",
            "benchmarks.pg_competitors.procrastinate_app",
            "worker",
            "--concurrency",
            "1",
        ]
        with self._workers([cmd, cmd]):
            yield

    def close(self) -> None:
        self.obs.close()
        self._stack.close()


class ChancyDriver(_Observed):
    name = "chancy"
    remaining_sql = (
        "SELECT count(*) FROM chancy_jobs WHERE state IN ('pending', 'running', 'retrying')"
    )
    dsn_env = CHANCY_DSN_ENV
    workers_note = "1 process, queue concurrency 2 on its ProcessExecutor (`chancy worker start`)"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        os.environ[CHANCY_DSN_ENV] = dsn
        self.app = Chancy(dsn)
        self.obs = psycopg.connect(dsn, autocommit=True)

    def setup(self) -> None:
        async def migrate() -> None:
            async with Chancy(self.dsn) as app:
                await app.migrate()

        asyncio.run(migrate())
        self.app.sync_declare(CHANCY_QUEUE, upsert=True)

    def reset(self) -> None:
        self.obs.execute("TRUNCATE chancy_jobs")

    def push_one(self) -> None:
        self.app.sync_push(c_noop.job)

    def push_many(self, n: int, batch: int) -> None:
        jobs = [c_noop.job] * n
        for _refs in self.app.sync_push_many(jobs, batch_size=batch):
            pass

    def push_stamp(self, path: str) -> None:
        self.app.sync_push(c_stamp.job.with_kwargs(path=path))

    @contextlib.contextmanager
    def workers(self) -> Iterator[None]:
        cmd = [
            sys.executable,
            "-c",
            "from chancy.cli.cli import main; main()",
            "--app",
            "benchmarks.pg_competitors.chancy_app",
            "worker",
            "start",
        ]
        with self._workers([cmd]):
            yield

    def close(self) -> None:
        self.obs.close()
        self.app.sync_pool.close()
