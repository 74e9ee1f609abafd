"""pgqueue: the producer API in this process, real ``pgqueue worker`` processes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import psycopg

from pgqueue import PgQueue

from .. import pgqueue_app
from ..common import PYTHON, Span, WorkerProcess, bench_env, execute
from . import CPU, IGNORE_RESULT, RESULTS, System, WorkerConfig

# Measurement aid, installed only in the benchmark's database: a statement-level trigger
# that notes when the worker deletes finished jobs and how many. It times drains the same
# way whether results are stored or not (a drain with ignore_result leaves no other trace).
PROGRESS_DDL = """
CREATE UNLOGGED TABLE public.bench_progress (
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    n  integer NOT NULL
);
CREATE FUNCTION public.bench_note_progress() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.bench_progress (n) SELECT count(*) FROM gone HAVING count(*) > 0;
    RETURN NULL;
END $$;
CREATE TRIGGER bench_progress AFTER DELETE ON pgqueue.jobs
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION public.bench_note_progress();
"""

# The drain-asyncio workload's variants: no-op ``async def`` tasks.
ASYNC_RESULTS = "async-results"
ASYNC_IGNORE_RESULT = "async-ignore_result"

TASK_FOR_VARIANT = {
    RESULTS: pgqueue_app.NOOP,
    IGNORE_RESULT: pgqueue_app.NOOP_IGNORE,
    ASYNC_RESULTS: pgqueue_app.ASYNC_NOOP,
    ASYNC_IGNORE_RESULT: pgqueue_app.ASYNC_NOOP_IGNORE,
    CPU: pgqueue_app.CPU,
    "latency": pgqueue_app.LATENCY,
}


def _config(pool: str, concurrency: int, prefetch: int | None = None) -> WorkerConfig:
    label = f"-P {pool}" + (f" -c {concurrency}" if pool != "solo" else "")
    if prefetch:
        label += f" --prefetch-multiplier {prefetch}"
    return WorkerConfig(label, {"pool": pool, "concurrency": concurrency, "prefetch": prefetch})


class Pgqueue(System):
    name = "pgqueue"
    drain_variants = (RESULTS, IGNORE_RESULT)
    variant_labels: ClassVar[dict[str, str]] = {
        RESULTS: "results stored",
        IGNORE_RESULT: "ignore_result=True",
        ASYNC_RESULTS: "async def, results stored",
        ASYNC_IGNORE_RESULT: "async def, ignore_result=True",
    }
    enqueue_single_label = "task.delay(i)"
    enqueue_bulk_label = "task.enqueue_many([(i,), ...])"
    drain_configs: ClassVar[tuple[WorkerConfig, ...]] = (
        _config("threads", 512, prefetch=1).times(2),
        _config("threads", 512, prefetch=1),
        _config("threads", 64),
        _config("threads", 256, prefetch=1),
        _config("threads", 1024, prefetch=1),
        _config("threads", 256, prefetch=1).times(2),
        _config("threads", 4),
        _config("threads", 16),
        _config("threads", 32),
        _config("threads", 16, prefetch=16),
        _config("prefork", 2),
        _config("prefork", 2, prefetch=16),
        _config("solo", 1),
    )
    # The drain-asyncio workload's: the first is the one it reports.
    asyncio_configs: ClassVar[tuple[WorkerConfig, ...]] = (
        _config("asyncio", 500, prefetch=1).times(2),
        _config("asyncio", 500, prefetch=1),
        _config("asyncio", 500),
        _config("asyncio", 1000, prefetch=1).times(2),
    )

    def __init__(self) -> None:
        super().__init__()
        self.app: PgQueue | None = None

    def install(self) -> None:
        self.app = pgqueue_app.make_app(self.dsn)
        self.app.migrate()
        execute(self.dsn, PROGRESS_DDL)
        self.app.connection()  # opened now, not inside a timed loop

    def close(self) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None

    def reset(self) -> None:
        execute(
            self.dsn,
            "TRUNCATE pgqueue.jobs, pgqueue.results, pgqueue.workers, public.bench_progress",
        )

    def insert_backlog(self, start: int, count: int) -> None:
        """Queue ``count`` jobs no worker should touch yet: half of them due tomorrow in the
        worker's queue, half ready in a queue it does not consume. Plain SQL, for speed."""
        execute(
            self.dsn,
            """INSERT INTO pgqueue.jobs (id, task_name, args, queue, run_at)
               SELECT gen_random_uuid(), 'bench.noop', jsonb_build_array(i),
                      CASE WHEN i %% 2 = 0 THEN 'default' ELSE 'elsewhere' END,
                      CASE WHEN i %% 2 = 0 THEN now() + interval '1 day' + i * interval '1 ms'
                           ELSE now() END
                 FROM generate_series(%(start)s::bigint, %(end)s::bigint) AS i""",
            {"start": start + 1, "end": start + count},
        )
        execute(self.dsn, "VACUUM ANALYZE pgqueue.jobs")

    def insert_urgent_future(self, count: int, priority: int) -> None:
        """Queue ``count`` jobs due tomorrow in the worker's queue at a higher priority than
        the ready jobs: the claim order (priority first) puts them ahead of the ready ones."""
        execute(
            self.dsn,
            """INSERT INTO pgqueue.jobs (id, task_name, args, priority, run_at)
               SELECT gen_random_uuid(), 'bench.noop', jsonb_build_array(i), %(priority)s,
                      now() + interval '1 day' + i * interval '1 ms'
                 FROM generate_series(1, %(count)s::bigint) AS i""",
            {"count": count, "priority": priority},
        )
        execute(self.dsn, "VACUUM ANALYZE pgqueue.jobs")

    def live_jobs(self) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()
        return int(row[0]) if row else 0

    def vacuum_count(self) -> int:
        """How many times pgqueue.jobs was vacuumed, by hand or by autovacuum."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                """SELECT vacuum_count + autovacuum_count FROM pg_stat_user_tables
                    WHERE relid = 'pgqueue.jobs'::regclass"""
            ).fetchone()
        return int(row[0]) if row else 0

    def jobs_table_sizes(self) -> dict[str, float]:
        """MB on disk of pgqueue.jobs and of each of its indexes (heap only, no TOAST)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                """SELECT c.relname, pg_relation_size(c.oid) / 1e6
                     FROM pg_class AS c
                    WHERE c.oid = 'pgqueue.jobs'::regclass
                       OR c.oid IN (SELECT indexrelid FROM pg_index
                                     WHERE indrelid = 'pgqueue.jobs'::regclass)
                    ORDER BY c.relname"""
            ).fetchall()
        return {name: float(mb) for name, mb in rows}

    def clear_finished(self) -> None:
        """Forget earlier drains (results, progress, dead rows) but keep the queued jobs."""
        execute(self.dsn, "TRUNCATE pgqueue.results, public.bench_progress")
        execute(self.dsn, "VACUUM ANALYZE pgqueue.jobs")

    def _app(self) -> PgQueue:
        assert self.app is not None, "install() first"
        return self.app

    # -- producing -------------------------------------------------------------------------

    def enqueue_single(self, n: int) -> float:
        task = self._app().tasks[pgqueue_app.NOOP]
        started = time.perf_counter()
        for i in range(n):
            task.delay(i)
        return time.perf_counter() - started

    def enqueue_bulk(self, n: int) -> float:
        task = self._app().tasks[pgqueue_app.NOOP]
        started = time.perf_counter()
        task.enqueue_many([(i,) for i in range(n)])
        return time.perf_counter() - started

    def enqueue_for_drain(self, n: int, variant: str, cpu_ms: float) -> None:
        task = self._app().tasks[TASK_FOR_VARIANT[variant]]
        args: list[tuple[Any, ...]] = (
            [(i, cpu_ms) for i in range(n)] if variant == CPU else [(i,) for i in range(n)]
        )
        for start in range(0, n, 50_000):
            task.enqueue_many(args[start : start + 50_000])

    @contextlib.contextmanager
    def latency_producer(self) -> Iterator[Callable[[int], None]]:
        task = self._app().tasks[pgqueue_app.LATENCY]

        def send(i: int) -> None:
            task.delay(i)

        yield send

    # -- consuming -------------------------------------------------------------------------

    def start_worker(
        self, config: WorkerConfig, variant: str, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        opts = config.options
        argv = [
            PYTHON, "-m", "pgqueue.cli", "--dsn", self.dsn, "worker",
            "-A", "benchmarks.pgqueue_app:app",
            "-P", opts["pool"], "-c", str(opts["concurrency"]),
            "--loglevel", "WARNING",
        ]  # fmt: skip
        if opts.get("prefetch"):
            argv += ["--prefetch-multiplier", str(opts["prefetch"])]
        return WorkerProcess(argv, env=bench_env(**(env or {})), label=self.name)

    def cpu_config(self, concurrency: int) -> WorkerConfig:
        return _config("prefork", concurrency)

    def completed(self, variant: str) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT coalesce(sum(n), 0) FROM public.bench_progress").fetchone()
        return int(row[0]) if row else 0

    def completion_span(self, variant: str) -> Span:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                """SELECT extract(epoch FROM min(at)), extract(epoch FROM max(at)),
                          coalesce(sum(n), 0),
                          (SELECT n FROM public.bench_progress ORDER BY at LIMIT 1)
                     FROM public.bench_progress"""
            ).fetchone()
        assert row is not None
        if not row[2]:
            raise RuntimeError("pgqueue: no job completed")
        return Span(float(row[0]), float(row[1]), int(row[2]), int(row[3]))

    def results_span(self) -> Span:
        """The same span from ``pgqueue.results.date_done``, to check the trigger against."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                """SELECT extract(epoch FROM min(date_done)), extract(epoch FROM max(date_done)),
                          count(*), count(*) FILTER (WHERE date_done = (SELECT min(date_done)
                                                                   FROM pgqueue.results))
                     FROM pgqueue.results"""
            ).fetchone()
        assert row is not None
        return Span(float(row[0]), float(row[1]), int(row[2]), int(row[3]))
