"""Job control on the store alone (SQLite and the in-memory fake): what a claim takes,
skips, defers or expires, and the options' checks. With workers: test_limits_per_key.py."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest

import mpjobs
from mpjobs.control.expiry import check_expires
from mpjobs.control.options import Gates
from mpjobs.control.rate import RateLimit, parse_rate
from mpjobs.errors import ConfigError
from mpjobs.home import Home
from mpjobs.store.base import CANCELLED, RUNNING, SCHEDULED, SUCCESS, Completion, NewJob, Store
from mpjobs.store.memory import MemoryStore
from mpjobs.store.sqlite import SqliteStore


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    home = Home.resolve(tmp_path / "home")
    return SqliteStore(home) if request.param == "sqlite" else MemoryStore(home)


def new(name: str = "t", *, at: float | None = None, priority: int = 0, queue: str = "default",
        expires_at: float | None = None, key: str | None = None, limit: int | None = None,
        rate: RateLimit | None = None) -> NewJob:  # fmt: skip
    return NewJob(
        name=name, func="tasks:noop", func_pickle=None, payload=None, queue=queue,
        priority=priority, exec_at=time.time() - 1 if at is None else at, max_attempts=1,
        retry_backoff=1.0, timeout=None, memory_limit=None, unique_key=None, schedule_id=None,
        expires_at=expires_at, concurrency_key=key, concurrency_limit=limit,
        rate_limit=None if rate is None else rate.count,
        rate_period=None if rate is None else rate.period,
    )  # fmt: skip


def ids(store: Store, *jobs: NewJob) -> list[int]:
    return [i for i, _ in store.push(list(jobs), time.time())]


def claim(store: Store, limit: int = 10, now: float | None = None) -> list[int]:
    return [j.id for j in store.claim("w", 1, None, limit, now or time.time())]


def test_parse_rate() -> None:
    assert parse_rate("10/s") == RateLimit(10, 1.0)
    assert parse_rate("100/m") == RateLimit(100, 60.0)
    assert parse_rate("1000/h") == RateLimit(1000, 3600.0)
    assert parse_rate("5/10s") == RateLimit(5, 10.0)
    for bad in ("10", "10/x", "0/s", "ten/s", "10/0s", 10):
        with pytest.raises(ConfigError, match="rate_limit"):
            parse_rate(bad)


def test_expires_checks() -> None:
    assert check_expires("10m") == 600.0
    aware = datetime.datetime.now(datetime.timezone.utc)
    assert check_expires(aware) is aware
    with pytest.raises(ConfigError, match="naive datetime"):
        check_expires(datetime.datetime.now())
    with pytest.raises(ConfigError, match="expires"):
        check_expires(0)


def test_options_are_checked_at_the_call_site(tmp_path: Path) -> None:
    app = mpjobs.App(tmp_path / "home")
    with pytest.raises(ConfigError, match="invalid rate_limit 'lots'"):
        app.task(rate_limit="lots")
    with pytest.raises(ConfigError, match="naive datetime"):
        app.task(expires=datetime.datetime.now())
    with pytest.raises(ConfigError, match="concurrency_limit must be an int >= 1"):
        app.task(concurrency_key="k", concurrency_limit=0)
    with pytest.raises(ConfigError, match="concurrency_key must be"):
        app.task(concurrency_key=3)

    @app.task(concurrency_key=lambda user, **_: f"user:{user}", concurrency_limit=2,
              expires="30s", rate_limit="10/s")  # fmt: skip
    def job(user: int, extra: int = 0) -> None: ...

    j = job.schedule(7, extra=1).new_job(1000.0, exec_at=2000.0)
    assert (j.concurrency_key, j.concurrency_limit, j.expires_at) == ("user:7", 2, 2030.0)
    assert (j.rate_limit, j.rate_period, j.gated) == (10, 1.0, True)
    # .options() adds a limit to the task's key; a limit alone is refused when built
    assert job.schedule(1).options(concurrency_limit=5).new_job(0.0).concurrency_limit == 5
    plain = app.task(lambda: None)
    with pytest.raises(ConfigError, match="needs a concurrency_key"):
        plain.schedule().options(concurrency_limit=5).new_job(0.0)
    assert not plain.schedule().new_job(0.0).gated
    assert Gates.of({}) is None


def test_an_expired_job_is_cancelled_not_claimed(store: Store) -> None:
    now = time.time()
    late, plain = ids(store, new(expires_at=now - 0.5), new())
    assert claim(store) == [plain]
    rec = store.get(late)
    assert rec is not None and rec.status == CANCELLED and rec.attempts == 0
    assert rec.error is not None and rec.error.startswith("expired: not started by its deadline")


def test_the_sweep_cancels_expired_jobs_no_claim_meets(store: Store) -> None:
    now = time.time()
    a, b = ids(
        store, new(queue="nobody", expires_at=now - 1), new(queue="nobody", expires_at=now + 60)
    )
    assert store.expire_due(now) == 1
    assert store.status_of(a) == CANCELLED and store.status_of(b) == SCHEDULED
    assert store.expire_due(now) == 0


def test_a_full_key_is_skipped_and_does_not_block_what_is_behind(store: Store) -> None:
    k1, k2, k3, other = ids(store, new(key="u", limit=2), new(key="u", limit=2),
                            new(key="u", limit=2), new())  # fmt: skip
    assert claim(store, limit=1) == [k1]
    assert sorted(claim(store)) == [k2, other], "the third of key u waits; the plain job runs"
    assert store.status_of(k3) == SCHEDULED
    assert not store.has_due(None, time.time()), "a job waiting on its key is not startable"
    nxt = store.next_exec_at(None)
    assert nxt is None or nxt > time.time(), "and an idle worker does not wake for it"
    store.complete("w", [Completion(k1, SUCCESS)], time.time())
    assert store.has_due(None, time.time())
    assert claim(store) == [k3]


def test_a_full_rate_window_defers_its_jobs_to_the_window_end(store: Store) -> None:
    rate = RateLimit(3, 10.0)
    now = 1_000_005.0  # the window [1_000_000, 1_000_010)
    jobs = ids(store, *[new("r", at=now - 1, rate=rate) for _ in range(5)], new("p", at=now - 1))
    assert claim(store, now=now) == [*jobs[:3], jobs[5]]
    for i in jobs[3:5]:
        rec = store.get(i)
        assert rec is not None and rec.status == SCHEDULED and rec.exec_at == 1_000_010.0
    assert claim(store, now=now + 1) == []
    assert claim(store, now=1_000_010.0) == jobs[3:5], "the next window lets them start"


def test_order_is_kept_across_gated_and_plain(store: Store) -> None:
    a, b, c = ids(store, new(priority=2), new(priority=1, key="k"), new(priority=0))
    assert claim(store, limit=2) == [c, b]
    assert store.get(b).status == RUNNING  # type: ignore[union-attr]
    assert claim(store) == [a]


def test_retry_clears_the_deadline(store: Store) -> None:
    (late,) = ids(store, new(expires_at=time.time() - 1))
    assert claim(store) == []
    assert store.retry(late, time.time())
    assert claim(store) == [late]


def test_a_version_1_store_migrates_and_keeps_its_jobs(tmp_path: Path) -> None:
    import sqlite3

    from mpjobs.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

    home = Home.resolve(tmp_path / "home")
    home.path.mkdir(parents=True, exist_ok=True)
    path = home.path / "mpjobs.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO jobs (name, queue, priority, status, exec_at, max_attempts, retry_backoff, "
        "created_at) VALUES ('old', 'default', 0, 'SCHEDULED', 0, 1, 1.0, 0)"
    )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    path.chmod(0o600)
    store = SqliteStore(home)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    (k,) = ids(store, new(key="k"))
    assert sorted(claim(store)) == [1, k]


def test_a_schedule_spec_carries_the_options_to_each_fire() -> None:
    """The hook for schedules (scheduling/schedules.py and rules/schedules.py call it)."""
    import json

    from mpjobs.control.options import apply_schedule_spec, schedule_spec

    c = Gates.of({"expires": "30s", "rate_limit": "5/m",
                    "concurrency_key": lambda user: f"u{user}",
                    "concurrency_limit": 2})  # fmt: skip
    spec = json.loads(json.dumps(schedule_spec(c, (7,), {})))
    job = apply_schedule_spec(new(at=1000.0), spec)
    assert (job.expires_at, job.concurrency_key, job.concurrency_limit) == (1030.0, "u7", 2)
    assert (job.rate_limit, job.rate_period, job.gated) == (5, 60.0, True)
    assert not apply_schedule_spec(new(), schedule_spec(None, (), {})).gated


def test_a_declared_schedule_fires_jobs_with_its_control_options(tmp_path: Path) -> None:
    """Through the real path: declare (scheduling/schedules.py), fire (rules/schedules.py
    and the store): a cron job of a rate-limited, keyed task is gated like a pushed one."""
    import time

    import mpjobs
    from mpjobs.rules.schedules import fire_rule

    app = mpjobs.App(tmp_path / "home")
    task = app.task(rate_limit="5/m", concurrency_key="report", concurrency_limit=1,
                    expires="30s")(print)  # fmt: skip
    sched = task.schedule("tick").every("1s")
    plain = app.task(print).schedule("tock").every("1s")
    ids = app.store.fire_due(time.time() + 1.5, fire_rule)
    rows = {r.schedule_id: r for r in (app.store.get(i) for i in ids) if r is not None}
    fired = rows[sched.id]
    assert (fired.concurrency_key, fired.concurrency_limit, fired.rate_limit) == ("report", 1, 5)
    assert fired.expires_at is not None and fired.expires_at > fired.exec_at
    assert rows[plain.id].concurrency_key is None and rows[plain.id].rate_limit is None
