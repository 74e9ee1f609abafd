"""The worker: claims jobs with SKIP LOCKED, runs them in a pool, writes their outcomes.

One process, one loop, two connections: ``conn`` runs every statement, ``listener`` only
LISTENs so that a notification can wake the loop while it sleeps in ``select``.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import time
import uuid
from multiprocessing.connection import wait as wait_for_fds
from typing import TYPE_CHECKING, Any

from . import migrate, queries, states
from .db import JOBS_CHANNEL, connect, translate_errors
from .exceptions import ConfigurationError
from .execution import Job, Outcome
from .pools import POOLS, Pool, PreforkPool

if TYPE_CHECKING:
    from .app import PgQueue

log = logging.getLogger("pgqueue.worker")

# First key of every worker's session advisory lock (the second is workers.lock_key).
WORKER_LOCK_CLASS = 0x70677175


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
        self._stopping = False
        self._signals = 0
        # Written by signal handlers and stop() so that select() returns at once.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._buffer: collections.deque[Job] = collections.deque()
        self._outcomes: list[Outcome] = []
        self._pool: Pool | None = None
        self._conn: Any = None
        self._listener: Any = None
        self._tasks: list[str] = []
        self.jobs_done = 0

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
        self._conn = connect(self.app.dsn, application_name=f"pgqueue worker {self.name}")
        with translate_errors():
            migrate.check(self._conn)
        self._listener = connect(self.app.dsn, application_name=f"pgqueue listener {self.name}")
        self._listener.execute(f"LISTEN {JOBS_CHANNEL}")
        with translate_errors():
            row = self._conn.execute(
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
                },
            ).fetchone()
            # Held for the life of the connection: Postgres releases it when we die.
            self._conn.execute(
                queries.get("lock_worker"), {"lock_class": WORKER_LOCK_CLASS, "lock_key": row[0]}
            )

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
            self._stopping = True
            self._wake()
            return
        log.warning("second signal: cold shutdown, leaving running jobs to be recovered")
        if self._pool is not None:
            self._pool.kill()
        os._exit(1)

    def stop(self) -> None:
        """Ask the loop for a warm shutdown (from another thread or a signal handler)."""
        self._stopping = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    # -- the loop --------------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        """Run until a warm shutdown; returns the process exit code."""
        self.app.import_task_modules()
        self._tasks = sorted(self.app.tasks)
        if not self._tasks:
            raise ConfigurationError(
                "the app has no tasks registered: point -A at the module defining them, or "
                "list their modules in include=[...]"
            )
        self._connect()
        self._pool = self._make_pool()
        self._pool.start()
        if install_signals:
            self._install_signals()
        self._log_start()
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

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
        if not self._pool.enforces_hard_limit and (
            self.app.conf.task_time_limit or any(t._time_limit for t in self.app.tasks.values())
        ):
            log.warning(
                "the %s pool cannot enforce hard time limits (time_limit): tasks past them "
                "keep running; use -P prefork to have them stopped",
                self.pool_name,
            )

    def _loop(self) -> None:
        assert self._pool is not None
        pool = self._pool
        capacity = self.concurrency * self.prefetch_multiplier
        want_claim = True  # at start-up, and whenever there may be more ready jobs
        next_due: float | None = None  # monotonic time of the earliest future job
        last_poll = time.monotonic()
        while True:
            self._outcomes.extend(pool.collect())
            if self._stopping:
                self._release_buffer()
            self._dispatch()
            self._flush_outcomes()
            if self._stopping:
                if not pool.running():
                    return
            elif want_claim or (next_due is not None and time.monotonic() >= next_due):
                room = capacity - len(pool.running()) - len(self._buffer)
                if room > 0:
                    claimed = self._claim(room)
                    last_poll = time.monotonic()
                    # A full batch means more may be waiting; a short one means the ready
                    # jobs are drained and a NOTIFY (or a due run_at) will tell us of more.
                    want_claim = len(claimed) == room
                    next_due = None if want_claim else self._next_due()
                    if claimed:
                        continue
            timeout = self.poll_interval - (time.monotonic() - last_poll)
            if next_due is not None:
                timeout = min(timeout, next_due - time.monotonic())
            deadline = pool.next_deadline()
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
            if want_claim and len(pool.running()) + len(self._buffer) < capacity:
                timeout = 0
            ready = wait_for_fds(
                [self._wake_r, self._listener.fileno(), *pool.fds()], max(0.0, timeout)
            )
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 1024)
            if self._listener.fileno() in ready:
                with translate_errors():
                    woken = list(self._listener.notifies(timeout=0))
                if any(n.payload in self.queues for n in woken):
                    want_claim = True
            if time.monotonic() - last_poll >= self.poll_interval:
                want_claim = True

    def _claim(self, limit: int) -> list[Job]:
        with translate_errors():
            rows = self._conn.execute(
                queries.get("claim_jobs"),
                {"queues": self.queues, "tasks": self._tasks, "limit": limit, "worker_id": self.id},
            ).fetchall()
        # UPDATE ... RETURNING does not keep the subquery's order.
        jobs = sorted(
            (Job(str(row[0]), *row[1:]) for row in rows),
            key=lambda j: (-j.priority, j.run_at, j.seq),
        )
        self._buffer.extend(jobs)
        self._dispatch()
        return jobs

    def _next_due(self) -> float | None:
        with translate_errors():
            row = self._conn.execute(
                queries.get("next_run_at"), {"queues": self.queues, "tasks": self._tasks}
            ).fetchone()
        if row[0] is None:
            return None
        delay: float = (row[0] - dt.datetime.now(dt.timezone.utc)).total_seconds()
        return time.monotonic() + max(0.0, delay)

    def _dispatch(self) -> None:
        """Start buffered jobs in free slots; expired ones end REVOKED without running."""
        assert self._pool is not None
        now = dt.datetime.now(dt.timezone.utc)
        starting: list[Job] = []
        while self._buffer and len(starting) < self._pool.free_slots():
            job = self._buffer.popleft()
            if job.expired or (job.expires_at is not None and job.expires_at <= now):
                log.info("%s expired before it started: revoked", job.label)
                self._outcomes.append(
                    Outcome.for_job(
                        job,
                        states.REVOKED,
                        exc_type="pgqueue.exceptions.TaskRevokedError",
                        exc_message="expired",
                    )
                )
                continue
            starting.append(job)
        if not starting:
            return
        # STARTED is written before the task begins, so a reader never sees it late.
        with translate_errors():
            self._conn.execute(
                queries.get("mark_started"),
                {
                    "ids": [j.id for j in starting],
                    "attempts": [j.attempt for j in starting],
                    "worker_id": self.id,
                },
            )
        for job in starting:
            soft, hard = self._limits(job)
            log.debug("%s started", job.label)
            self._pool.submit(job, soft, hard)
            self._outcomes.extend(self._pool.collect() if self._pool.name == "solo" else [])

    def _limits(self, job: Job) -> tuple[float | None, float | None]:
        task = self.app.tasks.get(job.task_name)
        soft = job.soft_time_limit or (task.soft_time_limit if task else None)
        hard = job.time_limit or (task.time_limit if task else None)
        return soft, hard

    def _flush_outcomes(self) -> None:
        if not self._outcomes:
            return
        outcomes, self._outcomes = self._outcomes, []
        finished = [o for o in outcomes if o.state != states.RETRY]
        retried = [o for o in outcomes if o.state == states.RETRY]
        with translate_errors():
            if finished:
                self._finish(finished)
            if retried:
                self._retry(retried)
        for o in outcomes:
            self._log_outcome(o)
        self.jobs_done += len(outcomes)

    def _finish(self, outcomes: list[Outcome]) -> None:
        expires = self.app.conf.result_expires_seconds()
        rows = self._conn.execute(
            queries.get("finish_jobs"),
            {
                "ids": [o.job_id for o in outcomes],
                "attempts": [o.attempt for o in outcomes],
                "states": [o.state for o in outcomes],
                "results": [o.result_json for o in outcomes],
                "exc_types": [o.exc_type for o in outcomes],
                "exc_messages": [o.exc_message for o in outcomes],
                "tracebacks": [o.traceback for o in outcomes],
                "times": [o.time_taken for o in outcomes],
                "store": [o.store or o.state == states.FAILURE for o in outcomes],
                "worker_id": self.id,
                "worker_name": self.name,
                "result_expires": expires,
            },
        ).fetchall()
        written = {str(r[0]) for r in rows}
        for o in outcomes:
            if o.job_id not in written:
                log.warning(
                    "job %s: outcome %s not written, the job is no longer ours "
                    "(rescued and handed to another worker, or revoked)",
                    o.job_id,
                    o.state,
                )

    def _retry(self, outcomes: list[Outcome]) -> None:
        self._conn.execute(
            queries.get("retry_jobs"),
            {
                "ids": [o.job_id for o in outcomes],
                "attempts": [o.attempt for o in outcomes],
                "countdowns": [o.countdown for o in outcomes],
                "etas": [o.eta for o in outcomes],
                "exc_types": [o.exc_type for o in outcomes],
                "exc_messages": [o.exc_message for o in outcomes],
                "tracebacks": [o.traceback for o in outcomes],
                "increments": [0 if o.extra.get("requeue") else 1 for o in outcomes],
                "worker_id": self.id,
            },
        )

    def _log_outcome(self, o: Outcome) -> None:
        # One line per finished job: task name, id, state, duration (and the error).
        label = f"{o.task_name}[{o.job_id}]"
        if o.state == states.SUCCESS:
            log.info("task %s SUCCESS in %.3fs", label, o.time_taken)
        elif o.state == states.FAILURE:
            log.error(
                "task %s FAILURE in %.3fs: %s: %s", label, o.time_taken, o.exc_type, o.exc_message
            )
        else:
            log.info("task %s %s in %.3fs: %s", label, o.state, o.time_taken, o.exc_message or "")

    def _release_buffer(self) -> None:
        if not self._buffer:
            return
        jobs, self._buffer = list(self._buffer), collections.deque()
        with translate_errors():
            rows = self._conn.execute(
                queries.get("release_jobs"),
                {
                    "ids": [j.id for j in jobs],
                    "attempts": [j.attempt for j in jobs],
                    "worker_id": self.id,
                },
            ).fetchall()
        log.info("put %d unstarted job(s) back in the queue", sum(r[1] for r in rows))

    def _shutdown(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._outcomes.extend(self._pool.collect())
                self._flush_outcomes()
                self._release_buffer()
            self._pool.close()
        for conn in (self._listener, self._conn):
            if conn is None:
                continue
            if conn is self._conn:
                with contextlib.suppress(Exception):
                    conn.execute(queries.get("unregister_worker"), {"id": self.id})
            with contextlib.suppress(Exception):
                conn.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        log.info("worker %s stopped after %d job(s)", self.name, self.jobs_done)
