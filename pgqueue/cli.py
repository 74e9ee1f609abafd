"""The ``pgqueue`` command. Thin: parse options, call the library, print."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    """The app of ``-A`` (or a bare one) on --dsn / PGQUEUE_DSN, else on the DSN the app was
    given in code, else on a local or the embedded server's ``pgqueue`` database."""
    from .app import PgQueue

    app = load_app(spec) if spec else PgQueue()
    if ctx.obj.get("dsn") or app._dsn is None:
        dsn = _dsn_for(ctx)
        app._dsn = dsn
        app._connections._dsn = dsn
    return app


def _dsn_for(ctx: click.Context) -> str:
    """The one place commands get a DSN from (pgqueue.db.find_dsn); says which on stderr."""
    from .db import find_dsn

    found = ctx.obj.get("found")
    if found is None:
        found = ctx.obj["found"] = _run(find_dsn, ctx.obj.get("dsn"))
        if found.note:
            click.echo(f"pgqueue: {found.note}", err=True)
            # Subprocesses and task code that read PGQUEUE_DSN see the same database.
            os.environ["PGQUEUE_DSN"] = found.dsn
    return str(found.dsn)


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    import psycopg

    from .db import describe_error
    from .exceptions import PgQueueError

    try:
        return fn(*args, **kwargs)
    except PgQueueError as exc:
        raise _CliError(str(exc)) from None
    except Exception as exc:
        if getattr(exc, "sqlstate", None) == "42501":  # insufficient_privilege
            first_line = str(exc).strip().splitlines()[0]
            raise _CliError(
                f"{first_line}: the database role of this DSN may not do this (`pgqueue roles` "
                "says what the producer, worker, operator and owner roles may do)"
            ) from None
        if isinstance(exc, psycopg.Error):
            # A statement the server refused (a timeout, a lock it could not get...).
            raise _CliError(f"the database refused a statement: {describe_error(exc)}") from None
        raise


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
@click.option(
    "--prefix",
    default="pgqueue",
    show_default=True,
    help="Role names: PREFIX_owner, PREFIX_producer, PREFIX_worker, PREFIX_operator.",
)
@click.option(
    "--apply",
    "apply_now",
    is_flag=True,
    help="Run it on the database (as a superuser) instead of printing it.",
)
@click.option("-A", "--app", "app_spec", help="module:app, for its DSN (optional).")
@click.pass_context
def roles(ctx: click.Context, prefix: str, apply_now: bool, app_spec: str | None) -> None:
    """Least-privilege roles for producers, workers, operators and the schema's owner.

    Prints sql/roles.sql (for a DBA, or `| psql -1 -f -`); with --apply, runs it. Either
    way it may be run again: it keeps existing roles and resets their privileges. After
    it, `pgqueue migrate` runs as the owner role and grants what new migrations create.
    """
    from . import roles as role_setup

    if not apply_now:
        click.echo(_run(role_setup.script, prefix), nl=False)
        return
    app = _app_for(ctx, app_spec)
    conn = _run(app.connect)
    try:
        names = _run(role_setup.apply, conn, prefix)
    finally:
        conn.close()
    owner = names["owner"]
    click.echo(f"roles ready: {', '.join(names.values())} (schema pgqueue owned by {owner})")
    click.echo(
        f"next, a login per component, e.g.: CREATE ROLE shop_web LOGIN PASSWORD '...' "
        f"IN ROLE {names['producer']};"
    )


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
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
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
    from . import logs
    from .beat import Beat
    from .worker import Worker

    logs.setup(loglevel, log_format)
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
    metrics_server = _serve_metrics(w, metrics_host, metrics_port)
    beat_service = _run(Beat(app).start) if embed_beat else None
    try:
        code = _run(w.run)
    finally:
        if beat_service is not None:
            beat_service.stop()
        if metrics_server is not None:
            metrics_server.stop()
    sys.exit(code)


