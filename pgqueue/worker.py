"""The worker: claims jobs with SKIP LOCKED, runs them in a pool, writes their outcomes.

One process, one loop, three connections: ``conn`` claims jobs, marks them STARTED and holds
the worker's session advisory lock (its liveness: Postgres drops the lock the moment the
connection dies); ``writer`` writes outcomes, in the same round trip as the claim but on a
second server process, so that the two statements run side by side rather than one after
the other; ``listener`` only LISTENs, so a notification can wake the loop while it sleeps in
``select``.
While idle, the worker offers free slots (pgqueue.worker_slots): a producer's insert then
hands a new job to it directly, claimed and STARTED in the producer's transaction, and the
notification on the worker's own channel carries the job, so it starts without a claim.
A small heartbeat thread keeps ``workers.heartbeat_at`` fresh even while a solo task runs.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from multiprocessing.connection import wait as wait_for_fds
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from . import logs, migrate, queries, signals, states
from .db import JOBS_CHANNEL, connect, connection_lost, describe_error, translate_errors
from .exceptions import ConfigurationError, DatabaseUnavailable, WorkerLostError
from .execution import Job, Outcome, decode_failure
from .handoff import Handoff, HandoffKeys
from .maintenance import MaintenanceRunner, worker_services
from .pools import POOLS, Pool, PreforkPool

if TYPE_CHECKING:
    from .app import PgQueue
    from .metrics import Metrics

log = logging.getLogger("pgqueue.worker")

CONTROL_CHANNEL = "pgqueue_control"
# First key of every worker's session advisory lock (the second is workers.lock_key).
WORKER_LOCK_CLASS = 0x70677175
# How long an outcome may wait to be written with others while the pool is busy (seconds).
OUTCOME_LINGER = 0.010
# A warm shutdown during an outage gives up on the database after this many seconds.
SHUTDOWN_OUTAGE_LIMIT = 30.0
# At most this many free slots are offered for hand-off at a time: enough for a burst to
# skip the claim, few enough that offering them costs nothing (jobs beyond go the usual way).
HANDOFF_SLOTS = 8
# At most one warning per this many seconds about notifications pgqueue did not send.
FORGED_LOG_INTERVAL = 60.0
# After a statement the server refused (lock or statement timeout, deadlock...), the next
# round trip waits this long (seconds): the error may well come again at once.
STATEMENT_RETRY = 1.0


class Worker:
    """A worker process. ``Worker(app, queues=["default"], concurrency=2).run()``."""

    def __init__(
        self,
        app: PgQueue,
        *,
        queues: list[str] | None = None,
        concurrency: int | None = None,
        pool: str | None = None,
        name: str | None = None,
        prefetch_multiplier: int | None = None,
        poll_interval: float | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
    ) -> None:
        self.app = app
        self.queues = queues or [app.conf.task_default_queue]
        pool_name = pool or app.conf.worker_pool
        if pool_name not in POOLS:
            raise ConfigurationError(
                f"unknown pool {pool_name!r}: choose one of {', '.join(POOLS)}"
            )
        self.pool_name = pool_name
        self.concurrency = (
            1
            if pool_name == "solo"
            else (concurrency or app.conf.worker_concurrency or os.cpu_count() or 1)
        )
        self.hostname = socket.gethostname()
        self.name = name or f"pgqueue@{self.hostname}:{os.getpid()}"
        self.prefetch_multiplier = max(
            1, prefetch_multiplier or app.conf.worker_prefetch_multiplier
        )
        self.poll_interval = poll_interval or float(app.conf.worker_poll_interval)
        self.max_tasks_per_child = max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child
        self.id = str(uuid.uuid4())
        self.jobs_done = 0
        self._stopping = False
        self._signals = 0
        # Written by signal handlers and stop() so that select() returns at once.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._buffer: collections.deque[Job] = collections.deque()
        self._outcomes: list[Outcome] = []
        # monotonic time the oldest outcome still to be written came in
        self._outcomes_since = 0.0
        self._pool: Pool | None = None
        self._conn: Any = None
        self._listener: Any = None
        self._writer: Any = None
        self._backend_pids: tuple[int, ...] = ()
        self._tasks: list[str] = []
        self._at_most_once: list[str] = []
        # What an at-most-once job's claim or STARTED mark commits with (claim_settings).
        self._durable = {"synchronous_commit": str(app.conf.worker_synchronous_commit)}
        # When the earliest job not yet due becomes due (monotonic), as of the last claim;
        # run_at is on the database's clock, so the database says how far off that is.
        self._due_after_claim: float | None = None
        self._task_limits: dict[str, tuple[float | None, float | None]] = {}
        # Hand-off: the channel producers notify with jobs handed to us, how many slots we
        # have and how many we offer now (less one for each job handed to us since).
        self._channel = f"pgqueue_worker_{self.id.replace('-', '')}"
        self._slots = min(self.concurrency, HANDOFF_SLOTS)
        self._offered = 0
        self._handoff_keys = HandoffKeys()
        # Forged notifications are logged at most once per FORGED_LOG_INTERVAL.
        self._forged = 0
        self._forged_logged = 0.0
        self._maintenance: MaintenanceRunner | None = None
        self._heartbeat: _Heartbeat | None = None
        # Set by the heartbeat when our row was removed: re-register through a reconnection.
        self._lost = False
        # A statement error pauses round trips until then (monotonic); the kind of error
        # failing now, so that it is logged once, not at every retry.
        self._pause_until = 0.0
        self._failing: str | None = None
        self._stopping_since = 0.0
        # Set once the warning about an unenforceable per-call time limit was logged.
        self._warned_limit = False
        # Set by pgqueue.metrics.serve(): counts the jobs this worker starts and finishes.
        self.metrics: Metrics | None = None

    # -- set-up ----------------------------------------------------------------------------

    def _make_pool(self) -> Pool:
        if self.pool_name == "prefork":
            return PreforkPool(
                self.app,
                self.concurrency,
                self.name,
                max_tasks_per_child=self.max_tasks_per_child,
                max_memory_per_child=self.max_memory_per_child,
            )
        return POOLS[self.pool_name](self.app, self.concurrency, self.name)

    def _connect(self) -> None:
        """Open the connections, register (again) and take the liveness lock; on failure,
        close whatever was opened."""
        opened: list[Any] = []
        try:
            for role in ("worker", "outcomes", "listener"):
                opened.append(connect(self.app.dsn, application_name=f"pgqueue {role} {self.name}"))
            self._set_up(*opened)
        except BaseException:
            for conn in opened:
                with contextlib.suppress(Exception):
                    conn.close()
            raise
        self._conn, self._writer, self._listener = opened
        self._backend_pids = (self._conn.info.backend_pid, self._writer.info.backend_pid)

    def _set_up(self, conn: Any, writer: Any, listener: Any) -> None:
        reconnecting = bool(self._backend_pids)
        with translate_errors():
            migrate.check(conn)
            for c in (conn, writer):
                c.execute(
                    queries.get("set_synchronous_commit"),
                    {"value": str(self.app.conf.worker_synchronous_commit)},
                )
            for pid in self._backend_pids:
                # Our previous sessions may still look alive to the server (a cut network):
                # end them, or one would keep our lock and later release it under our feet,
                # or commit an outcome or claim we no longer know of.
                conn.execute(queries.get("terminate_backend"), {"pid": pid})
            # Registering and locking in one transaction: no one sees the row unlocked.
            with conn.transaction():
                (lock_key,) = conn.execute(
                    queries.get("register_worker"),
                    {
                        "id": self.id,
                        "name": self.name,
                        "hostname": self.hostname,
                        "pid": os.getpid(),
                        "queues": self.queues,
                        "tasks": self._tasks,
                        "pool": self.pool_name,
                        "concurrency": self.concurrency,
                        "reconnect_grace": float(self.app.conf.worker_reconnect_grace),
                    },
                ).fetchone()
                self._take_lock(conn, lock_key)
            # A new hand-off key first, then listen, then give back what the lost
            # connection held: a job handed to an old slot is then either released below
            # or heard of, signed with the retired key, and given back then (_on_handoff).
            key_inner, key_outer = self._handoff_keys.new_key()
            listener.execute(queries.get("worker_listen_jobs"))
            listener.execute(queries.get("worker_listen_control"))
            listener.execute(
                sql.SQL(queries.get("worker_listen_handoff")).format(
                    channel=sql.Identifier(self._channel)
                )
            )
            if reconnecting:
                self._release_held(conn)
            conn.execute(
                queries.get("create_slots"),
                {
                    "worker_id": self.id,
                    "listener_pid": listener.info.backend_pid,
                    "slots": self._slots,
                    "channel": self._channel,
                    "queues": self.queues,
                    "tasks": self._tasks,
                    "at_most_once": self._at_most_once,
                    "key_inner": key_inner,
                    "key_outer": key_outer,
                },
            )
        self._offered = 0

    def _release_held(self, conn: Any) -> None:
        """On a reconnect, give back what the lost connection may have claimed for us.

        The buffer is dropped whole: its jobs, and any claimed or marked STARTED in a
        round trip whose reply never came, go back to the queue; running jobs and outcomes
        still to be written stay ours.
        """
        assert self._pool is not None
        keep = [(slot.job.id, slot.job.attempt) for slot in self._pool.running()]
        keep += [(o.job_id, o.attempt) for o in self._outcomes]
        rows = conn.execute(
            queries.get("release_held_jobs"),
            {
                "worker_id": self.id,
                "keep": [k[0] for k in keep],
                "keep_attempts": [k[1] for k in keep],
            },
        ).fetchall()
        self._buffer.clear()
        released = sum(r[1] for r in rows)
        if released:
            log.warning("put %d claimed but unstarted job(s) back in the queue", released)

    @staticmethod
    def _take_lock(conn: Any, lock_key: int) -> None:
        deadline = time.monotonic() + 10
        while True:
            (got,) = conn.execute(
                queries.get("lock_worker"), {"lock_class": WORKER_LOCK_CLASS, "lock_key": lock_key}
            ).fetchone()
            if got:
                return
            if time.monotonic() > deadline:
                raise DatabaseUnavailable("could not take the worker's liveness lock")
            time.sleep(0.1)

    def _close_connections(self) -> None:
        for conn in (self._listener, self._writer, self._conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self._conn = self._writer = self._listener = None

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        if self._signals == 1:
            log.warning(
                "%s received, warm shutdown: finishing running tasks "
                "(send it again to exit at once)",
                signal.Signals(signum).name,
            )
            self.stop()
            return
        log.warning("second signal: cold shutdown, leaving running jobs to be recovered")
        if self._pool is not None:
            self._pool.kill()
        os._exit(1)

    def stop(self) -> None:
        """Ask the loop for a warm shutdown (from another thread or a signal handler)."""
        if not self._stopping:
            self._stopping_since = time.monotonic()
        self._stopping = True
        self.stop_waiting()

    def stop_waiting(self) -> None:
        """Make the loop's select() return now."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    # -- running -----------------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        """Run until a warm shutdown; returns the process exit code."""
        self.app.import_task_modules()
        self._tasks = sorted(self.app.tasks)
        # Tasks whose jobs are at-most-once unless the call says otherwise (see _acks_late).
        self._at_most_once = sorted(n for n, t in self.app.tasks.items() if not t.acks_late)
        if not self._tasks:
            raise ConfigurationError(
                "the app has no tasks registered: point -A at the module defining them, or "
                "list their modules in include=[...]"
            )
        self._connect()
        self._pool = self._make_pool()
        self._pool.start()
        self._heartbeat = _Heartbeat(self)
        self._heartbeat.start()
        # After registering: this worker's own rescue must find it registered and locked.
        self._maintenance = MaintenanceRunner(
            self.app.dsn,
            worker_services(self.app, lock_class=WORKER_LOCK_CLASS),
            synchronous_commit=str(self.app.conf.worker_synchronous_commit),
        )
        self._maintenance.start()
        if install_signals:
            self._install_signals()
        self._log_start()
        signals.worker_ready.send(sender=self)
        code = 0
        try:
            while True:
                try:
                    self._loop()
                    break
                except DatabaseUnavailable as exc:
                    if not self._ride_out_outage(exc):
                        code = 1
                        break
        finally:
            self._shutdown()
        return code

    def _log_start(self) -> None:
        log.info(
            "worker %s ready: pool=%s concurrency=%d queues=%s tasks=%s",
            self.name,
            self.pool_name,
            self.concurrency,
            ",".join(self.queues),
            ", ".join(self._tasks),
        )
        assert self._pool is not None
        # Say which limit or option this pool leaves unenforced, so that nobody relies on it.
        if not self._pool.enforces_hard_limit:
            limits = []
            if self.app.conf.task_time_limit:
                limits.append(f"task_time_limit={self.app.conf.task_time_limit:g}")
            limited = sorted(t.name for t in self.app.tasks.values() if t._time_limit)
            if limited:
                limits.append(f"time_limit of {', '.join(limited)}")
            if limits:
                log.warning(
                    "the %s pool cannot enforce hard time limits (%s): tasks past them keep "
                    "running; use -P prefork to have them stopped",
                    self.pool_name,
                    "; ".join(limits),
                )
        if not isinstance(self._pool, PreforkPool):
            ignored = [
                f"--{name}={value}"
                for name, value in (
                    ("max-tasks-per-child", self.max_tasks_per_child),
                    ("max-memory-per-child", self.max_memory_per_child),
                )
                if value
            ]
            if ignored:
                log.warning(
                    "the %s pool has no child processes: %s only apply to -P prefork and "
                    "are ignored",
                    self.pool_name,
                    " ".join(ignored),
                )

    def _loop(self) -> None:
        assert self._pool is not None
        pool = self._pool
        capacity = self.concurrency * self.prefetch_multiplier
        want_claim = True  # at start-up, and whenever there may be more ready jobs
        next_due: float | None = None  # monotonic time of the earliest future job
        last_poll = time.monotonic()
        while True:
            self._collect()
            if self._lost:
                self._lost = False
                raise DatabaseUnavailable("this worker was taken for lost; registering again")
            paused = self._paused()
            if self._stopping and not paused:
                self._tolerate(self._release_buffer)
            to_start = [] if paused else self._startable()
            room = 0
            if (
                not paused
                and not self._stopping
                and (want_claim or (next_due is not None and time.monotonic() >= next_due))
            ):
                room = self._room(capacity, len(to_start))
            if to_start or room > 0 or (not paused and self._outcomes_due()):
                # Free slots are filled straight from the claim (STARTED in the same trip).
                start = min(room, pool.free_slots() - len(to_start))
                claimed = self._sync(to_start, room, start)
                if self._paused():
                    want_claim = want_claim or room > 0  # the claim did not happen
                elif room > 0:
                    last_poll = time.monotonic()
                    # A full batch means more may be waiting; a short one means the ready
                    # jobs are drained and a NOTIFY (or a due run_at) tells of more.
                    want_claim = len(claimed) == room
                    next_due = None if want_claim else self._due_after_claim
                if claimed or (self._buffer and pool.free_slots()):
                    continue
            if self._stopping:
                if not self._paused():
                    self._tolerate(self._offer, 0)
                if not pool.busy() and not self._holding_outcomes():
                    return
            else:
                idle = not want_claim and not self._buffer
                if not self._paused():
                    self._tolerate(self._offer, min(self._slots, pool.free_slots()) if idle else 0)
            now = time.monotonic()
            timeouts = [self.poll_interval - (now - last_poll)]
            if next_due is not None:
                timeouts.append(next_due - now)
            deadline = pool.next_deadline()
            if deadline is not None:
                timeouts.append(deadline - now)
            if self._paused():
                timeouts.append(self._pause_until - now)  # then the round trip is tried again
            else:
                if want_claim and self._room(capacity, 0) > 0:
                    timeouts.append(0)
                if self._outcomes:
                    timeouts.append(self._outcomes_since + OUTCOME_LINGER - now)
            ready = wait_for_fds(
                [self._wake_r, self._listener.fileno(), *pool.fds()], max(0.0, min(timeouts))
            )
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 1024)
            if self._listener.fileno() in ready and self._on_notifications():
                want_claim = True
            if time.monotonic() - last_poll >= self.poll_interval:
                # The fallback poll asks for one claim; it is not due again for a whole
                # interval, even if the pool is too busy to claim now (else the timeout
                # above would stay at zero and the loop spin until a slot frees).
                want_claim = True
                last_poll = time.monotonic()

    def _outcomes_due(self) -> bool:
        """Whether to write the outcomes in hand even though no claim goes with them: at
        once when the pool is idle or the worker stops; while other jobs run, once the
        oldest has waited OUTCOME_LINGER, so that the outcomes of a busy pool go out in a
        few big statements, most of them with the next claim, not one round trip each."""
        assert self._pool is not None
        if not self._outcomes:
            return False
        if self._stopping or not self._pool.busy():
            return True
        return time.monotonic() - self._outcomes_since >= OUTCOME_LINGER

    def _room(self, capacity: int, starting: int) -> int:
        """How many jobs to claim now: claims come in batches, once half the capacity is
        free, unless nothing is buffered or running. (The loop also sleeps on this: waking up
        for a claim it would not make would spin.)"""
        assert self._pool is not None
        busy = self._pool.busy() + len(self._buffer) + starting
        room = capacity - busy
        if room < capacity // 2 and busy:
            return 0
        return room

    def _sync(self, to_start: list[Job], claim: int, start: int = 0) -> list[Job]:
        """One round trip: write the outcomes, mark jobs STARTED, claim more, the first
        ``start`` claimed jobs STARTED already and handed to the pool at once.

        The outcomes go out on the writer connection and the rest on ``conn``, each in
        pipeline mode (one implicit transaction, one commit per connection), and the worker
        waits for both replies together: the server runs the two at once. Jobs marked
        STARTED are handed to the pool afterwards; a job revoked since its claim is not
        returned by mark_started and is dropped instead of run.
        """
        assert self._pool is not None
        outcomes = self._outcomes
        finished = [o for o in outcomes if o.state != states.RETRY]
        retried = [o for o in outcomes if o.state == states.RETRY]
        done = started = claimed = due = None
        offered = self._offered
        writer_error: Exception | None = None
        conn_error: Exception | None = None
        with translate_errors():
            try:
                with contextlib.ExitStack() as writer_sent:
                    if finished or retried:
                        # Sent now; its reply is awaited when the block ends, after conn's.
                        writer_sent.enter_context(self._writer.pipeline())
                    if finished:
                        done = self._writer.execute(
                            queries.get("finish_jobs"), self._finish_params(finished)
                        )
                    if retried:
                        self._writer.execute(queries.get("retry_jobs"), self._retry_params(retried))
                    if to_start or claim > 0:
                        try:
                            started, claimed, due = self._claim(to_start, claim, start)
                        except psycopg.Error as exc:
                            if connection_lost(exc):
                                raise
                            conn_error = exc
            except psycopg.Error as exc:
                if connection_lost(exc):
                    raise
                writer_error = exc
        if conn_error is not None:
            # The claim's transaction rolled back whole: the jobs to start are still ours,
            # claimed and not STARTED; they go back to the buffer, and the slots we offered
            # are as they were.
            self._buffer.extendleft(reversed(to_start))
            self._offered = offered
            started = claimed = due = None
            to_start = []
        self._statement_failed(writer_error or conn_error)
        if writer_error is not None:
            # Nothing of finish_jobs/retry_jobs committed: the outcomes stay held, for the
            # next round trip.
            outcomes, done = [], None
        else:
            # Cleared only once written: after an outage the same outcomes are written
            # again, and the (id, attempt) fence makes that idempotent.
            self._outcomes = []
        written = {r[0] for r in done.fetchall()} if done is not None else set()
        for o in outcomes:
            self._log_outcome(o, o.state == states.RETRY or o.job_id in written)
        self.jobs_done += len(outcomes)
        ours = {r[0]: r[1] for r in started.fetchall()} if started is not None else {}
        for job in to_start:
            if job.id not in ours:
                log.info("task %s was revoked or rescued before it started; skipped", job.label)
            elif not ours[job.id]:
                self._end_expired(job)
            else:
                self._start(job)
        if claimed is None:
            return []
        assert due is not None  # sent with every claim
        (delay,) = due.fetchone()
        self._due_after_claim = None if delay is None else time.monotonic() + max(0.0, delay)
        document, _ = claimed.fetchone()
        jobs = self._decode(document)
        for job in jobs:
            if job.started:
                self._start(job)
            else:
                self._buffer.append(job)
        return jobs

    def _claim(self, to_start: list[Job], claim: int, start: int) -> tuple[Any, Any, Any]:
        """Send _sync's statements on ``conn``, in one pipeline (one transaction): mark
        ``to_start`` STARTED, claim up to ``claim`` more; their cursors, and next_run_delay's."""
        started = claimed = due = None
        with self._conn.pipeline():
            self._conn.execute(queries.get("claim_settings"), self._durable)
            if self._offered:
                # Claiming means not idle: no job is to be handed to us meanwhile.
                self._conn.execute(queries.get("offer_slots"), {"worker_id": self.id, "n": 0})
                self._offered = 0
            if to_start:
                started = self._conn.execute(
                    queries.get("mark_started"), self._start_params(to_start)
                )
            if claim > 0:
                claimed = self._conn.execute(
                    queries.get("claim_jobs"), self._claim_params(claim, start)
                )
                # Needed only when the claim comes up short, to sleep until the next job is
                # due; asked now, it costs no round trip of its own. (Same transaction: the
                # jobs just claimed no longer count.)
                due = self._conn.execute(
                    queries.get("next_run_delay"), {"queues": self.queues, "tasks": self._tasks}
                )
        return started, claimed, due

    def _statement_failed(self, exc: Exception | None) -> None:
        """Note how the last round trip went. A statement the server refused (a lock or
        statement timeout, a deadlock...) leaves the connections working: the worker keeps
        its registration and its jobs, waits STATEMENT_RETRY seconds and tries again. Logged
        once per kind of error, not at every retry."""
        if exc is None:
            if self._failing is not None:
                log.warning("database statements succeed again after %s", self._failing)
                self._failing = None
            return
        self._pause_until = time.monotonic() + STATEMENT_RETRY
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

    def _tolerate(self, step: Any, *args: Any) -> None:
        """Run one of the loop's statements; a statement error is noted (see
        _statement_failed) instead of ending the loop. A lost connection still raises."""
        try:
            with translate_errors():
                step(*args)
        except psycopg.Error as exc:
            self._statement_failed(exc)

    def _holding_outcomes(self) -> bool:
        """Whether a warm shutdown waits on, for outcomes statement errors kept unwritten:
        at most SHUTDOWN_OUTAGE_LIMIT seconds, then the jobs are left to be rescued."""
        if not self._outcomes:
            return False
        if time.monotonic() - self._stopping_since < SHUTDOWN_OUTAGE_LIMIT:
            return True
        log.error(
            "%d outcome(s) still refused by the database %.0f s into a warm shutdown; "
            "exiting, their jobs will be rescued",
            len(self._outcomes),
            SHUTDOWN_OUTAGE_LIMIT,
        )
        return False

    def _paused(self) -> bool:
        """Whether a statement error asks the loop to wait before its next round trip."""
        return time.monotonic() < self._pause_until

    def _start(self, job: Job) -> None:
        """Hand a job marked STARTED in the database to the pool."""
        assert self._pool is not None
        soft, hard = self._limits(job)
        if job.time_limit and not self._pool.enforces_hard_limit and not self._warned_limit:
            # Once per worker: a per-call limit is not known at start-up, when the
            # pool says which task and global limits it cannot enforce.
            self._warned_limit = True
            log.warning(
                "task %s has a per-call time_limit of %g s, which the %s pool cannot "
                "enforce: such tasks run to the end; use -P prefork to have them stopped",
                job.label,
                job.time_limit,
                self.pool_name,
            )
        if log.isEnabledFor(logging.INFO):
            log.info(
                "task %s (queue %s) started",
                job.label,
                job.queue,
                extra=logs.job_fields(job.task_name, job.id, job.queue, event="task_started"),
            )
        if self.metrics is not None:
            self.metrics.job_started(job.id)
        self._pool.submit(job, soft, hard)
        if self._pool.name == "solo":
            self._collect()

    def _on_notifications(self) -> bool:
        """Handle what woke us; True if new work may be ready in our queues.

        Every notification is a hint from anyone (any role may NOTIFY any channel): a
        pgqueue_jobs one only leads to a claim, which the database decides; a hand-off
        runs only when signed by the jobs trigger (HandoffKeys); a revoke is acted on only
        once the database confirms it (_on_revokes).
        """
        with translate_errors():
            notes = list(self._listener.notifies(timeout=0))
        if not notes and self._listener.closed:
            raise DatabaseUnavailable("the listening connection closed")
        work = False
        revokes: dict[str, bool] = {}
        for note in notes:
            if note.channel == JOBS_CHANNEL:
                work = work or note.payload in self.queues
            elif note.channel == self._channel:
                self._on_handoff(note.payload)
            elif note.channel == CONTROL_CHANNEL:
                self._on_control(note.payload, revokes)
        if revokes:
            self._on_revokes(revokes)
        return work

    def _offer(self, n: int) -> None:
        """Offer ``n`` free slots for hand-off (withdraw the rest), if not offered already.

        Offers are topped up once half of them were taken, not after every hand-off, so a
        steady trickle of jobs costs this round trip every few jobs. Sent with
        claim_settings: a lost offer costs nothing, so its commit does not wait for the WAL
        flush either.
        """
        if n == self._offered or n > self._offered >= max(1, n // 2):
            return
        with translate_errors(), self._conn.pipeline():
            self._conn.execute(queries.get("claim_settings"), self._durable)
            self._conn.execute(queries.get("offer_slots"), {"worker_id": self.id, "n": n})
        self._offered = n

    def _on_handoff(self, payload: str) -> None:
        """A producer handed us a job, already claimed and STARTED for us: run it now, or
        buffer it if a claim filled the slot meanwhile (it is marked STARTED again then).
        One signed with a retired key (we reconnected since) is given back instead."""
        assert self._pool is not None
        handoff = self._handoff_keys.verify(payload)
        if handoff is None:
            self._forged_notification("hand-off", payload)
            return
        job = self._handed_job(handoff)
        if job is None:  # it could not be decoded, and ends FAILURE
            if handoff.current:
                self._offered = max(0, self._offered - 1)
            return
        if not handoff.current:
            self._release([job], "handed to this worker before it reconnected")
            return
        self._offered = max(0, self._offered - 1)
        if self._stopping or not self._pool.free_slots():
            self._buffer.append(job)
        else:
            self._start(job)

    def _handed_job(self, handoff: Handoff) -> Job | None:
        """The job of a verified hand-off; None if it cannot be decoded (a row written by
        hand), in which case it ends FAILURE with DecodeError. The trigger signed the
        document, so its id and attempt can be trusted to fence that outcome."""
        if handoff.document is None:  # not even JSON Python can read: see _decode
            with translate_errors():
                (entry,) = self._conn.execute(
                    queries.get("handoff_job_document"), {"body": handoff.body}
                ).fetchone()
            jobs = self._decode(f"[{entry}]")
            return jobs[0] if jobs else None
        try:
            return Job.from_claim(handoff.document)
        except (ValueError, TypeError, OverflowError) as exc:
            job_id, task_name, queue, attempt = (handoff.document[i] for i in (0, 2, 3, 15))
            outcome = decode_failure(str(job_id), int(attempt), str(task_name), str(queue), exc)
            log.error("task %s[%s]: %s", task_name, job_id, outcome.exc_message)
            self._add_outcome(outcome)
            return None

    def _decode(self, document: str) -> list[Job]:
        """The jobs of a claim's JSON document. A job that cannot be decoded (a row written
        by hand) ends FAILURE with DecodeError; the others go on as usual.

        The document is parsed whole, as fast as can be; only if that fails does the
        database split it, so that each job is decoded alone.
        """
        try:
            return [Job.from_claim(row) for row in json.loads(document)]
        except (ValueError, TypeError, RecursionError, OverflowError):
            pass
        with translate_errors():
            entries = self._conn.execute(
                queries.get("split_jobs_document"), {"document": document}
            ).fetchall()
        jobs = []
        for job_id, attempt, task_name, queue, entry in entries:
            try:
                jobs.append(Job.from_claim(json.loads(entry)))
            except (ValueError, TypeError, RecursionError, OverflowError) as exc:
                outcome = decode_failure(job_id, attempt, task_name, queue, exc)
                log.error("task %s[%s]: %s", task_name, job_id, outcome.exc_message)
                self._add_outcome(outcome)
        return jobs

    def _forged_notification(self, what: str, payload: str) -> None:
        """Say that someone sent us a notification pgqueue did not, without letting a flood
        of them flood the log."""
        self._forged += 1
        now = time.monotonic()
        if now - self._forged_logged >= FORGED_LOG_INTERVAL:
            log.warning(
                "ignored %d %s notification(s) not sent by pgqueue (a role able to connect "
                "sent them with NOTIFY; check who: pg_stat_activity), latest: %r",
                self._forged,
                what,
                payload[:120],
            )
            self._forged, self._forged_logged = 0, now

    def _on_control(self, payload: str, revokes: dict[str, bool]) -> None:
        """Collect the revokes addressed to us (job id -> terminate) for _on_revokes."""
        try:
            message = json.loads(payload)
            if not isinstance(message, dict) or message.get("worker") != self.id:
                return
            job_id = str(uuid.UUID(str(message["revoke"])))
        except (ValueError, TypeError, KeyError):
            self._forged_notification("control", payload)
            return
        revokes[job_id] = revokes.get(job_id, False) or message.get("terminate") is True

    def _on_revokes(self, revokes: dict[str, bool]) -> None:
        """Drop buffered jobs, and terminate running ones when asked to, of those the
        database shows revoked; a forged revoke touches nothing."""
        assert self._pool is not None
        running = {slot.job.id for slot in self._pool.running()}
        asked = [job_id for job_id in revokes if job_id in running or self._holds(job_id)]
        if not asked:
            return
        with translate_errors():
            rows = self._conn.execute(
                queries.get("confirm_revoked"), {"ids": asked, "worker_id": self.id}
            ).fetchall()
        confirmed = {r[0] for r in rows}
        for job_id in asked:
            if job_id not in confirmed:
                self._forged_notification("revoke", job_id)
        for job in [j for j in self._buffer if j.id in confirmed]:
            self._buffer.remove(job)
            log.info("job %s revoked before it started", job.id)
        for job_id in confirmed:
            if not revokes[job_id] or job_id not in running:
                continue
            if self._pool.terminate(job_id):
                log.warning("job %s revoked: terminated its process", job_id)
            else:
                log.warning(
                    "job %s revoked with terminate, but the %s pool cannot stop a running "
                    "task; it runs to the end and its outcome is discarded",
                    job_id,
                    self.pool_name,
                )

    def _startable(self) -> list[Job]:
        """Take from the buffer as many jobs as the pool has free slots; those the claim
        found expired end REVOKED instead (mark_started catches any that expired since)."""
        assert self._pool is not None
        starting: list[Job] = []
        while self._buffer and len(starting) < self._pool.free_slots():
            job = self._buffer.popleft()
            if job.expired:
                self._end_expired(job)
            else:
                starting.append(job)
        return starting

    def _end_expired(self, job: Job) -> None:
        log.info("task %s expired before it started: REVOKED", job.label)
        self._add_outcome(
            Outcome.for_job(
                job,
                states.REVOKED,
                exc_type="pgqueue.exceptions.TaskRevokedError",
                exc_message="expired",
            )
        )

    def _add_outcome(self, outcome: Outcome) -> None:
        """Hold an outcome until the next round trip writes it (see _outcomes_due)."""
        if not self._outcomes:
            self._outcomes_since = time.monotonic()
        self._outcomes.append(outcome)

    def _acks_late(self, job: Job) -> bool:
        task = self.app.tasks.get(job.task_name)
        default = task.acks_late if task else bool(self.app.conf.task_acks_late)
        value = job.options.get("acks_late")
        # as claim_jobs reads it: anything but a boolean (a row written by hand) is ignored
        return value if isinstance(value, bool) else default

    def _limits(self, job: Job) -> tuple[float | None, float | None]:
        """The job's soft and hard time limits: its own, else its task's."""
        limits = self._task_limits.get(job.task_name)
        if limits is None:
            # Worked out once per task: the settings are fixed once the worker runs, and
            # reading them through the task for every job showed in the drain's profile.
            task = self.app.tasks.get(job.task_name)
            limits = (task.soft_time_limit, task.time_limit) if task else (None, None)
            self._task_limits[job.task_name] = limits
        return job.soft_time_limit or limits[0], job.time_limit or limits[1]

    def _collect(self) -> None:
        """Take finished outcomes from the pool. Failures the pool decided on (hard time
        limit, lost child) get the task's autoretry policy like the task's own errors."""
        assert self._pool is not None
        for outcome in self._pool.collect():
            job, error = outcome.extra.pop("job", None), outcome.extra.pop("error", None)
            task = self.app.tasks.get(outcome.task_name)
            if (
                job is not None
                and error is not None
                and task is not None
                and (task.autoretry_for and issubclass(error, task.autoretry_for))
            ):
                limit = task.retry_limit(job.max_retries, job.options, automatic=True)
                if limit is None or job.retries < limit:
                    outcome.state = states.RETRY
                    outcome.countdown = task.autoretry_countdown(job.retries, job.options)
            elif (
                job is not None
                and error is not None
                and task is not None
                and issubclass(error, WorkerLostError)
                and task.reject_on_worker_lost
                and self._acks_late(job)
            ):
                # Celery's task_reject_on_worker_lost: the child died under the job (OOM
                # killer, SIGKILL): run it again at once, like a job of a lost worker.
                limit = task.retry_limit(job.max_retries, job.options, automatic=True)
                if limit is None or job.retries < limit:
                    outcome.state = states.RETRY
                    outcome.countdown = 0.0
            self._add_outcome(outcome)

    def _start_params(self, jobs: list[Job]) -> dict[str, Any]:
        return {
            "jobs": json.dumps([[j.id, j.attempt, self._acks_late(j)] for j in jobs]),
            "worker_id": self.id,
            **self._durable,
        }

    def _claim_params(self, limit: int, start: int) -> dict[str, Any]:
        return {
            **self._durable,
            "queues": self.queues,
            "tasks": self._tasks,
            "limit": limit,
            "start": max(0, start),
            "at_most_once": self._at_most_once,
            "worker_id": self.id,
        }

    def _finish_params(self, outcomes: list[Outcome]) -> dict[str, Any]:
        return {
            "outcomes": json.dumps([o.finish_row() for o in outcomes]),
            "worker_id": self.id,
            "worker_name": self.name,
            "result_expires": self.app.conf.result_expires_seconds(),
        }

    def _retry_params(self, outcomes: list[Outcome]) -> dict[str, Any]:
        return {
            "ids": [o.job_id for o in outcomes],
            "attempts": [o.attempt for o in outcomes],
            "countdowns": [o.countdown for o in outcomes],
            "etas": [o.eta for o in outcomes],
            "exc_types": [o.exc_type for o in outcomes],
            "exc_messages": [o.exc_message for o in outcomes],
            "tracebacks": [o.traceback for o in outcomes],
            "increments": [0 if o.extra.get("requeue") else 1 for o in outcomes],
            "args": [o.args_json for o in outcomes],
            "kwargs": [o.kwargs_json for o in outcomes],
            "worker_id": self.id,
        }

    def _log_outcome(self, o: Outcome, written: bool) -> None:
        # One line per finished job: task name, id, state, duration (and the error).
        if self.metrics is not None:
            self.metrics.job_finished(o)
        if written and o.state == states.SUCCESS and not log.isEnabledFor(logging.INFO):
            return  # the common case at --loglevel WARNING: no line, so nothing to format
        label = f"{o.task_name}[{o.job_id}] (queue {o.queue})"
        extra = logs.job_fields(
            o.task_name,
            o.job_id,
            o.queue,
            event="task_finished",
            outcome=o.state,
            runtime=round(o.time_taken, 6),
            written=written,
        )
        if not written:
            log.warning(
                "task %s: outcome %s discarded: the job is no longer ours (revoked, or "
                "rescued after this worker was taken for lost)",
                label,
                o.state,
                extra=extra,
            )
        elif o.state == states.SUCCESS:
            log.info("task %s SUCCESS in %.3fs", label, o.time_taken, extra=extra)
        elif o.state == states.FAILURE:
            log.error(
                "task %s FAILURE in %.3fs: %s: %s",
                label,
                o.time_taken,
                o.exc_type,
                o.exc_message,
                extra={**extra, "exc_type": o.exc_type, "exc_message": o.exc_message},
            )
        else:
            log.info(
                "task %s %s in %.3fs: %s",
                label,
                o.state,
                o.time_taken,
                o.exc_message or "",
                extra=extra,
            )

    def _holds(self, job_id: str) -> bool:
        return any(j.id == job_id for j in self._buffer)

    def _release_buffer(self) -> None:
        jobs = list(self._buffer)
        self._buffer.clear()
        self._release(jobs, "unstarted")

    def _release(self, jobs: list[Job], why: str) -> None:
        """Put jobs claimed for us back in the queue (fenced by attempt: a job no longer
        ours is left alone)."""
        if not jobs:
            return
        with translate_errors():
            rows = self._conn.execute(
                queries.get("release_jobs"),
                {
                    "ids": [j.id for j in jobs],
                    "attempts": [j.attempt for j in jobs],
                    "worker_id": self.id,
                },
            ).fetchall()
        log.info("put %d job(s) back in the queue (%s)", sum(r[1] for r in rows), why)

    # -- outages and shutdown --------------------------------------------------------------

    def _ride_out_outage(self, exc: Exception) -> bool:
        """Reconnect with backoff while running tasks go on; False to give up (shutdown)."""
        assert self._pool is not None
        log.error("database connection lost (%s); reconnecting with backoff", exc)
        self._close_connections()
        delay = 0.25
        started = time.monotonic()
        while True:
            if self._stopping and time.monotonic() - started > SHUTDOWN_OUTAGE_LIMIT:
                log.error(
                    "still no database %.0f s into a warm shutdown; exiting, the jobs this "
                    "worker held will be rescued by another worker",
                    SHUTDOWN_OUTAGE_LIMIT,
                )
                return False
            # Keep enforcing hard time limits and collecting outcomes meanwhile.
            wait_for_fds([self._wake_r, *self._pool.fds()], delay)
            self._collect()
            try:
                self._connect()
            except DatabaseUnavailable:
                delay = min(delay * 2, 10.0)
                continue
            log.warning("database connection restored after %.1f s", time.monotonic() - started)
            return True

    def _shutdown(self) -> None:
        signals.worker_shutdown.send(sender=self)
        if self._maintenance is not None:
            self._maintenance.stop()
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._collect()
                self._sync([], 0)
                self._release_buffer()
            self._pool.close()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute(queries.get("unregister_worker"), {"id": self.id})
        self._close_connections()
        os.close(self._wake_r)
        os.close(self._wake_w)
        log.info("worker %s stopped after %d job(s)", self.name, self.jobs_done)


class _Heartbeat(threading.Thread):
    """Refreshes the worker's heartbeat on its own connection, whatever the loop is doing."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(name="pgqueue-heartbeat", daemon=True)
        self.worker = worker
        self.interval = float(worker.app.conf.worker_heartbeat_interval)
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def run(self) -> None:
        conn: Any = None
        while not self._stop_event.wait(self.interval):
            try:
                if conn is None or conn.closed:
                    conn = connect(self.worker.app.dsn, application_name="pgqueue heartbeat")
                row = conn.execute(
                    queries.get("heartbeat"),
                    {"id": self.worker.id, "jobs_done": self.worker.jobs_done},
                ).fetchone()
                if row is None:
                    log.warning("this worker was taken for lost; registering again")
                    self.worker._lost = True
                    self.worker.stop_waiting()
            except Exception as exc:
                log.debug("heartbeat failed: %s", exc)
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
