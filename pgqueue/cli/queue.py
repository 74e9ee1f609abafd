"""``pgqueue queue``: pause, resume, limit and list queues (pgqueue.queue_controls)."""

from __future__ import annotations

import click

from .. import queue_controls
from .common import json_flag, on_connection, ops_app_option
from .formatting import echo_json, table, when


@click.group()
def queue() -> None:
    """Pause, resume and limit queues for every worker, and list them."""


@queue.command()
@click.argument("name")
@json_flag
@ops_app_option
@click.pass_context
def pause(ctx: click.Context, name: str, as_json: bool, app_spec: str | None) -> None:
    """Pause queue NAME: workers claim nothing more from it (running jobs finish, enqueueing
    goes on) until `pgqueue queue resume NAME`. Kept in the database: survives restarts."""
    changed = on_connection(ctx, app_spec, queue_controls.pause_queue, name)
    if as_json:
        echo_json({"queue": name, "paused": True, "changed": changed})
    else:
        click.echo(f"paused {name}" if changed else f"{name} was paused already")


@queue.command()
@click.argument("name")
@json_flag
@ops_app_option
@click.pass_context
def resume(ctx: click.Context, name: str, as_json: bool, app_spec: str | None) -> None:
    """Resume queue NAME: idle workers consuming it are woken and claim at once."""
    changed = on_connection(ctx, app_spec, queue_controls.resume_queue, name)
    if as_json:
        echo_json({"queue": name, "paused": False, "changed": changed})
    else:
        click.echo(f"resumed {name}" if changed else f"{name} was not paused")


@queue.command()
@click.argument("name")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="At most this many of its jobs running at once, across all workers.",
)
@click.option("--rate", help='At most this many starts: "10/s", "100/m", "1000/h".')
@json_flag
@ops_app_option
@click.pass_context
def limit(
    ctx: click.Context,
    name: str,
    concurrency: int | None,
    rate: str | None,
    as_json: bool,
    app_spec: str | None,
) -> None:
    """Set queue NAME's limits for the whole cluster; a limit not given is cleared (no
    option: no limits). Tasks with limits of their own follow those."""
    changed = on_connection(
        ctx,
        app_spec,
        queue_controls.set_queue_limits,
        name,
        concurrency_limit=concurrency,
        rate_limit=rate,
    )
    if as_json:
        echo_json({"queue": name, "concurrency": concurrency, "rate": rate, "changed": changed})
    elif concurrency is None and rate is None:
        click.echo(f"{name}: no limits")
    else:
        given = [
            f"concurrency {concurrency}" if concurrency else "",
            f"rate {rate}" if rate else "",
        ]
        click.echo(f"{name}: {', '.join(g for g in given if g)}")


@queue.command(name="list")
@json_flag
@ops_app_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool, app_spec: str | None) -> None:
    """Queues: paused or running, since when and by whom, limits, ready and running jobs,
    workers."""
    found = on_connection(ctx, app_spec, queue_controls.list_queues)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no queues: none paused, no live jobs, no recent results, no live workers")
        return
    header = (
        "QUEUE",
        "STATE",
        "SINCE",
        "BY",
        "CONCURRENCY",
        "RATE/s",
        "READY",
        "RUNNING",
        "WORKERS",
    )
    rows = [
        (
            q.name,
            "PAUSED" if q.paused else "running",
            when(q.changed_at),
            q.changed_by or "-",
            str(q.concurrency_limit or "-"),
            f"{q.rate_limit:g}" if q.rate_limit else "-",
            f"{q.ready:,}",
            f"{q.running:,}",
            str(q.workers),
        )
        for q in found
    ]
    click.echo(table(header, rows))
