"""The connection a producer call writes through when it is given none: the one bound by the
innermost ``with app.transaction(conn):`` (blocking) or ``async with
app.atransaction(conn):`` (asyncio) block, else pgqueue's own.

A call of the other kind inside a block (``delay()`` under ``atransaction``, ``adelay()``
under ``transaction``) cannot write through the bound connection, and writing on pgqueue's
own would commit the job whether or not the block does: it raises TypeError instead."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

_sync: contextvars.ContextVar[Any] = contextvars.ContextVar("pgqueue_connection", default=None)
_async: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "pgqueue_async_connection", default=None
)


def bind(connection: Any, *, asynchronous: bool) -> contextvars.Token[Any]:
    """Bind ``connection`` for the current context; ``unbind`` the token at the block's end."""
    return (_async if asynchronous else _sync).set(connection)


def unbind(token: contextvars.Token[Any], *, asynchronous: bool) -> None:
    (_async if asynchronous else _sync).reset(token)


def target(connection: Any, check: Callable[[Any], None], *, asynchronous: bool) -> Any:
    """The connection a call writes through: ``connection`` if given (passed to ``check``,
    which raises TypeError for one the call cannot use), else the bound one of the call's
    kind (checked when bound), else None (pgqueue's own)."""
    if connection is not None:
        check(connection)
        return connection
    same, other = (_async, _sync) if asynchronous else (_sync, _async)
    bound = same.get()
    if bound is not None:
        return bound
    if other.get() is not None:
        if asynchronous:
            raise TypeError(
                "an async producer call (adelay, aapply_async, asend_task, aenqueue_many) "
                "inside `with app.transaction(conn):` cannot join that blocking transaction: "
                "call delay()/apply_async() there, or use `async with app.atransaction(aconn)` "
                "with a psycopg.AsyncConnection"
            )
        raise TypeError(
            "a blocking producer call (delay, apply_async, send_task, enqueue_many) inside "
            "`async with app.atransaction(conn):` cannot join that async transaction and "
            "would commit the job on its own: await adelay()/aapply_async()/aenqueue_many() "
            "there, or pass connection= explicitly"
        )
    return None
