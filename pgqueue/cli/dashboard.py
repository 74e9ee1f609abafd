"""``pgqueue dashboard``: the web dashboard (needs pgqueue-tasks[dashboard])."""

from __future__ import annotations

import secrets

import click

from .common import CliError, app_for, connected, ops_app_option


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(min=0, max=65535))
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Allow retry, revoke, purge, pause/resume and periodic-task changes (with the token).",
)
@click.option(
    "--token",
    envvar="PGQUEUE_DASHBOARD_TOKEN",
    help="Token actions need (default: $PGQUEUE_DASHBOARD_TOKEN, else a random one, printed).",
)
@click.option("--prefix", default="", help="Serve under this path, e.g. /queue (behind a proxy).")
@click.option(
    "--hide-args",
    "hide_args",
    multiple=True,
    metavar="PATTERN",
    help="Never show nor search the arguments of these tasks (glob, e.g. 'payments.*'); "
    "tasks declared @app.task(sensitive=True) in -A's app are hidden too.",
)
@click.option(
    "--refresh", default=2.0, show_default=True, type=click.FloatRange(min=0.2), help="Seconds."
)
@ops_app_option
@click.pass_context
def dashboard(
    ctx: click.Context,
    host: str,
    port: int,
    allow_actions: bool,
    token: str | None,
    prefix: str,
    hide_args: tuple[str, ...],
    refresh: float,
    app_spec: str | None,
) -> None:
    """Serve the web dashboard: queues, jobs, workers and periodic tasks, refreshing live.

    Read-only unless --allow-actions; actions then need the token. Connect it as a member
    of the operator role (`pgqueue roles`).
    """
    try:
        # Optional: Starlette, Jinja2 and uvicorn come with pgqueue-tasks[dashboard].
        from .. import dashboard as web
    except ImportError as exc:
        raise CliError(
            f"the dashboard needs its extra ({exc.name} is missing): "
            "pip install 'pgqueue-tasks[dashboard]'"
        ) from None
    app = app_for(ctx, app_spec)
    with connected(app):  # a wrong DSN or a missing schema: one line now, not per page
        pass
    if allow_actions and not token:
        token = secrets.token_urlsafe(18)
        click.echo(f"pgqueue: actions need this token (or set --token): {token}", err=True)
    dashboard_app = web.create_app(
        app,
        allow_actions=allow_actions,
        token=token if allow_actions else None,
        prefix=prefix,
        sensitive=hide_args,
        refresh=refresh,
    )
    if not web.is_loopback(host):
        click.echo(
            f"pgqueue: serving on {host}, beyond this machine: anyone who reaches the port "
            "sees the queue, arguments included; put it behind your own authentication",
            err=True,
        )
    mode = "actions on, with the token" if allow_actions else "read-only"
    click.echo(f"pgqueue dashboard ({mode}) on http://{host}:{port}{prefix}/", err=True)
    web.serve(dashboard_app, host, port)
