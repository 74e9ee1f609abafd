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
@click.option("-B", "--beat", "embed_beat", is_flag=True, help="Also run beat in this process.")
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
    embed_beat: bool,
    loglevel: str,
) -> None:
    """Run a worker: claim jobs and run them until SIGTERM/SIGINT.

    With --beat the process also sends periodic tasks, on a thread with its own connection;
    any number of workers may run with --beat.
    """
    from .beat import Beat
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
    beat_service = _run(Beat(app).start) if embed_beat else None
    try:
        code = _run(w.run)
    finally:
        if beat_service is not None:
            beat_service.stop()
    sys.exit(code)


_LOGLEVEL = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)


@main.group(invoke_without_command=True)
@click.option("-A", "--app", "app_spec", help="module:app whose beat_schedule to sync.")
@click.option("--max-interval", type=click.FloatRange(min=0.1), help="Longest sleep, seconds.")
@click.option("-l", "--loglevel", default="INFO", show_default=True, type=_LOGLEVEL)
@click.pass_context
def beat(
    ctx: click.Context, app_spec: str | None, max_interval: float | None, loglevel: str
) -> None:
    """Send periodic tasks from pgqueue.periodic_tasks until SIGTERM/SIGINT.

    Any number of beats may run; each tick is sent once. With -A the app's beat_schedule is
    first synced into the table; without it the table is run as it is. The subcommands
    edit the table while beats run.
    """
    ctx.obj["beat_app"] = app_spec
    if ctx.invoked_subcommand is not None:
        return
    from .beat import Beat

    logging.basicConfig(
        level=loglevel.upper(), format="[%(asctime)s: %(levelname)s/beat] %(message)s"
    )
    app = _app_for(ctx, app_spec)
    service = Beat(app, max_loop_interval=max_interval, sync=app_spec is not None)
    sys.exit(_run(service.run))


def _beat_edit(ctx: click.Context, app_spec: str | None, fn: Any, *args: Any) -> Any:
    """Run ``fn(app, conn, *args)`` on a fresh connection of the app given here or to beat."""
    app = _app_for(ctx, app_spec or ctx.obj.get("beat_app"))
    conn = _run(app.connect)
    try:
        return _run(fn, app, conn, *args)
    finally:
        conn.close()


_app_option = click.option("-A", "--app", "app_spec", help="module:app (for its DSN, zone).")


