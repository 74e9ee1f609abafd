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

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for_fds
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.errors
from psycopg.rows import dict_row

from . import migrate, queries
from .app import _SEND_OPTIONS
from .db import connect, translate_errors
from .exceptions import ConfigurationError, EncodeError, PgQueueError, SchemaMissingError
from .result import AsyncResult
from .schedules import UTC, InvalidSchedule, Schedule
from .serialization import dumps_args
from .task import Signature, Task

if TYPE_CHECKING:
    from .app import PgQueue

log = logging.getLogger("pgqueue.beat")

CATCH_UP_POLICIES = ("once", "all")

# Tick job ids are uuid5(TICK_NAMESPACE, "<entry name>\n<tick, UTC ISO 8601>").
TICK_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "pgqueue:beat")

# The per-call option that carries the tick time to ``self.request.options``. Sent only once
# task.py lists it in PER_CALL_OPTIONS, since send_task refuses options it does not know.
TICK_OPTION = "beat_tick"

# A beat-schedule entry's keys: Celery's, then pgqueue's own.
_SPEC_KEYS = {
    "task", "schedule", "args", "kwargs", "options",
    "timezone", "catch_up", "tick_kwarg",
}  # fmt: skip
# apply_async options kept in the options column: beat decides eta and task_id, and queue,
# priority and expires have columns of their own.
_ENTRY_OPTIONS = _SEND_OPTIONS - {"eta", "task_id", "queue", "priority", "expires"}

# What each option's value must be, so that a wrong one is refused when the entry is read or
# written, not at its every tick. Null (None) is "not given", as for apply_async.
_NUMBER = (int, float)
_OPTION_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "countdown": (_NUMBER, "a number"),
    "max_retries": ((int,), "an integer"),
    "time_limit": (_NUMBER, "a number"),
    "soft_time_limit": (_NUMBER, "a number"),
    "ignore_result": ((bool,), "true or false"),
    "acks_late": ((bool,), "true or false"),
    "retry_backoff": ((bool, *_NUMBER), "true, false or a number"),
    "retry_backoff_max": (_NUMBER, "a number"),
    "retry_jitter": ((bool,), "true or false"),
    "default_retry_delay": (_NUMBER, "a number"),
}

# Seconds between attempts to reach the database again after losing it.
_RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)


class EntryError(PgQueueError):
    """Sending one entry's tick failed (its transaction was rolled back); names the entry."""

    def __init__(self, name: str, cause: BaseException) -> None:
        super().__init__(f"periodic task {name!r}: {type(cause).__name__}: {cause}")
        self.name = name
        self.cause = cause


