"""One tick: lock a due entry, send its job through the producer and move ``next_run_at``
past it, in one transaction, so that each tick is sent exactly once whatever the number of
beats."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.errors
from psycopg.rows import dict_row

from .. import queries
from ..db import translate_errors
from ..exceptions import ConfigurationError, PgQueueError, SchemaMissingError
from ..result import AsyncResult
from ..schedules import UTC
from .entries import PeriodicEntry

if TYPE_CHECKING:
    from ..app import PgQueue

log = logging.getLogger("pgqueue.beat")

# Tick job ids are uuid5(TICK_NAMESPACE, "<entry name>\n<tick, UTC ISO 8601>").
TICK_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "pgqueue:beat")

# The per-call option (options.PER_CALL_OPTIONS) that carries the tick time to
# ``self.request.options``.
TICK_OPTION = "beat_tick"


class EntryError(PgQueueError):
    """Sending one entry's tick failed (its transaction was rolled back); names the entry."""

    def __init__(self, name: str, cause: BaseException) -> None:
        super().__init__(f"periodic task {name!r}: {type(cause).__name__}: {cause}")
        self.name = name
        self.cause = cause


def tick_task_id(name: str, tick: dt.datetime) -> str:
    """The id of the job of entry ``name`` for ``tick``: the same for every beat."""
    return str(uuid.uuid5(TICK_NAMESPACE, f"{name}\n{tick.astimezone(UTC).isoformat()}"))


@dataclass(frozen=True)
class Tick:
    """What one tick transaction did."""

    name: str
    # None when the entry was only initialised (its first tick computed)
    tick: dt.datetime | None
    task_id: str | None
    # None when the entry has no tick left: it is disabled
    next_run_at: dt.datetime | None


def tick(
    app: PgQueue,
    conn: psycopg.Connection[Any],
    *,
    now: dt.datetime | None = None,
    skip: Iterable[str] = (),
) -> Tick | None:
    """Handle the next due entry in one transaction; None when nothing is due.

    Locks the entry (SKIP LOCKED: rows other beats hold are not waited for), sends its tick
    through ``app.send_task`` on ``conn`` and advances ``next_run_at``, committing both or
    neither. ``now`` replaces the database clock (to replay a day in tests); ``skip`` names
    entries to leave alone. An entry that cannot be sent raises EntryError, rolled back.
    """
    with translate_errors(), conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                queries.get("beat_claim_due"), {"now": now, "skip": list(skip)}
            ).fetchone()
        if row is None:
            return None
        try:
            return _handle(app, conn, PeriodicEntry.from_row(row), row["db_now"])
        except (psycopg.OperationalError, SchemaMissingError):
            raise
        except Exception as exc:
            raise EntryError(row["name"], exc) from exc


def _handle(
    app: PgQueue, conn: psycopg.Connection[Any], entry: PeriodicEntry, now: dt.datetime
) -> Tick:
    end = entry.schedule.end
    if entry.next_run_at is None or (end is not None and entry.next_run_at > end):
        first = entry.schedule.next_after(now)
        _advance(conn, entry, first, last_run_at=None, sent=0)
        log.debug("beat: %s first tick at %s", entry.name, first and first.isoformat())
        return Tick(entry.name, None, None, first)
    if entry.catch_up == "all":
        due, following = entry.next_run_at, entry.schedule.next_after(entry.next_run_at)
    else:
        due, following = entry.schedule.latest_due(entry.next_run_at, now)
        if due != entry.next_run_at:
            log.info(
                "beat: %s missed its ticks since %s: one job, for the latest (catch_up=once)",
                entry.name,
                entry.next_run_at.isoformat(),
            )
    task_id = tick_task_id(entry.name, due)
    sent = _send(app, conn, entry, due, task_id)
    _advance(conn, entry, following, last_run_at=due if sent else None, sent=int(sent))
    return Tick(entry.name, due, task_id if sent else None, following)


def _send(
    app: PgQueue,
    conn: psycopg.Connection[Any],
    entry: PeriodicEntry,
    due: dt.datetime,
    task_id: str,
) -> bool:
    """Enqueue the tick's job in the caller's transaction; False if it already exists."""
    stamp = due.astimezone(UTC).isoformat()
    kwargs = dict(entry.kwargs)
    if entry.tick_kwarg:
        kwargs[entry.tick_kwarg] = stamp
    options = dict(entry.options)
    options[TICK_OPTION] = stamp
    try:
        # A savepoint: a duplicate id must not abort the tick's transaction.
        with conn.transaction():
            app.send_task(
                entry.task,
                entry.args,
                kwargs,
                queue=entry.queue,
                priority=entry.priority,
                expires=entry.expires,
                task_id=task_id,
                connection=conn,
                **options,
            )
    except psycopg.errors.UniqueViolation:
        # Only if next_run_at was moved back by hand to a tick whose job is still queued.
        log.warning("beat: %s tick %s was already enqueued as %s", entry.name, stamp, task_id)
        return False
    log.info("beat: sent %s: %s[%s] for tick %s", entry.name, entry.task, task_id, stamp)
    return True


def _advance(
    conn: psycopg.Connection[Any],
    entry: PeriodicEntry,
    next_run_at: dt.datetime | None,
    *,
    last_run_at: dt.datetime | None,
    sent: int,
    finished: bool | None = None,
) -> None:
    """Move the entry to ``next_run_at``; with none (no tick left), disable it."""
    if finished is None:
        finished = next_run_at is None
    if finished:
        log.info("beat: %s has no tick left (past its end, or run once): disabled", entry.name)
    conn.execute(
        queries.get("beat_advance"),
        {
            "name": entry.name,
            "next_run_at": next_run_at,
            "last_run_at": last_run_at,
            "sent": sent,
            "finished": finished,
        },
    )


def run_now(app: PgQueue, conn: psycopg.Connection[Any], name: str) -> AsyncResult:
    """Send an entry's job now, outside its schedule (``pgqueue beat run``).

    The job gets a fresh id and the current time as its tick. It counts as a run: like a
    scheduled tick's, its tick becomes ``last_run_at`` and it adds one to
    ``total_run_count``. ``next_run_at``, the schedule, is unchanged.
    """
    with translate_errors(), conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(queries.get("beat_lock_entry"), {"name": name}).fetchone()
        if row is None:
            raise ConfigurationError(f"no periodic task named {name!r}")
        entry = PeriodicEntry.from_row(row)
        task_id = str(uuid.uuid4())
        run_tick = row["db_now"]
        sent = _send(app, conn, entry, run_tick, task_id)
        _advance(
            conn,
            entry,
            entry.next_run_at,
            last_run_at=run_tick if sent else None,
            sent=int(sent),
            finished=False,
        )
    return AsyncResult(task_id, app=app, task_name=entry.task)
