"""The maintenance runner: the services of one worker on a thread and connection of their
own, so that a VACUUM or a 5,000-row cleanup never holds up a claim or an outcome write."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
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
    """Runs ``services`` when due, each pass elected through the service's row in
    pgqueue.maintenance: whatever the number of processes running the same services, one
    process does each pass of each, once per interval by the database's clock, and the row
    says when each last ran and who ran it (``worker_name``).

    ``start()`` opens the connection and runs on a daemon thread until ``stop()``. A dropped
    connection is reopened with backoff (logged once per outage); a statement the server
    refuses (a lock timeout, a deadlock) is logged, noted in the row's last_error, and the
    service runs again at its next interval. ``run_due(conn)`` does one pass on a given
    connection, for tests and tools.
    """

    def __init__(
        self,
        dsn: str,
        services: Sequence[Service],
        *,
        synchronous_commit: str = "on",
        application_name: str = "pgqueue maintenance",
        worker_name: str | None = None,
    ) -> None:
        self.dsn = dsn
        self.services = list(services)
        self.synchronous_commit = synchronous_commit
        self.application_name = application_name
        self.worker_name = worker_name or f"pgqueue@{socket.gethostname()}:{os.getpid()}"
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
        """Run every service that is due on ``conn``, if this process wins its pass. A
        statement error is logged and the others run; a lost connection raises
        DatabaseUnavailable."""
        now = time.monotonic()
        for service in self.services:
            if service.next_run > now:
                continue
            service.next_run = now + service.interval
            try:
                with translate_errors():
                    service.next_run = now + self._run_elected(conn, service)
            except psycopg.Error as exc:
                if connection_lost(exc):
                    raise
                log.warning(
                    "maintenance failed: %s: %s; it runs again at its next interval",
                    service.name,
                    describe_error(exc),
                )
                self._note_failure(conn, service, exc)

    def _run_elected(self, conn: Connection, service: Service) -> float:
        """One pass of ``service`` if this process wins it; the others skip it. Returns the
        seconds until this process should look again: none after a full batch, an interval
        after its own pass, until the row says the next pass is due after another's."""
        params = {
            "service": service.name,
            "interval": service.interval,
            "worker": self.worker_name,
            "transactional": service.transactional,
        }
        if service.transactional:
            # The won row stays locked until the pass commits; an error rolls back the
            # pass and its election alike.
            with conn.transaction():
                won, due_in = _elect(conn, params)
                if not won:
                    return _not_won(conn, service, due_in)
                again = service.work(conn)
                _finished(conn, service, again)
        else:
            won, due_in = _elect(conn, params)
            if not won:
                return _not_won(conn, service, due_in)
            # Committed already: running_pid keeps the others off until the pass ends here,
            # or this session does (an error is noted by run_due, which clears it).
            again = service.work(conn)
            _finished(conn, service, again)
        return 0.0 if again else service.interval

    def _note_failure(self, conn: Connection, service: Service, exc: BaseException) -> None:
        """Say in the service's row why its pass failed (operators read it there)."""
        try:
            with translate_errors():
                conn.execute(
                    queries.get("maintenance_failed"),
                    {"service": service.name, "error": describe_error(exc)},
                )
        except psycopg.Error as again:
            if connection_lost(again):
                raise
            log.debug("could not note the failure of maintenance %s: %s", service.name, again)

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


def _elect(conn: Connection, params: dict[str, object]) -> tuple[bool, float | None]:
    """Whether this process won the pass, and the seconds until the next is due (None
    when the service has no row)."""
    won, due_in = queries.one(conn.execute(queries.get("maintenance_elect"), params))
    return bool(won), None if due_in is None else float(due_in)


def _not_won(conn: Connection, service: Service, due_in: float | None) -> float:
    """When to look again after a pass this process did not win."""
    if due_in is None:
        # A service of its own (0011 adds pgqueue's rows): add its row, then run at once.
        conn.execute(queries.get("maintenance_seed"), {"services": [service.name]})
        return 0.0
    # Due now but not won: another process's pass is under way, and will set the next.
    return due_in or service.interval


def _finished(conn: Connection, service: Service, again: bool) -> None:
    conn.execute(queries.get("maintenance_finished"), {"service": service.name, "again": again})
