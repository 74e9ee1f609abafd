"""``pgqueue beat``: send periodic tasks; its subcommands edit pgqueue.periodic_tasks."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .. import logs
from ..app import PgQueue
from ..beat import (
    Beat,
    BrokenEntry,
    PeriodicEntry,
    add_entry,
    list_rows,
    remove_entry,
    run_now,
    set_enabled,
)
from ..schedules import Schedule
from .common import LOGLEVEL, app_for, connected, run
from .formatting import table

TEXT_FORMAT = "[%(asctime)s: %(levelname)s/beat] %(message)s"

_app_option = click.option("-A", "--app", "app_spec", help="module:app (for its DSN, zone).")


@click.group(invoke_without_command=True)
@click.option("-A", "--app", "app_spec", help="module:app whose beat_schedule to sync.")
@click.option("--max-interval", type=click.FloatRange(min=0.1), help="Longest sleep, seconds.")
@click.option("-l", "--loglevel", default="INFO", show_default=True, type=LOGLEVEL)
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
    logs.setup(loglevel, "text", TEXT_FORMAT)
    app = app_for(ctx, app_spec)
    service = Beat(app, max_loop_interval=max_interval, sync=app_spec is not None)
    sys.exit(run(service.run))


def _app(ctx: click.Context, app_spec: str | None) -> PgQueue:
    """The app given to the subcommand, else the one given to beat."""
    return app_for(ctx, app_spec or ctx.obj.get("beat_app"))


@beat.command("list")
@_app_option
@click.pass_context
def beat_list(ctx: click.Context, app_spec: str | None) -> None:
    """Show every periodic task: schedule, state, next and last run. A row beat cannot use
    (edited by hand) is shown as BROKEN, with the reason."""
    with connected(_app(ctx, app_spec)) as conn:
        entries = run(list_rows, conn)
    if not entries:
        click.echo("no periodic tasks")
        return
    header = ("NAME", "ENABLED", "SCHEDULE", "TASK", "NEXT RUN", "LAST RUN", "RUNS")
    rows = [
        (
            e.name,
            "yes" if e.enabled else "no",
            "BROKEN (see below)" if isinstance(e, BrokenEntry) else e.schedule.describe(),
            e.task,
            e.next_run_at.isoformat(timespec="seconds") if e.next_run_at else "-",
            e.last_run_at.isoformat(timespec="seconds") if e.last_run_at else "-",
            str(e.total_run_count),
        )
        for e in entries
    ]
    click.echo(table(header, rows))
    for e in entries:
        if isinstance(e, BrokenEntry):
            click.echo(
                f"BROKEN {e.name}: {e.reason}. Beat skips it; fix the row in "
                "pgqueue.periodic_tasks, or `pgqueue beat remove` it."
            )


def _json_option(value: str | None, what: str, kind: type) -> Any:
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
    if (cron is None) == (every is None):
        raise click.UsageError("give exactly one of --cron and --every")
    args = _json_option(args_json, "--args", list)
    kwargs = _json_option(kwargs_json, "--kwargs", dict)
    app = _app(ctx, app_spec)

    def new_entry() -> PeriodicEntry:
        zone = timezone or app.conf.timezone or "UTC"
        return PeriodicEntry(
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

    with connected(app) as conn:
        entry = run(new_entry)
        run(add_entry, conn, entry)
    click.echo(f"added {entry.name}: {entry.task} {entry.schedule.describe()}")


@beat.command("remove")
@click.argument("name")
@_app_option
@click.pass_context
def beat_remove(ctx: click.Context, name: str, app_spec: str | None) -> None:
    """Delete periodic task NAME."""
    with connected(_app(ctx, app_spec)) as conn:
        in_code = run(remove_entry, conn, name)
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
    with connected(_app(ctx, app_spec)) as conn:
        run(set_enabled, conn, name, True)
    click.echo(f"enabled {name}")


@beat.command("disable")
@click.argument("name")
@_app_option
@click.pass_context
def beat_disable(ctx: click.Context, name: str, app_spec: str | None) -> None:
    """Disable periodic task NAME (kept in the table; survives beat restarts)."""
    with connected(_app(ctx, app_spec)) as conn:
        run(set_enabled, conn, name, False)
    click.echo(f"disabled {name}")


@beat.command("run")
@click.argument("name")
@_app_option
@click.pass_context
def beat_run(ctx: click.Context, name: str, app_spec: str | None) -> None:
    """Send periodic task NAME's job now; its schedule is unchanged."""
    app = _app(ctx, app_spec)
    with connected(app) as conn:
        sent = run(run_now, app, conn, name)
    click.echo(f"sent {name} as job {sent.id}")
