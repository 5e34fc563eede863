"""Shared fixtures. Every wait is bounded; nothing synchronises with sleep.

Tasks that workers must import live in tests/apps (on sys.path, also for processes
started with exec via PYTHONPATH). Every test checks at teardown that it left no
process of ours running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

import mpjobs
from mpjobs.coordination.notify import Watcher
from mpjobs.observability import logs

APPS = Path(__file__).parent / "apps"
sys.path.insert(0, str(APPS))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(APPS), str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH")) if p
)


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, home: Path | None = None,
    what: str = "condition",
) -> object:
    """Wait until predicate() is truthy, waking on store changes in `home` (else every 10 ms)."""
    deadline = time.monotonic() + timeout
    watcher = Watcher(home) if home is not None else None
    try:
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            if watcher is not None:
                watcher.wait(min(left, 0.05))
            else:
                # bounded wait on a condition we cannot be notified of (process exit, files)
                time.sleep(min(left, 0.01))
    finally:
        if watcher is not None:
            watcher.close()


def descendants() -> list[psutil.Process]:
    try:
        children = psutil.Process().children(recursive=True)
        return [p for p in children if p.status() != psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


# -- the two backends ------------------------------------------------------------------
#
# The integration and chaos suites run on both backends: the autouse `store_backend`
# parametrises every test (sqlite, postgres), and collection drops the postgres variant
# outside those suites. PostgreSQL is a
# throwaway server the suite starts itself (tests/pgharness.py), one per session, with
# a fresh schema per test; $MPJOBS_TEST_PG_URL points the suite at a server of your own.
# A test that only makes sense on SQLite (its files, its locks) is marked `sqlite_only`.

BACKENDS = ("sqlite", "postgres")
_PG: dict[str, object] = {}


def pg_base_url() -> str:
    """The URL of the session's server: started on first use; skip or fail if none."""
    if "url" in _PG:
        return str(_PG["url"])
    if "error" not in _PG:
        try:
            url = os.environ.get("MPJOBS_TEST_PG_URL")
            if not url:
                from tests import pgharness

                url = pgharness.cluster_for_session().url()
            _PG["url"] = url
            return url
        except Exception as exc:
            _PG["error"] = f"{type(exc).__name__}: {exc}"
    if os.environ.get("CI"):
        pytest.fail(f"no PostgreSQL server for the tests, and CI is set: {_PG['error']}")
    pytest.skip(f"no PostgreSQL server: {_PG['error']}")


def pg_store_url(schema: str | None = None) -> str:
    """A store URL on the session's server, in a schema of its own (new unless named)."""
    import uuid

    base = pg_base_url()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}schema={schema or 't' + uuid.uuid4().hex[:16]}"


