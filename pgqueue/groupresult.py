"""GroupResult: the results of a group's members, in the group's order (Celery's name)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from . import queries, states
from .asyncdb import aconnect
from .current import default_app
from .db import translate_errors
from .result import AsyncResult, Row, next_wait

if TYPE_CHECKING:
    from .app import PgQueue


class GroupResult:
    """The results of a group (or of a chord's header): ``id`` and ``results`` in order.

    ``GroupResult.restore(id)`` finds them again from the database (no ``save()`` needed:
    the members are rows of pgqueue.workflow_members from the moment the group is sent).
    """

    def __init__(
        self,
        id: str,
        results: Sequence[AsyncResult],
        app: PgQueue | None = None,
        parent: AsyncResult | GroupResult | None = None,
    ) -> None:
        self.id = str(id)
        self.results = list(results)
        self.app = app if app is not None else default_app()
        self.parent = parent

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def __getitem__(self, index: int) -> AsyncResult:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @classmethod
    def restore(cls, id: str, app: PgQueue | None = None) -> GroupResult | None:
        """The GroupResult of the group (or chord) with this id, None if there is none."""
        app = app if app is not None else default_app()
        with translate_errors():
            rows = app.connection().execute(queries.get("group_members"), {"id": str(id)})
            members = rows.fetchall()
        if not members:
            return None
        return cls(
            id, [AsyncResult(t, app=app, task_name=n) for t, n in members if t is not None], app=app
        )

    # -- state ---------------------------------------------------------------------------

    def _states(self) -> list[str]:
        self._refresh(None)
        return [r.state for r in self.results]

    def ready(self) -> bool:
        """Whether every member has finished (whatever its state)."""
        return all(s in states.READY_STATES for s in self._states())

    def successful(self) -> bool:
        """Whether every member ended SUCCESS."""
        return all(s == states.SUCCESS for s in self._states())

    def failed(self) -> bool:
        """Whether any member ended FAILURE."""
        return any(s == states.FAILURE for s in self._states())

    def waiting(self) -> bool:
        """Whether any member has not finished yet."""
        return not self.ready()

    def completed_count(self) -> int:
        """How many members ended SUCCESS."""
        return sum(s == states.SUCCESS for s in self._states())

    def get(
        self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5
    ) -> list[Any]:
        """Wait for every member and return their values in the group's order.

        One connection waits for all members (LISTEN, re-reading at most every ``interval``
        seconds). With ``propagate``, the first member in order that failed (or was revoked)
        raises its error; without, its place holds the exception. Raises
        ``pgqueue.exceptions.TimeoutError`` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.app.connect() as conn:
            with translate_errors():
                conn.execute(queries.get("results_listen"))
            while True:
                pending = self._refresh(conn)
                if not pending:
                    break
                wait = self._next_wait(pending, interval, timeout, deadline)
                with translate_errors():
                    for note in conn.notifies(timeout=wait):
                        # A hint only (any role may NOTIFY): the rows, re-read, decide.
                        if not pending.isdisjoint(note.payload.split(",")):
                            break
        return [r.get(propagate=propagate) for r in self.results]

    join = get

    def _next_wait(
        self, pending: set[str], interval: float, timeout: float | None, deadline: float | None
    ) -> float:
        return next_wait(
            interval,
            deadline,
            lambda: (
                f"group {self.id}: {len(pending)} of {len(self.results)} "
                f"member(s) did not finish within {timeout} s"
            ),
        )

    def _unknown(self) -> list[str]:
        """The ids of the members not known to be finished."""
        return [r.id for r in self.results if not r.cached_ready()]

    def _remember(self, rows: list[Any]) -> set[str]:
        """Keep the finished ones of ``rows`` (get_results); the ids still not finished."""
        found = {row[0]: Row(*row[1:]) for row in rows}
        for r in self.results:
            if r.id in found:
                r.remember(found[r.id])
        return set(self._unknown())

    def _refresh(self, conn: psycopg.Connection[Any] | None) -> set[str]:
        """Read the members not known to be finished, in one statement; their ids still
        not finished."""
        unknown = self._unknown()
        if not unknown:
            return set()
        with translate_errors():
            target = conn if conn is not None else self.app.connection()
            rows = target.execute(queries.get("get_results"), {"ids": unknown}).fetchall()
        return self._remember(rows)

    # -- from asyncio code ---------------------------------------------------------------

    async def aready(self) -> bool:
        """``ready()`` for asyncio code."""
        await self._arefresh(None)
        return all(r.cached_ready() for r in self.results)

    async def acompleted_count(self) -> int:
        """``completed_count()`` for asyncio code."""
        await self._arefresh(None)
        return sum(r.cached_ready() and r.state == states.SUCCESS for r in self.results)

    async def aget(
        self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5
    ) -> list[Any]:
        """``get`` for asyncio code, with the same arguments and errors: one AsyncConnection
        of its own waits for every member (LISTEN), in the event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        conn = await aconnect(self.app.dsn)
        try:
            with translate_errors():
                await conn.execute(queries.get("results_listen"))
            while pending := await self._arefresh(conn):
                wait = self._next_wait(pending, interval, timeout, deadline)
                with translate_errors():
                    # Closed at once on break: the generator holds the connection's lock.
                    async with contextlib.aclosing(conn.notifies(timeout=wait)) as notes:
                        async for note in notes:
                            # A hint only (any role may NOTIFY): the rows, re-read, decide.
                            if not pending.isdisjoint(note.payload.split(",")):
                                break
        finally:
            await conn.close()
        # Every member is finished and its row kept: get() reads no database.
        return [r.get(propagate=propagate) for r in self.results]

    async def _arefresh(self, conn: psycopg.AsyncConnection[Any] | None) -> set[str]:
        """``_refresh`` on an async connection (pgqueue's own of this loop if None)."""
        unknown = self._unknown()
        if not unknown:
            return set()
        with translate_errors():
            target = conn if conn is not None else await self.app._aconnections.get()
            cursor = await target.execute(queries.get("get_results"), {"ids": unknown})
            rows = await cursor.fetchall()
        return self._remember(rows)

    def revoke(self, terminate: bool = False) -> None:
        """Revoke every member (see ``app.control.revoke``)."""
        for r in self.results:
            r.revoke(terminate=terminate)

    def forget(self) -> None:
        """Delete the members' stored results."""
        for r in self.results:
            r.forget()
