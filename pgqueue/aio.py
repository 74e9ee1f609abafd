"""Writing jobs from asyncio code: the producer path behind ``app.asend_task``,
``app.aenqueue_many``, ``app.atransaction`` and a workflow's ``aapply_async``, on the
caller's psycopg ``AsyncConnection`` or ``AsyncCursor`` or SQLAlchemy ``AsyncSession`` or
``AsyncConnection`` (the job exists only if its transaction commits) or on pgqueue's own
autocommit AsyncConnection of the running event loop (replaced once if found broken).

The rows (jobrows.py, workflow.py) and the statements (enqueue_jobs,
enqueue_unique_jobs, enqueue_workflow) are the blocking producer's."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import psycopg
import psycopg.errors

from . import binding, jobrows, queries, tracing
from .contrib import sqlalchemy
from .db import translate_errors
from .exceptions import DatabaseUnavailable
from .result import AsyncResult

if TYPE_CHECKING:
    from .app import PgQueue
    from .canvas import Signature


class AsyncSQLAlchemyConnection(Protocol):
    """A SQLAlchemy ``AsyncSession`` (``async_scoped_session`` too) or ``AsyncConnection``:
    pgqueue runs its statement through it (check_connection refuses, at run time, another
    object with this method)."""

    def begin_nested(self) -> Any: ...


# What ``connection=`` accepts on the async path.
AsyncProducerConnection = (
    psycopg.AsyncConnection[Any] | psycopg.AsyncCursor[Any] | AsyncSQLAlchemyConnection
)
AsyncConnectionT = TypeVar("AsyncConnectionT", bound=AsyncProducerConnection)


async def send(
    app: PgQueue,
    name: str,
    args: Any,
    kwargs: Any,
    options: dict[str, Any],
    connection: AsyncProducerConnection | None,
) -> AsyncResult:
    """Write one job (``app.asend_task``)."""
    target = binding.target(connection, check_connection, asynchronous=True)
    with tracing.publish(name) as span:
        job_id, document, statement = jobrows.call_document(
            app, name, args, kwargs, options, span.carrier if span else None
        )
        rows = await _execute(app, statement, {"jobs": document}, target)
        if statement == jobrows.UNIQUE_STATEMENT:
            job_id = rows[0][0]  # the id of the job holding the key, which may be another's
        if span:
            span.written(job_id)
    return AsyncResult(job_id, app=app, task_name=name)


async def send_workflow(
    app: PgQueue, params: Mapping[str, str], connection: AsyncProducerConnection | None
) -> None:
    """Write a workflow (canvas.py, workflow.Plan) in one statement: all or nothing."""
    target = binding.target(connection, check_connection, asynchronous=True)
    await _execute(app, "enqueue_workflow", params, target)


async def enqueue_many(
    app: PgQueue, signatures: Iterable[Signature], connection: AsyncProducerConnection | None
) -> list[AsyncResult]:
    """Write many jobs in one statement, all or none (``app.aenqueue_many``)."""
    target = binding.target(connection, check_connection, asynchronous=True)
    with tracing.publish("enqueue_many") as span:
        jobs, document = jobrows.batch_document(app, signatures, span.carrier if span else None)
        ids = [j["id"] for j in jobs]
        if document is not None:
            statement = jobrows.statement(jobs)
            rows = await _execute(app, statement, {"jobs": document}, target)
            if statement == jobrows.UNIQUE_STATEMENT:
                ids = [r[0] for r in rows]
    return [
        AsyncResult(i, app=app, task_name=j["task_name"]) for i, j in zip(ids, jobs, strict=True)
    ]


@contextlib.asynccontextmanager
async def bound(connection: AsyncConnectionT) -> AsyncIterator[AsyncConnectionT]:
    """Send jobs through ``connection`` inside the block (``app.atransaction``)."""
    check_connection(connection)
    token = binding.bind(connection, asynchronous=True)
    try:
        if isinstance(connection, psycopg.AsyncConnection):
            async with connection.transaction():
                yield connection
        elif sqlalchemy.is_sqlalchemy(connection):
            async with sqlalchemy.atransaction(connection):
                yield connection
        else:
            yield connection  # a cursor: its connection's transaction is the caller's
    finally:
        binding.unbind(token, asynchronous=True)


async def _execute(
    app: PgQueue, statement: str, params: Mapping[str, Any], target: AsyncProducerConnection | None
) -> list[Any]:
    """Run enqueue ``statement``; its rows (enqueue_unique_jobs returns the ids)."""
    sql = queries.get(statement)
    if target is not None:
        with translate_errors():
            if isinstance(target, psycopg.AsyncCursor):
                await target.execute(sql, params)
                return await target.fetchall() if target.description else []
            if isinstance(target, psycopg.AsyncConnection):
                cur = await target.execute(sql, params)
                return await cur.fetchall() if cur.description else []
            return await sqlalchemy.aexecute(target, sql, params)  # checked: nothing else
    # pgqueue's own connection of this loop. One gone stale since its last use (a server
    # restart) is replaced once; the job ids are the primary key, so a retried insert
    # cannot create a job twice: a UniqueViolation on the retry means the first attempt
    # committed before its connection broke.
    for attempt in (1, 2):
        try:
            conn = await app._aconnections.get()
            with translate_errors():
                cur = await conn.execute(sql, params)
                return await cur.fetchall() if cur.description else []
        except psycopg.errors.UniqueViolation:
            if attempt == 2:
                return []
            raise
        except DatabaseUnavailable:
            await app._aconnections.discard()
            if attempt == 2:
                raise
    return []


_ACCEPTED = (
    "a psycopg.AsyncConnection or psycopg.AsyncCursor, or a SQLAlchemy AsyncSession or "
    "AsyncConnection"
)


def check_connection(target: object) -> None:
    """Raise TypeError unless the async producer can write a job through ``target`` (a
    ``connection=`` argument): a psycopg AsyncConnection or (client-side) AsyncCursor, a
    SQLAlchemy AsyncSession or AsyncConnection."""
    if sqlalchemy.is_sqlalchemy(target):
        sqlalchemy.acheck(target)
        return
    kind = f"{type(target).__module__}.{type(target).__qualname__}"
    if isinstance(target, psycopg.AsyncServerCursor):
        raise TypeError(
            f"connection= got a server-side (named) cursor, which cannot run an INSERT: "
            f"pass its connection instead ({_ACCEPTED})"
        )
    if isinstance(target, psycopg.AsyncConnection | psycopg.AsyncCursor):
        return
    if isinstance(target, psycopg.Connection | psycopg.Cursor):
        raise TypeError(
            f"connection= got {kind}, a blocking connection, which the async producer "
            "cannot use: with it, call the blocking API (task.apply_async(..., "
            "connection=conn), app.enqueue_many(...), with app.transaction(conn)); or pass "
            f"{_ACCEPTED}"
        )
    raise TypeError(
        f"connection= got {kind}: the async producer writes through psycopg 3 (directly or "
        "under SQLAlchemy) only; pass "
        f"{_ACCEPTED}"
    )
