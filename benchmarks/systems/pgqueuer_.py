"""PGQueuer: asyncpg producer in this process, worker processes running ``pgqueuer.run``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar

import psycopg

from ..common import PYTHON, Span, WorkerProcess, bench_env, execute
from . import RESULTS, System, WorkerConfig

TASK_FOR_VARIANT = {RESULTS: "bench.noop", "latency": "bench.latency"}


def _config(batch_size: int) -> WorkerConfig:
    return WorkerConfig(f"--batch-size {batch_size}", {"batch_size": batch_size})


class Pgqueuer(System):
    name = "pgqueuer"
    variant_labels: ClassVar[dict[str, str]] = {RESULTS: "no result store (log rows kept)"}
    enqueue_single_label = "await queries.enqueue(name, payload)"
    enqueue_bulk_label = "await queries.enqueue([names], [payloads], [priorities])"
    drain_configs: ClassVar[tuple[WorkerConfig, ...]] = (
        _config(1000).times(2),
        _config(1000),
        _config(500),
        _config(10),
        _config(50),
        _config(100),
        _config(200),
        _config(500).times(2),
        _config(100).times(2),
    )

    def unavailable(self) -> str | None:
        try:
            import asyncpg  # noqa: F401
            import pgqueuer  # noqa: F401
        except ImportError as exc:
            return f"not installed ({exc.name}): pip install -e . --group bench"
        return None

    def _run(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run ``await work(queries)`` on a fresh asyncpg connection."""
        import asyncpg
        from pgqueuer import Queries
        from pgqueuer.db import AsyncpgDriver

        async def main() -> Any:
            conn = await asyncpg.connect(self.dsn)
            try:
                return await work(Queries(AsyncpgDriver(conn)))
            finally:
                await conn.close()

        return asyncio.run(main())

    def install(self) -> None:
        async def work(queries: Any) -> None:
            await queries.install()

        self._run(work)

    def reset(self) -> None:
        execute(self.dsn, "TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")

    # -- producing -------------------------------------------------------------------------

    def enqueue_single(self, n: int) -> float:
        async def work(queries: Any) -> float:
            started = time.perf_counter()
            for i in range(n):
                await queries.enqueue("bench.noop", str(i).encode())
            return time.perf_counter() - started

        return float(self._run(work))

    def enqueue_bulk(self, n: int) -> float:
        async def work(queries: Any) -> float:
            started = time.perf_counter()
            await queries.enqueue(["bench.noop"] * n, [str(i).encode() for i in range(n)], [0] * n)
            return time.perf_counter() - started

        return float(self._run(work))

    def enqueue_for_drain(self, n: int, variant: str, cpu_ms: float) -> None:
        name = TASK_FOR_VARIANT[variant]

        async def work(queries: Any) -> None:
            for start in range(0, n, 50_000):
                count = min(n, start + 50_000) - start
                payloads = [str(i).encode() for i in range(start, start + count)]
                await queries.enqueue([name] * count, payloads, [0] * count)

        self._run(work)

    @contextlib.contextmanager
    def latency_producer(self) -> Iterator[Callable[[int], None]]:
        import asyncpg
        from pgqueuer import Queries
        from pgqueuer.db import AsyncpgDriver

        loop = asyncio.new_event_loop()
        conn = loop.run_until_complete(asyncpg.connect(self.dsn))
        queries = Queries(AsyncpgDriver(conn))

        def send(i: int) -> None:
            loop.run_until_complete(queries.enqueue("bench.latency", str(i).encode()))

        try:
            yield send
        finally:
            loop.run_until_complete(conn.close())
            loop.close()

    # -- consuming -------------------------------------------------------------------------

    def start_worker(
        self, config: WorkerConfig, variant: str, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        # What `pgq run benchmarks.pgqueuer_app:create --batch-size N` does (see main()).
        argv = [
            PYTHON, "-m", "benchmarks.pgqueuer_app",
            "--batch-size", str(config.options["batch_size"]),
        ]  # fmt: skip
        return WorkerProcess(
            argv, env=bench_env(BENCH_DSN=self.dsn, **(env or {})), label=self.name
        )

    def completed(self, variant: str) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
            ).fetchone()
        return int(row[0]) if row else 0

    def completion_span(self, variant: str) -> Span:
        # The worker logs finished jobs in batches, one timestamp per batch.
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                """WITH done AS (SELECT created FROM pgqueuer_log WHERE status = 'successful')
                   SELECT extract(epoch FROM min(created)), extract(epoch FROM max(created)),
                          count(*), count(*) FILTER (WHERE created = (SELECT min(created)
                                                                     FROM done))
                     FROM done"""
            ).fetchone()
        if not row or not row[2]:
            raise RuntimeError("pgqueuer: no job completed")
        return Span(float(row[0]), float(row[1]), int(row[2]), int(row[3]))
