"""The Celery tasks the benchmarks run: ``celery -A benchmarks.celery_app:app worker``.

Redis is the broker (database ``BENCH_REDIS_URL``, 13 by default) and the result backend
(the next database number), so that counting result keys counts finished jobs.
"""

from __future__ import annotations

import os

from celery import Celery

from .taskbodies import burn_cpu, record_start

BROKER_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


def backend_url(broker_url: str) -> str:
    base, _, db = broker_url.rpartition("/")
    return f"{base}/{int(db) + 1}"


app = Celery("benchmarks", broker=BROKER_URL, backend=backend_url(BROKER_URL))
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    # No pidbox queue to poll: nothing in the benchmark uses remote control.
    worker_enable_remote_control=False,
)


@app.task(name="bench.noop")
def noop(i: int) -> None:
    return None


@app.task(name="bench.noop_ignore", ignore_result=True)
def noop_ignore(i: int) -> None:
    return None


@app.task(name="bench.cpu")
def cpu(i: int, ms: float) -> None:
    burn_cpu(ms)


@app.task(name="bench.latency")
def latency(i: int) -> None:
    record_start(i)
