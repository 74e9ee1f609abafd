"""The application object: configuration, the task registry and routes; the public face
of the producer (producer.py writes the jobs, aio.py from asyncio code, jobrows.py works out
their rows)."""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import psycopg

from . import aio, config, mapjobs, pooler, producer
from . import migrate as migrations
from .aio import AsyncConnectionT, AsyncProducerConnection
from .asyncdb import AsyncConnectionHolder
from .beat.entries import PeriodicEntry, periodic_task_spec
from .canvas import Signature
from .conf import Settings
from .control import Control
from .controls import TaskControls
from .current import app_created, on_every_app, set_default_app
from .db import ConnectionHolder, connect, load_times_clamped, resolve_dsn, translate_errors
from .producer import ConnectionT, ProducerConnection
from .result import AsyncResult
from .task import Task

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .options import SendOptions

F = TypeVar("F", bound=Callable[..., Any])

# Every app has the built-in pgqueue.map and pgqueue.starmap (Celery's celery.map, ...).
on_every_app(mapjobs.register)


class PgQueue(config.CeleryConfiguration):
    """A pgqueue application, the counterpart of ``celery.Celery``.

    ``PgQueue("shop", dsn="postgresql://localhost/shop")``; the DSN defaults to the
    ``PGQUEUE_DSN`` environment variable. Settings may be passed as keywords or set later on
    ``app.conf`` with Celery's names (``task_default_queue``, ``result_expires``, ...).
    ``include`` lists modules the worker imports to find tasks.

    Celery's constructor arguments are understood, so that ``Celery("proj", broker=...,
    backend=..., include=[...])`` ports by changing the import (``pgqueue.Celery`` is this
    class): ``broker`` and ``backend`` are ignored with one warning (PostgreSQL is both),
    ``config_source`` is read by ``config_from_object``, ``set_as_current=False`` leaves
    the current app as it is.
    """

    def __init__(
        self,
        main: str | None = None,
        *,
        dsn: str | None = None,
        include: Sequence[str] = (),
        broker: str | None = None,
        backend: str | None = None,
        config_source: Any = None,
        namespace: str | None = None,
        set_as_current: bool = True,
        **settings: Any,
    ) -> None:
        self.main = main
        config.warn_broker_backend(broker, backend)
        self.conf = Settings(**settings)
        self.include = list(include)
        self.tasks: dict[str, Task] = {}
        self._dsn = dsn
        self._connections = ConnectionHolder(dsn)
        self._aconnections = AsyncConnectionHolder(dsn)
        self._discover: list[tuple[config.Packages, str]] = []
        self.control = Control(self)
        # Consulted by every enqueue given no connection= outside app.transaction(): the
        # connection it returns is used (the caller's transaction); None, the app's own.
        # The Django app sets it to Django's connection; see docs/how-to/django.md.
        self.connection_provider: Callable[[], ProducerConnection | None] | None = None
        if config_source is not None:
            self.config_from_object(config_source, namespace=namespace)
        if set_as_current:
            set_default_app(self)
        app_created(self)

    def __repr__(self) -> str:
        return f"<PgQueue {self.main or '__main__'}>"

    @property
    def dsn(self) -> str:
        """The DSN in use: the one given, else ``PGQUEUE_DSN``."""
        return resolve_dsn(self._dsn)

    def use_dsn(self, dsn: str | None) -> None:
        """Use ``dsn`` from now on instead of the DSN given to the constructor (or
        ``PGQUEUE_DSN``), as ``pgqueue --dsn`` does for the app of ``-A``; None: PGQUEUE_DSN.

        This thread's producer connection is closed; every thread's next producer call
        connects to ``dsn``. Connections already handed out (``connect()``) and workers
        already running keep the database they have.
        """
        self.close()
        self._dsn = dsn
        self._connections = ConnectionHolder(dsn)
        self._aconnections = AsyncConnectionHolder(dsn)

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
        ``reject_on_worker_lost``, ``time_limit``, ``soft_time_limit``, ``expires``; and
        ``unique``, ``unique_until``, ``concurrency_limit``, ``concurrency_key``,
        ``rate_limit`` (pgqueue.controls); ``sensitive`` (args hidden by the dashboard)."""

        def register(f: Callable[..., Any]) -> Task:
            name = options.pop("name", None) or f"{f.__module__}.{f.__qualname__}"
            controls = TaskControls.declared(name, f, options)
            task = Task(self, f, name=name, controls=controls, **options)
            self.tasks[name] = task
            return task

        if fun is not None:
            return register(fun)
        return register

    def import_task_modules(self) -> None:
        """Import the modules named by ``include`` and ``conf.imports``, and those
        ``autodiscover_tasks`` asked for, so their tasks register (a worker does this)."""
        for module in [*self.include, *self.conf.imports]:
            importlib.import_module(module)
        self.import_discovered()

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
        connection: ProducerConnection | None = None,
        max_retries: int | EllipsisType | None = ...,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Queue a task by name; the task need not be registered in this process.

        ``countdown`` (seconds) or ``eta`` (a datetime; naive is read in ``conf.timezone``,
        UTC by default) delay the start; ``expires`` (seconds, timedelta or datetime) drops
        a job not started by then (it ends REVOKED). Higher ``priority`` runs first.
        ``max_retries`` overrides the task's, and ``max_retries=None`` means no limit (left
        out, the task's own applies). With
        ``connection`` (a psycopg connection or cursor, any DB-API cursor, or a SQLAlchemy
        ``Session`` or ``Connection``) the job is written in the caller's transaction and
        exists only if it commits; inside ``with app.transaction(conn):`` that connection is
        used, else the one ``app.connection_provider()`` returns, if any. Otherwise the job
        is committed at once. ``link``/``link_error`` (a signature or a list): sent when the
        task succeeds/fails or is revoked (see docs/workflows.md).
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
        if linked := _linked(self, name, args, kwargs, call):
            return linked.apply_async(connection=connection)
        return producer.send(self, name, args, kwargs, call, connection)

    def enqueue_many(
        self, signatures: Iterable[Signature], *, connection: ProducerConnection | None = None
    ) -> list[AsyncResult]:
        """Queue many calls in one transaction; all or none are inserted. On pgqueue's own
        connection they are streamed with COPY (jobs with an ETA, countdown or expiry,
        whose times the database works out, follow as pipelined statements of 1,000 jobs);
        on a caller's connection they go as one statement.

        ``app.enqueue_many([add.s(1, 2), send.s("a@b.c").set(countdown=10)])``; with
        ``connection`` the batch joins the caller's transaction.
        """
        return producer.enqueue_many(self, signatures, connection)

    @contextlib.contextmanager
    def transaction(self, connection: ConnectionT) -> Iterator[ConnectionT]:
        """Enqueue through the caller's connection for the duration of the block.

        With a psycopg 3 connection, or a SQLAlchemy ``Session`` or ``Connection``, the block
        is also a transaction (committed at the end, rolled back on an exception, a
        savepoint when one is open already), so:

            with app.transaction(conn):
                conn.execute("INSERT INTO orders ...")
                send_confirmation.delay(order_id)   # exists only if the order does

        Other DB-API connections are used as they are; commit them yourself.
        """
        with producer.bound(connection) as bound:
            yield bound

    # -- producing from asyncio code (aio.py): Celery's names with an "a" prefix ----------

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        connection: AsyncProducerConnection | None = None,
        **options: Unpack[SendOptions],
    ) -> AsyncResult:
        """``send_task`` for asyncio code, with the same options. With ``connection`` (see
        ``atransaction``), or inside ``async with app.atransaction(conn):``, the job joins that
        transaction; else it is committed at once on pgqueue's own connection of this loop."""
        call: dict[str, Any] = dict(options)
        if linked := _linked(self, name, args, kwargs, call):
            return await linked.aapply_async(connection=connection)
        return await aio.send(self, name, args, kwargs, call, connection)

    async def aenqueue_many(
        self, signatures: Iterable[Signature], *, connection: AsyncProducerConnection | None = None
    ) -> list[AsyncResult]:
        """``enqueue_many`` for asyncio code: the jobs go as one statement, all or none."""
        return await aio.enqueue_many(self, signatures, connection)

    def atransaction(
        self, connection: AsyncConnectionT
    ) -> AbstractAsyncContextManager[AsyncConnectionT]:
        """``transaction`` for asyncio code: ``async with app.atransaction(aconn):`` sends
        the block's async calls through ``aconn`` (a psycopg AsyncConnection or AsyncCursor,
        a SQLAlchemy AsyncSession or AsyncConnection): but for a cursor, also a transaction."""
        return aio.bound(connection)

    # -- results and schema ------------------------------------------------------------

    def AsyncResult(self, task_id: str) -> AsyncResult:
        """A handle on the result of the task with this id."""
        return AsyncResult(task_id, app=self)

    def connection(self) -> psycopg.Connection[Any]:
        """This thread's autocommit connection used by the producer API."""
        return self._connections.get()

    def connect(self, *, session: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new connection to the app's database (the caller closes it; ``session=True``:
        a direct one, see pooler.session_dsn). Raises SchemaTooNewError if a newer pgqueue
        migrated it. Times Python cannot hold ('infinity') read as datetime.max/min."""
        conn = connect(pooler.session_dsn(self) if session else self.dsn, **kwargs)
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
        """Close this thread's producer connection, and the async producer connections of
        the event loops that are not running (``aclose()`` closes the running loop's)."""
        self._connections.close()
        self._aconnections.close()

    async def aclose(self) -> None:
        """Close the running event loop's producer connection."""
        await self._aconnections.discard()


def _linked(
    app: PgQueue,
    name: str,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    call: dict[str, Any],
) -> Signature | None:
    """The call as a signature if it has a ``link`` or ``link_error`` (taken out of
    ``call``), which then travel in the job's options (canvas.py); None if it has none."""
    links: dict[str, Any] = {k: call.pop(k) for k in ("link", "link_error") if k in call}
    if not any(links.values()):
        return None
    return Signature(name, args or (), kwargs or {}, {**call, **links}, app=app)
