"""``pgqueue dev`` (the embedded Postgres server) and ``pgqueue demo``."""

from __future__ import annotations

import sys

import click

from .. import embedded
from ..db import ensure_database
from .common import CliError, run


@click.group()
def dev() -> None:
    """The embedded Postgres server for development (pip install 'pgqueue-tasks[embedded]').

    Commands without --dsn or PGQUEUE_DSN use it when no local server answers; it keeps its
    data under the user's data directory (PGQUEUE_EMBEDDED_DIR overrides) and runs until
    `pgqueue dev down`.
    """


_database_option = click.option(
    "-d", "--database", default="pgqueue", show_default=True, help="Database to create and use."
)


@dev.command("up")
@_database_option
def dev_up(database: str) -> None:
    """Start the server if needed, create the database, print its DSN."""
    info, started = run(embedded.start)
    run(ensure_database, info.server(), database)
    state = "started" if started else "already running"
    click.echo(f"embedded Postgres server {state} (pid {info.pid}, data in {info.data_dir})")
    click.echo(f"DSN: {info.server().dsn(database)}")


@dev.command("down")
def dev_down() -> None:
    """Stop the server (its data is kept for the next start)."""
    if run(embedded.stop):
        click.echo(f"stopped the embedded Postgres server (data kept in {embedded.data_dir()})")
    else:
        click.echo("the embedded Postgres server is not running")


@dev.command("status")
@_database_option
@click.pass_context
def dev_status(ctx: click.Context, database: str) -> None:
    """Whether the server runs: exit 0 (with its pid and DSN), else exit 3."""
    if not embedded.installed():
        raise CliError(f"the embedded Postgres server is not installed: {embedded.INSTALL_HINT}")
    info = run(embedded.running)
    if info is None:
        click.echo(f"the embedded Postgres server is not running (data dir {embedded.data_dir()})")
        ctx.exit(3)
    click.echo(f"embedded Postgres server running (pid {info.pid}, data in {info.data_dir})")
    click.echo(f"DSN: {info.server().dsn(database)}")


@dev.command("dsn")
@_database_option
def dev_dsn(database: str) -> None:
    """Print only the DSN, starting the server if needed.

    \b
    export PGQUEUE_DSN=$(pgqueue dev dsn)
    """
    info, started = run(embedded.start)
    if started:
        click.echo(f"pgqueue: started the embedded Postgres server (pid {info.pid})", err=True)
    run(ensure_database, info.server(), database)
    click.echo(info.server().dsn(database))


@click.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """A tour in seconds: queue tasks (one rolled back), run a worker and beat.

    Uses --dsn / PGQUEUE_DSN, else database pgqueue_demo on a local server, else on the
    embedded server.
    """
    # Imported here: importing pgqueue.demo creates its app and tasks, which would make it
    # the default app of every other command.
    from ..demo import run as run_demo

    sys.exit(run(run_demo, ctx.obj.get("dsn")))
