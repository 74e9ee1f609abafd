"""The worker: claims jobs with SKIP LOCKED, runs them in a pool, writes their outcomes.

``Worker`` only wires its collaborators, each in a module of its own:

- ``lease.Lease``: the connections, the registration, the liveness lock, the heartbeat, and
  riding out an outage; ``lease.StatementErrors``: what a refused statement pauses;
- ``claims.Claims``: when to claim, the claim statements, the buffer of unstarted jobs;
- ``outcomes.OutcomeWriter``: holding, batching and writing outcomes, fenced, and their log;
- ``roundtrip.RoundTrip``: outcomes and claim sent together, their replies sorted out;
- ``handoff.HandoffSlots``: the slots an idle worker offers so that an insert hands it a job;
- ``notices.Inbox``: what the listening connection hears, and what of it is believed;
- ``policy.JobPolicy``: acks_late, time limits and the retry policy of pool failures;
- ``pools`` (``pool.Pool``, ``prefork``): where jobs run; ``stopping.StopSwitch``: signals
  and warm shutdown; ``maintenance.MaintenanceRunner``: housekeeping, on its own thread and
  connection.

One loop drives them: collect outcomes from the pool, write them and claim in one round trip
(outcomes on the writer connection, the claim on the claiming one, side by side), then sleep
on the listener, the pool and a wake-up pipe until the first collaborator needs attention.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from multiprocessing.connection import wait as wait_for_fds
from typing import TYPE_CHECKING, Any

import psycopg

from . import ahead, logs, maintenance, pooler, signals
from .claims import Claims, limited_tasks
from .exceptions import ConfigurationError, DatabaseUnavailable
from .execution import Job
from .handoff import HANDOFF_SLOTS, HandoffSlots
from .lease import SHUTDOWN_OUTAGE_LIMIT, STATEMENT_RETRY, Lease, Registration, StatementErrors
from .locks import WORKER_LOCK_CLASS
from .maintenance import MaintenanceRunner
from .mapping import BUILTINS
from .notices import CONTROL_CHANNEL, Inbox
from .outcomes import OUTCOME_LINGER, OutcomeWriter
from .policy import JobPolicy
from .pool import Pool
from .pools import pool_kind
from .roundtrip import RoundTrip
from .stopping import StopSwitch

if TYPE_CHECKING:
    from .app import PgQueue
    from .metrics import Metrics

log = logging.getLogger("pgqueue.worker")

__all__ = [
    "CONTROL_CHANNEL",
    "HANDOFF_SLOTS",
    "OUTCOME_LINGER",
    "SHUTDOWN_OUTAGE_LIMIT",
    "STATEMENT_RETRY",
    "WORKER_LOCK_CLASS",
    "Worker",
]


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
        self.pool_name = pool or app.conf.worker_pool
        self.concurrency = pool_kind(self.pool_name).fixed_concurrency or (
            concurrency or app.conf.worker_concurrency or os.cpu_count() or 1
        )
        self.hostname = socket.gethostname()
        self.name = name or f"pgqueue@{self.hostname}:{os.getpid()}"
        self.prefetch_multiplier = max(
            1, prefetch_multiplier or app.conf.worker_prefetch_multiplier
        )
        self.poll_interval = poll_interval or float(app.conf.worker_poll_interval)
        self.max_tasks_per_child = max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child
        self._ahead = _per_child_ahead(app.conf.worker_prefork_ahead)  # jobs per child
        self.id = str(uuid.uuid4())
        self._switch = StopSwitch()
        durable = str(app.conf.worker_synchronous_commit)
        # Its tasks are filled in by run(), once the app's task modules are imported.
        self._me = Registration(
            id=self.id,
            name=self.name,
            hostname=self.hostname,
            queues=self.queues,
            tasks=[],
            at_most_once=[],
            pool=self.pool_name,
            concurrency=self.concurrency,
            reconnect_grace=float(app.conf.worker_reconnect_grace),
            synchronous_commit=durable,
        )
        self._policy = JobPolicy(app)
        self._outcomes = OutcomeWriter(app, self.id, self.name)
        self._handoff = HandoffSlots(self.id, self.concurrency, durable)
        self._lease = Lease(lambda: self.app.dsn, lambda: pooler.session_dsn(self.app), self._me)
        self._errors = StatementErrors()
        self._claims: Claims | None = None  # once run() knows the tasks
        self._inbox: Inbox | None = None
        self._trip: RoundTrip | None = None
        self._pool: Pool | None = None
        self._maintenance: MaintenanceRunner | None = None

    @property
    def metrics(self) -> Metrics | None:
        """Set by pgqueue.metrics.serve(): counts the jobs this worker starts and finishes."""
        return self._outcomes.metrics

    @metrics.setter
    def metrics(self, value: Metrics | None) -> None:
        self._outcomes.metrics = value

    @property
    def jobs_done(self) -> int:
        return self._outcomes.jobs_done

    def _connect(self) -> None:
        self._lease.connect(self._on_connected)

    def _on_connected(
        self, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any], reconnecting: bool
    ) -> None:
        """What hangs on a (new) session besides the registration: a new hand-off key, then
        listen, then give back what the lost connection held but running jobs and outcomes
        still to be written (a job handed to an old slot is released here, or heard of with
        the retired key and given back by _on_handoff)."""
        key = self._handoff.keys.new_key()
        assert self._inbox is not None
        self._inbox.listen(listener)
        if reconnecting:
            assert self._pool is not None and self._claims is not None
            keep = [(slot.job.id, slot.job.attempt) for slot in self._pool.running()]
            keep += [(o.job_id, o.attempt) for o in self._outcomes.held]
            self._claims.release_held(conn, keep)
        self._handoff.create(conn, key, listener, self._me)

    def stop(self) -> None:
        """Ask the loop for a warm shutdown (from another thread or a signal handler)."""
        self._switch.stop()

    def stop_waiting(self) -> None:
        """Make the loop's select() return now."""
        self._switch.wake()

    def run(self, *, install_signals: bool = True) -> int:
        """Run until a warm shutdown; returns the process exit code."""
        self.app.import_task_modules()
        self._me.tasks[:] = sorted(self.app.tasks)
        self._me.at_most_once[:] = sorted(n for n, t in self.app.tasks.items() if not t.acks_late)
        self._me.limited[:], self._me.limits = limited_tasks(self.app.tasks)
        if not set(self.app.tasks) - set(BUILTINS):
            raise ConfigurationError(
                "the app has no tasks registered: point -A at the module defining them, or "
                "list their modules in include=[...]"
            )
        self._claims = Claims(
            self._me,
            capacity=self.concurrency * self.prefetch_multiplier,
            poll_interval=self.poll_interval,
            policy=self._policy,
            failed=self._outcomes.add,
        )
        self._inbox = Inbox(
            self.id, self.queues, self._lease, self._handoff, self._claims, self._outcomes
        )
        self._trip = RoundTrip(
            self._lease, self._claims, self._outcomes, self._handoff, self._errors
        )
        self._connect()
        self._pool = pool_kind(self.pool_name).create(
            self.app,
            self.concurrency,
            self.name,
            max_tasks_per_child=self.max_tasks_per_child,
            max_memory_per_child=self.max_memory_per_child,
            ahead=self.concurrency * self._ahead,
        )
        self._pool.start()
        self._lease.start_heartbeat(
            float(self.app.conf.worker_heartbeat_interval),
            lambda: self.jobs_done,
            self.stop_waiting,
        )
        self._maintenance = maintenance.for_worker(self.app, self.name)
        self._maintenance.start()
        if install_signals:
            self._switch.install_signals(self._pool.kill)
        _log_ready(self, self._pool, self._me.tasks, self._policy)
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

    def _loop(self) -> None:
        assert self._pool is not None and self._claims is not None
        pool, claims = self._pool, self._claims
        while True:
            self._collect()
            if self._lease.lost:
                self._lease.lost = False
                raise DatabaseUnavailable("this worker was taken for lost; registering again")
            paused = self._errors.paused()
            if self._switch.stopping and not paused:
                # Held ahead but not begun: back to the queue with the buffer.
                claims.buffer.extendleft(reversed(pool.take_queued()))
                self._errors.tolerate(claims.release_buffer, self._lease.conn)
            to_start = [] if paused else claims.startable(pool.free_slots())
            room = 0
            if not paused and not self._switch.stopping and claims.due_now():
                room = claims.room(pool.busy(), len(to_start))
            at_once = self._switch.stopping or not pool.busy()
            hold = not paused and not self._switch.stopping
            if (
                to_start
                or room > 0
                or (hold and ahead.refill_due(pool, claims.buffer, self._policy))
                or (not paused and self._outcomes.due(at_once=at_once))
            ):
                # Free slots are filled straight from the claim (STARTED in the same trip).
                start = min(room, pool.free_slots() - len(to_start))
                if hold:
                    to_start += ahead.take(pool, claims.buffer, self._policy)
                claimed = self._sync(to_start, room, start)
                if self._errors.paused():
                    claims.wanted = claims.wanted or room > 0  # the claim did not happen
                elif room > 0:
                    claims.claimed(claimed, room)
                if claimed or (claims.buffer and pool.free_slots()):
                    continue
            if self._switch.stopping:
                if not self._errors.paused():
                    self._errors.tolerate(self._handoff.offer, self._lease.conn, 0)
                if not pool.busy() and not self._outcomes.holding_at_shutdown(self._switch.since):
                    return
            elif not self._errors.paused():
                idle = not claims.wanted and not claims.buffer
                offer = min(self._handoff.slots, pool.free_slots()) if idle else 0
                self._errors.tolerate(self._handoff.offer, self._lease.conn, offer)
            self._wait()

    def _wait(self) -> None:
        """Sleep until a notification, an outcome, a wake-up, or the first moment one of
        the collaborators needs attention."""
        assert self._pool is not None and self._claims is not None and self._inbox is not None
        pool, claims = self._pool, self._claims
        times: list[float | None]
        if self._errors.paused():
            # No round trip before the pause ends (then it is tried again).
            times = [self._errors.until, claims.next_attention(pool.busy(), may_claim=False)]
        else:
            times = [claims.next_attention(pool.busy()), self._outcomes.next_attention()]
        times.append(pool.next_deadline())
        timeout = min(t for t in times if t is not None) - time.monotonic()
        listener = self._lease.listener
        ready = wait_for_fds(
            [self._switch.wake_fd, listener.fileno(), *pool.fds()], max(0.0, timeout)
        )
        if self._switch.wake_fd in ready:
            self._switch.drain()
        heard = listener.fileno() in ready
        claims.heard(heard and self._inbox.hear(pool, self._start, self._switch.stopping))

    def _sync(self, to_start: list[Job], claim: int, start: int = 0) -> list[Job]:
        """One round trip (pgqueue.roundtrip); the jobs it claimed. Those marked STARTED
        go to the pool at once."""
        assert self._trip is not None
        claimed, to_run = self._trip.run(to_start, claim, start)
        for job in to_run:
            self._start(job)
        return claimed

    def _start(self, job: Job) -> None:
        """Hand a job marked STARTED in the database to the pool."""
        assert self._pool is not None
        soft, hard = self._policy.limits(job)
        self._policy.check_call_limit(job, self._pool)
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
        if self._pool.runs_inline:
            self._collect()

    def _collect(self) -> None:
        """Take finished outcomes from the pool. Failures the pool decided on (hard time
        limit, lost child) get the task's retry policy like the task's own errors."""
        assert self._pool is not None and self._claims is not None
        for outcome in self._pool.collect():
            self._claims.finished(outcome.task_name)
            self._outcomes.add(self._policy.settle_pool_failure(outcome))

    def _ride_out_outage(self, exc: Exception) -> bool:
        """Reconnect with backoff while running tasks go on; False to give up (shutdown)."""
        assert self._pool is not None
        pool = self._pool

        def meanwhile(delay: float) -> None:
            # Keep enforcing hard time limits and collecting outcomes meanwhile.
            wait_for_fds([self._switch.wake_fd, *pool.fds()], delay)
            self._collect()

        return self._lease.ride_out(
            exc, self._on_connected, stopping=lambda: self._switch.stopping, meanwhile=meanwhile
        )

    def _shutdown(self) -> None:
        signals.worker_shutdown.send(sender=self)
        if self._maintenance is not None:
            self._maintenance.stop()
        self._lease.stop_heartbeat()
        if self._pool is not None and self._claims is not None:
            with contextlib.suppress(Exception):
                self._collect()
                self._sync([], 0)
                self._claims.buffer.extendleft(reversed(self._pool.take_queued()))
                self._claims.release_buffer(self._lease.conn)
            self._pool.close()
        self._lease.unregister()
        self._lease.close()
        self._switch.close()
        log.info("worker %s stopped after %d job(s)", self.name, self.jobs_done)


def _log_ready(worker: Worker, pool: Pool, tasks: list[str], policy: JobPolicy) -> None:
    log.info(
        "worker %s ready: pool=%s concurrency=%d queues=%s tasks=%s",
        worker.name,
        worker.pool_name,
        worker.concurrency,
        ",".join(worker.queues),
        ", ".join(tasks),
    )
    policy.warn_unenforced(
        pool,
        max_tasks_per_child=worker.max_tasks_per_child,
        max_memory_per_child=worker.max_memory_per_child,
    )


def _per_child_ahead(value: Any) -> int:
    if value is None or (type(value) is int and value >= 0):
        return value or 0
    raise ConfigurationError(
        f"worker_prefork_ahead must be a whole number of jobs, 0 or more, not {value!r}: "
        "set it to 1 (the default) to hold a job ahead per child, or 0 not to"
    )
