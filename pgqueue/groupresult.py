"""GroupResult: the results of a group's members, in the group's order (Celery's name)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from . import queries, states
from .current import default_app
from .db import translate_errors
from .exceptions import TimeoutError
from .result import AsyncResult, Row

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
                wait = interval
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(
                            f"group {self.id}: {len(pending)} of {len(self.results)} "
                            f"member(s) did not finish within {timeout} s"
                        )
                    wait = min(wait, remaining)
                with translate_errors():
                    for note in conn.notifies(timeout=wait):
                        if not pending.isdisjoint(note.payload.split(",")):
                            break
        return [r.get(propagate=propagate) for r in self.results]

    join = get

    def _refresh(self, conn: psycopg.Connection[Any] | None) -> set[str]:
        """Read the members not known to be finished, in one statement; their ids still
        not finished."""
        unknown = [r.id for r in self.results if not r.cached_ready()]
        if not unknown:
            return set()
        with translate_errors():
            target = conn if conn is not None else self.app.connection()
            rows = target.execute(queries.get("get_results"), {"ids": unknown}).fetchall()
        found = {row[0]: Row(*row[1:]) for row in rows}
        for r in self.results:
            if r.id in found:
                r.remember(found[r.id])
        return {r.id for r in self.results if not r.cached_ready()}

    def revoke(self, terminate: bool = False) -> None:
        """Revoke every member (see ``app.control.revoke``)."""
        for r in self.results:
            r.revoke(terminate=terminate)

    def forget(self) -> None:
        """Delete the members' stored results."""
        for r in self.results:
            r.forget()
