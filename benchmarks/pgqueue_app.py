"""The pgqueue tasks the benchmarks run. The worker loads ``benchmarks.pgqueue_app:app``."""

from __future__ import annotations

from pgqueue import PgQueue

from .taskbodies import burn_cpu, record_start

NOOP = "bench.noop"
NOOP_IGNORE = "bench.noop_ignore"
CPU = "bench.cpu"
ASYNC_NOOP = "bench.async_noop"
ASYNC_NOOP_IGNORE = "bench.async_noop_ignore"
LATENCY = "bench.latency"


def noop(i: int) -> None:
    return None


async def async_noop(i: int) -> None:
    return None


def cpu(i: int, ms: float) -> None:
    burn_cpu(ms)


def latency(i: int) -> None:
    record_start(i)


def make_app(dsn: str | None = None) -> PgQueue:
    """An app with the benchmark tasks; the DSN defaults to ``--dsn`` / ``PGQUEUE_DSN``."""
    app = PgQueue("benchmarks", dsn=dsn)
    # Each system at its fastest: prefork holds a job ahead per busy child (opt-in, see
    # docs/workers.md); the benchmark revokes nothing.
    app.conf.worker_prefork_ahead = 1
    app.task(name=NOOP)(noop)
    app.task(name=NOOP_IGNORE, ignore_result=True)(noop)
    app.task(name=ASYNC_NOOP)(async_noop)
    app.task(name=ASYNC_NOOP_IGNORE, ignore_result=True)(async_noop)
    app.task(name=CPU)(cpu)
    app.task(name=LATENCY)(latency)
    return app


app = make_app()
