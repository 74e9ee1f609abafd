"""``pgqueue worker``: claim jobs and run them, optionally with beat and a metrics server."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import click

from .. import logs
from ..beat import Beat
from ..pools import POOLS
from ..worker import Worker
from .common import LOGLEVEL, CliError, app_for, run

if TYPE_CHECKING:
    from ..metrics import MetricsServer


@click.command()
@click.option("-A", "--app", "app_spec", required=True, help="module:app holding the tasks.")
@click.option("-Q", "--queues", help="Comma-separated queues to consume (default: the default).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Pool size (default: CPUs).")
@click.option("-P", "--pool", type=click.Choice(list(POOLS)), help="Pool type.")
@click.option("-n", "--hostname", "name", help="Worker name.")
@click.option("--prefetch-multiplier", type=click.IntRange(min=1))
@click.option("--time-limit", type=float, help="Hard time limit per task, seconds.")
@click.option("--soft-time-limit", type=float, help="Soft time limit per task, seconds.")
@click.option("--max-tasks-per-child", type=click.IntRange(min=1))
@click.option("--max-memory-per-child", type=click.IntRange(min=1), help="KiB (prefork).")
@click.option(
    "--listen-dsn",
    help="A DSN straight to Postgres for the connections that need a session of their own "
    "(claims and liveness lock, LISTEN, housekeeping, beat), when --dsn goes through "
    "PgBouncer in transaction mode (default: $PGQUEUE_LISTEN_DSN, else --dsn).",
)
@click.option("-B", "--beat", "embed_beat", is_flag=True, help="Also run beat in this process.")
@click.option("-l", "--loglevel", default="INFO", show_default=True, type=LOGLEVEL)
@click.option(
    "--log-format",
    type=click.Choice(logs.FORMATS),
    default="text",
    show_default=True,
    help="json: one JSON object per line, with task_name, task_id, queue, outcome, runtime.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    help="Serve Prometheus metrics on this port (needs pgqueue[metrics]).",
)
@click.option(
    "--metrics-host",
    "--metrics-addr",
    "metrics_host",
    default="127.0.0.1",
    show_default=True,
    help="Address to serve metrics on; 0.0.0.0 (or ::) for every interface.",
)
@click.pass_context
def worker(
    ctx: click.Context,
    app_spec: str,
    queues: str | None,
    concurrency: int | None,
    pool: str | None,
    name: str | None,
    prefetch_multiplier: int | None,
    time_limit: float | None,
    soft_time_limit: float | None,
    max_tasks_per_child: int | None,
    max_memory_per_child: int | None,
    listen_dsn: str | None,
    embed_beat: bool,
    loglevel: str,
    log_format: str,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run a worker: claim jobs and run them until SIGTERM/SIGINT.

    With --beat the process also sends periodic tasks, on a thread with its own connection;
    any number of workers may run with --beat.
    """
    logs.setup(loglevel, log_format)
    app = app_for(ctx, app_spec)
    if listen_dsn:
        app.conf.listen_dsn = listen_dsn
    if time_limit is not None:
        app.conf.task_time_limit = time_limit
    if soft_time_limit is not None:
        app.conf.task_soft_time_limit = soft_time_limit
    w = run(
        Worker,
        app,
        queues=[q.strip() for q in queues.split(",") if q.strip()] if queues else None,
        concurrency=concurrency,
        pool=pool,
        name=name,
        prefetch_multiplier=prefetch_multiplier,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child=max_memory_per_child,
    )
    metrics_server = _serve_metrics(w, metrics_host, metrics_port)
    beat_service = run(Beat(app).start) if embed_beat else None
    try:
        code = run(w.run)
    except BrokenPipeError:
        # click ends a command that lets EPIPE out silently with status 1 (it takes it for
        # a closed stdout); a worker's broken pipe is a bug to see, not a quiet exit
        logging.getLogger("pgqueue.worker").exception("worker stopped on a broken pipe")
        code = 1
    finally:
        if beat_service is not None:
            beat_service.stop()
        if metrics_server is not None:
            metrics_server.stop()
    sys.exit(code)


def _serve_metrics(w: Worker, addr: str, port: int | None) -> MetricsServer | None:
    if port is None:
        return None
    try:
        # Optional: prometheus-client comes with pgqueue[metrics].
        from .. import metrics
    except ImportError:
        raise CliError(
            "--metrics-port needs prometheus-client: pip install 'pgqueue-tasks[metrics]'"
        ) from None
    try:
        return metrics.serve(w, port, addr)
    except OSError as exc:
        raise CliError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}") from None
