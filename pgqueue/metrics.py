"""Prometheus metrics of a worker, served over HTTP (``pgqueue worker --metrics-port 9100``).

Needs ``prometheus-client`` (``pip install 'pgqueue-tasks[metrics]'``). Each worker serves:

- ``pgqueue_jobs_finished_total{task, state}``: jobs this worker finished, by outcome
  (SUCCESS, FAILURE, RETRY, REVOKED, IGNORED);
- ``pgqueue_task_duration_seconds{task}``: a histogram of task run times;
- ``pgqueue_jobs_in_flight``: jobs running in this worker's pool now;
- ``pgqueue_queue_jobs{queue, state}`` (state: ready, scheduled, retrying, reserved, running,
  unregistered), ``pgqueue_queue_lag_seconds{queue}`` (age of the oldest ready job, 0 when
  none), ``pgqueue_queue_finished_last_hour{queue, state}`` and ``pgqueue_queue_workers{queue}``:
  the whole queue as the ``pgqueue.queue_stats`` view sees it, the same from every worker
  (aggregate them with ``max by (queue, state)``);
- ``pgqueue_queue_paused{queue}``: 1 while the queue is paused (``pgqueue queue pause``), else
  0, for each queue of the sample and each queue ever paused.

The queue figures are sampled, not read at every scrape: at most once per
``sample_interval`` seconds (15 by default), only when scraped, on one connection of the
metrics server's own. When the view cannot be read they are left out of the scrape (and
the error logged) rather than served stale.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_wsgi_server
from prometheus_client.registry import Collector

from . import ops, pooler, queries, queue_controls
from .db import connect, translate_errors

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .app import PgQueue
    from .execution import Outcome
    from .worker import Worker

log = logging.getLogger("pgqueue.metrics")

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# Longest the sampling query may run before it is cancelled, milliseconds.
SAMPLE_TIMEOUT_MS = 10_000


class Metrics:
    """A worker's metrics. The worker calls ``job_started``/``job_finished`` from its loop."""

    def __init__(self, app: PgQueue, *, sample_interval: float = 15.0) -> None:
        self.registry = CollectorRegistry()
        self.finished = Counter(
            "pgqueue_jobs_finished",
            "Jobs this worker finished, by task and outcome state.",
            ["task", "state"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "pgqueue_task_duration_seconds",
            "Run time of the tasks this worker ran.",
            ["task"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "pgqueue_jobs_in_flight", "Jobs running in this worker's pool.", registry=self.registry
        )
        self.queues = QueueSampler(app, sample_interval)
        self.registry.register(self.queues)
        self._running: set[str] = set()

    def job_started(self, job_id: str) -> None:
        self._running.add(job_id)
        self.in_flight.set(len(self._running))

    def job_finished(self, outcome: Outcome) -> None:
        self.finished.labels(outcome.task_name, outcome.state).inc()
        # Jobs that never ran (expired before their start) have no run time to record.
        if outcome.job_id in self._running:
            self._running.discard(outcome.job_id)
            self.duration.labels(outcome.task_name).observe(outcome.time_taken)
            self.in_flight.set(len(self._running))

    def close(self) -> None:
        self.queues.close()


class QueueSampler(Collector):
    """The queue_stats view as gauges, re-read at most once per ``interval`` seconds."""

    def __init__(self, app: PgQueue, interval: float) -> None:
        self.app = app
        self.interval = interval
        self._lock = threading.Lock()
        self._conn: Any = None
        self._sampled_at: float | None = None
        self._stats: list[ops.QueueStats] | None = None
        self._paused: dict[str, bool] = {}

    def describe(self) -> Iterable[Metric]:
        # Keeps registration from sampling (the registry collects to learn the names).
        return []

    def collect(self) -> Iterable[Metric]:
        stats = self.sample()
        if stats is None:
            return
        jobs = GaugeMetricFamily(
            "pgqueue_queue_jobs",
            "Live jobs per queue and state (sampled from pgqueue.queue_stats).",
            labels=["queue", "state"],
        )
        lag = GaugeMetricFamily(
            "pgqueue_queue_lag_seconds",
            "Age of the oldest ready job of each queue, 0 when none is waiting.",
            labels=["queue"],
        )
        finished = GaugeMetricFamily(
            "pgqueue_queue_finished_last_hour",
            "Jobs of each queue that finished in the last hour, by state.",
            labels=["queue", "state"],
        )
        workers = GaugeMetricFamily(
            "pgqueue_queue_workers", "Live workers consuming each queue.", labels=["queue"]
        )
        paused = GaugeMetricFamily(
            "pgqueue_queue_paused", "1 while the queue is paused, else 0.", labels=["queue"]
        )
        for s in stats:
            for state in ("ready", "scheduled", "retrying", "reserved", "running", "unregistered"):
                jobs.add_metric([s.queue, state], getattr(s, state))
            lag.add_metric([s.queue], s.lag or 0.0)
            finished.add_metric([s.queue, "FAILURE"], s.failed_last_hour)
            finished.add_metric([s.queue, "SUCCESS"], s.succeeded_last_hour)
            workers.add_metric([s.queue], s.workers)
        pause_states = {s.queue: False for s in stats} | self._paused
        for queue, is_paused in sorted(pause_states.items()):
            paused.add_metric([queue], 1.0 if is_paused else 0.0)
        yield from (jobs, lag, finished, workers, paused)

    def sample(self) -> list[ops.QueueStats] | None:
        """The latest sample, re-read if older than the interval; None if it cannot be read."""
        with self._lock:
            now = time.monotonic()
            if self._sampled_at is not None and now - self._sampled_at < self.interval:
                return self._stats
            self._sampled_at = now
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(
                        pooler.session_dsn(self.app), application_name="pgqueue metrics"
                    )
                    with translate_errors():
                        self._conn.execute(
                            queries.get("ops_statement_timeout"), {"ms": str(SAMPLE_TIMEOUT_MS)}
                        )
                # Shared through the database: however many workers are scraped, the
                # view is computed about once per interval, not once per worker.
                self._stats = ops.sampled_queue_stats(self._conn, self.interval)
                self._paused = queue_controls.pause_states(self._conn)
            except Exception as exc:
                log.warning("metrics: cannot read pgqueue.queue_stats: %s", exc)
                self._stats = None
                self._close()
            return self._stats

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()


class MetricsServer:
    """The HTTP server of one worker's metrics; ``stop()`` it when the worker ends."""

    def __init__(self, metrics: Metrics, server: WSGIServer, thread: threading.Thread) -> None:
        self.metrics = metrics
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.metrics.close()


def serve(
    worker: Worker, port: int, addr: str = "127.0.0.1", *, sample_interval: float = 15.0
) -> MetricsServer:
    """Give ``worker`` metrics and serve them on ``addr:port`` (``/metrics``, or any path)
    from a daemon thread, until ``stop()``. Only this machine can scrape the default
    address; ``addr="0.0.0.0"`` serves every interface."""
    metrics = Metrics(worker.app, sample_interval=sample_interval)
    server, thread = start_wsgi_server(port, addr, registry=metrics.registry)
    worker.metrics = metrics
    return MetricsServer(metrics, server, thread)
