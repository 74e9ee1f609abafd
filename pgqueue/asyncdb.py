"""Async connections (``psycopg.AsyncConnection``) for the asyncio producer and
``AsyncResult.aget``: opened with db.connect's timeouts, keepalives and errors, and the
producer's own autocommit connection kept per event loop, since a connection belongs to the
loop it was opened on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import psycopg

from . import pooler, queries
from .db import cannot_connect, connection_string, load_times_clamped, resolve_dsn, translate_errors
from .migrate import refuse_newer


async def aconnect(
    dsn: str, *, autocommit: bool = True, application_name: str = "pgqueue"
) -> psycopg.AsyncConnection[Any]:
    """Open an async connection as ``app.connect()`` opens a blocking one: raises
    ConfigurationError for a DSN libpq cannot parse, DatabaseUnavailable when the server
    does not answer, SchemaTooNewError if a newer pgqueue migrated the database."""
    conninfo = connection_string(dsn, application_name)
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise cannot_connect(dsn, exc) from None
    load_times_clamped(conn)
    try:
        with translate_errors():
            await pooler.adetect(conn)
            await _check_not_newer(conn)
            if not conn.autocommit:
                await conn.rollback()  # hand the connection over outside any transaction
    except BaseException:
        await conn.close()
        raise
    return conn


async def _check_not_newer(conn: psycopg.AsyncConnection[Any]) -> None:
    # migrate.check_not_newer, on an async connection: an absent or older schema shows at
    # the first statement that needs it.
    cur = await conn.execute(queries.get("schema_exists"))
    row = await cur.fetchone()
    if row is not None and row[0]:
        cur = await conn.execute(queries.get("schema_versions"))
        refuse_newer({r[0]: r[1] for r in await cur.fetchall()})


@dataclass
class _Held:
    loop: weakref.ref[asyncio.AbstractEventLoop]
    conn: psycopg.AsyncConnection[Any]
    pid: int

    def serves(self, loop: asyncio.AbstractEventLoop) -> bool:
        return self.loop() is loop and self.pid == os.getpid() and not self.conn.closed

    def finish(self) -> None:
        # AsyncConnection.close() only ends the libpq connection, which needs no event loop:
        # that lets a sync close() end the connection of a loop that is closed or idle. One
        # inherited through fork() is left alone: ending it would end the parent's session.
        if self.pid == os.getpid():
            self.conn.pgconn.finish()


class AsyncConnectionHolder:
    """One autocommit AsyncConnection per event loop and process, opened on first use.

    Concurrent tasks of one loop share it (psycopg runs their statements one at a time).
    The connection of a loop that has closed is closed at the next ``get()`` on any loop,
    or by ``close()``.
    """

    def __init__(self, dsn: str | None) -> None:
        self._dsn = dsn
        self._lock = threading.Lock()  # loops on several threads may share the holder
        self._held: dict[int, _Held] = {}  # by id() of the loop

    async def get(self) -> psycopg.AsyncConnection[Any]:
        loop = asyncio.get_running_loop()
        self._sweep()
        held = self._held.get(id(loop))
        if held is not None and held.serves(loop):
            return held.conn
        conn = await aconnect(resolve_dsn(self._dsn))
        with self._lock:
            held = self._held.get(id(loop))
            won = held is None or not held.serves(loop)
            if won:
                if held is not None:
                    held.finish()
                self._held[id(loop)] = _Held(weakref.ref(loop), conn, os.getpid())
        if won:
            return conn
        # Another task of this loop connected while this one did: keep one connection.
        await conn.close()
        assert held is not None
        return held.conn

    async def discard(self) -> None:
        """Close and forget this loop's connection (found broken, or ``app.aclose()``);
        the next ``get()`` on this loop opens a fresh one."""
        with self._lock:
            held = self._held.pop(id(asyncio.get_running_loop()), None)
        if held is not None and held.pid == os.getpid():
            with contextlib.suppress(Exception):
                await held.conn.close()

    def close(self) -> None:
        """Close the connections of the event loops that are not running now (closed ones
        included); a running loop's is closed by ``discard()`` on that loop."""
        self._sweep(idle=True)

    def _sweep(self, idle: bool = False) -> None:
        with self._lock:
            for key, held in list(self._held.items()):
                loop = held.loop()
                if loop is None or loop.is_closed() or (idle and not loop.is_running()):
                    del self._held[key]
                    held.finish()