def _serve_metrics(w: Any, addr: str, port: int | None) -> Any:
    if port is None:
        return None
    try:
        from . import metrics
    except ImportError:
        raise _CliError(
            "--metrics-port needs prometheus-client: pip install 'pgqueue[metrics]'"
        ) from None
    try:
        return metrics.serve(w, port, addr)
    except OSError as exc:
        raise _CliError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}") from None


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
    """Show every periodic task: schedule, state, next and last run. A row beat cannot use
    (edited by hand) is shown as BROKEN, with the reason."""
    from .beat import BrokenEntry, list_rows

    entries = _beat_edit(ctx, app_spec, lambda app, conn: list_rows(conn))
    if not entries:
        click.echo("no periodic tasks")
        return
    rows = [("NAME", "ENABLED", "SCHEDULE", "TASK", "NEXT RUN", "LAST RUN", "RUNS")]
    broken = []
    for e in entries:
        if isinstance(e, BrokenEntry):
            broken.append(e)
        rows.append(
            (
                e.name,
                "yes" if e.enabled else "no",
                "BROKEN (see below)" if isinstance(e, BrokenEntry) else e.schedule.describe(),
                e.task,
                e.next_run_at.isoformat(timespec="seconds") if e.next_run_at else "-",
                e.last_run_at.isoformat(timespec="seconds") if e.last_run_at else "-",
                str(e.total_run_count),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    for e in broken:
        click.echo(
            f"BROKEN {e.name}: {e.reason}. Beat skips it; fix the row in "
            "pgqueue.periodic_tasks, or `pgqueue beat remove` it."
        )


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


@main.group()
def dev() -> None:
    """The embedded Postgres server for development (pip install 'pgqueue[embedded]').

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
    from . import embedded
    from .db import ensure_database

    info, started = _run(embedded.start)
    _run(ensure_database, info.server(), database)
    state = "started" if started else "already running"
    click.echo(f"embedded Postgres server {state} (pid {info.pid}, data in {info.data_dir})")
    click.echo(f"DSN: {info.server().dsn(database)}")


@dev.command("down")
def dev_down() -> None:
    """Stop the server (its data is kept for the next start)."""
    from . import embedded

    if _run(embedded.stop):
        click.echo(f"stopped the embedded Postgres server (data kept in {embedded.data_dir()})")
    else:
        click.echo("the embedded Postgres server is not running")


@dev.command("status")
@_database_option
@click.pass_context
def dev_status(ctx: click.Context, database: str) -> None:
    """Whether the server runs: exit 0 (with its pid and DSN), else exit 3."""
    from . import embedded

    if not embedded.installed():
        raise _CliError(f"the embedded Postgres server is not installed: {embedded.INSTALL_HINT}")
    info = _run(embedded.running)
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
    from . import embedded
    from .db import ensure_database

    info, started = _run(embedded.start)
    if started:
        click.echo(f"pgqueue: started the embedded Postgres server (pid {info.pid})", err=True)
    _run(ensure_database, info.server(), database)
    click.echo(info.server().dsn(database))


@main.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """A tour in seconds: queue tasks (one rolled back), run a worker and beat.

    Uses --dsn / PGQUEUE_DSN, else database pgqueue_demo on a local server, else on the
    embedded server.
    """
    from .demo import run

    sys.exit(_run(run, ctx.obj.get("dsn")))


# -- operations: status, jobs, inspect, result, purge, retry, revoke, workers ---------------
# Human tables by default, --json for scripts. Exit codes: 0 done; 1 an error (database,
# schema, a refused operation, a declined prompt); 2 a usage error; 3 an id names no job, or
# some named job could not be acted on; `result` also 4: not finished yet, 5: finished
# without success (FAILURE, REVOKED, IGNORED).

EXIT_NOT_FOUND = 3
EXIT_NOT_READY = 4
EXIT_UNSUCCESSFUL = 5

_json_flag = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
_ops_app_option = click.option("-A", "--app", "app_spec", help="module:app (for its DSN).")


def _ops(ctx: click.Context, app_spec: str | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(conn, ...)`` on a fresh connection to the database of --dsn (or -A's app)."""
    app = _app_for(ctx, app_spec)
    conn = _run(app.connect)
    try:
        return _run(fn, conn, *args, **kwargs)
    finally:
        conn.close()


def _json_default(value: Any) -> Any:
    import dataclasses
    import datetime as dt
    import decimal
    import uuid

    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _echo_json(value: Any, *, compact: bool = False) -> None:
    import json

    click.echo(json.dumps(value, default=_json_default, indent=None if compact else 2))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    table = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table
    )


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def _seconds(value: float | None) -> str:
    """A duration for people: 0.25s, 42s, 3m05s, 2h10m, 4d3h."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}s"
    whole = int(value)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600}h"


def _ago(value: Any) -> str:
    import datetime as dt

    if value is None:
        return "-"
    return _seconds(max(0.0, (dt.datetime.now(dt.timezone.utc) - value).total_seconds())) + " ago"


def _error(exc_type: str | None, exc_message: str | None, width: int = 60) -> str:
    if not exc_type:
        return ""
    text = f"{exc_type.rsplit('.', 1)[-1]}: {exc_message or ''}".replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


@contextlib.contextmanager
def _progress(total: int, verb: str) -> Iterator[Callable[[int], None]]:
    """Progress of a batched operation on stderr: a bar on a terminal, else a count per
    batch (for logs)."""
    if sys.stderr.isatty():
        with click.progressbar(length=total, label=verb, file=sys.stderr, show_pos=True) as bar:
            yield bar.update
        return
    done = 0

    def count(n: int) -> None:
        nonlocal done
        done += n
        click.echo(f"{verb}: {done:,}/{total:,}", err=True)

    yield count


def _parse_since(value: str | None) -> Any:
    """``30m``, ``2h``, ``1d`` (s, m, h, d, w) as a timedelta, or an ISO 8601 time
    (naive: UTC)."""
    import datetime as dt
    import re

    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value)
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
        return dt.timedelta(**{unit[match.group(2)]: float(match.group(1))})
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            "give an age such as 30m, 2h or 1d, or a time such as 2026-01-31T12:00",
            param_hint="--since",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _report_skipped(report: Any, as_json: bool, verb: str) -> None:
    if as_json:
        _echo_json({verb: report.done, "skipped": report.skipped})
    else:
        for job_id in report.done:
            click.echo(f"{verb} {job_id}")
    for job_id, why in report.skipped.items():
        click.echo(f"not {verb} {job_id}: {why}", err=True)
    if report.skipped:
        sys.exit(EXIT_NOT_FOUND)


@main.command()
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option(
    "-n",
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@_json_flag
@_ops_app_option
@click.pass_context
def status(
    ctx: click.Context, watch: bool, interval: float, as_json: bool, app_spec: str | None
) -> None:
    """Per queue: ready, scheduled, retrying, reserved and running jobs, failures and
    successes in the last hour, lag (age of the oldest ready job), and jobs no live worker
    can run: the pgqueue.queue_stats view. --watch --json prints one JSON line per refresh."""
    import datetime as dt
    import time

    from . import ops

    app = _app_for(ctx, app_spec)
    conn = _run(app.connect)
    try:
        while True:
            stats = _run(ops.queue_stats, conn)
            if as_json:
                _echo_json(stats, compact=watch)
            else:
                unserved = _run(ops.unserved_tasks, conn)
                if watch:
                    click.clear()
                    now = dt.datetime.now().astimezone().isoformat(timespec="seconds")
                    click.echo(f"Every {interval:g}s: pgqueue status    {now}\n")
                click.echo(_status_table(stats))
                if unserved:
                    click.echo(_unserved_table(unserved))
            if not watch:
                return
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return
    finally:
        conn.close()


def _status_table(stats: list[Any]) -> str:
    if not stats:
        return "no queues: no live jobs, no results in the last hour, no live workers"
    header = (
        "QUEUE",
        "READY",
        "SCHEDULED",
        "RETRYING",
        "RESERVED",
        "RUNNING",
        "FAILED/1h",
        "SUCCEEDED/1h",
        "LAG",
        "UNREGISTERED",
        "WORKERS",
    )
    rows = [
        (
            s.queue,
            f"{s.ready:,}",
            f"{s.scheduled:,}",
            f"{s.retrying:,}",
            f"{s.reserved:,}",
            f"{s.running:,}",
            f"{s.failed_last_hour:,}",
            f"{s.succeeded_last_hour:,}",
            _seconds(s.lag),
            f"{s.unregistered:,}",
            str(s.workers),
        )
        for s in stats
    ]
    return _table(header, rows)


def _unserved_table(unserved: list[Any]) -> str:
    rows = [(u.queue, u.task_name, f"{u.jobs:,}") for u in unserved]
    return (
        "\nNo live worker runs these tasks (their jobs wait until a worker that imports the "
        "task and consumes the queue starts):\n" + _table(("QUEUE", "TASK", "JOBS"), rows)
    )


_ALL_STATES = ("PENDING", "RETRY", "STARTED", "SUCCESS", "FAILURE", "REVOKED", "IGNORED")


@main.command()
@click.option(
    "-s",
    "--state",
    "states",
    multiple=True,
    type=click.Choice(_ALL_STATES, case_sensitive=False),
    help="Repeatable (default: the live states PENDING, RETRY, STARTED).",
)
@click.option("-Q", "--queue", help="Only this queue.")
@click.option("-t", "--task", help="Only this task name.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=50, show_default=True)
@_json_flag
@_ops_app_option
@click.pass_context
def jobs(
    ctx: click.Context,
    states: tuple[str, ...],
    queue: str | None,
    task: str | None,
    limit: int,
    as_json: bool,
    app_spec: str | None,
) -> None:
    """List jobs: live ones next due first, then finished ones newest first."""
    from . import ops

    found = _ops(ctx, app_spec, ops.list_jobs, states=states, queue=queue, task=task, limit=limit)
    if as_json:
        _echo_json(found)
        return
    if not found:
        click.echo("no jobs")
        return
    header = ("ID", "TASK", "QUEUE", "STATE", "RETRIES", "RUN AT / DONE", "WORKER", "ERROR")
    rows = [
        (
            j.id,
            j.task_name,
            j.queue,
            j.state,
            str(j.retries),
            _when(j.date_done or j.run_at),
            j.worker or "-",
            _error(j.exc_type, j.exc_message),
        )
        for j in found
    ]
    click.echo(_table(header, rows))


@main.command()
@click.argument("job_id", metavar="ID", type=click.UUID)
@_json_flag
@_ops_app_option
@click.pass_context
def inspect(ctx: click.Context, job_id: Any, as_json: bool, app_spec: str | None) -> None:
    """Everything about one job: its row, its worker, its result or error and traceback."""
    from . import ops

    found = _ops(ctx, app_spec, ops.inspect, str(job_id))
    if found is None:
        click.echo(f"no job or result with id {job_id}", err=True)
        sys.exit(EXIT_NOT_FOUND)
    if as_json:
        _echo_json(found)
        return
    _echo_fields(found)


def _echo_fields(found: dict[str, Any]) -> None:
    import json

    trace = found.get("traceback")
    fields = {k: v for k, v in found.items() if k != "traceback"}
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, list | dict) or key == "result":
            text = json.dumps(value, default=_json_default)
        elif hasattr(value, "isoformat"):
            text = value.isoformat()
        else:
            text = str(value)
        click.echo(f"{key.ljust(width)}  {text}")
    if trace:
        click.echo("traceback:")
        click.echo(trace.rstrip())


@main.command()
@click.argument("job_id", metavar="ID", type=click.UUID)
@click.option(
    "--timeout", type=click.FloatRange(min=0), help="Wait up to this many seconds for it."
)
@_json_flag
@_ops_app_option
@click.pass_context
def result(
    ctx: click.Context, job_id: Any, timeout: float | None, as_json: bool, app_spec: str | None
) -> None:
    """Print a task's return value (JSON). Exit 0: SUCCESS; 3: no such job; 4: not finished
    (yet, or within --timeout); 5: FAILURE, REVOKED or IGNORED (the error on stderr)."""
    from . import ops
    from .exceptions import TimeoutError as WaitTimeout
    from .result import AsyncResult

    def wait(app: Any) -> None:
        with contextlib.suppress(WaitTimeout):
            AsyncResult(str(job_id), app=app).get(timeout=timeout, propagate=False)

    if timeout:
        app = _app_for(ctx, app_spec)
        try:
            _run(wait, app)
        finally:
            app.close()
    found = _ops(ctx, app_spec, ops.inspect, str(job_id))
    if found is None:
        click.echo(f"no job or result with id {job_id}", err=True)
        sys.exit(EXIT_NOT_FOUND)
    state = found["state"]
    if as_json:
        keys = ("id", "task_name", "state", "result", "exc_type", "exc_message", "traceback")
        _echo_json({k: found.get(k) for k in keys} | {"date_done": found.get("date_done")})
    elif state == "SUCCESS":
        _echo_json(found["result"], compact=True)
    else:
        line = f"task {job_id} is {state}"
        if found.get("exc_type"):
            line += f": {found['exc_type']}: {found.get('exc_message') or ''}"
        click.echo(line, err=True)
        if state == "FAILURE" and found.get("traceback"):
            click.echo(found["traceback"].rstrip(), err=True)
    if state in ("PENDING", "STARTED", "RETRY"):
        sys.exit(EXIT_NOT_READY)
    if state != "SUCCESS":
        sys.exit(EXIT_UNSUCCESSFUL)


def _queue_list(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(q.strip() for v in values for q in v.split(",") if q.strip())


@main.command()
@click.option("-Q", "--queue", "queues", multiple=True, help="Queue(s), repeatable or a,b.")
@click.option("-t", "--task", help="Only this task name.")
@click.option(
    "-s",
    "--state",
    "states",
    multiple=True,
    type=click.Choice(["PENDING", "RETRY", "STARTED"], case_sensitive=False),
    help="PENDING and/or RETRY (default: both). Running jobs are never purged.",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@_json_flag
@_ops_app_option
@click.pass_context
def purge(
    ctx: click.Context,
    queues: tuple[str, ...],
    task: str | None,
    states: tuple[str, ...],
    yes: bool,
    as_json: bool,
    app_spec: str | None,
) -> None:
    """Delete queued jobs (all queues unless -Q), after asking unless --yes.

    Only jobs no worker has claimed are deleted: running and claimed (prefetched) jobs are
    left to finish; stop those with `pgqueue revoke --terminate`. Deleted jobs leave no
    result (their AsyncResult stays PENDING). Deletes in batches of 5,000, one transaction
    each, showing progress.
    """
    from . import ops

    selection = _run(
        ops.JobFilter,
        queues=_queue_list(queues),
        task=task,
        states=tuple(s.upper() for s in states) or ops.PURGEABLE_STATES,
    )
    app = _app_for(ctx, app_spec)
    conn = _run(app.connect)
    try:
        count = _run(ops.count_purgeable, conn, selection)
        if count and not yes:
            where = f" in {', '.join(selection.queues)}" if selection.queues else ""
            of = f" of {task}" if task else ""
            click.confirm(
                f"Delete {count:,} queued job(s){of}{where} ({'/'.join(selection.states)})?",
                abort=True,
                err=True,
            )
        purged = 0
        if count:
            with _progress(count, "purged") as progress:
                purged = _run(ops.purge, conn, selection, progress=progress)
    finally:
        conn.close()
    if as_json:
        _echo_json({"purged": purged})
    else:
        click.echo(f"purged {purged:,} job(s)" if purged else "nothing to purge")


@main.command()
@click.argument("ids", nargs=-1, type=click.UUID)
@click.option("--failed", is_flag=True, help="Retry every FAILURE result the filters match.")
@click.option(
    "--revoked", is_flag=True, help="Retry REVOKED jobs too (the given ids, or all matching)."
)
@click.option("-Q", "--queue", help="Only this queue.")
@click.option("-t", "--task", help="Only this task name.")
@click.option("--since", help="Only jobs that finished within this age (30m, 2h, 1d) or time.")
@_json_flag
@_ops_app_option
@click.pass_context
def retry(
    ctx: click.Context,
    ids: tuple[Any, ...],
    failed: bool,
    revoked: bool,
    queue: str | None,
    task: str | None,
    since: str | None,
    as_json: bool,
    app_spec: str | None,
) -> None:
    """Queue failed jobs again: `retry ID...` or `retry --failed [-Q Q] [--since 1h]`.

    Only FAILURE results (and REVOKED ones with --revoked) can be retried: they keep their
    arguments. Each becomes a queued job under the same id, so AsyncResult(id) follows the
    new run, at priority 0 with the task's own limits and a fresh retry budget.
    Bulk retries run in batches of 5,000, showing progress. Exit 3 when a given id could
    not be retried (the reason is on stderr).
    """
    from . import ops

    if ids:
        retry_states = ("FAILURE", "REVOKED") if revoked else ("FAILURE",)
        report = _ops(
            ctx, app_spec, ops.retry_ids, [str(i) for i in ids], retry_states=retry_states
        )
        _report_skipped(report, as_json, "retried")
        return
    if not (failed or revoked):
        raise click.UsageError("name job ids, or use --failed (and/or --revoked) to retry all")
    selection = _run(
        ops.ResultFilter,
        states=tuple(s for s, on in (("FAILURE", failed), ("REVOKED", revoked)) if on),
        queue=queue,
        task=task,
        since=_parse_since(since),
    )
    app = _app_for(ctx, app_spec)
    conn = _run(app.connect)
    try:
        plan = _run(ops.plan_retry, conn, selection)
        retried = 0
        if plan.count:
            with _progress(plan.count, "retried") as progress:
                retried = _run(ops.retry_results, conn, plan, progress=progress)
    finally:
        conn.close()
    if as_json:
        _echo_json({"retried": retried})
    else:
        click.echo(f"requeued {retried:,} job(s)" if retried else "nothing to retry")


@main.command()
@click.argument("ids", nargs=-1, required=True, type=click.UUID)
@click.option(
    "--terminate",
    is_flag=True,
    help="Stop running jobs too (prefork kills the child; other pools discard the outcome).",
)
@_json_flag
@_ops_app_option
@click.pass_context
def revoke(
    ctx: click.Context, ids: tuple[Any, ...], terminate: bool, as_json: bool, app_spec: str | None
) -> None:
    """Revoke jobs: a queued, scheduled or claimed job never runs and ends REVOKED; a
    running one only with --terminate. Exit 3 when a given id was not revoked (why is on
    stderr: finished, running without --terminate, or unknown)."""
    from . import ops

    app = _app_for(ctx, app_spec)
    try:
        report = _run(ops.revoke, app, [str(i) for i in ids], terminate=terminate)
    finally:
        app.close()
    _report_skipped(report, as_json, "revoked")


@main.command()
@_json_flag
@_ops_app_option
@click.pass_context
def workers(ctx: click.Context, as_json: bool, app_spec: str | None) -> None:
    """Registered workers: host, pid, queues, pool, running and done jobs, heartbeat, and
    whether each is alive (the pgqueue.worker_status view)."""
    from . import ops

    found = _ops(ctx, app_spec, ops.worker_status)
    if as_json:
        _echo_json(found)
        return
    if not found:
        click.echo("no workers")
        return
    header = (
        "NAME",
        "HOST",
        "PID",
        "QUEUES",
        "POOL",
        "CONCURRENCY",
        "RUNNING",
        "DONE",
        "STARTED",
        "HEARTBEAT",
        "ALIVE",
    )
    rows = [
        (
            w.name,
            w.hostname,
            str(w.pid),
            ",".join(w.queues),
            w.pool,
            str(w.concurrency),
            str(w.running),
            f"{w.jobs_done:,}",
            _when(w.started_at),
            _ago(w.heartbeat_at),
            "yes" if w.alive else "NO",
        )
        for w in found
    ]
    click.echo(_table(header, rows))


if __name__ == "__main__":
    main()
