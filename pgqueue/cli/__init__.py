"""The ``pgqueue`` command. Thin: parse options, call the library, print.

One module per family of commands: :mod:`.worker`, :mod:`.beat` (and its table-editing
subcommands), :mod:`.dev` (the embedded server, the demo), :mod:`.admin` (commands that
change the database), :mod:`.monitor` (commands that only read), :mod:`.queue` (pause,
resume, list); :mod:`.common` holds what they share (the app of -A on the database of
--dsn, errors as one line) and :mod:`.formatting` how they print; :mod:`.dashboard` serves
the web dashboard.
"""

from __future__ import annotations

import click

from ..version import __version__
from . import admin, beat, celery, dashboard, dev, monitor, queue, worker
from .common import load_app


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pgqueue")
@click.option(
    "--dsn",
    envvar="PGQUEUE_DSN",
    help="Postgres DSN (default: $PGQUEUE_DSN, else database pgqueue on a local server, "
    "else on the embedded server: see `pgqueue dev`).",
)
@click.pass_context
def main(ctx: click.Context, dsn: str | None) -> None:
    """pgqueue: a Celery-style task queue on PostgreSQL."""
    ctx.ensure_object(dict)
    ctx.obj["dsn"] = dsn


for command in (
    worker.worker,
    beat.beat,
    dev.dev,
    dev.demo,
    admin.migrate,
    admin.roles,
    admin.purge,
    admin.retry,
    admin.revoke,
    queue.queue,
    monitor.status,
    monitor.workers,
    monitor.jobs,
    monitor.inspect,
    monitor.result,
    celery.check_celery_config,
    dashboard.dashboard,
):
    main.add_command(command)

__all__ = ["load_app", "main"]
