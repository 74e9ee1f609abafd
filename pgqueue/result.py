"""AsyncResult: the state and outcome of one task, read from the results table; from
blocking code (``get``, ``state``) or asyncio code (``aget``, ``astate``)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg

from . import queries, states
from .asyncdb import aconnect
from .current import default_app
from .db import translate_errors
from .exceptions import TaskRevokedError, TimeoutError, rebuild_exception
from .pooler import session_dsn, through_pooler

if TYPE_CHECKING:
    from .app import PgQueue
    from .groupresult import GroupResult


class Row(NamedTuple):
    """A result as get_result reads it."""

    state: str
    result: Any
    exc_type: str | None
    exc_message: str | None
    traceback: str | None
    retries: int
    date_done: dt.datetime | None
    time_taken: float | None
    task_name: str | None


class AsyncResult:
    """A handle on a task's result, like Celery's. An id nobody has seen is PENDING."""

    def __init__(
        self,
        id: str,
        app: PgQueue | None = None,
        task_name: str | None = None,
        parent: AsyncResult | GroupResult | None = None,
    ) -> None:
        if app is None:
            app = default_app()
        self.id = str(id)
        self.app = app
        self._task_name = task_name
        self._cache: Row | None = None
        # the result of the step before this one in a chain (Celery's ``.parent``): an
        # AsyncResult, or a GroupResult after a chord's header
        self.parent = parent

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def task_id(self) -> str:
        return self.id

    def _fetch(self, conn: psycopg.Connection[Any] | None = None) -> Row | None:
        if self._cache is not None:
            return self._cache
        with translate_errors():
            target = conn if conn is not None else self.app.connection()
            found = target.execute(queries.get("get_result"), {"id": self.id}).fetchone()
        return self._remember(found)

    async def _afetch(self, conn: psycopg.AsyncConnection[Any] | None = None) -> Row | None:
        if self._cache is not None:
            return self._cache
        with translate_errors():
            target = conn if conn is not None else await self.app._aconnections.get()
            cursor = await target.execute(queries.get("get_result"), {"id": self.id})
            found = await cursor.fetchone()
        return self._remember(found)

    def _remember(self, found: Any) -> Row | None:
        row = Row(*found) if found else None
        self.remember(row)
        return row

    def remember(self, row: Row | None) -> None:
        """Keep ``row`` if it is final: a finished result never changes again (until
        forgotten)."""
        if row is not None and row.state in states.READY_STATES:
            self._cache = row

    def cached_ready(self) -> bool:
        """Whether this result is known finished without asking the database."""
        return self._cache is not None

    @property
    def state(self) -> str:
        """PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED or IGNORED."""
        row = self._fetch()
        return row.state if row else states.PENDING

    status = state

    @property
    def name(self) -> str | None:
        row = self._fetch()
        return row.task_name if row else self._task_name

    @property
    def result(self) -> Any:
        """The return value once SUCCESS; the exception once FAILURE; otherwise None."""
        row = self._fetch()
        if row is None:
            return None
        if row.state == states.SUCCESS:
            return row.result
        if row.exc_type:
            return rebuild_exception(self.id, row.exc_type, row.exc_message, row.traceback)
        return None

    info = result

    @property
    def traceback(self) -> str | None:
        row = self._fetch()
        return row.traceback if row else None

    @property
    def retries(self) -> int:
        row = self._fetch()
        return row.retries if row else 0

    @property
    def date_done(self) -> dt.datetime | None:
        row = self._fetch()
        return row.date_done if row else None

    @property
    def time_taken(self) -> float | None:
        """Seconds the task ran, once it finished."""
        row = self._fetch()
        return row.time_taken if row else None

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
    ) -> Any:
        """Wait for the task to finish and return its value.

        Waits on LISTEN/NOTIFY, re-reading the row at most every ``interval`` seconds in case
        a notification is missed; through a pooler (PgBouncer), where LISTEN does not work,
        by re-reading it every ``interval`` seconds, unless the app has a direct
        ``listen_dsn`` (see ``pooler.session_dsn``). Raises ``pgqueue.exceptions.TimeoutError``
        after ``timeout`` seconds. With ``propagate`` a failure is raised as an exception
        named like the original (and an instance of it when that class is importable here),
        carrying the remote traceback; a revoked task raises ``TaskRevokedError``.
        """
        row = self._fetch()
        if row is None or row.state not in states.READY_STATES:
            row = self._wait(timeout, interval)
        return self._outcome(row, propagate)

    wait = get

    def _outcome(self, row: Row, propagate: bool) -> Any:
        if propagate:
            if row.state == states.FAILURE:
                raise rebuild_exception(self.id, row.exc_type, row.exc_message, row.traceback)
            if row.state == states.REVOKED:
                raise TaskRevokedError(
                    f"task {self.id} was revoked: {row.exc_message or 'revoked'}"
                )
        return row.result if row.state == states.SUCCESS else self.result

    def _wait(self, timeout: float | None, interval: float) -> Row:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.app.connect(session=True) as conn:
            # Through a pooler a LISTEN would not outlive its transaction: poll instead.
            listening = not through_pooler(conn)
            if listening:
                with translate_errors():
                    conn.execute(queries.get("results_listen"))
            while True:
                row = self._fetch(conn)
                if row is not None and row.state in states.READY_STATES:
                    return row
                wait = self._next_wait(row, interval, timeout, deadline)
                if not listening:
                    time.sleep(wait)
                    continue
                with translate_errors():
                    for note in conn.notifies(timeout=wait):
                        if self._named_in(note):
                            break

    def _next_wait(
        self, row: Row | None, interval: float, timeout: float | None, deadline: float | None
    ) -> float:
        return next_wait(
            interval,
            deadline,
            lambda: (
                f"task {self.id} did not finish within {timeout} s "
                f"(state {row.state if row else states.PENDING})"
            ),
        )

    def _named_in(self, note: psycopg.Notify) -> bool:
        # Any role may NOTIFY on the channel: the payload only says when to read the row
        # again, and the row (re-read by the caller) says whether the task finished.
        return self.id in note.payload.split(",")

    # -- from asyncio code -------------------------------------------------------------

    async def astate(self) -> str:
        """``state`` for asyncio code."""
        row = await self._afetch()
        return row.state if row else states.PENDING

    async def aready(self) -> bool:
        """``ready()`` for asyncio code."""
        return await self.astate() in states.READY_STATES

    async def aget(
        self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5
    ) -> Any:
        """``get`` for asyncio code, with the same arguments and errors. Waits on LISTEN
        on an AsyncConnection of its own, in the event loop (no thread), re-reading the row
        at most every ``interval`` seconds in case a notification is missed (polls at that
        interval through a pooler, as ``get`` does)."""
        row = await self._afetch()
        if row is None or row.state not in states.READY_STATES:
            row = await self._await(timeout, interval)
        return self._outcome(row, propagate)

    async def _await(self, timeout: float | None, interval: float) -> Row:
        deadline = None if timeout is None else time.monotonic() + timeout
        conn = await aconnect(session_dsn(self.app))
        try:
            listening = not through_pooler(conn)  # as in _wait
            if listening:
                with translate_errors():
                    await conn.execute(queries.get("results_listen"))
            while True:
                row = await self._afetch(conn)
                if row is not None and row.state in states.READY_STATES:
                    return row
                wait = self._next_wait(row, interval, timeout, deadline)
                if not listening:
                    await asyncio.sleep(wait)
                    continue
                with translate_errors():
                    # Closed at once on break: the generator holds the connection's lock.
                    async with contextlib.aclosing(conn.notifies(timeout=wait)) as notes:
                        async for note in notes:
                            if self._named_in(note):
                                break
        finally:
            await conn.close()

    def revoke(self, terminate: bool = False) -> bool:
        """Revoke this task (see ``app.control.revoke``); True if it was revoked now."""
        self._cache = None
        return bool(self.app.control.revoke(self.id, terminate=terminate))

    def forget(self) -> None:
        """Delete the stored result."""
        with translate_errors():
            self.app.connection().execute(queries.get("forget_result"), {"id": self.id})
        self._cache = None


def next_wait(interval: float, deadline: float | None, late: Callable[[], str]) -> float:
    """Seconds to wait for a notification before reading the rows again: ``interval``, cut
    short at ``deadline``, past which it raises TimeoutError with the message ``late()``."""
    if deadline is None:
        return interval
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(late())
    return min(interval, remaining)
