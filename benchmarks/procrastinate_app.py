"""The Procrastinate tasks the benchmarks run.

``procrastinate --app=benchmarks.procrastinate_app.app worker``; the database is
``BENCH_DSN``. The no-op and latency tasks are coroutines, Procrastinate's fast path (a
plain function would run in a thread for every job).
"""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

from .taskbodies import burn_cpu, record_start


def make_app(dsn: str) -> App:
    app = App(connector=PsycopgConnector(conninfo=dsn))

    @app.task(name="bench.noop")
    async def noop(i: int) -> None:
        return None

    @app.task(name="bench.cpu")
    def cpu(i: int, ms: float) -> None:
        burn_cpu(ms)

    @app.task(name="bench.latency")
    async def latency(i: int) -> None:
        record_start(i)

    return app


app = make_app(os.environ.get("BENCH_DSN", ""))
