"""Housekeeping run inside workers, by one worker at a time.

Each service has an interval; when one is due, the worker runs it in a transaction that first
tries a transaction-level advisory lock, so however many workers run, one does the work and
the others skip it. No external cron is needed.

- rescue: jobs held by lost workers go back to the queue (or end FAILURE when at-most-once);
- expire: unclaimed jobs past their expiry end REVOKED, whatever their task;
- results: results past ``result_expires`` are deleted, in batches;
- vacuum: where the server's autovacuum is off, the jobs table is vacuumed every minute;
- unserved: jobs of a task no live worker runs are named in a warning, once per worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg.errors

from . import queries

if TYPE_CHECKING:
    from .app import PgQueue

log = logging.getLogger("pgqueue.maintenance")

MAINTENANCE_LOCK = 0x70677175_0002
BATCH = 5000
VACUUM_INTERVAL = 60.0
# The unserved check looks at up to this many ready jobs (its cost stays flat).
UNSERVED_SAMPLE = 1000


@dataclass
class Service:
    name: str
    interval: float
    # returns True when it stopped at a full batch and should run again at once
    work: Callable[[Any], bool]
    next_run: float = 0.0
    # VACUUM cannot run in a transaction; such a service runs on its own
    transactional: bool = True


class Maintenance:
    """The housekeeping services of one worker."""

    def __init__(self, app: PgQueue, *, lock_class: int) -> None:
        self.app = app
        self.lock_class = lock_class
        conf = app.conf
        self.services = [
            Service("rescue", float(conf.worker_rescue_interval), self.rescue),
            Service("expire", float(conf.worker_rescue_interval), self.expire),
            Service("results", float(conf.result_cleanup_interval), self.delete_results),
            Service("vacuum", VACUUM_INTERVAL, self.vacuum, transactional=False),
            Service("unserved", float(conf.worker_rescue_interval), self.warn_unserved),
        ]
        self._vacuum_needed: bool | None = None
        # (queue, task) pairs already warned about: once per worker process, not per check.
        self._unserved: set[tuple[str, str]] = set()

    def next_due(self) -> float:
        return min(s.next_run for s in self.services)

    def run_due(self, conn: Any) -> None:
        """Run every service that is due, each in its own transaction under the lock."""
        now = time.monotonic()
        for service in self.services:
            if service.next_run > now:
                continue
            service.next_run = now + service.interval
            if not service.transactional:
                service.work(conn)
                continue
            with conn.transaction():
                got = conn.execute(
                    queries.get("try_maintenance_lock"), {"key": MAINTENANCE_LOCK}
                ).fetchone()[0]
                if got and service.work(conn):
                    service.next_run = now

    def rescue(self, conn: Any) -> bool:
        lost, requeued, failed, _, missing = conn.execute(
            queries.get("rescue_jobs"),
            {
                "lost_timeout": float(self.app.conf.worker_lost_timeout),
                "lock_class": self.lock_class,
                "keep_for": self.app.conf.result_expires_seconds(),
            },
        ).fetchone()
        if missing:
            log.warning(
                "%d worker(s) lost their connection to Postgres; their jobs are rescued "
                "unless they reconnect within their worker_reconnect_grace",
                missing,
            )
        if lost or requeued or failed:
            log.warning(
                "rescued jobs of %d lost worker(s): %d back in the queue, %d failed (at-most-once)",
                lost,
                requeued,
                failed,
            )
        return False

    def expire(self, conn: Any) -> bool:
        (count,) = conn.execute(
            queries.get("expire_jobs"),
            {"limit": BATCH, "keep_for": self.app.conf.result_expires_seconds()},
        ).fetchone()
        if count:
            log.info("revoked %d expired job(s)", count)
        return bool(count == BATCH)

    def delete_results(self, conn: Any) -> bool:
        deleted: int = conn.execute(
            queries.get("delete_expired_results"), {"limit": BATCH}
        ).rowcount
        if deleted:
            log.info("deleted %d expired result(s)", deleted)
        return deleted == BATCH

    def warn_unserved(self, conn: Any) -> bool:
        """Warn, once per (queue, task), about ready jobs no live worker can run: the claim
        skips them, so nothing else would say why they wait."""
        rows = conn.execute(
            queries.get("unserved_tasks_sample"), {"limit": UNSERVED_SAMPLE}
        ).fetchall()
        for queue, task, jobs in rows:
            if (queue, task) not in self._unserved:
                self._unserved.add((queue, task))
                log.warning(
                    "jobs of task %r wait in queue %r (at least %d) and no live worker consuming "
                    "that queue has registered the task: start a worker whose app imports "
                    "it (-A, include=[...]) with -Q %s, or remove them with "
                    "`pgqueue purge -Q %s --task %s`",
                    task,
                    queue,
                    jobs,
                    queue,
                    queue,
                    task,
                )
        return False

    def vacuum(self, conn: Any) -> bool:
        """VACUUM the jobs table where the server's autovacuum is off.

        A queue table turns its rows over constantly; without vacuum its dead rows and index
        entries pile up and every claim wades through them. SKIP_LOCKED: when another
        worker is vacuuming it already, this one does nothing.
        """
        if self._vacuum_needed is None:
            setting, may_vacuum = conn.execute(queries.get("autovacuum_setting")).fetchone()
            self._vacuum_needed = setting == "off" and may_vacuum
            if self._vacuum_needed:
                log.info("autovacuum is off on this server: workers vacuum pgqueue.jobs")
            elif setting == "off":
                log.warning(
                    "autovacuum is off on this server, and only the owner of pgqueue.jobs may "
                    "vacuum it (not this worker's role): schedule VACUUM pgqueue.jobs as its owner"
                )
        if self._vacuum_needed:
            try:
                conn.execute(queries.get("vacuum_jobs"))
            except psycopg.errors.InsufficientPrivilege as exc:
                log.warning("cannot vacuum pgqueue.jobs (%s); leaving it to the DBA", exc)
                self._vacuum_needed = False
        return False