def use_backend(kind: str, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Point every App of the test (and every process it starts) at `kind`'s store."""
    if kind == "postgres":
        url = pg_store_url()
        monkeypatch.setenv("MPJOBS_STORE", url)
        return url
    monkeypatch.delenv("MPJOBS_STORE", raising=False)
    return None


_BOTH = ("integration", "chaos")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the PostgreSQL variant only in the suites meant for both, and not where a test
    is marked sqlite_only; a test marked postgres_only runs on PostgreSQL alone."""
    keep, drop = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        on_pg = spec is not None and spec.params.get("store_backend") == "postgres"
        only_pg = item.get_closest_marker("postgres_only") is not None
        both = item.path.parent.name in _BOTH and not item.get_closest_marker("sqlite_only")
        wanted = (on_pg and (both or only_pg)) or (not on_pg and not only_pg)
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: about SQLite itself (its file, its locks); not run on PostgreSQL"
    )
    config.addinivalue_line(
        "markers", "postgres_only: about the PostgreSQL backend (hosts, sessions, the server)"
    )


@pytest.fixture(autouse=True, params=BACKENDS)
def store_backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The backend of this test: its store URL is in $MPJOBS_STORE for every process."""
    kind = str(request.param)
    use_backend(kind, monkeypatch)
    yield kind
    if kind == "postgres":  # the test process's connections and relay, not the server's
        from mpjobs.store.backends import close_backends

        close_backends()


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fail a test that leaves any process of ours running."""
    before = {p.pid for p in descendants()}  # (a PostgreSQL server runs detached)
    yield

    def clean() -> bool:
        return not [p for p in descendants() if p.pid not in before]

    try:
        wait_for(clean, timeout=15.0, what="all test processes to exit")
    except AssertionError as exc:
        left = [p for p in descendants() if p.pid not in before]
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        names = [(p.pid, p.cmdline()) for p in left]
        raise AssertionError(f"processes left running: {names}") from exc


@pytest.fixture
def logfile(tmp_path: Path) -> Iterator[Path]:
    """The pool's log lines (forked children inherit the handler), for the test to read."""
    path = tmp_path / "mpjobs.log"
    handler = logging.FileHandler(path)
    fmt = "%(relativeCreated)d %(process)d %(name)s %(levelname)s %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    logger = logging.getLogger("mpjobs")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
        handler.close()


def store_opened(home: Path) -> bool:
    """Whether the home's store can be opened without creating one: the SQLite file
    exists, or (on PostgreSQL, where the store is elsewhere) the home does."""
    if os.environ.get("MPJOBS_STORE"):
        return home.is_dir()
    return (home / "mpjobs.db").exists()


def log_lines(path: Path, text: str) -> list[str]:
    return [line for line in path.read_text().splitlines() if text in line]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def app(home: Path) -> mpjobs.App:
    import tasks

    return tasks.make_app(home)


@contextmanager
def started(
    app: mpjobs.App, workers: int = 2, graceful_timeout: float = 5.0, **opts: object
) -> Iterator[mpjobs.Pool]:
    """A pool that is ready (its workers registered) inside, and stopped after."""
    p = app.start(workers=workers, graceful_timeout=graceful_timeout, **opts)
    try:
        p.wait_ready(timeout=20, workers=workers)
        yield p
    finally:
        p.stop(timeout=20)


def pid_age(pid: int) -> float:
    """Seconds since process `pid` started (0 if it is gone)."""
    try:
        return time.time() - psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


def unfinished(app: mpjobs.App) -> int:
    """Jobs not yet in a terminal state (claimed-but-unstarted ones count as waiting),
    counted exactly: the store's depths count a queue live only up to DEPTH_CAP."""
    sql = "SELECT count(*) FROM jobs WHERE status IN ('SCHEDULED', 'RUNNING')"
    return int(app.store._conn().execute(sql).fetchone()[0])  # type: ignore[attr-defined]


def start_pools(app: mpjobs.App, n: int) -> list[mpjobs.Pool]:
    """`n` one-worker pools on one home, each with its coordinator up."""
    pools = [app.start(workers=1, graceful_timeout=5.0) for _ in range(n)]
    for p in pools:
        p.wait_ready(timeout=20, workers=1)
        wait_for(p.coordinator, 20, home=app.home.path, what="a coordinator")
    return pools


def stop_pools(pools: list[mpjobs.Pool]) -> None:
    for p in pools:
        p.stop(timeout=20)


@pytest.fixture
def chaos_app(home: Path) -> mpjobs.App:
    """The misbehaving tasks of tests/apps/chaos_tasks.py, on the test's home."""
    import chaos_tasks

    return chaos_tasks.make_app(home)


@pytest.fixture
def chaos_pool(chaos_app: mpjobs.App) -> Iterator[mpjobs.Pool]:
    with started(chaos_app, graceful_timeout=2.0) as p:
        yield p


@pytest.fixture
def pool(app: mpjobs.App) -> Iterator[mpjobs.Pool]:
    with started(app) as p:
        yield p


@pytest.fixture
def text_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """mpjobs' logs as text in a file of the test's own, removed again at its end.

    The MPJOBS_LOG_* variables are cleared for the test (and restored after), so the
    format and level come from this call, not from whoever runs the suite.
    """
    for name in ("MPJOBS_LOG_FORMAT", "MPJOBS_LOG_LEVEL", "MPJOBS_LOG_FILE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "mpjobs.log"
    logs.configure(fmt="text", file=str(path))
    try:
        yield path
    finally:
        logs.reset()
