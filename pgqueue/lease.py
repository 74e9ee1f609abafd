"""The worker's lease on its place in the database: its connections, its registration, the
session advisory lock that says it is alive, the heartbeat, and riding out an outage.

Three connections: ``conn`` claims jobs, marks them STARTED and holds the liveness lock
(Postgres drops the lock the moment the connection dies; it counts only while held by this
connection's server process, recorded as workers.lock_pid); ``writer`` writes outcomes, in the
same round trip as the claim but on a second server process, so that the two statements run
side by side; ``listener`` only LISTENs, so a notification can wake the loop while it sleeps.
A small heartbeat thread keeps ``workers.heartbeat_at`` fresh even while a solo task runs.

``conn`` and ``listener`` need sessions of their own and connect to the app's
``pooler.session_dsn``, refusing one through a pooler; ``writer`` and the heartbeat run one
transaction at a time and may go through PgBouncer in transaction mode (the app's ``dsn``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from . import migrate, pooler, queries
from .db import connect, describe_error, translate_errors
from .exceptions import DatabaseUnavailable
from .locks import WORKER_LOCK_CLASS

log = logging.getLogger("pgqueue.worker")

# A warm shutdown during an outage gives up on the database after this many seconds.
SHUTDOWN_OUTAGE_LIMIT = 30.0
# After a statement the server refused (lock or statement timeout, deadlock...), the next
# round trip waits this long (seconds): the error may well come again at once.
STATEMENT_RETRY = 1.0


@dataclass
class Registration:
    """What a worker registers as, in pgqueue.workers."""

    id: str
    name: str
    hostname: str
    queues: list[str]
    tasks: list[str]
    # tasks whose jobs are at-most-once unless a call says otherwise (not stored in workers:
    # the claim and the hand-off slots are told)
    at_most_once: list[str]
    pool: str
    concurrency: int
    reconnect_grace: float
    synchronous_commit: str
    # tasks with a concurrency or rate limit: claimed by pgqueue.claim_limited only, never
    # handed off; ``limits`` is claim_limited's JSON description of them
    limited: list[str] = field(default_factory=list)
    limits: str = "[]"

    @property
    def unlimited_tasks(self) -> list[str]:
        """The tasks claim_jobs and the hand-off may take."""
        return [t for t in self.tasks if t not in self.limited]


class Lease:
    """Connections, registration and liveness of one worker.

    ``connect(on_connected)`` opens the three connections, registers and takes the lock;
    ``on_connected(conn, listener, reconnecting)`` then sets up the rest of what hangs on
    these sessions (LISTENs, hand-off slots) in the same go, and on any failure every
    connection opened is closed again.
    """

    def __init__(
        self, dsn: Callable[[], str], session_dsn: Callable[[], str], registration: Registration
    ) -> None:
        self._dsn = dsn
        self._session_dsn = session_dsn
        self.registration = registration
        self.conn: Any = None
        self.writer: Any = None
        self.listener: Any = None
        self._backend_pids: tuple[int, ...] = ()
        self.registered = False  # once connect() succeeded: later ones are reconnections
        self._heartbeat: Heartbeat | None = None
        # Set by the heartbeat when our row was removed: re-register through a reconnection.
        self.lost = False

    def connect(self, on_connected: Callable[[Any, Any, bool], None]) -> None:
        """Open the connections, register (again) and take the liveness lock; on failure,
        close whatever was opened."""
        name = self.registration.name
        opened: list[Any] = []
        try:
            for role, dsn in (
                ("worker", self._session_dsn),
                ("outcomes", self._dsn),
                ("listener", self._session_dsn),
            ):
                opened.append(connect(dsn(), application_name=f"pgqueue {role} {name}"))
            conn, writer, listener = opened
            pooler.require_direct(conn, "the worker's claiming connection (its liveness lock)")
            pooler.require_direct(listener, "the worker's listening connection")
            self._set_up(conn, writer, listener, on_connected)
        except BaseException:
            for conn in opened:
                with contextlib.suppress(Exception):
                    conn.close()
            raise
        self.conn, self.writer, self.listener = opened
        self.registered = True
        # A pooled writer's backend pid is the pooler's, not a server process to end.
        self._backend_pids = tuple(
            c.info.backend_pid for c in (self.conn, self.writer) if not pooler.through_pooler(c)
        )

    @property
    def writer_pooled(self) -> bool:
        """Whether the outcome writer goes through a pooler: it then sets the worker's
        synchronous_commit in each transaction (outcome_settings), not once per session."""
        return self.writer is not None and pooler.through_pooler(self.writer)

    def _set_up(
        self,
        conn: psycopg.Connection[Any],
        writer: psycopg.Connection[Any],
        listener: psycopg.Connection[Any],
        on_connected: Callable[[Any, Any, bool], None],
    ) -> None:
        r = self.registration
        reconnecting = self.registered
        with translate_errors():
            migrate.check(conn)
            for c in (conn, writer):
                if not pooler.through_pooler(c):  # it would stay on a server others share
                    c.execute(
                        queries.get("set_synchronous_commit"), {"value": r.synchronous_commit}
                    )
            for pid in self._backend_pids:
                # Our previous sessions may still look alive to the server (a cut network):
                # end them, or one would keep our lock and later release it under our feet,
                # or commit an outcome or claim we no longer know of.
                conn.execute(queries.get("terminate_backend"), {"pid": pid})
            # Registering and locking in one transaction: no one sees the row unlocked.
            with conn.transaction():
                (lock_key,) = queries.one(
                    conn.execute(
                        queries.get("register_worker"),
                        {
                            "id": r.id,
                            "name": r.name,
                            "hostname": r.hostname,
                            "pid": os.getpid(),
                            "queues": r.queues,
                            "tasks": r.tasks,
                            "pool": r.pool,
                            "concurrency": r.concurrency,
                            "reconnect_grace": r.reconnect_grace,
                        },
                    )
                )
                _take_lock(conn, r.id, lock_key)
            on_connected(conn, listener, reconnecting)

    def close(self) -> None:
        for conn in (self.listener, self.writer, self.conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self.conn = self.writer = self.listener = None

    def unregister(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.execute(queries.get("unregister_worker"), {"id": self.registration.id})

    # -- heartbeat -------------------------------------------------------------------------------

    def start_heartbeat(
        self, interval: float, jobs_done: Callable[[], int], wake: Callable[[], None]
    ) -> None:
        def lost() -> None:
            self.lost = True
            wake()

        self._heartbeat = Heartbeat(self._dsn, self.registration.id, interval, jobs_done, lost)
        self._heartbeat.start()

    def stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()

    # -- outages ---------------------------------------------------------------------------------

    def ride_out(
        self,
        exc: Exception,
        on_connected: Callable[[Any, Any, bool], None],
        *,
        stopping: Callable[[], bool],
        meanwhile: Callable[[float], None],
    ) -> bool:
        """Reconnect with backoff, calling ``meanwhile(delay)`` between attempts (running
        tasks go on); False to give up (a warm shutdown past SHUTDOWN_OUTAGE_LIMIT)."""
        log.error("database connection lost (%s); reconnecting with backoff", exc)
        self.close()
        delay = 0.25
        started = time.monotonic()
        while True:
            if stopping() and time.monotonic() - started > SHUTDOWN_OUTAGE_LIMIT:
                log.error(
                    "still no database %.0f s into a warm shutdown; exiting, the jobs this "
                    "worker held will be rescued by another worker",
                    SHUTDOWN_OUTAGE_LIMIT,
                )
                return False
            meanwhile(delay)
            try:
                self.connect(on_connected)
            except DatabaseUnavailable:
                delay = min(delay * 2, 10.0)
                continue
            log.warning("database connection restored after %.1f s", time.monotonic() - started)
            return True


def _take_lock(conn: psycopg.Connection[Any], worker_id: str, lock_key: int) -> None:
    """Take the worker's liveness lock on its key, or on a fresh key while the one it has
    is held by another session. Any role may take any advisory key, and keys are handed out
    in order, so a foreign session may be holding ours, or the next ones; our own previous
    session, ended but not gone yet, may hold it too. The rescue counts the lock only when
    our claiming backend holds it (workers.lock_pid), whoever holds an old key."""
    params = {"id": worker_id, "lock_class": WORKER_LOCK_CLASS}
    (got,) = queries.one(conn.execute(queries.get("lock_worker"), {**params, "lock_key": lock_key}))
    # A few thousand keys at most can be held at once (the server's lock table): as many
    # round trips, well under the deadline.
    deadline = time.monotonic() + 10
    while not got:
        if time.monotonic() > deadline:
            raise DatabaseUnavailable(
                "could not take the worker's liveness lock: every key tried for 10 s was "
                "held by another session (see pg_locks, locktype 'advisory', classid "
                f"{WORKER_LOCK_CLASS})"
            )
        (lock_key, got) = queries.one(conn.execute(queries.get("relock_worker"), params))
        if not got:
            log.debug("liveness key %s is held by another session; drawing another", lock_key)


class Heartbeat(threading.Thread):
    """Refreshes the worker's heartbeat on its own connection, whatever the loop is doing."""

    def __init__(
        self,
        dsn: Callable[[], str],
        worker_id: str,
        interval: float,
        jobs_done: Callable[[], int],
        lost: Callable[[], None],
    ) -> None:
        super().__init__(name="pgqueue-heartbeat", daemon=True)
        self._dsn = dsn
        self.worker_id = worker_id
        self.interval = interval
        self._jobs_done = jobs_done
        self._lost = lost
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def run(self) -> None:
        conn: Any = None
        while not self._stop_event.wait(self.interval):
            try:
                if conn is None or conn.closed:
                    conn = connect(self._dsn(), application_name="pgqueue heartbeat")
                row = conn.execute(
                    queries.get("heartbeat"), {"id": self.worker_id, "jobs_done": self._jobs_done()}
                ).fetchone()
                if row is None:
                    log.warning("this worker was taken for lost; registering again")
                    self._lost()
            except Exception as exc:
                log.debug("heartbeat failed: %s", exc)
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class StatementErrors:
    """How the last round trip went. A statement the server refused (a lock or statement
    timeout, a deadlock...) leaves the connections working: the worker keeps its
    registration and its jobs, waits STATEMENT_RETRY seconds and tries again. Logged once
    per kind of error, not at every retry."""

    def __init__(self) -> None:
        # Round trips pause until then (monotonic); the kind of error failing now.
        self.until = 0.0
        self._failing: str | None = None

    def paused(self) -> bool:
        """Whether a statement error asks the loop to wait before its next round trip."""
        return time.monotonic() < self.until

    def noted(self, exc: Exception | None) -> None:
        if exc is None:
            if self._failing is not None:
                log.warning("database statements succeed again after %s", self._failing)
                self._failing = None
            return
        self.until = time.monotonic() + STATEMENT_RETRY
        kind = type(exc).__name__
        if kind != self._failing:
            log.warning(
                "a round trip failed: %s; keeping the connections, claimed jobs and "
                "outcomes, retrying every %.0f s",
                describe_error(exc),
                STATEMENT_RETRY,
            )
            self._failing = kind
        else:
            log.debug("a round trip failed again: %s", describe_error(exc))

    def tolerate(self, step: Callable[..., Any], *args: Any) -> None:
        """Run one of the loop's statements; a statement error is noted instead of ending
        the loop. A lost connection still raises."""
        try:
            with translate_errors():
                step(*args)
        except DatabaseUnavailable:
            raise  # a psycopg.OperationalError too, but the loop's outage path handles it
        except psycopg.Error as exc:
            self.noted(exc)
