"""Housekeeping run inside workers, one process at a time for each service.

Each service (one module each) has an interval and an advisory lock key; the runner runs
them on a thread and a connection of its own, so they never hold up a claim or an outcome
write, and each pass first tries the service's lock, so however many workers run, one does
that work and the others skip it. No external cron is needed.

- rescue (rescue.py): jobs held by lost workers go back to the queue (or end FAILURE when
  at-most-once);
- expire (expire.py): unclaimed jobs past their expiry end REVOKED, whatever their task;
- results (results.py): results past ``result_expires`` are deleted, in batches;
- vacuum (vacuum.py): where the server's autovacuum is off, the jobs table is vacuumed every
  minute;
- unserved (unserved.py): jobs of a task no live worker runs are named in a warning, once
  per worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import pooler
from .expire import Expirer
from .rescue import Rescuer
from .results import ResultCleaner
from .runner import MaintenanceRunner
from .service import Service
from .unserved import UnservedWarner
from .vacuum import Vacuumer

if TYPE_CHECKING:
    from ..app import PgQueue

__all__ = [
    "Expirer",
    "MaintenanceRunner",
    "Rescuer",
    "ResultCleaner",
    "Service",
    "UnservedWarner",
    "Vacuumer",
    "for_worker",
    "worker_services",
]


def worker_services(app: PgQueue) -> list[Service]:
    """The services every worker runs."""
    return [Rescuer(app), Expirer(app), ResultCleaner(app), Vacuumer(), UnservedWarner(app)]


def for_worker(app: PgQueue) -> MaintenanceRunner:
    """The runner a worker starts once registered (its own rescue must find it registered
    and locked) and stops on shutdown."""
    return MaintenanceRunner(
        pooler.session_dsn(app),  # the vacuum's election is a session lock
        worker_services(app),
        synchronous_commit=str(app.conf.worker_synchronous_commit),
    )
