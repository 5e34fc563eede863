"""Prometheus metrics of a running pool, scraped over HTTP from `serve()` in a process of
its own and parsed with prometheus_client's parser; counts must equal the store's,
also after workers were SIGKILLed mid-job (their jobs count when they are settled)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import obs_tasks as ot
import pytest
from conftest import started, wait_for
from prometheus_client.parser import text_string_to_metric_families

import mpjobs
from mpjobs.observability.metrics import exposition
from tests.schema_v1 import downgrade_postgres, downgrade_sqlite

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def obs_app(home: Path) -> mpjobs.App:
    return ot.make_app(home)


@pytest.fixture
def metrics_url(obs_app: mpjobs.App, home: Path) -> Iterator[str]:
    """`serve()` in a process of its own (as `mpjobs metrics` runs it)."""
    obs_app.store  # noqa: B018 - create the store first
    port = _free_port()
    code = (
        "import obs_tasks as ot; from mpjobs.observability.metrics import serve; "
        f"serve(ot.make_app({str(home)!r}), port={port})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    url = f"http://127.0.0.1:{port}/metrics"

    def up() -> bool:
        assert proc.poll() is None, "the metrics server died"
        try:
            with urllib.request.urlopen(url, timeout=5):
                return True
        except OSError:
            return False

    try:
        wait_for(up, 20, what="the metrics server")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def total(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    return sum(v for lab, v in samples if all(lab.get(k) == x for k, x in labels.items()))


def test_counts_match_the_store_after_workers_are_killed(
    obs_app: mpjobs.App, metrics_url: str, tmp_path: Path
) -> None:
    with started(obs_app, workers=2) as pool:
        first = [ot.ok.schedule(i).now() for i in range(20)] + [
            ot.boom.schedule("x").now() for _ in range(3)
        ]
        for job in first:
            job.wait(30)
        # Two jobs run, one per worker; both workers are SIGKILLed mid-job.
        markers = [tmp_path / f"m{i}" for i in range(2)]
        held = [
            ot.hold.schedule(str(m), str(tmp_path / "never")).options(max_attempts=1).now()
            for m in markers
        ]
        wait_for(lambda: all(m.exists() for m in markers), 30, what="both jobs running")
        victims = {int(m.read_text()) for m in markers}
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        for job in held:
            assert job.wait(30).status == mpjobs.JobStatus.FAILED  # worker lost
        wait_for(lambda: len(set(pool.workers()) - victims) == 2, 30, what="new workers")
        last = [ot.ok.schedule(i).now() for i in range(10)]
        for job in last:
            assert job.wait(30).status == mpjobs.JobStatus.SUCCESS
        m = scrape(metrics_url)
        live = set(pool.workers())

    jobs = obs_app.store.list_jobs(None, None, 10_000)
    assert len(jobs) == 35
    by_status = Counter((j.name, j.status) for j in jobs)
    finished = m["mpjobs_jobs_finished_total"]
    for (task, status), n in by_status.items():
        assert total(finished, task=task, status=status) == n, (task, status)
    assert total(finished) == 35
    assert total(m["mpjobs_jobs_pushed_total"]) == 35
    assert total(m["mpjobs_jobs_started_total"]) == sum(j.attempts for j in jobs)
    assert total(m["mpjobs_job_duration_seconds_count"]) == 35
    inf = [v for lab, v in m["mpjobs_job_duration_seconds_bucket"] if lab["le"] == "+Inf"]
    assert sum(inf) == 35
    assert total(m["mpjobs_workers"]) == 2
    assert {lab["pid"] for lab, _ in m["mpjobs_worker_rss_bytes"]} == {str(p) for p in live}
    assert all(v > 1 << 20 for _, v in m["mpjobs_worker_rss_bytes"])
    assert total(m["mpjobs_leader_present"]) == 1
    assert total(m.get("mpjobs_queue_depth", []), queue="default") == 0
    assert total(m.get("mpjobs_jobs_running", []), queue="default") == 0


def test_gauges_of_a_backlog(obs_app: mpjobs.App, tmp_path: Path) -> None:
    """No pool: jobs wait; the oldest's age and the depth come from the store."""
    jobs = [ot.ok.schedule(i).now() for i in range(3)]
    ot.ok.schedule(9).options(queue="later").delay(3600)
    body, ctype = exposition(obs_app)
    assert ctype.startswith("text/plain")
    m: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            m.setdefault(s.name, []).append((dict(s.labels), s.value))
    assert total(m["mpjobs_queue_depth"], queue="default") == 3
    assert total(m["mpjobs_queue_depth"], queue="later") == 1
    assert total(m["mpjobs_queue_oldest_waiting_seconds"], queue="default") > 0
    assert total(m["mpjobs_queue_oldest_waiting_seconds"], queue="later") == 0  # not due
    assert total(m["mpjobs_jobs_pushed_total"], queue="default") == len(jobs)
    assert total(m["mpjobs_leader_present"]) == 0