# -- entries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodicEntry:
    """One row of ``pgqueue.periodic_tasks``: what to send, when, and what happened so far."""

    name: str
    task: str
    schedule: Schedule
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    expires: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    catch_up: str = "once"
    tick_kwarg: str | None = None
    enabled: bool = True
    declared_in_code: bool = False
    next_run_at: dt.datetime | None = None
    last_run_at: dt.datetime | None = None
    total_run_count: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(f"a periodic task needs a non-empty name, got {self.name!r}")
        what = f"periodic task {self.name!r}"
        if not isinstance(self.task, str) or not self.task:
            raise ConfigurationError(f"{what}: 'task' must be a task name, got {self.task!r}")
        if self.catch_up not in CATCH_UP_POLICIES:
            raise ConfigurationError(
                f"{what}: catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, "
                f"got {self.catch_up!r}"
            )
        if self.expires is not None and not self.expires > 0:
            raise ConfigurationError(f"{what}: expires must be positive seconds")
        if self.tick_kwarg is not None and not (
            isinstance(self.tick_kwarg, str) and self.tick_kwarg.isidentifier()
        ):
            raise ConfigurationError(
                f"{what}: tick_kwarg must name a keyword argument, got {self.tick_kwarg!r}"
            )
        unknown = set(self.options) - _ENTRY_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"{what}: unknown option(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(_ENTRY_OPTIONS))}"
            )
        for option, value in self.options.items():
            kinds, wanted = _OPTION_TYPES.get(option, ((object,), ""))
            # bool is an int to Python, not a number to a user
            if value is None:
                continue
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ConfigurationError(f"{what}: option {option} must be {wanted}, got {value!r}")
        dumps_args(self.task, self.args, self.kwargs)  # refuse what JSON cannot carry, now

    def row(self) -> dict[str, Any]:
        """Parameters for the statements that write an entry."""
        return {
            "name": self.name,
            "task_name": self.task,
            "cron": self.schedule.cron,
            "day_or": self.schedule.day_or,
            "interval_seconds": self.schedule.interval,
            "timezone": self.schedule.timezone,
            "args": json.dumps(list(self.args)),
            "kwargs": json.dumps(dict(self.kwargs)),
            "queue": self.queue,
            "priority": self.priority,
            "expires": self.expires,
            "options": json.dumps(dict(self.options)),
            "catch_up": self.catch_up,
            "tick_kwarg": self.tick_kwarg,
            "enabled": self.enabled,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PeriodicEntry:
        return cls(
            name=row["name"],
            task=row["task_name"],
            schedule=Schedule(
                cron=row["cron"],
                interval=row["interval_seconds"],
                timezone=row["timezone"],
                day_or=row["day_or"],
            ),
            args=tuple(row["args"]),
            kwargs=dict(row["kwargs"]),
            queue=row["queue"],
            priority=row["priority"],
            expires=row["expires"],
            options=dict(row["options"]),
            catch_up=row["catch_up"],
            tick_kwarg=row["tick_kwarg"],
            enabled=row["enabled"],
            declared_in_code=row["declared_in_code"],
            next_run_at=row["next_run_at"],
            last_run_at=row["last_run_at"],
            total_run_count=row["total_run_count"],
        )

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], timezone: str = "UTC") -> PeriodicEntry:
        """An entry from a Celery-shaped ``beat_schedule`` item.

        ``{"task": "reports.nightly", "schedule": crontab(minute=0, hour=3), "args": (),
        "kwargs": {}, "options": {"queue": "reports", "expires": 3600}}``, plus pgqueue's
        ``timezone``, ``catch_up`` (``"once"`` or ``"all"``) and ``tick_kwarg``.
        """
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"beat_schedule[{name!r}] must be a dict, got {spec!r}")
        unknown = set(spec) - _SPEC_KEYS
        if unknown:
            raise ConfigurationError(
                f"beat_schedule[{name!r}]: unknown key(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(_SPEC_KEYS))}"
            )
        if "task" not in spec or "schedule" not in spec:
            raise ConfigurationError(f"beat_schedule[{name!r}] needs 'task' and 'schedule'")
        options = dict(spec.get("options") or {})
        expires = options.pop("expires", None)
        if isinstance(expires, dt.timedelta):
            expires = expires.total_seconds()
        if expires is not None and not isinstance(expires, int | float):
            raise ConfigurationError(
                f"periodic task {name!r}: expires must be seconds or a timedelta (relative to "
                f"each tick), got {expires!r}"
            )
        args = spec.get("args") or ()
        if isinstance(args, str | bytes) or not isinstance(args, Sequence):
            raise ConfigurationError(f"periodic task {name!r}: args must be a list or tuple")
        try:
            schedule = Schedule.parse(spec["schedule"], spec.get("timezone") or timezone)
        except InvalidSchedule as exc:
            raise InvalidSchedule(f"periodic task {name!r}: {exc}") from None
        return cls(
            name=name,
            task=spec["task"],
            schedule=schedule,
            args=tuple(args),
            kwargs=dict(spec.get("kwargs") or {}),
            queue=options.pop("queue", None),
            priority=options.pop("priority", None),
            expires=float(expires) if expires is not None else None,
            options=options,
            catch_up=spec.get("catch_up", "once"),
            tick_kwarg=spec.get("tick_kwarg"),
        )


