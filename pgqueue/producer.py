"""Writing jobs: the producer path behind ``app.send_task``, ``app.enqueue_many`` and
``app.transaction``, on the caller's connection (the job exists only if its transaction
commits) or on the app's own autocommit connection (replaced once if found broken).

The caller's connection is, in this order: ``connection=``; the one of the innermost
``with app.transaction(conn):``; what ``app.connection_provider`` returns (the Django app
sets it to Django's connection). With none of them, the app's own connection.

The rows come from jobrows.py; this module only sends them.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import psycopg
import psycopg.errors

from . import binding, jobrows, queries, tracing
from .contrib import sqlalchemy
from .db import translate_errors
from .exceptions import DatabaseUnavailable
from .result import AsyncResult
from .serialization import check_size, dumps_args

if TYPE_CHECKING:
    from .app import PgQueue
    from .canvas import Signature


class DBAPIConnection(Protocol):
    """A blocking DB-API 2 connection of another driver (psycopg2, ...): pgqueue opens a
    cursor on it, runs one INSERT and closes the cursor."""

    def cursor(self) -> Any: ...


class DBAPICursor(Protocol):
    """A blocking DB-API 2 cursor of another driver: pgqueue runs one INSERT on it."""

    def execute(self, operation: Any, parameters: Any = ..., /) -> Any: ...


# What ``connection=`` accepts. Other drivers' objects are described by what pgqueue calls
# on them; check_connection refuses, at run time, the ones that would not write the job
# (async connections, server-side cursors).
ProducerConnection = psycopg.Connection[Any] | psycopg.Cursor[Any] | DBAPIConnection | DBAPICursor
ConnectionT = TypeVar("ConnectionT", bound=ProducerConnection)

# Jobs per statement of enqueue_many on pgqueue's own connection.
ENQUEUE_CHUNK = 1000


def send(
    app: PgQueue,
    name: str,
    args: Any,
    kwargs: Any,
    options: dict[str, Any],
    connection: ProducerConnection | None,
) -> AsyncResult:
    """Write one job (``app.send_task``)."""
    target = caller_connection(app, connection)
    with tracing.publish(name) as span:
        job_id, document, statement = jobrows.call_document(
            app, name, args, kwargs, options, span.carrier if span else None
        )
        rows = _execute(app, queries.get(statement), {"jobs": document}, target)
        if statement == jobrows.UNIQUE_STATEMENT:
            job_id = rows[0][0]  # the id of the job holding the key, which may be another's
        if span:
            span.written(job_id)
    return AsyncResult(job_id, app=app, task_name=name)


def send_workflow(
    app: PgQueue, params: Mapping[str, str], connection: ProducerConnection | None
) -> None:
    """Write a workflow (canvas.py, workflow.Plan) in one statement: all or nothing, on the
    caller's connection even in autocommit."""
    target = caller_connection(app, connection)
    _execute(app, queries.get("enqueue_workflow"), params, target)


def enqueue_many(
    app: PgQueue, signatures: Iterable[Signature], connection: ProducerConnection | None
) -> list[AsyncResult]:
    """Write many jobs, all or none (``app.enqueue_many``)."""
    with tracing.publish("enqueue_many") as span:
        return _enqueue_many(app, signatures, connection, span.carrier if span else None)


