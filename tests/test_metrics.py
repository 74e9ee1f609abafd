"""Prometheus metrics scraped over HTTP from a real worker, and the worker's JSON log lines."""

from __future__ import annotations

import json
import socket
import urllib.request
from typing import Any

import pytest

from tests import taskapp
from tests.conftest import wait_for

parser = pytest.importorskip("prometheus_client.parser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_endpoint_shows_the_counts(app, worker):
    # Queued before the worker starts and in a queue no worker consumes: constant.
    for _ in range(2):
        taskapp.add.apply_async((1, 1), queue="elsewhere")
    done = [taskapp.add.delay(i, i) for i in range(3)]
    failed = taskapp.fail.delay("boom")
    port = free_port()
    # prefork: tasks run in children, their outcomes are counted in the worker process
    w = worker("-c", "2", "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    for r in done:
        r.get(timeout=60)
    failed.get(timeout=60, propagate=False)

    def finished() -> Any:
        samples = scrape(port)
        ok = sample(
            samples, "pgqueue_jobs_finished_total", task="tests.taskapp.add", state="SUCCESS"
        )
        bad = sample(
            samples, "pgqueue_jobs_finished_total", task="tests.taskapp.fail", state="FAILURE"
        )
        # An outcome is counted once its write commits, a moment after get() returns.
        return samples if ok == 3 and bad == 1 else None

    samples = wait_for(finished, 30, "3 successes and 1 failure in the metrics")
    assert sample(samples, "pgqueue_task_duration_seconds_count", task="tests.taskapp.add") == 3
    assert sample(samples, "pgqueue_jobs_in_flight") == 0
    assert sample(samples, "pgqueue_queue_jobs", queue="elsewhere", state="ready") == 2
    assert sample(samples, "pgqueue_queue_jobs", queue="elsewhere", state="unregistered") == 2
    assert sample(samples, "pgqueue_queue_workers", queue="elsewhere") == 0
    assert sample(samples, "pgqueue_queue_workers", queue="default") == 1
    lag = sample(samples, "pgqueue_queue_lag_seconds", queue="elsewhere")
    assert lag is not None and lag > 0
    assert w.stop() == 0  # the metrics server does not hold up a warm shutdown


def test_queue_figures_are_sampled_not_read_per_scrape(app, db):
    from pgqueue.metrics import QueueSampler

    taskapp.add.apply_async((1, 1), queue="sampled")
    cached = QueueSampler(app, interval=3600)
    fresh = QueueSampler(app, interval=0)
    try:
        first = cached.sample()
        assert first is not None and [s.ready for s in first if s.queue == "sampled"] == [1]
        taskapp.add.apply_async((1, 1), queue="sampled")
        assert cached.sample() is first
        now = fresh.sample()
        assert now is not None and [s.ready for s in now if s.queue == "sampled"] == [2]
    finally:
        cached.close()
        fresh.close()


def test_workers_share_one_sample_of_the_queue_figures(app, db):
    from pgqueue.metrics import QueueSampler

    taskapp.add.apply_async((1, 1), queue="shared")
    # Two workers' samplers, each with its own connection, scraped one after the other.
    first, second = QueueSampler(app, interval=3600), QueueSampler(app, interval=3600)
    try:
        a = first.sample()
        assert a is not None and [s.ready for s in a if s.queue == "shared"] == [1]
        (taken,) = db.execute("SELECT sampled_at FROM pgqueue.queue_stats_sampled").fetchone()
        taskapp.add.apply_async((1, 1), queue="shared")
        b = second.sample()
        # The second read the first one's sample instead of counting the jobs again.
        assert b is not None and [s.ready for s in b if s.queue == "shared"] == [1]
        assert db.execute("SELECT sampled_at FROM pgqueue.queue_stats_sampled").fetchone() == (
            taken,
        )
        live = db.execute("SELECT ready FROM pgqueue.queue_stats WHERE queue = 'shared'")
        assert live.fetchone() == (2,)  # the view itself stays exact
    finally:
        first.close()
        second.close()


def test_metrics_port_in_use_is_one_clear_line(dsn):
    from tests.test_migrate_cli import run_cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli(
            "worker",
            "-A",
            "tests.taskapp:app",
            "--metrics-port",
            str(port),
            "--metrics-host",
            "127.0.0.1",
        )
    assert proc.returncode == 1
    assert "cannot serve metrics on 127.0.0.1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_json_logs_carry_one_start_and_one_finish_line_per_job(app, worker):
    w = worker("-c", "1", "-P", "threads", "--log-format", "json")
    ok = taskapp.add.delay(2, 2)
    bad = taskapp.fail.delay("nope")
    assert ok.get(timeout=60) == 4
    bad.get(timeout=60, propagate=False)

    def lines() -> list[dict[str, Any]]:
        parsed = []
        for line in w.output().splitlines():
            if line.startswith("{"):
                parsed.append(json.loads(line))
        return parsed

    def finished_both() -> list[dict[str, Any]]:
        found = [r for r in lines() if r.get("event") == "task_finished"]
        return found if {r["task_id"] for r in found} >= {ok.id, bad.id} else []

    finished = {r["task_id"]: r for r in wait_for(finished_both, 30, "both finish lines")}
    started = [r for r in lines() if r.get("event") == "task_started"]
    assert sorted(r["task_id"] for r in started) == sorted([ok.id, bad.id])
    first = finished[ok.id]
    assert (first["task_name"], first["queue"], first["outcome"], first["level"]) == (
        "tests.taskapp.add",
        "default",
        "SUCCESS",
        "INFO",
    )
    assert isinstance(first["runtime"], float) and first["runtime"] >= 0
    second = finished[bad.id]
    assert (second["outcome"], second["level"], second["exc_type"]) == (
        "FAILURE",
        "ERROR",
        "ValueError",
    )
    assert all({"time", "level", "logger", "message"} <= set(r) for r in lines())


def test_plain_log_lines_name_task_id_queue_runtime_and_outcome(app, worker):
    import re

    w = worker("-c", "1", "-Q", "default,mail", "--loglevel", "INFO")
    r = taskapp.add.apply_async((1, 2), queue="mail")
    assert r.get(timeout=60) == 3
    label = re.escape(f"tests.taskapp.add[{r.id}] (queue mail)")
    finished = re.compile(label + r" SUCCESS in \d+\.\d{3}s")
    wait_for(lambda: finished.search(w.output()), 30, "the finish line")
    assert re.search(label + " started", w.output())
