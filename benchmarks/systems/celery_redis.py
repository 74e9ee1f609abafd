"""Celery 5 with Redis as broker and result backend; ``celery worker`` processes."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from ..common import PYTHON, REDIS_URL, Span, WorkerGroup, WorkerProcess, bench_env, wait_until
from . import CPU, IGNORE_RESULT, RESULTS, System, WorkerConfig

TASK_FOR_VARIANT = {
    RESULTS: "bench.noop",
    IGNORE_RESULT: "bench.noop_ignore",
    CPU: "bench.cpu",
    "latency": "bench.latency",
}
QUEUE = "celery"  # Celery's default queue: a Redis list of that name


def _copy_message(template: dict[str, Any], args: list[Any]) -> dict[str, Any]:
    """A Celery message like ``template`` (kombu's Redis format), for new arguments."""
    task_id = str(uuid.uuid4())
    embed = json.loads(base64.b64decode(template["body"]))[2]
    headers = {**template["headers"], "id": task_id, "root_id": task_id,
               "argsrepr": repr(tuple(args))}  # fmt: skip
    properties = {**template["properties"], "correlation_id": task_id,
                  "delivery_tag": str(uuid.uuid4())}  # fmt: skip
    body = base64.b64encode(json.dumps([args, {}, embed]).encode()).decode()
    return {**template, "body": body, "headers": headers, "properties": properties}


def _config(pool: str, concurrency: int, prefetch: int = 4) -> WorkerConfig:
    label = f"-P {pool}" + (f" -c {concurrency}" if pool != "solo" else "")
    if prefetch != 4:
        label += f" --prefetch-multiplier {prefetch}"
    return WorkerConfig(label, {"pool": pool, "concurrency": concurrency, "prefetch": prefetch})


class CeleryRedis(System):
    name = "celery"
    drain_variants = (RESULTS, IGNORE_RESULT)
    variant_labels: ClassVar[dict[str, str]] = {
        RESULTS: "Redis result backend",
        IGNORE_RESULT: "ignore_result=True",
    }
    enqueue_single_label = "task.delay(i)"
    enqueue_bulk_label = "group(task.s(i) ...).apply_async()"
    drain_configs: ClassVar[tuple[WorkerConfig, ...]] = (
        _config("solo", 1).times(2),
        _config("solo", 1),
        _config("solo", 1, prefetch=64),
        _config("prefork", 2),
        _config("prefork", 2, prefetch=64),
        _config("threads", 4),
        _config("threads", 16),
        _config("threads", 64),
    )

    def __init__(self) -> None:
        super().__init__()
        self.broker: Any = None
        self.results: Any = None
        self.app: Any = None
        self._producer_app: Any = None
        # Set by wait_drained for the ignore_result variant, which leaves no records.
        self._polled_span: Span | None = None

    def unavailable(self) -> str | None:
        try:
            import celery  # noqa: F401
            import redis
        except ImportError as exc:
            return f"not installed ({exc.name}): pip install -e . --group bench"
        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            return f"Redis not reachable at {REDIS_URL}: {exc}"
        return None

    @contextlib.contextmanager
    def session(self, workload: str) -> Iterator[None]:
        """Flushed Redis databases (broker and results) instead of a fresh Postgres one."""
        import redis

        from .. import celery_app

        self.workload = workload
        self.app = celery_app.app
        self.broker = redis.Redis.from_url(REDIS_URL)
        self.results = redis.Redis.from_url(celery_app.backend_url(REDIS_URL))
        self.reset()
        try:
            yield
        finally:
            self.reset()
            self.broker.close()
            self.results.close()

    def install(self) -> None:
        """Nothing to install: Celery creates its Redis keys as it goes."""

    def reset(self) -> None:
        self.broker.flushdb()
        self.results.flushdb()
        self._polled_span = None

    def _task(self, variant: str) -> Any:
        return self.app.tasks[TASK_FOR_VARIANT[variant]]

    # -- producing -------------------------------------------------------------------------

    def enqueue_single(self, n: int) -> float:
        task = self._task(RESULTS)
        task.delay(-1)  # connect to the broker outside the timed loop
        self.reset()
        started = time.perf_counter()
        for i in range(n):
            task.delay(i)
        return time.perf_counter() - started

    def enqueue_bulk(self, n: int) -> float:
        from celery import group

        task = self._task(RESULTS)
        task.delay(-1)
        self.reset()
        started = time.perf_counter()
        group(task.s(i) for i in range(n)).apply_async()
        return time.perf_counter() - started

    def enqueue_for_drain(self, n: int, variant: str, cpu_ms: float) -> None:
        """Celery publishes one message per call (about 2,500/s here, 40 s per 100,000), so
        the drain's jobs are copies of one message Celery itself wrote, each with its own
        task id, delivery tag and arguments, pushed to Redis in pipelined batches."""
        producer, name = self._producer(), TASK_FOR_VARIANT[variant]
        producer.send_task(name, (0,))
        template = json.loads(self.broker.rpop(QUEUE))
        for start in range(0, n, 10_000):
            pipe = self.broker.pipeline(transaction=False)
            for i in range(start, min(n, start + 10_000)):
                args = [i, cpu_ms] if variant == CPU else [i]
                pipe.lpush(QUEUE, json.dumps(_copy_message(template, args)))
            pipe.execute()

    def _producer(self) -> Any:
        """The app without a result backend, for untimed set-up and the latency producer.

        With the Redis backend every ``delay()`` also subscribes this process to the task's
        result channel; a drain's 100,000 subscriptions would only load Redis.
        """
        from celery import Celery

        if self._producer_app is None:
            app = Celery("benchmarks-producer", broker=REDIS_URL, backend=None)
            app.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
            self._producer_app = app
        return self._producer_app

    @contextlib.contextmanager
    def latency_producer(self) -> Iterator[Callable[[int], None]]:
        producer, name = self._producer(), TASK_FOR_VARIANT["latency"]

        def send(i: int) -> None:
            producer.send_task(name, (i,))

        yield send

    # -- consuming -------------------------------------------------------------------------

    def start_worker(
        self, config: WorkerConfig, variant: str, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        opts = config.options
        argv = [
            PYTHON, "-m", "celery", "-A", "benchmarks.celery_app:app", "worker",
            "-P", opts["pool"], "-c", str(opts["concurrency"]),
            "--prefetch-multiplier", str(opts["prefetch"]),
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel", "WARNING",
        ]  # fmt: skip
        return WorkerProcess(
            argv, env=bench_env(BENCH_REDIS_URL=REDIS_URL, **(env or {})), label=self.name
        )

    def cpu_config(self, concurrency: int) -> WorkerConfig:
        return _config("prefork", concurrency)

    def completed(self, variant: str) -> int:
        return int(self.results.dbsize())

    def wait_drained(
        self, worker: WorkerProcess | WorkerGroup, n: int, variant: str, timeout: float
    ) -> bool:
        if variant != IGNORE_RESULT:
            return super().wait_drained(worker, n, variant, timeout)
        # No results: watch the queue. The first message leaves the list when the worker
        # takes it; the last job is done when the list and the unacked hash are both empty
        # (Celery acknowledges a message as the task starts; a no-op ends microseconds later).
        first: float | None = None
        last_depth = n

        def done() -> bool:
            nonlocal first, last_depth
            worker.check_alive()
            pipe = self.broker.pipeline()
            pipe.llen(QUEUE)
            pipe.hlen("unacked")
            depth, unacked = pipe.execute()
            now = time.time()
            if first is None and depth < n:
                first = now
            last_depth = depth
            return bool(depth == 0 and unacked == 0)

        finished = wait_until(done, timeout=timeout, interval=0.01)
        now = time.time()
        self._polled_span = Span(first or now, now, n - last_depth if not finished else n)
        return finished

    def completion_span(self, variant: str) -> Span:
        if variant == IGNORE_RESULT:
            assert self._polled_span is not None
            return self._polled_span
        done: list[float] = []
        keys = list(self.results.scan_iter(match="celery-task-meta-*", count=5000))
        for start in range(0, len(keys), 5000):
            for raw in self.results.mget(keys[start : start + 5000]):
                if raw:
                    meta = json.loads(raw)
                    done.append(dt.datetime.fromisoformat(meta["date_done"]).timestamp())
        if not done:
            raise RuntimeError("celery: no job completed")
        done.sort()
        # Celery stamps each result on its own; the first completion is one job.
        return Span(done[0], done[-1], len(done), 1)