def _enqueue_many(
    app: PgQueue,
    signatures: Iterable[Signature],
    connection: ProducerConnection | None,
    trace: dict[str, str] | None,
) -> list[AsyncResult]:
    results: list[AsyncResult] = []
    target = caller_connection(app, connection)
    if target is not None:
        # The caller's connection may be in autocommit (or not psycopg 3 at all): one
        # statement keeps the batch all or nothing there too.
        jobs, document = jobrows.batch_document(app, signatures, trace)
        ids = [j["id"] for j in jobs]
        if document is not None:
            # One statement for all, so a batch with unique keys is all or nothing too.
            statement = jobrows.statement(jobs)
            with translate_errors():
                written = _execute_on(target, queries.get(statement), {"jobs": document})
            if statement == jobrows.UNIQUE_STATEMENT:
                ids = [r[0] for r in written]
        return [
            AsyncResult(i, app=app, task_name=j["task_name"])
            for i, j in zip(ids, jobs, strict=True)
        ]

    clocked: list[dict[str, Any]] = []  # jobs whose times (or keys) the database works out
    names: dict[str, str] = {}  # their task names
    limit = app.conf.task_max_payload_size

    def rows() -> Iterator[tuple[Any, ...]]:
        for job_id, sig, columns, fixed in jobrows.plan(app, signatures, trace):
            results.append(AsyncResult(job_id, app=app, task_name=sig.task))
            if fixed is None:
                clocked.append(jobrows.job(job_id, sig.args, sig.kwargs, columns))
                names[job_id] = sig.task
            else:
                args_json, kwargs_json = dumps_args(sig.task, sig.args, sig.kwargs)
                check_size(sig.task, "its arguments", len(args_json) + len(kwargs_json), limit)
                yield (job_id, sig.task, args_json, kwargs_json, *fixed)

    copied: list[tuple[Any, ...]] = []
    pending = rows()
    for attempt in (1, 2):
        conn = app._connections.get()
        try:
            with translate_errors(), conn.transaction():
                # Rows go out while the next are encoded: the server inserts as we go.
                with conn.cursor() as cur, cur.copy(queries.get("copy_jobs")) as copy:
                    for row in copied:
                        copy.write_row(row)
                    for row in pending:
                        copied.append(row)  # kept, to be sent again on a new connection
                        copy.write_row(row)
                taken = _send_clocked(conn, clocked, limit) if clocked else {}
            for at, r in enumerate(results):
                if r.id in taken:
                    results[at] = AsyncResult(taken[r.id], app=app, task_name=names[r.id])
            return results
        except psycopg.errors.UniqueViolation:
            # The first attempt committed before its connection was found broken.
            if attempt == 2:
                return results
            raise
        except DatabaseUnavailable:
            app._connections.discard()
            if attempt == 2:
                raise
    return results


def _send_clocked(
    conn: psycopg.Connection[Any], clocked: list[dict[str, Any]], limit: int | None
) -> dict[str, str]:
    """Insert the jobs COPY cannot take, in statements of ENQUEUE_CHUNK jobs; returns, for
    each job whose unique key another job held, that job's id."""
    sent = []
    with conn.pipeline():
        for at in range(0, len(clocked), ENQUEUE_CHUNK):
            jobs = clocked[at : at + ENQUEUE_CHUNK]
            chunk = jobrows.document(jobs, limit)
            statement = jobrows.statement(jobs)
            cur = conn.execute(queries.get(statement), {"jobs": chunk})
            if statement == jobrows.UNIQUE_STATEMENT:
                sent.append((jobs, cur))
    taken = {}
    for jobs, cur in sent:
        for job, (job_id,) in zip(jobs, cur.fetchall(), strict=True):
            if job_id != job["id"]:
                taken[job["id"]] = job_id
    return taken


def caller_connection(
    app: PgQueue, connection: ProducerConnection | None
) -> ProducerConnection | None:
    """The caller's connection the job is to be written through (checked), or None for the
    app's own: ``connection=``, else the innermost ``app.transaction()``'s, else the one
    ``app.connection_provider`` gives."""
    target: ProducerConnection | None = binding.target(
        connection, check_connection, asynchronous=False
    )
    if target is None and app.connection_provider is not None:
        target = app.connection_provider()
        if target is not None:
            check_connection(target)
    return target


@contextlib.contextmanager
def bound(connection: ConnectionT) -> Iterator[ConnectionT]:
    """Send jobs through ``connection`` inside the block (``app.transaction``)."""
    check_connection(connection)
    token = binding.bind(connection, asynchronous=False)
    try:
        if isinstance(connection, psycopg.Connection):
            with connection.transaction():
                yield connection
        elif sqlalchemy.is_sqlalchemy(connection):
            with sqlalchemy.transaction(connection):
                yield connection
        else:
            yield connection
    finally:
        binding.unbind(token, asynchronous=False)


