"""What every command shares: the app of ``-A`` on the database of ``--dsn``, a fresh
connection to it, and one line (exit 1) for any error the library raises."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
import psycopg

from ..app import PgQueue
from ..db import describe_error, find_dsn
from ..exceptions import ConfigurationError, PgQueueError

T = TypeVar("T")

LOGLEVEL = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)


class CliError(click.ClickException):
    """One clear line and exit code 1, never a traceback."""


def load_app(spec: str) -> PgQueue:
    """Import ``module:attribute`` (or ``module``, finding its PgQueue app)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r} given by -A/--app: {exc}") from None
    if attr:
        try:
            app = getattr(module, attr, None)
        except Exception as exc:  # an app built on first use (pgqueue.contrib.django:app)
            raise CliError(f"cannot get {spec!r} given by -A/--app: {exc}") from None
        if not isinstance(app, PgQueue):
            raise CliError(f"{module_name!r} has no PgQueue app named {attr!r}")
        return app
    found = [v for v in vars(module).values() if isinstance(v, PgQueue)]
    if len(found) != 1:
        raise CliError(
            f"found {len(found)} PgQueue apps in {module_name!r}; name one: -A {module_name}:app"
        )
    return found[0]


def app_for(ctx: click.Context, spec: str | None) -> PgQueue:
    """The app of ``-A`` (or a bare one) on --dsn / PGQUEUE_DSN, else on the DSN the app was
    given in code, else on a local or the embedded server's ``pgqueue`` database."""
    app = load_app(spec) if spec else PgQueue()
    if ctx.obj.get("dsn") or not _has_dsn(app):
        app.use_dsn(dsn_for(ctx))
    return app


def _has_dsn(app: PgQueue) -> bool:
    """Whether the code (or PGQUEUE_DSN) gave the app a DSN: ``app.dsn`` raises if not."""
    try:
        return bool(app.dsn)
    except ConfigurationError:
        return False


def dsn_for(ctx: click.Context) -> str:
    """The one place commands get a DSN from (pgqueue.db.find_dsn); says which on stderr."""
    found = ctx.obj.get("found")
    if found is None:
        found = ctx.obj["found"] = run(find_dsn, ctx.obj.get("dsn"))
        if found.note:
            click.echo(f"pgqueue: {found.note}", err=True)
            # Subprocesses and task code that read PGQUEUE_DSN see the same database.
            os.environ["PGQUEUE_DSN"] = found.dsn
    return str(found.dsn)


def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, with the library's errors and refused statements as one line."""
    try:
        return fn(*args, **kwargs)
    except PgQueueError as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:
        if getattr(exc, "sqlstate", None) == "42501":  # insufficient_privilege
            first_line = str(exc).strip().splitlines()[0]
            raise CliError(
                f"{first_line}: the database role of this DSN may not do this (`pgqueue roles` "
                "says what the producer, worker, operator and owner roles may do)"
            ) from None
        if isinstance(exc, psycopg.Error):
            # A statement the server refused (a timeout, a lock it could not get...).
            raise CliError(f"the database refused a statement: {describe_error(exc)}") from None
        raise


@contextlib.contextmanager
def connected(app: PgQueue) -> Iterator[psycopg.Connection[Any]]:
    """A fresh connection to the app's database, closed on leaving."""
    conn = run(app.connect)
    try:
        yield conn
    finally:
        conn.close()


def on_connection(
    ctx: click.Context, app_spec: str | None, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """``fn(conn, ...)`` on a fresh connection to the database of --dsn (or -A's app)."""
    with connected(app_for(ctx, app_spec)) as conn:
        return run(fn, conn, *args, **kwargs)


# -- operations: status, jobs, inspect, result, purge, retry, revoke, workers ---------------
# Human tables by default, --json for scripts. Exit codes: 0 done; 1 an error (database,
# schema, a refused operation, a declined prompt); 2 a usage error; 3 an id names no job, or
# some named job could not be acted on; `result` also 4: not finished yet, 5: finished
# without success (FAILURE, REVOKED, IGNORED).

EXIT_NOT_FOUND = 3
EXIT_NOT_READY = 4
EXIT_UNSUCCESSFUL = 5

json_flag = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
ops_app_option = click.option("-A", "--app", "app_spec", help="module:app (for its DSN).")