def test_a_version_1_store_migrates_and_counts(
    home: Path, tmp_path: Path, store_backend: str
) -> None:
    """A store made by the previous mpjobs (schema 1: no counters table) is migrated on
    open, keeps its jobs, and counts from then on."""
    ot.make_app(home)
    old = ot.ok.schedule(1).now()
    url = os.environ.get("MPJOBS_STORE")
    if url:
        downgrade_postgres(url)
    else:
        downgrade_sqlite(home / "mpjobs.db")
    code = (  # a new process: this one keeps its store open
        "import sys, json, mpjobs; app = mpjobs.App(sys.argv[1]); "
        "assert app.get_job(sys.argv[2]) is not None; "
        "app.schedule('obs_tasks:ok', 2).now(); "
        "print(json.dumps([(r.task, r.n) for r in app.store.metric_counts(0).counters "
        "if r.name == 'pushed']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(home), old.id], capture_output=True, text=True,
        timeout=60, check=True,
    ).stdout
    # PostgreSQL counts pushes from the upgrade on; SQLite counts them from the job rows,
    # so the job pushed before the upgrade counts too (store/counters.py).
    counted = sorted(json.loads(out))
    assert counted == ([["obs_tasks:ok", 1]] if url else [["obs_tasks.ok", 1], ["obs_tasks:ok", 1]])


def _sums(app: mpjobs.App) -> Counter[tuple[str, str, str, int]]:
    out: Counter[tuple[str, str, str, int]] = Counter()
    for r in app.store.metric_counts(0).counters:
        out[(r.name, r.task, r.status, r.bucket)] += r.n
    return out


def test_rows_of_gone_processes_fold_and_their_counts_stay(obs_app: mpjobs.App) -> None:
    """Pushers and workers that are gone: their rows merge into one per key, sums kept."""
    code = "import sys, mpjobs; mpjobs.App(sys.argv[1]).schedule('obs_tasks:ok', 1).now()"
    for _ in range(3):  # three pushers that exit
        subprocess.run([sys.executable, "-c", code, str(obs_app.home.path)], check=True,
                       timeout=60)  # fmt: skip
    with started(obs_app, workers=2) as pool:
        wait_for(lambda: len(obs_app.store.list_jobs("SUCCESS", None, 10)) == 3, 30,
                 home=obs_app.home.path, what="3 jobs done")  # fmt: skip
        assert pool.workers()
    before = _sums(obs_app)
    assert before[("pushed", "obs_tasks:ok", "", 0)] == 3
    assert before[("started", "obs_tasks:ok", "", 0)] == 3
    assert sum(n for k, n in before.items() if k[0] == "finished") == 3
    conn = obs_app.store._conn()  # type: ignore[attr-defined]
    tokens = {r[0] for r in conn.execute("SELECT token FROM counters")}
    # The leader folds at its purge sweeps too, so some may be folded already.
    assert obs_app.store.fold_counters() == len(tokens - {"folded", "watermark"})
    assert _sums(obs_app) == before
    # (SQLite counts pushes from the job rows up to a watermark: counters.py)
    assert {r[0] for r in conn.execute("SELECT token FROM counters")} - {"watermark"} == {
        "folded"
    }


def test_purged_jobs_stay_counted(obs_app: mpjobs.App) -> None:
    with started(obs_app, workers=1):
        jobs = [ot.ok.schedule(i).now() for i in range(5)]
        for job in jobs:
            job.wait(30)
    before = _sums(obs_app)
    assert before[("pushed", "obs_tasks.ok", "", 0)] == 5
    assert obs_app.store.purge(time.time() + 1) == 4  # the newest row is always kept
    assert len(obs_app.store.list_jobs(None, None, 100)) == 1
    ot.ok.schedule(9).now()
    after = _sums(obs_app)
    assert after[("pushed", "obs_tasks.ok", "", 0)] == 6
    assert after - Counter({("pushed", "obs_tasks.ok", "", 0): 1}) == before
