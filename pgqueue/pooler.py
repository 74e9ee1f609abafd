"""Connection poolers (PgBouncer) between pgqueue and Postgres: which connections go
through one, and what a connection that does may not rely on.

A pooler in transaction mode lends a server process to a client for one transaction at a
time, so nothing tied to a session survives between two transactions: prepared statements,
session settings, session advisory locks, LISTEN. pgqueue detects such a connection when it
opens it (``detect``) instead of asking to be told: every pooler answers the client's
start-up with a backend key of its own (its clients share server processes), so the backend
pid the connection was given is not the pid of the server process that runs its statements.
PgBouncer in session mode is detected the same way (the two modes cannot be told apart from
the client) and treated alike.

On a pooled connection pgqueue prepares nothing (``prepare_threshold = None``), sets only
transaction-local settings, and never LISTENs or takes a session lock: the connections that
need a session of their own (the worker's claims and liveness lock, its listener, its
housekeeping, beat, the metrics sampler, ``get()``'s LISTEN) use the app's ``listen_dsn``,
which must reach Postgres directly (``require_direct``).
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Any

import psycopg

from . import queries
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .app import PgQueue

LISTEN_DSN_ENV = "PGQUEUE_LISTEN_DSN"

# Connections found to go through a pooler, as detect() saw them when they were opened.
_pooled: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def session_dsn(app: PgQueue) -> str:
    """The DSN of ``app``'s connections that need a session of their own (LISTEN, session
    advisory locks): its ``listen_dsn`` setting, else ``PGQUEUE_LISTEN_DSN``, else its DSN."""
    return str(app.conf.listen_dsn or os.environ.get(LISTEN_DSN_ENV) or app.dsn)


def detect(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn``, just opened, goes through a pooler; if so, it will prepare nothing
    (a statement prepared in one transaction's server process is unknown to the next's)."""
    server_pid = queries.one(conn.execute(queries.get("server_pid")))[0]
    if not conn.autocommit:
        conn.rollback()
    return _note(conn, server_pid)


async def adetect(conn: psycopg.AsyncConnection[Any]) -> bool:
    """``detect`` for an AsyncConnection."""
    cursor = await conn.execute(queries.get("server_pid"))
    row = await cursor.fetchone()
    if not conn.autocommit:
        await conn.rollback()
    assert row is not None
    return _note(conn, row[0])


def _note(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], server_pid: int) -> bool:
    if server_pid == conn.info.backend_pid:
        return False
    conn.prepare_threshold = None
    _pooled[conn] = server_pid
    return True


def through_pooler(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether ``conn`` (opened by pgqueue) goes through a pooler."""
    return conn in _pooled


def require_direct(conn: psycopg.Connection[Any], what: str) -> None:
    """Raise ConfigurationError if ``conn``, which ``what`` needs a session of its own for
    (LISTEN, a session advisory lock), goes through a pooler."""
    server_pid = _pooled.get(conn)
    if server_pid is None:
        return
    raise ConfigurationError(
        f"{what} needs a connection straight to Postgres (LISTEN and session advisory locks "
        "do not survive a transaction through a pooler), but this DSN goes through a "
        f"connection pooler such as PgBouncer (server process {server_pid} answered a "
        f"connection given backend pid {conn.info.backend_pid}): give a direct DSN with "
        f"--listen-dsn, the listen_dsn setting or {LISTEN_DSN_ENV}, and keep --dsn / "
        "PGQUEUE_DSN on the pooler for the rest"
    )
