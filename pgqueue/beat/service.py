"""The beat service: syncs the code's schedule, then sends due ticks until stopped, riding
out database restarts."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import wait as wait_for_fds
from typing import TYPE_CHECKING, Any

import psycopg

from .. import migrate, pooler, queries
from ..db import connect, translate_errors
from ..exceptions import PgQueueError
from .entries import declared_entries
from .table import sync_schedule
from .ticks import EntryError, tick

if TYPE_CHECKING:
    from ..app import PgQueue

log = logging.getLogger("pgqueue.beat")

# Seconds between attempts to reach the database again after losing it.
_RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)


class Beat:
    """A beat service: syncs the code's schedule, then sends due ticks until stopped.

    ``Beat(app).run()`` blocks (``pgqueue beat``); ``Beat(app).start()`` runs the loop in a
    daemon thread (``pgqueue worker --beat``) and ``stop()`` ends it. Either way it uses its
    own connection, LISTENs for table edits, and sleeps until the earliest ``next_run_at``
    (at most ``beat_max_loop_interval`` seconds).
    """

    _count = 0

    def __init__(
        self,
        app: PgQueue,
        *,
        max_loop_interval: float | None = None,
        name: str | None = None,
        sync: bool = True,
    ) -> None:
        self.app = app
        self.max_loop_interval = float(max_loop_interval or app.conf.beat_max_loop_interval)
        Beat._count += 1
        suffix = f".{Beat._count}" if Beat._count > 1 else ""
        # pid first: Postgres cuts application_name at 63 bytes, and a hostname can be long.
        self.name = name or f"beat.{os.getpid()}{suffix}@{socket.gethostname()}"
        self.sync = sync
        self.sent = 0
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._conn: psycopg.Connection[Any] | None = None
        self._thread: threading.Thread | None = None
        # entry name -> monotonic time before which it is not retried after an error
        self._failing: dict[str, float] = {}
        # The error last logged for each failing entry: said once, not at every retry.
        self._reported: dict[str, str] = {}
        self._signals = 0
        self._serving = False

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> Beat:
        """Connect, check the schema and sync (errors raise here), then loop in a thread."""
        self._prepare()
        self._thread = threading.Thread(target=self._serve, name="pgqueue-beat", daemon=True)
        self._thread.start()
        return self

    def run(self, *, install_signals: bool = True) -> int:
        """Connect, sync and loop in this thread until ``stop()`` or SIGTERM/SIGINT."""
        self._prepare()
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self._serve()
        return 0

    def stop(self, timeout: float | None = 10.0) -> None:
        """Ask the loop to end after the current tick; waits for a started thread."""
        self._stop.set()
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")
        if self._thread is None:
            if not self._serving:
                self._close()  # used through run_pending() only
        elif self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        if self._signals == 1:
            log.warning("%s received: beat stopping", signal.Signals(signum).name)
            self.stop()
            return
        # A tick in flight is one transaction: dying now rolls it back, losing nothing.
        os._exit(1)

    def _prepare(self) -> None:
        self.app.import_task_modules()  # they may declare periodic tasks
        if self.sync:
            declared_entries(self.app)  # refuse a bad schedule before touching the database
        conn = self._connect()
        if not self.sync:
            log.info("beat %s ready: running pgqueue.periodic_tasks as it is", self.name)
            return
        try:
            result = sync_schedule(self.app, conn)
        except BaseException:
            self._close()
            raise
        log.info(
            "beat %s ready: %d periodic task(s) declared in code%s",
            self.name,
            len(result.declared),
            f", {len(result.disabled)} disabled" if result.disabled else "",
        )

    def _connect(self) -> psycopg.Connection[Any]:
        conn = connect(pooler.session_dsn(self.app), application_name=f"pgqueue beat {self.name}")
        try:
            pooler.require_direct(conn, "beat (it LISTENs for edits of periodic_tasks)")
            with translate_errors():
                migrate.check(conn)
                conn.execute(queries.get("beat_listen"))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    # -- the loop --------------------------------------------------------------------------

    def _serve(self) -> None:
        self._serving = True
        failures = 0
        contended = 0
        try:
            while not self._stop.is_set():
                try:
                    if self._conn is None:
                        self._connect()
                        log.info("beat %s reconnected", self.name)
                    self.run_pending()
                    delay = self._next_wakeup()
                    failures = 0
                    if delay > 0:
                        contended = 0
                    else:
                        # Due, yet nothing we could lock: another beat holds the row, or it
                        # fell due a moment ago. Back off a little, not to spin while a
                        # peer's tick is slow (it may be stuck, or dead and not yet noticed).
                        delay = min(1.0, 0.025 * 2**contended)
                        contended = min(contended + 1, 6)
                except Exception as exc:
                    # A beat outlives database restarts and migrations in progress; a
                    # failed pass changed nothing, since each tick is one transaction.
                    delay = _RECONNECT_DELAYS[min(failures, len(_RECONNECT_DELAYS) - 1)]
                    failures += 1
                    if isinstance(exc, PgQueueError | psycopg.Error):
                        log.warning("beat %s: %s; retrying in %.1fs", self.name, exc, delay)
                    else:
                        log.exception(
                            "beat %s: unexpected error; retrying in %.1fs", self.name, delay
                        )
                    self._close()
                self._wait(delay)
        finally:
            self._close()
            log.info("beat %s stopped after sending %d job(s)", self.name, self.sent)

    def run_pending(self) -> int:
        """Send every due tick now (one transaction each); returns how many jobs were sent."""
        conn = self._conn if self._conn is not None else self._connect()
        sent = 0
        while not self._stop.is_set():
            clock = time.monotonic()
            self._failing = {n: t for n, t in self._failing.items() if t > clock}
            try:
                done = tick(self.app, conn, skip=self._failing)
            except EntryError as exc:
                self._failing[exc.name] = clock + self.max_loop_interval
                if self._reported.get(exc.name) != str(exc):
                    self._reported[exc.name] = str(exc)
                    log.error(
                        "beat: %s; the other periodic tasks go on, this one is tried again "
                        "every %.0fs: fix its row or remove it (`pgqueue beat list` shows it)",
                        exc,
                        self.max_loop_interval,
                    )
                else:
                    log.debug("beat: %s (again)", exc)
                continue
            if done is None:
                break
            if self._reported.pop(done.name, None) is not None:
                log.info("beat: periodic task %r works again", done.name)
            if done.task_id is not None:
                sent += 1
        self.sent += sent
        return sent

    def _next_wakeup(self) -> float:
        conn = self._conn if self._conn is not None else self._connect()
        with translate_errors():
            row = queries.one(
                conn.execute(queries.get("beat_next_wakeup"), {"skip": list(self._failing)})
            )
        delay = self.max_loop_interval
        if row[0] is not None:
            delay = min(delay, max(0.0, float(row[0])))
        if self._failing:
            delay = min(delay, min(self._failing.values()) - time.monotonic())
        return max(0.0, delay)

    def _wait(self, delay: float) -> None:
        """Sleep up to ``delay``; wake early on stop() or on a table edit by someone else."""
        if self._stop.is_set():
            return
        if self._conn is not None and self._edited():
            return
        fds = [self._wake_r]
        if self._conn is not None:  # _edited() drops a broken connection
            try:
                fds.append(self._conn.fileno())
            except psycopg.Error:
                self._close()
        ready = wait_for_fds(fds, delay)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._wake_r, 64)
        if len(fds) > 1 and fds[1] in ready:
            self._edited()  # consume the notifications; the next pass re-reads anyway

    def _edited(self) -> bool:
        """Whether another session notified a table edit (our own ticks never notify)."""
        conn = self._conn
        if conn is None:
            return False
        try:
            own = conn.info.backend_pid
            return any(n.pid != own for n in conn.notifies(timeout=0))
        except psycopg.Error:
            self._close()  # lost: the next pass reconnects
            return False

    def __del__(self) -> None:
        for fd in (getattr(self, "_wake_r", None), getattr(self, "_wake_w", None)):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
