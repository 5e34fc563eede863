"""Prometheus metrics of a home, read from the store at each scrape (extra `mpjobs[metrics]`).

Nothing is kept in any process's memory: counters are sums of the store's per-process
counter rows (store/counters.py), written in the transactions they count, so they are
right across processes, across worker kills and replacements, and whichever process
serves them (`mpjobs metrics`, the dashboard's /metrics, or the user's own server
through `exposition`). Gauges are read from the jobs, processes and schedules rows, and
the workers' RSS from /proc for the workers of this host.

prometheus-client is imported only when metrics are asked for, and its absence is a
clear error naming the extra to install.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psutil

from mpjobs.coordination.processes import on_this_host
from mpjobs.errors import ConfigError
from mpjobs.store.base import ACTIVE, RUNNING, SCHEDULED
from mpjobs.store.counters import BUCKETS, FINISHED, PUSHED, STARTED

if TYPE_CHECKING:
    from mpjobs.app import App

log = logging.getLogger("mpjobs.metrics")


def _prometheus() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError as exc:
        raise ConfigError(
            "metrics need the prometheus-client package: pip install 'mpjobs[metrics]'"
        ) from exc
    return prometheus_client


class StoreCollector:
    """A prometheus_client collector that reads everything from the app's store."""

    def __init__(self, app: App) -> None:
        self.app = app

    def describe(self) -> list[Any]:
        return []  # not known before a scrape: the registry must not collect at register

    def collect(self) -> Iterator[Any]:
        core = _prometheus().core
        store, now = self.app.store, time.time()
        counts = store.metric_counts(now)
        pushed = core.CounterMetricFamily(
            "mpjobs_jobs_pushed", "Jobs pushed.", labels=["task", "queue"]
        )
        started = core.CounterMetricFamily(
            "mpjobs_jobs_started", "Job attempts begun.", labels=["task", "queue"]
        )
        finished = core.CounterMetricFamily(
            "mpjobs_jobs_finished", "Jobs ended, by status.", labels=["task", "queue", "status"]
        )
        by_status: dict[tuple[str, str, str], int] = defaultdict(int)
        hist: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * (len(BUCKETS) + 2))
        for r in counts.counters:
            if r.name == PUSHED:
                pushed.add_metric([r.task, r.queue], r.n)
            elif r.name == STARTED:
                started.add_metric([r.task, r.queue], r.n)
            elif r.name == FINISHED:
                by_status[(r.task, r.queue, r.status)] += r.n
                h = hist[(r.task, r.queue)]
                h[min(r.bucket, len(BUCKETS))] += r.n
                h[-1] += r.total
        for (task, queue, status), n in sorted(by_status.items()):
            finished.add_metric([task, queue, status], n)
        duration = core.HistogramMetricFamily(
            "mpjobs_job_duration_seconds",
            "Seconds from a job's claim to its recorded outcome.",
            labels=["task", "queue"],
        )
        for (task, queue), h in sorted(hist.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip([*map(repr, BUCKETS), "+Inf"], h[:-1], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            duration.add_metric([task, queue], buckets, h[-1])
        yield from (pushed, started, finished, duration)
        yield from self._queues(core, store.queue_depths(), counts.oldest_due, now)
        yield from self._processes(core)
        yield self._schedules(core, now)

    def _queues(
        self, core: Any, depths: dict[str, dict[str, int]], oldest: dict[str, float], now: float
    ) -> Iterator[Any]:
        depth = core.GaugeMetricFamily(
            "mpjobs_queue_depth", "Jobs waiting (due or not) per queue.", labels=["queue"]
        )
        running = core.GaugeMetricFamily(
            "mpjobs_jobs_running", "Jobs running per queue.", labels=["queue"]
        )
        age = core.GaugeMetricFamily(
            "mpjobs_queue_oldest_waiting_seconds",
            "How long the oldest due job of each queue has waited (0: none waits).",
            labels=["queue"],
        )
        for queue in sorted(set(depths) | set(oldest)):
            counts = depths.get(queue, {})
            depth.add_metric([queue], counts.get(SCHEDULED, 0))
            running.add_metric([queue], counts.get(RUNNING, 0))
            age.add_metric([queue], max(0.0, now - oldest[queue]) if queue in oldest else 0.0)
        yield from (depth, running, age)

    def _processes(self, core: Any) -> Iterator[Any]:
        backend = self.app.backend
        workers = core.GaugeMetricFamily(
            "mpjobs_workers", "Live worker processes (all hosts).", labels=["host"]
        )
        rss = core.GaugeMetricFamily(
            "mpjobs_worker_rss_bytes", "RSS of each live worker of this host.", labels=["pid"]
        )
        per_host: dict[str, int] = defaultdict(int)
        for p in backend.store.list_processes():
            if p.kind != "worker" or not backend.liveness.alive(p.token):
                continue
            try:
                host = str(json.loads(p.info or "{}").get("host", ""))
            except ValueError:
                host = ""
            per_host[host] += 1
            if on_this_host(p.info):
                # (it may end between the look at its row and the look at /proc)
                with contextlib.suppress(psutil.Error):
                    rss.add_metric([str(p.pid)], psutil.Process(p.pid).memory_info().rss)
        for host, n in sorted(per_host.items()):
            workers.add_metric([host], n)
        leader = core.GaugeMetricFamily(
            "mpjobs_leader_present", "1 if a live coordinator leads the home, else 0."
        )
        leader.add_metric([], 0 if backend.current_leader() is None else 1)
        yield from (workers, rss, leader)

    def _schedules(self, core: Any, now: float) -> Any:
        lag = core.GaugeMetricFamily(
            "mpjobs_schedule_lag_seconds",
            "How late each active schedule's next fire is (0: not due yet).",
            labels=["schedule"],
        )
        for s in self.app.store.list_schedules():
            if s.state == ACTIVE and s.next_run_time is not None:
                lag.add_metric([s.id], max(0.0, now - s.next_run_time))
        return lag


def exposition(app: App) -> tuple[bytes, str]:
    """The metrics of `app`'s home in Prometheus' text format: (body, content type)."""
    prom = _prometheus()
    registry = prom.CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(app))
    return prom.generate_latest(registry), prom.CONTENT_TYPE_LATEST


def serve(app: App, host: str = "127.0.0.1", port: int = 9108) -> None:
    """Serve GET /metrics on host:port until interrupted (one request at a time).

    One thread serves every scrape, so the store's per-thread connection is opened
    once, not once per request.
    """
    _prometheus()  # fail now, not at the first scrape
    app.store  # noqa: B018 - open the store now, so a bad home fails here

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served here")
                return
            try:
                body, ctype = exposition(app)
            except Exception as exc:
                log.exception("metrics: cannot read the store")
                self.send_error(503, f"cannot read the store: {type(exc).__name__}")
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics: %s %s", self.address_string(), format % args)

    server = http.server.HTTPServer((host, port), Handler)
    log.info("serving metrics on http://%s:%d/metrics", host, server.server_port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
