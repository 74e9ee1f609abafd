"""A few idle connections kept for the dashboard's requests, so that a page does not pay
for a new connection (and its schema check) every time it refreshes."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.pq import TransactionStatus

if TYPE_CHECKING:
    from ..app import PgQueue

APPLICATION_NAME = "pgqueue dashboard"


class Connections:
    """Autocommit connections to the app's database, at most ``keep`` of them idle; more
    are opened when more requests run at once, and closed after use."""

    def __init__(self, app: PgQueue, keep: int = 4) -> None:
        self.app = app
        self.keep = keep
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """One connection for the length of the block."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = self.app.connect(application_name=APPLICATION_NAME)
        try:
            yield conn
        finally:
            self._give_back(conn)

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        # A connection left in a transaction or broken by an error is not reused.
        usable = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
        with self._lock:
            if usable and len(self._idle) < self.keep:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
