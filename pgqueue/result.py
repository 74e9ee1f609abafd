"""AsyncResult: the state and outcome of one task, read from the results table."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg

from . import queries, states
from .current import default_app
from .db import translate_errors
from .exceptions import TaskRevokedError, TimeoutError, rebuild_exception

if TYPE_CHECKING:
    from .app import PgQueue


class _Row(NamedTuple):
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

    def __init__(self, id: str, app: PgQueue | None = None, task_name: str | None = None) -> None:
        if app is None:
            app = default_app()
        self.id = str(id)
        self.app = app
        self._task_name = task_name
        self._cache: _Row | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def task_id(self) -> str:
        return self.id

    def _fetch(self, conn: psycopg.Connection[Any] | None = None) -> _Row | None:
        if self._cache is not None:
            return self._cache
        with translate_errors():
            target = conn if conn is not None else self.app.connection()
            found = target.execute(queries.get("get_result"), {"id": self.id}).fetchone()
        row = _Row(*found) if found else None
        if row is not None and row.state in states.READY_STATES:
            self._cache = row  # a finished result never changes again (until forgotten)
        return row

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
        a notification is missed. Raises ``pgqueue.exceptions.TimeoutError`` after
        ``timeout`` seconds. With ``propagate`` a failure is raised as an exception named like
        the original (and an instance of it when that class is importable here), carrying
        the remote traceback; a revoked task raises ``TaskRevokedError``.
        """
        row = self._fetch()
        if row is None or row.state not in states.READY_STATES:
            row = self._wait(timeout, interval)
        if propagate:
            if row.state == states.FAILURE:
                raise rebuild_exception(self.id, row.exc_type, row.exc_message, row.traceback)
            if row.state == states.REVOKED:
                raise TaskRevokedError(
                    f"task {self.id} was revoked: {row.exc_message or 'revoked'}"
                )
        return row.result if row.state == states.SUCCESS else self.result

    wait = get

    def _wait(self, timeout: float | None, interval: float) -> _Row:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.app.connect() as conn:
            with translate_errors():
                conn.execute(queries.get("results_listen"))
            while True:
                row = self._fetch(conn)
                if row is not None and row.state in states.READY_STATES:
                    return row
                wait = interval
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(
                            f"task {self.id} did not finish within {timeout} s "
                            f"(state {row.state if row else states.PENDING})"
                        )
                    wait = min(wait, remaining)
                with translate_errors():
                    for note in conn.notifies(timeout=wait):
                        if self.id in note.payload.split(","):
                            break

    def revoke(self, terminate: bool = False) -> bool:
        """Revoke this task (see ``app.control.revoke``); True if it was revoked now."""
        self._cache = None
        return bool(self.app.control.revoke(self.id, terminate=terminate))

    def forget(self) -> None:
        """Delete the stored result."""
        with translate_errors():
            self.app.connection().execute(queries.get("forget_result"), {"id": self.id})
        self._cache = None
