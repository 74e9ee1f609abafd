"""The application object: task registry, configuration, and the producer side of the queue."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import fnmatch
import importlib
import inspect
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import EllipsisType
from typing import Any, TypeVar, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
import psycopg.errors

from . import migrate as migrations
from . import queries
from .conf import Settings
from .control import Control
from .db import ConnectionHolder, connect, load_times_clamped, resolve_dsn, translate_errors
from .exceptions import ConfigurationError, DatabaseUnavailable, EncodeError, NotRegistered
from .ids import new_job_id
from .result import AsyncResult
from .serialization import as_json_types, check_size, compact_json, dumps_args, dumps_jobs
from .task import PER_CALL_OPTIONS, Signature, Task

F = TypeVar("F", bound=Callable[..., Any])

_default_app: PgQueue | None = None
_bound_connection: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "pgqueue_connection", default=None
)


def default_app() -> PgQueue:
    """The most recently created app, for objects made without one (Celery's current_app)."""
    if _default_app is None:
        raise ConfigurationError("no PgQueue app has been created yet")
    return _default_app


class PgQueue:
    """A pgqueue application, the counterpart of ``celery.Celery``.

    ``PgQueue("shop", dsn="postgresql://localhost/shop")``; the DSN defaults to the
    ``PGQUEUE_DSN`` environment variable. Settings may be passed as keywords or set later on
    ``app.conf`` with Celery's names (``task_default_queue``, ``result_expires``, ...).
    ``include`` lists modules the worker imports to find tasks.
    """

    def __init__(
        self,
        main: str | None = None,
        *,
        dsn: str | None = None,
        include: Sequence[str] = (),
        **settings: Any,
    ) -> None:
        global _default_app
        self.main = main
        self.conf = Settings(**settings)
        self.include = list(include)
        self.tasks: dict[str, Task] = {}
        self._dsn = dsn
        self._connections = ConnectionHolder(dsn)
        self.control = Control(self)
        _default_app = self

    def __repr__(self) -> str:
        return f"<PgQueue {self.main or '__main__'}>"

    @property
    def dsn(self) -> str:
        """The DSN in use: the one given, else ``PGQUEUE_DSN``."""
        return resolve_dsn(self._dsn)

    def use_dsn(self, dsn: str) -> None:
        """Use ``dsn`` from now on instead of the DSN given to the constructor (or
        ``PGQUEUE_DSN``), as ``pgqueue --dsn`` does for the app of ``-A``.

        This thread's producer connection is closed; every thread's next producer call
        connects to ``dsn``. Connections already handed out (``connect()``) and workers
        already running keep the database they have.
        """
        self._connections.close()
        self._dsn = dsn
        self._connections = ConnectionHolder(dsn)

    # -- tasks -------------------------------------------------------------------------

    @overload
    def task(self, fun: F) -> Task: ...

    @overload
    def task(self, fun: None = None, **options: Any) -> Callable[[F], Task]: ...

    def task(self, fun: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., queue=...)``.

        Options: ``name``, ``bind``, ``queue``, ``priority``, ``ignore_result``,
        ``max_retries``, ``default_retry_delay``, ``autoretry_for``, ``retry_kwargs``,
        ``retry_backoff``, ``retry_backoff_max``, ``retry_jitter``, ``acks_late``,
        ``reject_on_worker_lost``, ``time_limit``, ``soft_time_limit``, ``expires``.
        """

        def register(f: Callable[..., Any]) -> Task:
            name = options.pop("name", None) or f"{f.__module__}.{f.__qualname__}"
            task = Task(self, f, name=name, **options)
            self.tasks[name] = task
            return task

        if fun is not None:
            return register(fun)
        return register

    def import_task_modules(self) -> None:
        """Import the modules named by ``include`` and ``conf.imports`` so their tasks register."""
        for module in [*self.include, *self.conf.imports]:
            importlib.import_module(module)

    def route(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The options ``task_routes`` gives for a task name (``{}`` when no route matches)."""
        routes = self.conf.task_routes
        if not routes:
            return {}
        for table in routes if isinstance(routes, list | tuple) else [routes]:
            if callable(table):
                found = table(name, args, kwargs, {})
                if found:
                    return dict(found)
                continue
            for pattern, target in table.items():
                if pattern == name or fnmatch.fnmatchcase(name, pattern):
                    return {"queue": target} if isinstance(target, str) else dict(target)
        return {}

    def add_periodic_task(
        self,
        schedule: Any,
        sig: Task | Signature,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> str:
        """Declare a periodic task, as in Celery; returns its name.

        ``app.add_periodic_task(crontab(minute="*/5"), cleanup, name="cleanup")`` or
        ``app.add_periodic_task(30.0, ping.s("db"))``. ``schedule`` is a ``crontab``, seconds,
        a ``timedelta`` or a cron string; ``options`` are apply_async options (``queue``,
        ``priority``, ``expires``, ...) and beat's ``timezone``, ``catch_up`` and
        ``tick_kwarg``. The entry joins ``conf.beat_schedule``, which a beat writes to the
        periodic_tasks table when it starts. An invalid schedule raises here.
        """
        from .beat import PeriodicEntry, periodic_task_spec

        spec = periodic_task_spec(schedule, sig, args, kwargs, **options)
        key = name or repr(Signature(spec["task"], spec["args"], spec["kwargs"]))
        PeriodicEntry.from_spec(key, spec, self.conf.timezone)
        # A new dict: the default beat_schedule is shared by every app.
        self.conf.beat_schedule = {**(self.conf.beat_schedule or {}), key: spec}
        return key

    # -- producing -----------------------------------------------------------------------

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        expires: float | dt.timedelta | dt.datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        task_id: str | None = None,
        connection: Any = None,
        max_retries: int | EllipsisType | None = ...,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Queue a task by name; the task need not be registered in this process.

        ``countdown`` (seconds) or ``eta`` (a datetime; naive means UTC) delay the start;
        ``expires`` (seconds, timedelta or datetime) drops a job not started by then (it ends
        REVOKED). Higher ``priority`` runs first. ``max_retries`` overrides the task's, and
        ``max_retries=None`` means no limit (left out, the task's own applies). With
        ``connection`` (a psycopg connection or cursor, or any DB-API cursor) the job is
        written in the caller's transaction and exists only if it commits; inside
        ``with app.transaction(conn):`` that connection is used. Otherwise the job is
        committed at once.
        """
        call = dict(
            countdown=countdown,
            eta=eta,
            expires=expires,
            queue=queue,
            priority=priority,
            task_id=task_id,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            **options,
        )
        if not isinstance(max_retries, EllipsisType):
            call["max_retries"] = max_retries
        if connection is not None:
            check_connection(connection)
        args, kwargs = args or (), kwargs or {}
        job_id, columns = self._job_columns(name, args, kwargs, call)
        jobs = [_job(job_id, args, kwargs, columns)]
        document = dumps_jobs(jobs)
        _check_payloads(jobs, document, self.conf.task_max_payload_size)
        self._execute(queries.get("enqueue_jobs"), {"jobs": document}, connection)
        return AsyncResult(job_id, app=self, task_name=name)

    def enqueue_many(
        self, signatures: Iterable[Signature], *, connection: Any = None
    ) -> list[AsyncResult]:
        """Queue many calls in one transaction; all or none are inserted. On pgqueue's own
        connection they are streamed with COPY (jobs with an ETA, countdown or expiry,
        whose times the database works out, follow as pipelined statements of 1,000 jobs);
        on a caller's connection they go as one statement.

        ``app.enqueue_many([add.s(1, 2), send.s("a@b.c").set(countdown=10)])``; with
        ``connection`` the batch joins the caller's transaction.
        """
        results: list[AsyncResult] = []
        sql = queries.get("enqueue_jobs")
        target = connection if connection is not None else _bound_connection.get()
        if target is not None:
            check_connection(target)
            # The caller's connection may be in autocommit (or not psycopg 3 at all): one
            # statement keeps the batch all or nothing there too.
            jobs = [_job(i, sig.args, sig.kwargs, c) for i, sig, c, _ in self._plan(signatures)]
            if jobs:
                document = dumps_jobs(jobs)
                _check_payloads(jobs, document, self.conf.task_max_payload_size)
                with translate_errors():
                    _execute_on(target, sql, {"jobs": document})
            return [AsyncResult(j["id"], app=self, task_name=j["task_name"]) for j in jobs]

        clocked: list[dict[str, Any]] = []  # jobs whose times the database works out
        limit = self.conf.task_max_payload_size

        def rows() -> Iterator[tuple[Any, ...]]:
            for job_id, sig, columns, fixed in self._plan(signatures):
                results.append(AsyncResult(job_id, app=self, task_name=sig.task))
                if fixed is None:
                    clocked.append(_job(job_id, sig.args, sig.kwargs, columns))
                else:
                    args_json, kwargs_json = dumps_args(sig.task, sig.args, sig.kwargs)
                    check_size(sig.task, "its arguments", len(args_json) + len(kwargs_json), limit)
                    yield (job_id, sig.task, args_json, kwargs_json, *fixed)

        copied: list[tuple[Any, ...]] = []
        pending = rows()
        for attempt in (1, 2):
            conn = self._connections.get()
            try:
                with translate_errors(), conn.transaction():
                    # Rows go out while the next are encoded: the server inserts as we go.
                    with conn.cursor() as cur, cur.copy(queries.get("copy_jobs")) as copy:
                        for row in copied:
                            copy.write_row(row)
                        for row in pending:
                            copied.append(row)  # kept, to be sent again on a new connection
                            copy.write_row(row)
                    if clocked:
                        with conn.pipeline():
                            for at in range(0, len(clocked), ENQUEUE_CHUNK):
                                jobs = clocked[at : at + ENQUEUE_CHUNK]
                                chunk = dumps_jobs(jobs)
                                _check_payloads(jobs, chunk, limit)
                                conn.execute(sql, {"jobs": chunk})
                return results
            except psycopg.errors.UniqueViolation:
                # The first attempt committed before its connection was found broken.
                if attempt == 2:
                    return results
                raise
            except DatabaseUnavailable:
                self._connections.discard()
                if attempt == 2:
                    raise
        return results

    def _plan(
        self, signatures: Iterable[Signature]
    ) -> Iterator[tuple[str, Signature, dict[str, Any], tuple[Any, ...] | None]]:
        """Each call's job id and columns, and, for a job COPY can insert as it is (no
        countdown or expiry to work out on the database's clock), its copy_jobs values after
        task_name, args and kwargs (else None).

        What a job's row takes from its task and call options (queue, priority, limits...)
        is worked out once per distinct (task, options); only the id and arguments are new
        per job. Routes that are functions may look at the arguments: no reuse then."""
        routes = self.conf.task_routes
        tables = routes if isinstance(routes, list | tuple) else [routes] if routes else []
        reuse = not any(callable(t) for t in tables)
        shared: dict[Any, tuple[dict[str, Any], tuple[Any, ...] | None]] = {}
        for sig in signatures:
            key: Any = None
            known = None
            if reuse and "task_id" not in sig.options:
                try:
                    key = (sig.task, frozenset(sig.options.items()))
                    known = shared.get(key)
                except TypeError:  # an unhashable option value
                    key = None
            if known is None:
                job_id, columns = self._job_columns(sig.task, sig.args, sig.kwargs, sig.options)
                known = columns, _copy_values(columns)
                if key is not None:
                    shared[key] = known
            else:
                _check_call(sig.task, sig.args, sig.kwargs)
                job_id = new_job_id()
            yield job_id, sig, known[0], known[1]

    def _job_columns(
        self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """A new job's id, and its row's columns other than id, args and kwargs: what its
        task, the call's options and the routes give."""
        _check_call(name, args, kwargs)
        # None means "not given", except for max_retries, where None given means no limit.
        options = {k: v for k, v in options.items() if v is not None or k == "max_retries"}
        unknown = set(options) - _SEND_OPTIONS
        if unknown:
            raise TypeError(f"{name}: unknown option(s) {', '.join(sorted(unknown))}")
        task = self.tasks.get(name)
        route = self.route(name, args, kwargs)

        eta = options.get("eta")
        countdown = options.get("countdown")
        if eta is not None and countdown is not None:
            raise TypeError(f"{name}: give eta or countdown, not both")
        run_at, countdown, expires_at, expires_in = _times(
            name,
            eta,
            countdown,
            options.get("expires", task.expires if task else None),
            self.conf.timezone or "UTC",
        )
        per_call = {k: options[k] for k in PER_CALL_OPTIONS if k in options}
        if "acks_late" in per_call:
            # stored as a JSON boolean: the claim and the hand-off ignore anything else
            per_call["acks_late"] = bool(per_call["acks_late"])
        if "max_retries" in options and options["max_retries"] is None:
            # The column's NULL means the task's default, so "no limit" is kept here.
            per_call["max_retries"] = None
        if eta is not None or countdown is not None:
            # So that request.eta is None for a job sent to run at once, as in Celery.
            per_call["scheduled"] = True
        task_id = options.get("task_id")
        job_id = str(uuid.UUID(str(task_id))) if task_id else new_job_id()
        columns = {
            "task_name": name,
            "queue": options.get("queue")
            or route.get("queue")
            or (task.queue if task else None)
            or self.conf.task_default_queue,
            "priority": _first(
                options.get("priority"),
                route.get("priority"),
                task.priority if task else None,
                self.conf.task_default_priority,
            ),
            "run_at": run_at,
            "countdown": countdown,
            "expires_at": expires_at,
            "expires_in": expires_in,
            "max_retries": options.get("max_retries"),
            "time_limit": options.get("time_limit"),
            "soft_time_limit": options.get("soft_time_limit"),
            "options": per_call,
        }
        _check_columns(columns)
        for what in ("task_name", "queue"):
            # COPY would pass these on to the database (or the driver), which refuse them
            # with a bare error.
            value = columns[what]
            if isinstance(value, str) and ("\x00" in value or not _utf8(value)):
                raise EncodeError(
                    f"{name!r}: the {what} {value!r} contains a NUL character (\\x00) or a "
                    "lone surrogate, which Postgres cannot store"
                )
        return job_id, columns

    def _execute(self, sql: str, params: Mapping[str, Any], connection: Any) -> None:
        target = connection if connection is not None else _bound_connection.get()
        if target is not None:
            with translate_errors():
                _execute_on(target, sql, params)
            return
        # Our own autocommit connection. A connection gone stale since its last use (server
        # restart) is replaced once; the job id is the primary key, so a retried insert
        # cannot create the job twice.
        for attempt in (1, 2):
            conn = self._connections.get()
            try:
                with translate_errors():
                    conn.execute(sql, params)
                return
            except psycopg.errors.UniqueViolation:
                if attempt == 2:
                    return
                raise
            except DatabaseUnavailable:
                self._connections.discard()
                if attempt == 2:
                    raise

    @contextlib.contextmanager
    def transaction(self, connection: Any) -> Iterator[Any]:
        """Enqueue through the caller's connection for the duration of the block.

        With a psycopg 3 connection the block is also a transaction (``conn.transaction()``:
        committed at the end, rolled back on an exception, a savepoint when nested), so::

            with app.transaction(conn):
                conn.execute("INSERT INTO orders ...")
                send_confirmation.delay(order_id)   # exists only if the order does

        Other DB-API connections are used as they are; commit them yourself.
        """
        check_connection(connection)
        token = _bound_connection.set(connection)
        try:
            if isinstance(connection, psycopg.Connection):
                with connection.transaction():
                    yield connection
            else:
                yield connection
        finally:
            _bound_connection.reset(token)

    # -- results and schema ------------------------------------------------------------

    def AsyncResult(self, task_id: str) -> AsyncResult:
        """A handle on the result of the task with this id."""
        return AsyncResult(task_id, app=self)

    def connection(self) -> Any:
        """This thread's autocommit connection used by the producer API."""
        return self._connections.get()

    def connect(self, **kwargs: Any) -> Any:
        """A new connection to the app's database (the caller closes it). Raises
        SchemaTooNewError if a newer pgqueue migrated that database. Times Python cannot
        hold ('infinity' in a row written by hand) read as datetime.max or datetime.min."""
        conn = connect(self.dsn, **kwargs)
        load_times_clamped(conn)
        try:
            with translate_errors():
                migrations.check_not_newer(conn)
            if not conn.autocommit:
                conn.rollback()  # hand the connection over outside any transaction
        except BaseException:
            conn.close()
            raise
        return conn

    def migrate(self) -> list[migrations.Migration]:
        """Create or upgrade the pgqueue schema; safe to run any number of times at once."""
        with connect(self.dsn) as conn:
            return migrations.migrate(conn)

    def close(self) -> None:
        """Close this thread's producer connection."""
        self._connections.close()


# Jobs per statement of enqueue_many on pgqueue's own connection.
ENQUEUE_CHUNK = 1000

_SEND_OPTIONS = {
    "countdown",
    "eta",
    "expires",
    "queue",
    "priority",
    "task_id",
    "max_retries",
    "time_limit",
    "soft_time_limit",
    *PER_CALL_OPTIONS,
}


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _times(
    name: str,
    eta: dt.datetime | None,
    countdown: float | None,
    expires: float | dt.timedelta | dt.datetime | None,
    zone: str,
) -> tuple[str | None, float | None, str | None, float | None]:
    """A call's run_at and expires_at columns (absolute, as ISO text in UTC) or their
    countdown and expires_in (seconds, worked out on the database's clock).

    Naive datetimes are in ``zone`` (conf.timezone), where Celery reads a naive eta too. A
    time outside the years 1-9999 in UTC is refused with a ValueError, before anything is
    written. An expiry before the eta is kept, as in Celery: the job ends REVOKED without
    running.
    """
    run_at = _utc(name, "eta", eta, zone) if eta is not None else None
    if countdown is not None:
        countdown = _seconds(name, "countdown", countdown)
    expires_at = expires_in = None
    if isinstance(expires, dt.datetime):
        expires_at = _utc(name, "expires", expires, zone)
    elif isinstance(expires, dt.timedelta):
        expires_in = _seconds(name, "expires", expires.total_seconds())
    elif expires is not None:
        expires_in = _seconds(name, "expires", expires)
    return (
        run_at.isoformat() if run_at is not None else None,
        countdown,
        expires_at.isoformat() if expires_at is not None else None,
        expires_in,
    )


def _utc(name: str, what: str, when: object, zone: str) -> dt.datetime:
    if not isinstance(when, dt.datetime):
        raise TypeError(f"{name}: {what} must be a datetime, got {type(when).__name__}")
    try:
        if when.tzinfo is None:
            when = when.replace(tzinfo=_zone(zone))
        return when.astimezone(dt.timezone.utc)
    except OverflowError:
        raise ValueError(
            f"{name}: {what}={when!r} is outside the years 1-9999 in UTC, which pgqueue "
            "cannot store"
        ) from None


def _seconds(name: str, what: str, value: Any) -> float:
    """Seconds from now, refused unless the time they give is one pgqueue can store."""
    try:
        seconds = float(value)
        dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(
            f"{name}: {what}={value!r} is not a number of seconds giving a time within the "
            "years 1-9999"
        ) from None
    return seconds


def _zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError):
        raise ConfigurationError(
            f"conf.timezone={name!r} is not a time zone name (such as 'UTC' or "
            "'Europe/Paris'); naive datetimes are read in it"
        ) from None


def _job(
    job_id: str, args: Sequence[Any], kwargs: Mapping[str, Any], columns: dict[str, Any]
) -> dict[str, Any]:
    """One job of an enqueue_jobs document: ``columns`` with its id and arguments."""
    job = dict(columns)
    job["id"] = job_id
    job["args"], job["kwargs"] = as_json_types(args, kwargs)
    return job


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_payloads(jobs: list[dict[str, Any]], document: str, limit: int | None) -> None:
    """Refuse a job whose arguments are over ``limit`` bytes; ``document`` holds the jobs
    encoded, so that a batch under the limit as a whole costs nothing more."""
    if limit is None or len(document) <= limit:
        return
    for job in jobs:
        args_json, kwargs_json = dumps_args(job["task_name"], job["args"], job["kwargs"])
        check_size(job["task_name"], "its arguments", len(args_json) + len(kwargs_json), limit)


def _copy_values(columns: dict[str, Any]) -> tuple[Any, ...] | None:
    """A job's copy_jobs values after task_name, args and kwargs; None if its run_at or
    expires_at must be worked out on the database's clock (or are given: COPY leaves run_at
    to its default, the transaction's start, as enqueue_jobs does)."""
    if any(columns[k] is not None for k in ("run_at", "countdown", "expires_at", "expires_in")):
        return None
    try:
        options = compact_json(columns["options"])
    except (TypeError, ValueError) as exc:
        name = columns["task_name"]
        raise EncodeError(f"{name}: the call's options cannot be stored: {exc}") from exc
    return (
        columns["queue"],
        columns["priority"],
        columns["max_retries"],
        columns["time_limit"],
        columns["soft_time_limit"],
        options,
    )


def _check_call(name: str, args: Any, kwargs: Any) -> None:
    if type(args) in (tuple, list) and type(kwargs) is dict and type(name) is str and name:
        return  # the usual call, without the slower checks against abstract types
    if not isinstance(name, str) or not name:
        raise NotRegistered(f"task name must be a non-empty string, got {name!r}")
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise TypeError(f"{name}: args must be a list or tuple, got {type(args).__name__}")
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"{name}: kwargs must be a dict, got {type(kwargs).__name__}")


_ACCEPTED_CONNECTIONS = (
    "a psycopg.Connection or psycopg.Cursor, or a blocking DB-API 2 connection or cursor "
    "(psycopg2, ...)"
)


def check_connection(target: Any) -> None:
    """Raise TypeError unless the producer can write a job through ``target`` (a
    ``connection=`` argument): an async connection would return a coroutine nobody awaits,
    and the job would silently not exist."""
    if isinstance(target, psycopg.Connection | psycopg.Cursor):
        if isinstance(target, psycopg.ServerCursor):
            raise TypeError(
                f"connection= got a server-side (named) cursor, which cannot run an INSERT: "
                f"pass its connection instead ({_ACCEPTED_CONNECTIONS})"
            )
        return
    kind = f"{type(target).__module__}.{type(target).__qualname__}"
    if isinstance(target, psycopg.AsyncConnection | psycopg.AsyncCursor) or any(
        inspect.iscoroutinefunction(getattr(target, method, None))
        for method in ("cursor", "execute")
    ):
        raise TypeError(
            f"connection= got {kind}, an async connection, which pgqueue cannot use yet: "
            f"pass {_ACCEPTED_CONNECTIONS}"
        )
    if not callable(getattr(target, "execute", None)) and not callable(
        getattr(target, "cursor", None)
    ):
        raise TypeError(f"connection= got {kind}: pass {_ACCEPTED_CONNECTIONS}")


# The jobs.priority column is an integer (int4).
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1
# Longest queue or task name, in bytes of UTF-8. A queue name is a key of btree indexes
# (an entry must stay under 2,704 bytes) and the payload of a NOTIFY (under 8,000 bytes);
# a name is an identifier, so the limit is set well below both.
NAME_MAX_BYTES = 1000


def _check_columns(columns: dict[str, Any]) -> None:
    """Refuse a priority or name the jobs table cannot take, before anything is sent."""
    name = columns["task_name"]
    priority = columns["priority"]
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(
            f"{_short(name)}: priority must be an integer from {PRIORITY_MIN} to "
            f"{PRIORITY_MAX} (higher runs first), got {_short(priority)}"
        )
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(
            f"{_short(name)}: priority {priority} is out of range: it must be from "
            f"{PRIORITY_MIN} to {PRIORITY_MAX} (higher runs first)"
        )
    for what, value in (("task name", name), ("queue name", columns["queue"])):
        about = "" if what == "task name" else f"{_short(name)}: "
        if not isinstance(value, str) or not value:
            raise TypeError(f"{about}the {what} must be a non-empty string, got {_short(value)}")
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > NAME_MAX_BYTES:
            raise ValueError(
                f"{about}the {what} {_short(value)} is {size} bytes long; names may be at "
                f"most {NAME_MAX_BYTES} bytes (UTF-8)"
            )


def _short(value: Any) -> str:
    """``repr(value)``, cut to keep a message about an over-long value readable."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...{text[-12:]} ({len(text)} chars)"


def _execute_on(target: Any, sql: str, params: Mapping[str, Any]) -> None:
    if hasattr(target, "fetchone"):  # a cursor
        _sync_result(target, target.execute(sql, params))
        return
    with contextlib.closing(target.cursor()) as cur:
        _sync_result(target, cur.execute(sql, params))


def _sync_result(target: Any, value: Any) -> None:
    # An async driver that check_connection could not recognise: its statement never ran.
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        kind = f"{type(target).__module__}.{type(target).__qualname__}"
        raise TypeError(
            f"connection= got {kind}, whose execute() returned an awaitable: the job was not "
            f"written; pass {_ACCEPTED_CONNECTIONS}"
        )
