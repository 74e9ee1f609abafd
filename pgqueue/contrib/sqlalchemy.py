"""SQLAlchemy 2 objects as ``connection=``: a ``Session`` (``scoped_session`` too, so
Flask-SQLAlchemy's ``db.session``) or a ``Connection``, on the psycopg 3 or psycopg2 driver.

The job is written through SQLAlchemy itself (``Connection.exec_driver_sql``), so it joins
the transaction SQLAlchemy knows about: a statement run underneath, on the driver connection,
could open a transaction SQLAlchemy has not begun, which ``commit()`` would then skip and the
pool's reset on return roll back. SQLAlchemy is never imported here: its objects are
recognised by the module of their classes, and only what they offer publicly is called.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

# Drivers whose DB-API paramstyle is pyformat, as pgqueue's statements are written.
DRIVERS = ("psycopg", "psycopg2")

_ACCEPTED = (
    "a SQLAlchemy Session, scoped_session or Connection on PostgreSQL with the psycopg "
    "driver (postgresql+psycopg://...) or psycopg2 (postgresql+psycopg2://...)"
)


def is_sqlalchemy(target: object) -> bool:
    """Whether ``target`` is an object of SQLAlchemy (or of a subclass of one, such as
    Flask-SQLAlchemy's Session)."""
    return any(
        getattr(cls, "__module__", "").partition(".")[0] == "sqlalchemy"
        for cls in type(target).__mro__
    )


def _kind(target: object) -> str:
    return f"{type(target).__module__}.{type(target).__qualname__}"


def check(target: object) -> None:
    """Raise TypeError unless a job can be written through ``target``, a SQLAlchemy object,
    before anything is sent: an async session, an Engine (no transaction to join), or a
    database or driver pgqueue's statements do not fit."""
    if type(target).__module__.startswith("sqlalchemy.ext.asyncio"):
        raise TypeError(
            f"connection= got {_kind(target)}, an async SQLAlchemy object, which pgqueue "
            f"cannot use yet: pass {_ACCEPTED}"
        )
    if callable(getattr(target, "get_bind", None)):  # Session, scoped_session
        bind = target.get_bind()  # type: ignore[attr-defined]
    elif callable(getattr(target, "exec_driver_sql", None)) and hasattr(target, "begin_nested"):
        bind = target  # Connection
    else:
        raise TypeError(
            f"connection= got {_kind(target)}, which has no transaction of its own to join "
            f"(an Engine opens a new connection per use): pass {_ACCEPTED}"
        )
    dialect = bind.dialect
    if dialect.name != "postgresql" or dialect.driver not in DRIVERS:
        raise TypeError(
            f"connection= got {_kind(target)} on {dialect.name}+{dialect.driver}: pass {_ACCEPTED}"
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
    with target.begin_nested() if target.in_transaction() else target.begin():
        yield
