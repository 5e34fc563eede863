"""The PostgreSQL section of `make bench`: mpjobs, procrastinate and Chancy on one server.

    python -m benchmarks.run --only postgres           # this section alone
    python -m benchmarks.run --only postgres --quick

All three systems run in the same run, against the same server (fsync on: the competitors
are durable systems, and so is mpjobs on PostgreSQL), each in a database of its own, on
the same 2 cores, because absolute figures on a shared machine drift from minute to
minute; the ratios between them are what the targets are about.

Per system: single pushes (one job per transaction), bulk pushes (mpjobs `push_many`,
procrastinate `batch_defer`, Chancy `push_many`), the drain of no-op jobs with 2 workers
(pushed first, then the workers start; a count polled every 10 ms, `run.measure_drain`),
and push-to-start latency on an idle system. mpjobs also gets recovery after SIGKILL of a
busy worker and failover after SIGKILL of the leader: the SQLite bench's own scenarios
(`run.Bench.recovery`, `run.Bench.failover`, and `push` and `latency` too), run with
`$MPJOBS_STORE` pointing the benchmark tasks at PostgreSQL.

The server is tests/pgharness.py's `PgCluster` (the PostgreSQL the tests use: the pgserver
wheel's, else the system's), started with fsync on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import mpjobs
from benchmarks import run, tasks

if TYPE_CHECKING:
    from benchmarks.pg_competitors import Competitor

try:
    import psycopg
    import psycopg.sql
except ImportError:  # the bench extra is not installed: the section says so and skips
    psycopg = None  # type: ignore[assignment]

SYSTEMS = ("mpjobs", "procrastinate", "chancy")
DATABASES = {name: f"bench_{name}" for name in SYSTEMS}


@dataclass(frozen=True)
class PgConfig:
    """Counts sized so the section stays near 90 s on 2 cores: the competitors run tens
    to hundreds of jobs a second, so they get fewer jobs (rates are per job anyway)."""

    push_n: int = 5_000  # mpjobs single pushes, one transaction each
    competitor_push_n: int = 1_500  # about 2 s each at their rate
    push_many_n: int = 10_000
    push_many_batch: int = 5_000
    drain_n: int = 10_000  # mpjobs
    procrastinate_drain_n: int = 2_500  # 10-17 s: 150-280 jobs/s here, with the load
    chancy_drain_n: int = 1_000  # about 14 s: Chancy drains 70-100 jobs/s here
    latency_samples: int = 100
    kills: int = 10
    failovers: int = 10
    drain_timeout: float = 60.0


PG_QUICK = PgConfig(push_n=1_000, competitor_push_n=500, push_many_n=5_000,
                    push_many_batch=5_000, drain_n=5_000, procrastinate_drain_n=1_000,
                    chancy_drain_n=500, latency_samples=30, kills=3, failovers=3,
                    drain_timeout=30.0)  # fmt: skip


# -- the server ------------------------------------------------------------------------


class Cluster(Protocol):
    """The part of tests/pgharness.py's PgCluster this section uses."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def url(self, dbname: str = "postgres", host: str = "127.0.0.1") -> str: ...
    def create_database(self, name: str) -> object: ...


@contextlib.contextmanager
def server() -> Iterator[tuple[Cluster, dict[str, Any]]]:
    """The tests' throwaway cluster, durable (fsync on, checked: `durable`).

    Its directory is a fresh one directly under the system's temp dir, not inside the
    bench's (mode 0700, root's when run as root), which the server's user could not enter.
    """
    base = Path(tempfile.mkdtemp(prefix="mpjobs-bench-pg-"))
    from tests.pgharness import PgCluster  # the repository root is on sys.path (-m)

    cluster: Cluster = PgCluster(base, fsync=True)
    kind = "tests.pgharness.PgCluster"
    try:
        cluster.start()
        try:
            yield cluster, {"server": kind, **durable(cluster.url())}
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


def durable(url: str) -> dict[str, Any]:
    """Turn fsync (and friends) on if the server was started without: a test harness may
    trade durability for speed, and the systems compared here are all durable ones. All
    three settings take effect on a reload."""
    with psycopg.connect(url, autocommit=True) as conn:

        def settings() -> dict[str, str]:
            return {k: str(conn.execute(f"SHOW {k}").fetchone()[0]) for k in DURABLE}  # type: ignore[index]

        off = [k for k, v in settings().items() if v != DURABLE[k]]
        for k in off:
            conn.execute(f"ALTER SYSTEM SET {k} = {DURABLE[k]}")
        if off:
            conn.execute("SELECT pg_reload_conf()")
            run.wait_until(lambda: settings() == DURABLE, 10, "the reloaded settings", 0.05)
        version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        return {"version": version, **settings(), "turned_on": off}


