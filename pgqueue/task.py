"""Tasks: the functions users decorate with ``@app.task``, and how a call becomes a job."""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from .canvas import Signature as Signature  # also importable from here, as before
from .controls import TaskControls
from .exceptions import MaxRetriesExceededError, Retry
from .mapping import MapMethods
from .result import AsyncResult
from .serialization import check_size, dumps_args

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .aio import AsyncProducerConnection
    from .app import PgQueue
    from .options import SendOptions
    from .producer import ProducerConnection


@dataclass
class Request:
    """What a running task knows about the call that started it (``self.request``)."""

    id: str | None = None
    task: str = ""
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    eta: dt.datetime | None = None
    expires: dt.datetime | None = None
    hostname: str | None = None
    queue: str | None = None
    priority: int = 0
    attempt: int = 0
    max_retries: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    called_directly: bool = True


_current_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "pgqueue_request", default=None
)


class Task(MapMethods):
    """A registered task. Call it to run it here; ``delay``/``apply_async`` to queue it;
    ``map``, ``starmap`` and ``chunks`` (mapping.py) to run many calls in few jobs."""

    def __init__(
        self,
        app: PgQueue,
        fun: Callable[..., Any],
        *,
        name: str,
        bind: bool = False,
        queue: str | None = None,
        priority: int | None = None,
        ignore_result: bool | None = None,
        max_retries: int | object | None = ...,
        default_retry_delay: float | None = None,
        autoretry_for: Sequence[type[BaseException]] = (),
        retry_kwargs: Mapping[str, Any] | None = None,
        retry_backoff: bool | float = False,
        retry_backoff_max: float = 600,
        retry_jitter: bool = True,
        acks_late: bool | None = None,
        reject_on_worker_lost: bool | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        expires: float | dt.timedelta | dt.datetime | None = None,
        controls: TaskControls | None = None,
        sensitive: bool = False,
    ) -> None:
        self.app = app
        self.controls = controls or TaskControls()
        self.run = fun
        self.name = name
        self.bind = bind
        self.queue = queue
        self.priority = priority
        self._ignore_result = ignore_result
        self._max_retries = max_retries
        self._default_retry_delay = default_retry_delay
        self.autoretry_for = tuple(autoretry_for)
        self.retry_kwargs = dict(retry_kwargs or {})
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.retry_jitter = retry_jitter
        self._acks_late = acks_late
        self._reject_on_worker_lost = reject_on_worker_lost
        self._time_limit = time_limit
        self._soft_time_limit = soft_time_limit
        self.expires = expires
        # The dashboard neither shows nor searches this task's arguments.
        self.sensitive = sensitive
        self.__doc__ = fun.__doc__
        self.__name__ = getattr(fun, "__name__", name)
        self.__module__ = getattr(fun, "__module__", "")
        self.__wrapped__ = fun

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    # Options that fall back to app.conf when the decorator did not set them.
    @property
    def ignore_result(self) -> bool:
        if self._ignore_result is None:
            return bool(self.app.conf.task_ignore_result)
        return self._ignore_result

    @property
    def max_retries(self) -> int | None:
        if self._max_retries is ...:
            value: int | None = self.app.conf.task_max_retries
            return value
        return self._max_retries  # type: ignore[return-value]

    @property
    def default_retry_delay(self) -> float:
        if self._default_retry_delay is None:
            return float(self.app.conf.task_default_retry_delay)
        return self._default_retry_delay

    @property
    def acks_late(self) -> bool:
        if self._acks_late is None:
            return bool(self.app.conf.task_acks_late)
        return self._acks_late

    @property
    def reject_on_worker_lost(self) -> bool:
        if self._reject_on_worker_lost is None:
            return bool(self.app.conf.task_reject_on_worker_lost)
        return self._reject_on_worker_lost

    @property
    def time_limit(self) -> float | None:
        if self._time_limit is None:
            value: float | None = self.app.conf.task_time_limit
            return value
        return self._time_limit

    @property
    def soft_time_limit(self) -> float | None:
        if self._soft_time_limit is None:
            value: float | None = self.app.conf.task_soft_time_limit
            return value
        return self._soft_time_limit

    @property
    def request(self) -> Request:
        """The request of the call running now in this thread (empty when called directly)."""
        return _current_request.get() or Request(task=self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.bind:
            return self.run(self, *args, **kwargs)
        return self.run(*args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Queue a call with these arguments; shortcut for ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
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
        """Queue a call. See ``PgQueue.send_task`` for every option (``link`` and
        ``link_error`` included)."""
        return self.app.send_task(
            self.name,
            args,
            kwargs,
            countdown=countdown,
            eta=eta,
            expires=expires,
            queue=queue,
            priority=priority,
            task_id=task_id,
            connection=connection,
            max_retries=max_retries,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            **options,
        )

    async def adelay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """``delay`` for asyncio code: ``await add.adelay(2, 3)``."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        connection: AsyncProducerConnection | None = None,
        **options: Unpack[SendOptions],
    ) -> AsyncResult:
        """``apply_async`` for asyncio code, with the same options; ``connection`` is a
        psycopg AsyncConnection or AsyncCursor, or a SQLAlchemy AsyncSession or
        AsyncConnection. See ``PgQueue.asend_task``."""
        return await self.app.asend_task(self.name, args, kwargs, connection=connection, **options)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task with these arguments, to send later, in bulk or in a
        workflow (in a chain it takes the previous result first)."""
        return Signature(self.name, args, kwargs, app=self.app)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: in a workflow it takes no result, only these arguments."""
        return Signature(self.name, args, kwargs, app=self.app, immutable=True)

    def signature(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A signature with these options (``immutable=True`` as ``si``)."""
        return Signature(self.name, args or (), kwargs or {}, options, app=self.app)

    def enqueue_many(
        self,
        arguments: Sequence[Sequence[Any]],
        *,
        connection: ProducerConnection | None = None,
        **options: Any,
    ) -> list[AsyncResult]:
        """Queue one job per argument tuple in one statement: ``add.enqueue_many([(1, 2)])``."""
        return self.app.enqueue_many(
            [Signature(self.name, a, {}, options, app=self.app) for a in arguments],
            connection=connection,
        )

    def AsyncResult(self, task_id: str) -> AsyncResult:
        """A handle on the result of this task's call with this id."""
        return AsyncResult(task_id, app=self.app)

    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: dt.datetime | None = None,
        countdown: float | None = None,
        max_retries: int | EllipsisType | None = ...,
        **options: Any,
    ) -> Retry:
        """Ask for another attempt of the running task: ``raise self.retry(exc=exc)``.

        ``args`` and ``kwargs``, when given, replace the call's arguments for the next
        attempt and the ones after it (as in Celery). ``max_retries=None`` means no limit.
        When the retries are used up, re-raises ``exc`` if given, else raises
        ``MaxRetriesExceededError``; the job then ends FAILURE.
        """
        if options:
            # Celery would send a new message with these; a retry here moves the same job
            # row, whose queue, priority and limits stay as they are.
            raise TypeError(
                f"{self.name}: retry() cannot change {', '.join(sorted(options))}; it "
                "accepts args, kwargs, exc, throw, eta, countdown and max_retries"
            )
        request = self.request
        if request.called_directly:
            # Like Celery: outside a worker there is nothing to retry, so fail loudly.
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(f"{self.name}: retry() called outside a worker")
        limit: int | None
        if isinstance(max_retries, EllipsisType):
            limit = self.retry_limit(request.max_retries, request.options)
        else:
            limit = max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}: max retries ({limit}) exceeded"
            )
        when: float | dt.datetime
        if eta is not None:
            when = eta
        elif countdown is not None:
            when = float(countdown)
        else:
            when = float(request.options.get("default_retry_delay", self.default_retry_delay))
        error: Retry
        if args is None and kwargs is None:
            error = Retry(exc=exc, when=when)
        else:
            # Encoded here, so that arguments JSON cannot carry fail this attempt, in the
            # task, with the name of the culprit.
            args_json, kwargs_json = dumps_args(
                self.name,
                request.args if args is None else args,
                request.kwargs if kwargs is None else kwargs,
            )
            check_size(
                self.name,
                "the retry's arguments",
                len(args_json) + len(kwargs_json),
                self.app.conf.task_max_payload_size,
            )
            error = RetryWithArguments(
                exc=exc, when=when, args_json=args_json, kwargs_json=kwargs_json
            )
        if throw:
            raise error
        return error

    def retry_limit(
        self, call_max_retries: int | None, options: Mapping[str, Any], *, automatic: bool = False
    ) -> int | None:
        """How many retries a job may have; None means no limit.

        The call's own limit (the job's max_retries column, or ``apply_async(max_retries=None)``
        kept in its options) wins; then, for automatic retries (``autoretry_for``, a hard time
        limit), ``retry_kwargs["max_retries"]``; then the task's ``max_retries``.
        """
        if call_max_retries is not None:
            return call_max_retries
        if "max_retries" in options:
            per_call: int | None = options["max_retries"]
            return per_call
        if automatic and "max_retries" in self.retry_kwargs:
            configured: int | None = self.retry_kwargs["max_retries"]
            return configured
        return self.max_retries


class RetryWithArguments(Retry):
    """A ``Retry`` whose next attempt runs with new arguments (``self.retry(args=...)``).

    They travel encoded, as the worker writes them to the job row.
    """

    def __init__(
        self,
        *,
        exc: BaseException | None,
        when: float | dt.datetime,
        args_json: str,
        kwargs_json: str,
    ) -> None:
        super().__init__(exc=exc, when=when)
        self.args_json = args_json
        self.kwargs_json = kwargs_json


def set_current_request(request: Request | None) -> contextvars.Token[Request | None]:
    return _current_request.set(request)


def reset_current_request(token: contextvars.Token[Request | None]) -> None:
    _current_request.reset(token)
