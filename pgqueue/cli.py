"""The ``pgqueue`` command. Thin: parse options, call the library, print."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from .version import __version__


class _CliError(click.ClickException):
    """One clear line and exit code 1, never a traceback."""


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (or ``module``, finding its PgQueue app)."""
    from .app import PgQueue

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _CliError(f"cannot import {module_name!r} given by -A/--app: {exc}") from None
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, PgQueue):
            raise _CliError(f"{module_name!r} has no PgQueue app named {attr!r}")
        return app
    found = [v for v in vars(module).values() if isinstance(v, PgQueue)]
    if len(found) != 1:
        raise _CliError(
            f"found {len(found)} PgQueue apps in {module_name!r}; name one: -A {module_name}:app"
        )
    return found[0]


def _app_for(ctx: click.Context, spec: str | None) -> Any:
    from .app import PgQueue

    dsn = ctx.obj.get("dsn")
    if spec:
        app = load_app(spec)
        if dsn:
            app._dsn = dsn
            app._connections._dsn = dsn
        return app
    return PgQueue(dsn=dsn)


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from .exceptions import PgQueueError

    try:
        return fn(*args, **kwargs)
    except PgQueueError as exc:
        raise _CliError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pgqueue")
@click.option("--dsn", envvar="PGQUEUE_DSN", help="Postgres DSN (default: $PGQUEUE_DSN).")
@click.pass_context
def main(ctx: click.Context, dsn: str | None) -> None:
    """pgqueue: a Celery-style task queue on PostgreSQL."""
    ctx.ensure_object(dict)
    ctx.obj["dsn"] = dsn


@main.command()
@click.option("-A", "--app", "app_spec", help="module:app, for its DSN (optional).")
@click.pass_context
def migrate(ctx: click.Context, app_spec: str | None) -> None:
    """Create or upgrade the pgqueue schema in the database."""
    app = _app_for(ctx, app_spec)
    applied = _run(app.migrate)
    if applied:
        for m in applied:
            click.echo(f"applied {m.version:04d}_{m.name}")
    else:
        click.echo("schema is up to date")


@main.command()
@click.option("-A", "--app", "app_spec", required=True, help="module:app holding the tasks.")
@click.option("-Q", "--queues", help="Comma-separated queues to consume (default: the default).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Pool size (default: CPUs).")
@click.option("-P", "--pool", type=click.Choice(["prefork", "threads", "solo"]), help="Pool type.")
@click.option("-n", "--hostname", "name", help="Worker name.")
@click.option("--prefetch-multiplier", type=click.IntRange(min=1))
@click.option("--time-limit", type=float, help="Hard time limit per task, seconds.")
@click.option("--soft-time-limit", type=float, help="Soft time limit per task, seconds.")
@click.option("--max-tasks-per-child", type=click.IntRange(min=1))
@click.option("--max-memory-per-child", type=click.IntRange(min=1), help="KiB (prefork).")
@click.option(
    "-l",
    "--loglevel",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
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
    loglevel: str,
) -> None:
    """Run a worker: claim jobs and run them until SIGTERM/SIGINT."""
    from .worker import Worker

    logging.basicConfig(
        level=loglevel.upper(),
        format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
    )
    app = _app_for(ctx, app_spec)
    if time_limit is not None:
        app.conf.task_time_limit = time_limit
    if soft_time_limit is not None:
        app.conf.task_soft_time_limit = soft_time_limit
    w = _run(
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
    sys.exit(_run(w.run))


if __name__ == "__main__":
    main()
