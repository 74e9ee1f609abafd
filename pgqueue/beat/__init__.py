"""Beat: periodic tasks from the ``pgqueue.periodic_tasks`` table, each tick sent exactly once.

The table is the only store of the schedule. Entries come from code (``app.conf.beat_schedule``
and ``app.add_periodic_task``, synced into the table when a beat starts), from the
``pgqueue beat add|remove|enable|disable`` commands, or from plain SQL.

Any number of beat processes may run, with no leader: each one repeatedly locks a due row
with ``FOR UPDATE SKIP LOCKED``, enqueues the tick's job through the ordinary producer
(``app.send_task(..., connection=conn)``) and moves ``next_run_at`` past the tick, all in one
transaction. A second beat either skips the locked row or, once the first commits, no longer
finds it due; a beat killed mid-tick rolls back and leaves the tick for another. The job id is
derived from (entry name, tick time), so even a tick sent twice could not make two jobs.

The database's ``now()`` is the clock; ``pgqueue.schedules`` (on ``croniter``) does the
arithmetic, in wall-clock time of the entry's zone.
"""

from .entries import (
    CATCH_UP_POLICIES,
    BrokenEntry,
    PeriodicEntry,
    declared_entries,
    periodic_task_spec,
    read_entry,
)
from .service import Beat
from .table import (
    SyncResult,
    add_entry,
    list_entries,
    list_rows,
    remove_entry,
    set_enabled,
    sync_schedule,
)
from .ticks import TICK_NAMESPACE, TICK_OPTION, EntryError, Tick, run_now, tick, tick_task_id

__all__ = [
    "CATCH_UP_POLICIES",
    "TICK_NAMESPACE",
    "TICK_OPTION",
    "Beat",
    "BrokenEntry",
    "EntryError",
    "PeriodicEntry",
    "SyncResult",
    "Tick",
    "add_entry",
    "declared_entries",
    "list_entries",
    "list_rows",
    "periodic_task_spec",
    "read_entry",
    "remove_entry",
    "run_now",
    "set_enabled",
    "sync_schedule",
    "tick",
    "tick_task_id",
]
