"""SQLAlchemy 2 objects as ``connection=``: a ``Session`` (``scoped_session`` too, so
Flask-SQLAlchemy's ``db.session``) or a ``Connection``, on the psycopg 3 or psycopg2 driver;
on the async API, an ``AsyncSession`` (``async_scoped_session`` too) or ``AsyncConnection``
on psycopg 3's async driver.

The job is written through SQLAlchemy itself (``Connection.exec_driver_sql``), so it joins
the transaction SQLAlchemy knows about: a statement run underneath, on the driver connection,
could open a transaction SQLAlchemy has not begun, which ``commit()`` would then skip and the
pool's reset on return roll back. SQLAlchemy is never imported here: its objects are
recognised by the module of their classes, and only what they offer publicly is called.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

# Drivers whose DB-API paramstyle is pyformat, as pgqueue's statements are written (of the
# async ones, asyncpg's is not).
DRIVERS = ("psycopg", "psycopg2")
ASYNC_DRIVERS = ("psycopg",)

_ACCEPTED = (
    "a SQLAlchemy Session, scoped_session or Connection on PostgreSQL with the psycopg "
    "driver (postgresql+psycopg://...) or psycopg2 (postgresql+psycopg2://...)"
)
_ACCEPTED_ASYNC = (
    "a SQLAlchemy AsyncSession, async_scoped_session or AsyncConnection on PostgreSQL with "
    "the psycopg driver (create_async_engine('postgresql+psycopg://...'))"
)


def is_sqlalchemy(target: object) -> bool:
    """Whether ``target`` is an object of SQLAlchemy (or of a subclass of one, such as
    Flask-SQLAlchemy's Session)."""
    return any(
        getattr(cls, "__module__", "").partition(".")[0] == "sqlalchemy"
        for cls in type(target).__mro__
    )


def is_async(target: object) -> bool:
    """Whether ``target`` is an object of SQLAlchemy's asyncio extension."""
    return any(
        getattr(cls, "__module__", "").startswith("sqlalchemy.ext.asyncio")
        for cls in type(target).__mro__
    )


def _kind(target: object) -> str:
    return f"{type(target).__module__}.{type(target).__qualname__}"


def check(target: object) -> None:
    """Raise TypeError unless the blocking producer can write a job through ``target``, a
    SQLAlchemy object, before anything is sent: an async object (the async API takes it),
    an Engine (no transaction to join), or a database or driver pgqueue's statements do not
    fit."""
    if is_async(target):
        raise TypeError(
            f"connection= got {_kind(target)}, an async SQLAlchemy object, which the blocking "
            "producer cannot use: with it, call the async API (await task.aapply_async(..., "
            "connection=session), await app.aenqueue_many(..., connection=session), async "
            f"with app.atransaction(session)); or pass {_ACCEPTED}"
        )
    _check_dialect(target, DRIVERS, _ACCEPTED)


def acheck(target: object) -> None:
    """``check`` for the async producer: ``target`` must be an AsyncSession or
    AsyncConnection on psycopg's async driver."""
    if not is_async(target):
        raise TypeError(
            f"connection= got {_kind(target)}, a blocking SQLAlchemy object, which the async "
            "producer cannot use: with it, call the blocking API (task.apply_async(..., "
            "connection=session), with app.transaction(session)); or pass "
            f"{_ACCEPTED_ASYNC}"
        )
    _check_dialect(target, ASYNC_DRIVERS, _ACCEPTED_ASYNC)


def _check_dialect(target: Any, drivers: tuple[str, ...], accepted: str) -> None:
    if callable(getattr(target, "get_bind", None)):  # (Async)Session, (async_)scoped_session
        dialect = target.get_bind().dialect
    elif callable(getattr(target, "exec_driver_sql", None)) and hasattr(target, "begin_nested"):
        dialect = target.dialect  # (Async)Connection
    else:
        raise TypeError(
            f"connection= got {_kind(target)}, which has no transaction of its own to join "
            f"(an Engine opens a new connection per use): pass {accepted}"
        )
    if dialect.name != "postgresql" or dialect.driver not in drivers:
        raise TypeError(
            f"connection= got {_kind(target)} on {dialect.name}+{dialect.driver}: pass {accepted}"
        )


def execute(target: Any, sql: str, params: Mapping[str, Any]) -> list[Any]:
    """Run ``sql`` in ``target``'s transaction (begun if it has none, as SQLAlchemy does for
    any statement): committed or rolled back with it. Its rows, if it returns any."""
    conn = target.connection() if callable(getattr(target, "get_bind", None)) else target
    result = conn.exec_driver_sql(sql, dict(params))
    return list(result.fetchall()) if result.returns_rows else []


@contextlib.contextmanager
def transaction(target: Any) -> Iterator[None]:
    """The block of ``app.transaction(session)``: a transaction, or a savepoint when one is
    open already, as ``psycopg.Connection.transaction()`` does."""
    target = _scoped(target)
    with target.begin_nested() if target.in_transaction() else target.begin():
        yield


async def aexecute(target: Any, sql: str, params: Mapping[str, Any]) -> list[Any]:
    """``execute`` on an AsyncSession or AsyncConnection."""
    conn = await target.connection() if callable(getattr(target, "get_bind", None)) else target
    result = await conn.exec_driver_sql(sql, dict(params))
    return list(result.fetchall()) if result.returns_rows else []


@contextlib.asynccontextmanager
async def atransaction(target: Any) -> AsyncIterator[None]:
    """``transaction`` on an AsyncSession or AsyncConnection (``app.atransaction``)."""
    target = _scoped(target)
    async with target.begin_nested() if target.in_transaction() else target.begin():
        yield


def _scoped(target: Any) -> Any:
    # A scoped_session proxies neither in_transaction() nor a transaction's state: the
    # block works on the session of the current scope.
    return target() if hasattr(target, "registry") and callable(target) else target
