"""``pgqueue queue``: pause, resume and list queues (pgqueue.pausing)."""

from __future__ import annotations

import click

from .. import pausing
from .common import json_flag, on_connection, ops_app_option
from .formatting import echo_json, table, when


@click.group()
def queue() -> None:
    """Pause and resume queues for every worker, and list them."""


@queue.command()
@click.argument("name")
@json_flag
@ops_app_option
@click.pass_context
def pause(ctx: click.Context, name: str, as_json: bool, app_spec: str | None) -> None:
    """Pause queue NAME: workers claim nothing more from it (running jobs finish, enqueueing
    goes on) until `pgqueue queue resume NAME`. Kept in the database: survives restarts."""
    changed = on_connection(ctx, app_spec, pausing.pause_queue, name)
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
    changed = on_connection(ctx, app_spec, pausing.resume_queue, name)
    if as_json:
        echo_json({"queue": name, "paused": False, "changed": changed})
    else:
        click.echo(f"resumed {name}" if changed else f"{name} was not paused")


@queue.command(name="list")
@json_flag
@ops_app_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool, app_spec: str | None) -> None:
    """Queues: paused or running, since when and by whom, ready and running jobs, workers."""
    found = on_connection(ctx, app_spec, pausing.list_queues)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no queues: none paused, no live jobs, no recent results, no live workers")
        return
    header = ("QUEUE", "STATE", "SINCE", "BY", "READY", "RUNNING", "WORKERS")
    rows = [
        (
            q.name,
            "PAUSED" if q.paused else "running",
            when(q.changed_at),
            q.changed_by or "-",
            f"{q.ready:,}",
            f"{q.running:,}",
            str(q.workers),
        )
        for q in found
    ]
    click.echo(table(header, rows))
