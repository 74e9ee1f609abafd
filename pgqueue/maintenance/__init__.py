"""Housekeeping run inside workers, one process at a time for each service.

Each service (one module each) has a name and an interval; the runner runs them on a
thread and a connection of its own, so they never hold up a claim or an outcome write, and
each pass is first won through the service's row in pgqueue.maintenance (a table only the
worker role may write), so however many workers run, one does each pass, once per interval,
and the row shows when it last ran and who ran it. No external cron is needed.

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


def for_worker(app: PgQueue, worker_name: str | None = None) -> MaintenanceRunner:
    """The runner a worker starts once registered (its own rescue must find it registered
    and locked) and stops on shutdown; ``worker_name`` is what pgqueue.maintenance shows
    as the one that ran each pass."""
    return MaintenanceRunner(
        # A session of its own: the vacuum's election names the server process that runs
        # VACUUM (running_pid), which through a transaction pooler would be another one.
        pooler.session_dsn(app),
        worker_services(app),
        synchronous_commit=str(app.conf.worker_synchronous_commit),
        worker_name=worker_name,
    )