def _execute(
    app: PgQueue, sql: str, params: Mapping[str, Any], target: ProducerConnection | None
) -> list[Any]:
    """Run an enqueue statement; its rows (enqueue_unique_jobs returns the ids)."""
    if target is not None:
        with translate_errors():
            return _execute_on(target, sql, params)
    # Our own autocommit connection. A connection gone stale since its last use (server
    # restart) is replaced once; the job id is the primary key, so a retried insert
    # cannot create the job twice (and a retried unique insert finds its own job's key).
    for attempt in (1, 2):
        conn = app._connections.get()
        try:
            with translate_errors():
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description else []
        except psycopg.errors.UniqueViolation:
            if attempt == 2:
                return []
            raise
        except DatabaseUnavailable:
            app._connections.discard()
            if attempt == 2:
                raise
    return []


_ACCEPTED_CONNECTIONS = (
    "a psycopg.Connection or psycopg.Cursor, a blocking DB-API 2 connection or cursor "
    "(psycopg2, Django's), or a SQLAlchemy Session or Connection"
)


def check_connection(target: object) -> None:
    """Raise TypeError unless the producer can write a job through ``target`` (a
    ``connection=`` argument): an async connection would return a coroutine nobody awaits,
    and the job would silently not exist (aio.py takes those)."""
    if isinstance(target, psycopg.Connection | psycopg.Cursor):
        if isinstance(target, psycopg.ServerCursor):
            raise TypeError(
                f"connection= got a server-side (named) cursor, which cannot run an INSERT: "
                f"pass its connection instead ({_ACCEPTED_CONNECTIONS})"
            )
        return
    if sqlalchemy.is_sqlalchemy(target):
        sqlalchemy.check(target)
        return
    kind = f"{type(target).__module__}.{type(target).__qualname__}"
    if isinstance(target, psycopg.AsyncConnection | psycopg.AsyncCursor) or any(
        inspect.iscoroutinefunction(getattr(target, method, None))
        for method in ("cursor", "execute")
    ):
        raise TypeError(
            f"connection= got {kind}, an async connection, which the blocking producer "
            "cannot use: with it, call the async API (await task.aapply_async(..., "
            "connection=conn), await app.aenqueue_many(...), async with "
            f"app.atransaction(conn)); or pass {_ACCEPTED_CONNECTIONS}"
        )
    if not callable(getattr(target, "execute", None)) and not callable(
        getattr(target, "cursor", None)
    ):
        raise TypeError(f"connection= got {kind}: pass {_ACCEPTED_CONNECTIONS}")


def _execute_on(target: ProducerConnection, sql: str, params: Mapping[str, Any]) -> list[Any]:
    """Run ``sql`` through the caller's connection or cursor; its rows, if it returns any."""
    # Any: what is called below is DB-API 2, common to the four kinds; mypy cannot tell a
    # cursor from a connection by the hasattr check.
    driver: Any = target
    if sqlalchemy.is_sqlalchemy(driver):
        return sqlalchemy.execute(driver, sql, params)
    if hasattr(driver, "fetchone"):  # a cursor
        _sync_result(driver, driver.execute(sql, params))
        return list(driver.fetchall()) if driver.description else []
    with contextlib.closing(driver.cursor()) as cur:
        _sync_result(driver, cur.execute(sql, params))
        return list(cur.fetchall()) if cur.description else []


def _sync_result(target: object, value: object) -> None:
    # An async driver that check_connection could not recognise: its statement never ran.
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        kind = f"{type(target).__module__}.{type(target).__qualname__}"
        raise TypeError(
            f"connection= got {kind}, whose execute() returned an awaitable: the job was not "
            f"written; pass {_ACCEPTED_CONNECTIONS}"
        )