@beat.command("list")
@_app_option
@click.pass_context
def beat_list(ctx: click.Context, app_spec: str | None) -> None:
    """Show every periodic task: schedule, state, next and last run."""
    from .beat import list_entries

    entries = _beat_edit(ctx, app_spec, lambda app, conn: list_entries(conn))
    if not entries:
        click.echo("no periodic tasks")
        return
    rows = [("NAME", "ENABLED", "SCHEDULE", "TASK", "NEXT RUN", "LAST RUN", "RUNS")]
    for e in entries:
        rows.append(
            (
                e.name,
                "yes" if e.enabled else "no",
                e.schedule.describe(),
                e.task,
                e.next_run_at.isoformat(timespec="seconds") if e.next_run_at else "-",
                e.last_run_at.isoformat(timespec="seconds") if e.last_run_at else "-",
                str(e.total_run_count),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _json_option(value: str | None, what: str, kind: type) -> Any:
    import json

    if value is None:
        return kind()
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=what) from None
    if not isinstance(parsed, kind):
        raise click.BadParameter(f"must be a JSON {kind.__name__}", param_hint=what)
    return parsed


@beat.command("add")
@click.argument("name")
@click.argument("task")
@click.option("--cron", help="Cron expression, e.g. '*/15 * * * *' (wall clock in --timezone).")
@click.option("--every", type=click.FloatRange(min=0, min_open=True), help="Interval, seconds.")
@click.option("--timezone", help="IANA zone of the cron fields (default: the app's timezone).")
@click.option("--args", "args_json", help="Positional arguments as a JSON list.")
@click.option("--kwargs", "kwargs_json", help="Keyword arguments as a JSON object.")
@click.option("--queue")
@click.option("--priority", type=int)
@click.option("--expires", type=click.FloatRange(min=0, min_open=True), help="Seconds.")
@click.option("--catch-up", type=click.Choice(["once", "all"]), default="once", show_default=True)
@click.option("--tick-kwarg", help="Pass the tick time to the task as this keyword argument.")
@click.option("--disabled", is_flag=True, help="Add it disabled.")
@_app_option
@click.pass_context
def beat_add(
    ctx: click.Context,
    name: str,
    task: str,
    cron: str | None,
    every: float | None,
    timezone: str | None,
    args_json: str | None,
    kwargs_json: str | None,
    queue: str | None,
    priority: int | None,
    expires: float | None,
    catch_up: str,
    tick_kwarg: str | None,
    disabled: bool,
    app_spec: str | None,
) -> None:
    """Add periodic task NAME sending TASK, on --cron or --every; beats pick it up at once."""
    from .beat import PeriodicEntry, add_entry
    from .schedules import Schedule

    if (cron is None) == (every is None):
        raise click.UsageError("give exactly one of --cron and --every")
    args = _json_option(args_json, "--args", list)
    kwargs = _json_option(kwargs_json, "--kwargs", dict)

    def add(app: Any, conn: Any) -> PeriodicEntry:
        zone = timezone or app.conf.timezone or "UTC"
        entry = PeriodicEntry(
            name=name,
            task=task,
            schedule=Schedule(cron=cron, interval=every, timezone=zone),
            args=tuple(args),
            kwargs=kwargs,
            queue=queue,
            priority=priority,
            expires=expires,
            catch_up=catch_up,
            tick_kwarg=tick_kwarg,
            enabled=not disabled,
        )
        add_entry(conn, entry)
        return entry

    entry = _beat_edit(ctx, app_spec, add)
    click.echo(f"added {entry.name}: {entry.task} {entry.schedule.describe()}")


@beat.command("remove")
@click.argument("name")
@_app_option
@click.pass_context
def beat_remove(ctx: click.Context, name: str, app_spec: str | None) -> None:
    """Delete periodic task NAME."""
    from .beat import remove_entry

    in_code = _beat_edit(ctx, app_spec, lambda app, conn: remove_entry(conn, name))
    click.echo(f"removed {name}")
    if in_code:
        click.echo(
            f"note: {name} is declared in code and returns when a beat starts; "
            f"use `pgqueue beat disable {name}` to keep it off"
        )


@beat.command("enable")
@click.argument("name")
@_app_option
@click.pass_context
def beat_enable(ctx: click.Context, name: str, app_spec: str | None) -> None:
    """Enable periodic task NAME; it resumes from now (missed ticks are not sent)."""
    from .beat import set_enabled

    _beat_edit(ctx, app_spec, lambda app, conn: set_enabled(conn, name, True))
    click.echo(f"enabled {name}")


@beat.command("disable")
@click.argument("name")
@_app_option
@click.pass_context
def beat_disable(ctx: click.Context, name: str, app_spec: str | None) -> None:
    """Disable periodic task NAME (kept in the table; survives beat restarts)."""
    from .beat import set_enabled

    _beat_edit(ctx, app_spec, lambda app, conn: set_enabled(conn, name, False))
    click.echo(f"disabled {name}")


@beat.command("run")
@click.argument("name")
@_app_option
@click.pass_context
def beat_run(ctx: click.Context, name: str, app_spec: str | None) -> None:
    """Send periodic task NAME's job now; its schedule is unchanged."""
    from .beat import run_now

    result = _beat_edit(ctx, app_spec, lambda app, conn: run_now(app, conn, name))
    click.echo(f"sent {name} as job {result.id}")


if __name__ == "__main__":
    main()
