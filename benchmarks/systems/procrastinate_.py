"""Procrastinate 3: asyncio producer in this process, ``procrastinate worker`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import psycopg

from ..common import PYTHON, Span, WorkerProcess, bench_env, execute
from . import CPU, RESULTS, System, WorkerConfig

TASK_FOR_VARIANT = {RESULTS: "bench.noop", CPU: "bench.cpu", "latency": "bench.latency"}


def _config(concurrency: int) -> WorkerConfig:
    return WorkerConfig(f"--concurrency {concurrency}", {"concurrency": concurrency})


class Procrastinate(System):
    name = "procrastinate"
    variant_labels: ClassVar[dict[str, str]] = {RESULTS: "no result store (job rows kept)"}
    enqueue_single_label = "await task.defer_async(i=i)"
    enqueue_bulk_label = "await task.batch_defer_async({'i': i}, ...)"
    drain_configs: ClassVar[tuple[WorkerConfig, ...]] = (
        _config(8).times(2),
        _config(8),
        _config(1),
        _config(4),
        _config(16),
        _config(32),
    )

    def __init__(self) -> None:
        super().__init__()
        self.app: Any = None

    def unavailable(self) -> str | None:
        try:
            import procrastinate  # noqa: F401
        except ImportError as exc:
            return f"not installed ({exc.name}): pip install -e . --group bench"
        return None

    def install(self) -> None:
        from .. import procrastinate_app

        self.app = procrastinate_app.make_app(self.dsn)
        with self.app.open():
            self.app.schema_manager.apply_schema()

    def reset(self) -> None:
        execute(
            self.dsn,
            "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers CASCADE",
        )

    def _run(self, work: Callable[[Any], Any]) -> Any:
        """Run ``await work(app)`` with the app open (its pool connected beforehand)."""

        async def main() -> Any:
            async with self.app.open_async():
                return await work(self.app)

        return asyncio.run(main())

    # -- producing -------------------------------------------------------------------------

    def enqueue_single(self, n: int) -> float:
        async def work(app: Any) -> float:
            task = app.tasks["bench.noop"]
            await task.defer_async(i=-1)
            started = time.perf_counter()
            for i in range(n):
                await task.defer_async(i=i)
            return time.perf_counter() - started

        return float(self._run(work))

    def enqueue_bulk(self, n: int) -> float:
        async def work(app: Any) -> float:
            task = app.tasks["bench.noop"]
            await task.defer_async(i=-1)
            started = time.perf_counter()
            await task.batch_defer_async(*({"i": i} for i in range(n)))
            return time.perf_counter() - started

        return float(self._run(work))

    def enqueue_for_drain(self, n: int, variant: str, cpu_ms: float) -> None:
        async def work(app: Any) -> None:
            task = app.tasks[TASK_FOR_VARIANT[variant]]
            for start in range(0, n, 20_000):
                args = range(start, min(n, start + 20_000))
                if variant == CPU:
                    await task.batch_defer_async(*({"i": i, "ms": cpu_ms} for i in args))
                else:
                    await task.batch_defer_async(*({"i": i} for i in args))

        self._run(work)

    @contextlib.contextmanager
    def latency_producer(self) -> Iterator[Callable[[int], None]]:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(self.app.open_async())
        task = self.app.tasks["bench.latency"]

        def send(i: int) -> None:
            loop.run_until_complete(task.defer_async(i=i))

        try:
            yield send
        finally:
            loop.run_until_complete(self.app.close_async())
            loop.close()

    # -- consuming -------------------------------------------------------------------------

    def start_worker(
        self, config: WorkerConfig, variant: str, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        argv = [
            PYTHON, "-m", "procrastinate", "--app=benchmarks.procrastinate_app.app",
            "--log-level=warning", "worker",
            "--concurrency", str(config.options["concurrency"]),
        ]  # fmt: skip
        return WorkerProcess(
            argv, env=bench_env(BENCH_DSN=self.dsn, **(env or {})), label=self.name
        )

    def completed(self, variant: str) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
            ).fetchone()
        return int(row[0]) if row else 0

    def completion_span(self, variant: str) -> Span:
        # Each job's end is written by its own transaction, as a 'succeeded' event.
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                """SELECT extract(epoch FROM min(at)), extract(epoch FROM max(at)), count(*)
                     FROM procrastinate_events WHERE type = 'succeeded'"""
            ).fetchone()
        if not row or not row[2]:
            raise RuntimeError("procrastinate: no job completed")
        return Span(float(row[0]), float(row[1]), int(row[2]), 1)