# -- one competitor --------------------------------------------------------------------


def stamped(path: Path, timeout: float) -> float:
    """The start time a `stamp` job wrote to `path`; polled every 0.5 ms."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return float(path.read_text())
        if time.monotonic() > deadline:
            raise TimeoutError(f"no job started within {timeout} s")
        time.sleep(0.0005)


def competitor(
    drv: Competitor,
    cfg: PgConfig,
    tmp: Path,
    log: Callable[[str], None],
    samples: dict[str, list[float]],
) -> dict[str, float]:
    out: dict[str, float] = {}
    drv.setup()
    drv.reset()
    drv.push_one()  # connect, warm the caches
    t0 = time.perf_counter()
    for _ in range(cfg.competitor_push_n):
        drv.push_one()
    out["push_per_s"] = round(cfg.competitor_push_n / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    drv.push_many(cfg.push_many_n, cfg.push_many_batch)
    out["push_many_per_s"] = round(cfg.push_many_n / (time.perf_counter() - t0))
    log(f"{drv.name}: {cfg.competitor_push_n} single pushes, {cfg.push_many_n} in batches of "
        f"{cfg.push_many_batch}")  # fmt: skip
    drv.reset()
    n = int(getattr(cfg, f"{drv.name}_drain_n"))
    drv.push_many(n, cfg.push_many_batch)
    with drv.workers():
        r = run.measure_drain(drv.remaining, n, timeout=cfg.drain_timeout)
        out["drain_jobs_per_s"] = round(r["rate"])
        log(f"{drv.name}: drained {n} no-op jobs in {r['seconds']:.2f}s ({drv.workers_note})")
        # The same workers, now idle: push-to-start latency.
        for k in range(5):  # warm-up
            drv.push_stamp(str(tmp / f"{drv.name}-warm-{k}"))
            stamped(tmp / f"{drv.name}-warm-{k}", 30)
        lats: list[float] = []
        for k in range(cfg.latency_samples):
            time.sleep(0.02)  # let the workers go back to waiting: the system is idle
            path = tmp / f"{drv.name}-lat-{k}"
            t = time.time()
            drv.push_stamp(str(path))
            lats.append((stamped(path, 10) - t) * 1000)
    out["start_latency_p50_ms"] = round(run.pct(lats, 50), 3)
    out["start_latency_p99_ms"] = round(run.pct(lats, 99), 3)
    samples[f"pg_{drv.name}_start_latency_ms"] = lats
    log(f"{drv.name}: latency, {len(lats)} samples")
    return out


# -- mpjobs ----------------------------------------------------------------------------


class BackendMissing(RuntimeError):
    pass


def with_schema(url: str, schema: str) -> str:
    return f"{url}?schema={quote(schema)}"


def on_postgres(app: mpjobs.App) -> bool:
    mods = {type(app.store).__module__, type(app.backend).__module__}
    return any("postgres" in m for m in mods)


def probe(url: str, home: Path) -> None:
    """Fail with BackendMissing unless `App(store=url)` really stores in PostgreSQL."""
    try:
        app = mpjobs.App(home=home, store=url)
        ok = on_postgres(app)
    except Exception as exc:  # the lead's backend may not exist yet, in any of many ways
        raise BackendMissing(f"backend not available: {type(exc).__name__}: {exc}") from exc
    if not ok:
        raise BackendMissing("backend not available: App(store=postgresql://...) is not on PG")


@contextlib.contextmanager
def store_env(url: str) -> Iterator[None]:
    """`$MPJOBS_STORE` for the benchmark tasks' apps (declared with store=None), the way
    a user points an unchanged app at PostgreSQL; restored after. Also
    `$MPJOBS_LOG_LEVEL=ERROR`: from a process with threads (the PG backend's), app.start()
    execs `mpjobs run`, which logs at INFO, where run.py silenced the forked pools."""
    saved = {k: os.environ.get(k) for k in ("MPJOBS_STORE", "MPJOBS_LOG_LEVEL")}
    os.environ["MPJOBS_STORE"] = url
    os.environ["MPJOBS_LOG_LEVEL"] = "ERROR"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def mpjobs_drain(bench: run.Bench, url: str, n: int, timeout: float) -> dict[str, float]:
    """Like the SQLite drain: the observer counts SCHEDULED + RUNNING rows on a connection
    of its own (both counts answered from partial indexes), as for the competitors."""
    from mpjobs.store.postgres.url import parse

    home = bench.home("pg-drain")
    app = tasks.rehome(tasks.app, home)
    if not on_postgres(app):
        raise BackendMissing("backend not available: $MPJOBS_STORE not honoured")
    app.push_many([tasks.noop.schedule() for _ in range(n)])
    target = parse(url)
    jobs = psycopg.sql.Identifier(target.schema, "jobs")
    count = psycopg.sql.SQL(
        "SELECT (SELECT count(*) FROM {jobs} WHERE status = 'SCHEDULED') + "
        "(SELECT count(*) FROM {jobs} WHERE status = 'RUNNING')"
    ).format(jobs=jobs)

    with psycopg.connect(target.dsn, autocommit=True) as obs:

        def remaining() -> int:
            row = obs.execute(count).fetchone()
            return int(row[0]) if row else 0

        with run.pool_of(app, 2):
            return run.measure_drain(remaining, n, timeout=timeout)


def mpjobs_section(
    cfg: PgConfig,
    url: str,
    tmp: Path,
    log: Callable[[str], None],
    samples: dict[str, list[float]],
    errors: dict[str, str],
) -> dict[str, float]:
    """The SQLite bench's scenarios, each on a fresh home and a fresh schema."""
    out: dict[str, float] = {}
    try:
        probe(with_schema(url, "probe"), tmp / "probe")
    except BackendMissing as exc:
        errors["mpjobs"] = str(exc)
        log(f"mpjobs: {exc}")
        return out
    sub_cfg = replace(run.Config(), push_n=cfg.push_n, push_many_n=cfg.push_many_n,
                      push_many_batch=cfg.push_many_batch, latency_samples=cfg.latency_samples,
                      kills=cfg.kills, failovers=cfg.failovers)  # fmt: skip
    sub = run.Bench(sub_cfg, tmp)
    keys = {"push": ["push_per_s", "push_many_per_s"],
            "latency": ["start_latency_p50_ms", "start_latency_p99_ms"],
            "recovery": ["recovery_p50_ms", "recovery_p99_ms"],
            "failover": ["failover_p50_ms", "failover_p99_ms"]}  # fmt: skip
    for name in ("push", "drain", "latency", "recovery", "failover"):
        scenario_url = with_schema(url, f"bench_{name}")
        with store_env(scenario_url):
            try:
                if name == "drain":
                    r = mpjobs_drain(sub, scenario_url, cfg.drain_n, cfg.drain_timeout)
                    out["drain_jobs_per_s"] = round(r["rate"])
                    log(f"mpjobs: drained {cfg.drain_n} no-op jobs in {r['seconds']:.2f}s")
                    continue
                if name == "push" and not on_postgres(tasks.rehome(tasks.app, tmp / "check")):
                    raise BackendMissing("backend not available: $MPJOBS_STORE not honoured")
                getattr(sub, name)()
                for key in keys[name]:
                    out[key] = sub.out[key]
            except Exception as exc:
                errors[f"mpjobs.{name}"] = f"{type(exc).__name__}: {exc}"
                log(f"mpjobs {name} failed: {type(exc).__name__}: {exc}")
                if isinstance(exc, BackendMissing):
                    break
                traceback.print_exc()
    for k, v in sub.samples.items():
        samples[f"pg_mpjobs_{k}"] = v
    return out


# -- the section -----------------------------------------------------------------------


def run_section(bench: run.Bench, quick: bool) -> None:
    """Entry point from run.py: fills bench.out with pg_* keys, and bench.samples.

    Nothing here fails the whole bench: a system or scenario that cannot run leaves its
    reason in out["_postgres"]["errors"], which the table prints.
    """
    cfg = PG_QUICK if quick else PgConfig()
    tmp = bench.tmp / "pg"
    tmp.mkdir()
    started = time.monotonic()
    results: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    meta: dict[str, Any] = {}
    if psycopg is None:
        errors["server"] = "psycopg not installed (pip install -e '.[bench]')"
    pc: ModuleType | None
    try:
        from benchmarks import pg_competitors as pc
    except ImportError as exc:
        pc = None
        errors["competitors"] = f"not installed (pip install -e '.[bench]'): {exc}"
    try:
        if psycopg is None:
            raise RuntimeError(errors["server"])
        with server() as (cluster, meta):
            bench.log(f"PostgreSQL {meta['version']} ({meta['server']}), fsync {meta['fsync']}")
            for db in DATABASES.values():
                cluster.create_database(db)
            results["mpjobs"] = mpjobs_section(cfg, cluster.url(DATABASES["mpjobs"]), tmp,
                                               bench.log, bench.samples, errors)  # fmt: skip
            if pc is not None:
                drivers: list[tuple[str, Callable[[str], Competitor]]] = [
                    ("procrastinate", pc.Procrastinate),
                    ("chancy", pc.ChancyDriver),
                ]
                for name, make in drivers:
                    results[name] = run_competitor(name, make, cluster.url(DATABASES[name]),
                                                   cfg, tmp, bench, errors)  # fmt: skip
    except Exception as exc:  # no server binaries, a port taken, ...
        errors["server"] = f"{type(exc).__name__}: {exc}"
        bench.log(f"PostgreSQL server failed: {errors['server']}")
    for system, figures in results.items():
        for key, value in figures.items():
            bench.out[f"pg_{system}_{key}"] = value
    derive(bench.out)
    bench.out["_postgres"] = {
        **meta, "seconds": round(time.monotonic() - started, 1), "errors": errors,
        "config": cfg.__dict__,
        "workers": {"mpjobs": "app.start(workers=2): 2 worker processes",
                    **({} if pc is None else {"procrastinate": pc.Procrastinate.workers_note,
                                              "chancy": pc.ChancyDriver.workers_note})},
    }  # fmt: skip
    bench.log(f"postgres section: {bench.out['_postgres']['seconds']} s")


def run_competitor(
    name: str,
    make: Callable[[str], Competitor],
    url: str,
    cfg: PgConfig,
    tmp: Path,
    bench: run.Bench,
    errors: dict[str, str],
) -> dict[str, float]:
    drv = None
    try:
        drv = make(url)
        return competitor(drv, cfg, tmp, bench.log, bench.samples)
    except Exception as exc:
        errors[name] = f"{type(exc).__name__}: {exc}"
        bench.log(f"{name} failed: {errors[name]}")
        traceback.print_exc()
        return {}
    finally:
        if drv is not None:
            with contextlib.suppress(Exception):
                drv.close()


# (metric, unit, higher is better)
METRICS: list[tuple[str, str, bool]] = [
    ("push_per_s", "/s", True),
    ("push_many_per_s", "/s", True),
    ("drain_jobs_per_s", "jobs/s", True),
    ("start_latency_p50_ms", "ms", False),
    ("start_latency_p99_ms", "ms", False),
    ("recovery_p50_ms", "ms", False),
    ("recovery_p99_ms", "ms", False),
    ("failover_p50_ms", "ms", False),
    ("failover_p99_ms", "ms", False),
]

# (derived key, metric, the competitor it is measured against, target ratio)
RATIOS = [
    ("pg_drain_vs_procrastinate", "drain_jobs_per_s", "procrastinate", 10.0),
    ("pg_push_vs_procrastinate", "push_per_s", "procrastinate", 5.0),
    ("pg_push_many_vs_chancy", "push_many_per_s", "chancy", 1.0),
]
# (metric, absolute target for mpjobs, higher is better, strict)
ABSOLUTE = {"start_latency_p99_ms": (20.0, False, False), "recovery_p99_ms": (1000.0, False, True)}


def derive(out: dict[str, Any]) -> None:
    for key, metric, other, _target in RATIOS:
        mine, theirs = out.get(f"pg_mpjobs_{metric}"), out.get(f"pg_{other}_{metric}")
        if mine and theirs:
            out[key] = round(mine / theirs, 1)


def table(out: dict[str, Any]) -> str:
    """The side-by-side table: one column per system, the target and verdict for mpjobs."""
    if "_postgres" not in out:
        return ""
    errors: dict[str, str] = out["_postgres"].get("errors", {})
    rows: list[tuple[str, ...]] = [("PostgreSQL", *SYSTEMS, "target", "met")]
    for metric, unit, _higher in METRICS:
        cells = []
        for system in SYSTEMS:
            value = out.get(f"pg_{system}_{metric}")
            failed = [k for k in errors if k in (system, "server") or k.startswith(f"{system}.")]
            missing = "n/a" if failed else ""
            cells.append(missing if value is None else f"{value:,} {unit}")
        if not any(c not in ("", "n/a") for c in cells) and not errors:
            continue
        tgt = met = ""
        ratio = next((r for r in RATIOS if r[1] == metric), None)
        if ratio is not None:
            key, _m, other, target = ratio
            tgt = f">= {target:g}x {other}"
            if key in out:
                tgt += f" ({out[key]:g}x)"
                met = "yes" if out[key] >= target else "NO"
        elif metric in ABSOLUTE:
            target, _hi, strict = ABSOLUTE[metric]
            value = out.get(f"pg_mpjobs_{metric}")
            tgt = f"{'<' if strict else '<='} {target:g} {unit}"
            if value is not None:
                met = "yes" if (value < target if strict else value <= target) else "NO"
        rows.append((metric, *cells, tgt, met))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for what, msg in errors.items():
        lines.append(f"  {what}: {msg}")
    meta = out["_postgres"]
    lines.append(f"  server: PostgreSQL {meta.get('version')} ({meta.get('server')}), "
                 f"fsync {meta.get('fsync')}; workers: "
                 + "; ".join(f"{k}: {v}" for k, v in meta.get("workers", {}).items()))  # fmt: skip
    return "\n".join(lines)
