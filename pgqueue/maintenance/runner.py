"""The maintenance runner: the services of one worker on a thread and connection of their
own, so that a VACUUM or a 5,000-row cleanup never holds up a claim or an outcome write."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence

import psycopg

from .. import queries
from ..db import connect, connection_lost, describe_error, translate_errors
from .service import Connection, Service

log = logging.getLogger("pgqueue.maintenance")

# Reconnection backoff after the runner's connection drops (seconds).
FIRST_RETRY = 0.25
LONGEST_RETRY = 10.0
# How long stop() waits for a pass to end before cancelling its statement (seconds).
STOP_GRACE = 5.0


class MaintenanceRunner:
    """Runs ``services`` when due, each under its own advisory lock: whatever the number of
    processes running the same services, one at a time does each pass of each.

    ``start()`` opens the connection and runs on a daemon thread until ``stop()``. A dropped
    connection is reopened with backoff (logged once per outage); a statement the server
    refuses (a lock timeout, a deadlock) is logged and the service runs again at its next
    interval. ``run_due(conn)`` does one pass on a given connection, for tests and tools.
    """

    def __init__(
        self,
        dsn: str,
        services: Sequence[Service],
        *,
        synchronous_commit: str = "on",
        application_name: str = "pgqueue maintenance",
    ) -> None:
        self.dsn = dsn
        self.services = list(services)
        self.synchronous_commit = synchronous_commit
        self.application_name = application_name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        # monotonic time the connection dropped; None while it works
        self._down_since: float | None = None

    # -- start/stop --------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pgqueue-maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the pass under way; a statement still running after STOP_GRACE
        seconds is cancelled (its transaction rolls back: nothing half-done)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        thread.join(STOP_GRACE)
        conn = self._conn
        if thread.is_alive() and conn is not None:
            with contextlib.suppress(Exception):
                conn.cancel()
            thread.join(STOP_GRACE)

    # -- passes --------------------------------------------------------------------------------

    def next_due(self) -> float:
        """When the next service is due (monotonic)."""
        return min((s.next_run for s in self.services), default=float("inf"))

    def run_due(self, conn: Connection) -> None:
        """Run every service that is due on ``conn``. A statement error is logged and the
        others run; a lost connection raises DatabaseUnavailable."""
        now = time.monotonic()
        for service in self.services:
            if service.next_run > now:
                continue
            service.next_run = now + service.interval
            try:
                with translate_errors():
                    if self._run_elected(conn, service):
                        service.next_run = now  # a full batch: more is waiting
            except psycopg.Error as exc:
                if connection_lost(exc):
                    raise
                log.warning(
                    "maintenance failed: %s; it runs again at its next interval",
                    describe_error(exc),
                )

    @staticmethod
    def _run_elected(conn: Connection, service: Service) -> bool:
        """One pass of ``service`` if this process wins its lock; the others skip it."""
        if service.transactional:
            # A transaction-level lock: released by the commit, or the rollback of an error.
            with conn.transaction():
                if not _fetch_flag(conn, "try_maintenance_lock", service.lock_key):
                    return False
                return service.work(conn)
        if not _fetch_flag(conn, "try_maintenance_session_lock", service.lock_key):
            return False
        try:
            return service.work(conn)
        finally:
            conn.execute(queries.get("release_maintenance_session_lock"), {"key": service.lock_key})

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        delay = FIRST_RETRY
        try:
            while not self._stop.is_set():
                try:
                    conn = self._connected()
                    self.run_due(conn)
                    delay = FIRST_RETRY
                except Exception as exc:
                    if connection_lost(exc):
                        self._dropped(exc)
                    else:
                        # Not the database going away (a bug, a schema dropped under us):
                        # say so, and try again later, not in a tight loop.
                        log.exception("maintenance pass failed")
                    self._stop.wait(delay)
                    delay = min(delay * 2, LONGEST_RETRY)
                    continue
                self._stop.wait(max(0.0, self.next_due() - time.monotonic()))
        finally:
            self._close()

    def _connected(self) -> Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn: Connection = connect(self.dsn, application_name=self.application_name)
        try:
            with translate_errors():
                conn.execute(
                    queries.get("set_synchronous_commit"), {"value": self.synchronous_commit}
                )
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        self._conn = conn
        if self._down_since is not None:
            log.warning(
                "maintenance reconnected to Postgres after %.1f s",
                time.monotonic() - self._down_since,
            )
            self._down_since = None
        return conn

    def _dropped(self, exc: BaseException) -> None:
        self._close()
        if self._down_since is None:
            self._down_since = time.monotonic()
            # Not "database connection lost": that line is the claim loop's, one per outage.
            log.warning("maintenance cannot reach Postgres (%s); retrying with backoff", exc)
        else:
            log.debug("maintenance still cannot reach Postgres: %s", exc)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _fetch_flag(conn: Connection, query: str, key: int) -> bool:
    row = conn.execute(queries.get(query), {"key": key}).fetchone()
    return bool(row and row[0])
