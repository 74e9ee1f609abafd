"""The PGQueuer entrypoints the benchmarks run: ``pgq run benchmarks.pgqueuer_app:create``.

The database is ``BENCH_DSN``; asyncpg is PGQueuer's fastest driver. The no-op and latency
entrypoints are coroutines, PGQueuer's only form (1.6 refuses plain functions, so there
is no CPU-bound entrypoint: it would need a thread and share the GIL); the payload carries
the job's index.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job

from .taskbodies import record_start


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    connection = await asyncpg.connect(os.environ["BENCH_DSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("bench.noop")
    async def noop(job: Job) -> None:
        return None

    @pgq.entrypoint("bench.latency")
    async def latency(job: Job) -> None:
        record_start(int(job.payload or b"0"))

    try:
        yield pgq
    finally:
        await connection.close()


def main() -> None:
    """``pgq run benchmarks.pgqueuer_app:create --batch-size N``, without the CLI.

    pgqueuer 1.6's ``run`` command fails at start-up under typer 0.29 (its --log-level
    default reaches the logger as a string), so this does what the command does: the same
    supervisor on uvloop.
    """
    import argparse
    import asyncio

    from pgqueuer import run

    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=10)
    batch_size = parser.parse_args().batch_size
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(create, batch_size=batch_size))
    else:
        uvloop.run(run(create, batch_size=batch_size))


if __name__ == "__main__":
    main()