def declared_entries(app: PgQueue) -> list[PeriodicEntry]:
    """The entries the app's code declares (``beat_schedule``), validated, sorted by name."""
    schedule = app.conf.beat_schedule or {}
    if not isinstance(schedule, Mapping):
        raise ConfigurationError("beat_schedule must be a dict of name -> entry")
    zone = app.conf.timezone or "UTC"
    return [PeriodicEntry.from_spec(name, schedule[name], zone) for name in sorted(schedule)]


def periodic_task_spec(
    schedule: Any,
    sig: Task | Signature,
    args: Sequence[Any] = (),
    kwargs: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """The ``beat_schedule`` item for ``app.add_periodic_task`` (validated by the caller)."""
    if isinstance(sig, Task):
        task, sig_args, sig_kwargs, sig_options = sig.name, (), {}, {}
    elif isinstance(sig, Signature):
        task, sig_args, sig_kwargs, sig_options = sig.task, sig.args, sig.kwargs, sig.options
    else:
        raise ConfigurationError(f"add_periodic_task wants a task or a signature, got {sig!r}")
    spec: dict[str, Any] = {
        "task": task,
        "schedule": schedule,
        "args": tuple(sig_args) + tuple(args or ()),
        "kwargs": {**sig_kwargs, **dict(kwargs or {})},
    }
    for key in ("timezone", "catch_up", "tick_kwarg"):
        if key in options:
            spec[key] = options.pop(key)
    spec["options"] = {**sig_options, **options}
    return spec


# -- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncResult:
    declared: list[str]
    disabled: list[str]


def sync_schedule(app: PgQueue, conn: Any) -> SyncResult:
    """Upsert the code's entries and disable (not delete) code entries no longer declared.

    One transaction, rows written in name order so that beats starting together cannot
    deadlock. An operator's ``disable`` of a code entry survives restarts; changing its
    schedule in code restarts its ticks from now.
    """
    entries = declared_entries(app)
    names = [e.name for e in entries]
    with translate_errors(), conn.transaction():
        for entry in entries:
            conn.execute(queries.get("beat_sync_entry"), entry.row())
        disabled = [
            r[0] for r in conn.execute(queries.get("beat_disable_undeclared"), {"names": names})
        ]
    for name in disabled:
        log.warning("beat: periodic task %r is no longer declared in code: disabled", name)
    return SyncResult(names, disabled)


@dataclass(frozen=True)
class BrokenEntry:
    """A row of ``pgqueue.periodic_tasks`` that is no usable entry (edited by hand: a cron
    expression croniter rejects, an unknown time zone, an option of the wrong type...),
    with why. Beat leaves it alone; fix the row, or remove it."""

    name: str
    task: str
    reason: str
    enabled: bool
    next_run_at: dt.datetime | None
    last_run_at: dt.datetime | None
    total_run_count: int


def read_entry(row: Mapping[str, Any]) -> PeriodicEntry | BrokenEntry:
    """The entry of a periodic_tasks row, or a BrokenEntry saying what is wrong with it."""
    try:
        return PeriodicEntry.from_row(row)
    except (ConfigurationError, EncodeError, TypeError, ValueError) as exc:
        return BrokenEntry(
            name=row["name"],
            task=row["task_name"],
            reason=" ".join(str(exc).split()) or type(exc).__name__,
            enabled=row["enabled"],
            next_run_at=row["next_run_at"],
            last_run_at=row["last_run_at"],
            total_run_count=row["total_run_count"],
        )


def list_rows(conn: Any) -> list[PeriodicEntry | BrokenEntry]:
    """Every row, enabled or not, by name: an entry, or a BrokenEntry for a bad row."""
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        return [read_entry(r) for r in cur.execute(queries.get("beat_list"))]


def list_entries(conn: Any) -> list[PeriodicEntry]:
    """Every usable entry, enabled or not, by name (broken rows: see list_rows)."""
    return [e for e in list_rows(conn) if isinstance(e, PeriodicEntry)]


def add_entry(conn: Any, entry: PeriodicEntry) -> None:
    """Insert a new entry; its first tick is the first after now. Refuses an existing name."""
    with translate_errors():
        added = conn.execute(queries.get("beat_add"), entry.row()).fetchone()
    if added is None:
        raise ConfigurationError(
            f"a periodic task named {entry.name!r} already exists: remove it first, or pick "
            "another name"
        )


def remove_entry(conn: Any, name: str) -> bool:
    """Delete an entry; returns whether code declares it (it comes back when beat starts)."""
    with translate_errors():
        row = conn.execute(queries.get("beat_remove"), {"name": name}).fetchone()
    if row is None:
        raise ConfigurationError(f"no periodic task named {name!r}")
    return bool(row[0])


def set_enabled(conn: Any, name: str, enabled: bool) -> None:
    """Enable or disable an entry. Enabling restarts it from now: no catch-up for the pause."""
    with translate_errors():
        row = conn.execute(
            queries.get("beat_set_enabled"), {"name": name, "enabled": enabled}
        ).fetchone()
    if row is None:
        raise ConfigurationError(f"no periodic task named {name!r}")


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
    next_run_at: dt.datetime


def tick(
    app: PgQueue,
    conn: Any,
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


def _handle(app: PgQueue, conn: Any, entry: PeriodicEntry, now: dt.datetime) -> Tick:
    if entry.next_run_at is None:
        first = entry.schedule.next_after(now)
        _advance(conn, entry, first, last_run_at=None, sent=0)
        log.debug("beat: %s first tick at %s", entry.name, first.isoformat())
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


def _send(app: PgQueue, conn: Any, entry: PeriodicEntry, due: dt.datetime, task_id: str) -> bool:
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
    conn: Any,
    entry: PeriodicEntry,
    next_run_at: dt.datetime | None,
    *,
    last_run_at: dt.datetime | None,
    sent: int,
) -> None:
    conn.execute(
        queries.get("beat_advance"),
        {"name": entry.name, "next_run_at": next_run_at, "last_run_at": last_run_at, "sent": sent},
    )


def run_now(app: PgQueue, conn: Any, name: str) -> AsyncResult:
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
            conn, entry, entry.next_run_at, last_run_at=run_tick if sent else None, sent=int(sent)
        )
    return AsyncResult(task_id, app=app, task_name=entry.task)


# -- the service -------------------------------------------------------------------------


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
        self._conn: Any = None
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
        self._connect()
        if not self.sync:
            log.info("beat %s ready: running pgqueue.periodic_tasks as it is", self.name)
            return
        try:
            result = sync_schedule(self.app, self._conn)
        except BaseException:
            self._close()
            raise
        log.info(
            "beat %s ready: %d periodic task(s) declared in code%s",
            self.name,
            len(result.declared),
            f", {len(result.disabled)} disabled" if result.disabled else "",
        )

    def _connect(self) -> None:
        conn = connect(self.app.dsn, application_name=f"pgqueue beat {self.name}")
        try:
            with translate_errors():
                migrate.check(conn)
                conn.execute(queries.get("beat_listen"))
        except BaseException:
            conn.close()
            raise
        self._conn = conn

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
        if self._conn is None:
            self._connect()
        sent = 0
        while not self._stop.is_set():
            clock = time.monotonic()
            self._failing = {n: t for n, t in self._failing.items() if t > clock}
            try:
                done = tick(self.app, self._conn, skip=self._failing)
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
        with translate_errors():
            row = self._conn.execute(
                queries.get("beat_next_wakeup"), {"skip": list(self._failing)}
            ).fetchone()
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
