"""Running one claimed job and turning what happened into an Outcome.

This is the part of the worker that runs inside a pool slot (a prefork child, a thread,
the worker process itself with ``solo``, or an asyncio task on the asyncio pool's loop); it
never touches the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import inspect
import time
import traceback
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from . import signals, states, tracing
from .exceptions import DecodeError, EncodeError, Ignore, Reject, Retry
from .policy import autoretries, autoretry_options
from .serialization import dumps_result
from .task import Request, RetryWithArguments, reset_current_request, set_current_request

if TYPE_CHECKING:
    from .app import PgQueue
    from .task import Task


@dataclass
class Job:
    """A claimed job: one entry of the JSON document a claim (claim_jobs) or a hand-off
    sends, which pgqueue.job_document() (sql/schema.sql, from migration 0006) builds as an
    array of these fields, in this order (FIELDS). A field is added in both places, under
    the same name: tests/test_claim_document.py fails when the two disagree."""

    id: str
    seq: int
    task_name: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    # the document carries times as microseconds since the epoch; from_claim converts them
    run_at: dt.datetime
    expires_at: dt.datetime | None
    expired: bool
    retries: int
    max_retries: int | None
    time_limit: float | None
    soft_time_limit: float | None
    options: dict[str, Any]
    attempt: int
    # STARTED by the claim itself, for a free slot of the pool
    started: bool = False

    @classmethod
    def from_claim(cls, entry: list[Any]) -> Job:
        """A job from one entry of a claim's (or hand-off's) JSON document.

        Raises DecodeError for a job no task can be called with: its row was written by
        hand (the table's constraints let through, say, options that are not an object);
        TypeError for an entry with another number of fields.
        """
        job = cls(*entry)
        args, kwargs, options = job.args, job.kwargs, job.options
        if type(args) is not list or type(kwargs) is not dict or type(options) is not dict:
            raise DecodeError(
                f"job {job.id} of {job.task_name}: args must be a JSON array and kwargs and "
                f"options JSON objects, found {_kind(args)}, {_kind(kwargs)} and {_kind(options)}"
            )
        limits = (("time_limit", job.time_limit), ("soft_time_limit", job.soft_time_limit))
        for name, limit in limits:
            if limit is not None and (type(limit) not in (int, float) or not 0 <= limit < _INF):
                raise DecodeError(
                    f"job {job.id} of {job.task_name}: {name} must be a number of seconds, "
                    f"found {limit!r}"
                )
        job.run_at = _EPOCH + dt.timedelta(microseconds=cast("int", job.run_at))
        if job.expires_at is not None:
            job.expires_at = _EPOCH + dt.timedelta(microseconds=cast("int", job.expires_at))
        return job

    @property
    def label(self) -> str:
        return f"{self.task_name}[{self.id}]"


# The names of a job document's fields, in order: Python's one list of them.
FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Job))
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_INF = float("inf")


def _kind(value: Any) -> str:
    """A decoded JSON value's type, in JSON's words."""
    kinds = {list: "an array", dict: "an object", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number")


def decode_failure(
    job_id: str, attempt: int, task_name: str, queue: str, exc: Exception
) -> Outcome:
    """The FAILURE of a claimed job whose entry the worker could not decode (a row written
    by hand: a number too long for Python, arrays nested too deep, options not an object)."""
    error = (
        exc
        if isinstance(exc, DecodeError)
        else DecodeError(f"job {job_id} of {task_name}: its row cannot be decoded: {exc}")
    )
    return Outcome(
        job_id,
        attempt,
        states.FAILURE,
        task_name,
        exc_type=exception_name(error),
        exc_message=str(error),
        queue=queue,
    )


@dataclass
class Outcome:
    """What became of one job; the worker writes it to the database."""

    job_id: str
    attempt: int
    state: str
    task_name: str = ""
    result_json: str | None = None
    exc_type: str | None = None
    exc_message: str | None = None
    traceback: str | None = None
    time_taken: float = 0.0
    store: bool = True
    # for state RETRY: seconds from now, or an absolute time
    countdown: float | None = None
    eta: dt.datetime | None = None
    # for state RETRY: the arguments of the next attempt, when retry() changed them
    args_json: str | None = None
    kwargs_json: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    # A failure the pool decided on (see lost()): the job and the error, for the retry policy.
    pool_failure: tuple[Job, type[BaseException]] | None = None

    def __post_init__(self) -> None:
        # Postgres text cannot hold NUL: an error with one would fail the whole batch of
        # outcomes it travels with (and the worker's loop). Replaced here, once, so that the
        # log line says what the database stores.
        self.exc_type = _text(self.exc_type)
        self.exc_message = _text(self.exc_message)
        self.traceback = _text(self.traceback)

    def finish_row(self) -> list[Any]:
        """This outcome as finish_jobs reads it, one entry of its JSON document."""
        return [
            self.job_id,
            self.attempt,
            self.state,
            self.result_json,
            self.exc_type,
            self.exc_message,
            self.traceback,
            self.time_taken,
            self.store or self.state == states.FAILURE,
        ]

    @classmethod
    def for_job(cls, job: Job, state: str, **fields: Any) -> Outcome:
        return cls(job.id, job.attempt, state, job.task_name, queue=job.queue, **fields)

    @classmethod
    def failure(
        cls, job: Job, exc: BaseException, *, tb: str | None = None, time_taken: float = 0.0
    ) -> Outcome:
        """A FAILURE outcome; see ``lost`` for failures decided outside the task."""
        return cls.for_job(
            job,
            states.FAILURE,
            exc_type=exception_name(exc),
            exc_message=str(exc),
            traceback=tb,
            time_taken=time_taken,
        )


def _text(value: str | None) -> str | None:
    """``value`` with each NUL replaced by U+FFFD, and each lone surrogate by '?' (neither
    can be stored as text)."""
    if value is None:
        return value
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    if "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def exception_name(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def execute(app: PgQueue, job: Job, hostname: str) -> Outcome:
    """Run the job's task and report its outcome; never raises for the task's own errors.

    An ``async def`` task runs to its end on an event loop of its own (the asyncio pool
    runs it on the pool's loop instead: ``execute_async``)."""
    run = Execution.begin(app, job, hostname)
    if isinstance(run, Outcome):
        return run
    with run:
        try:
            value = run.call()
            if inspect.isawaitable(value):
                value = asyncio.run(_await(value))
        except BaseException as exc:
            return run.failed(exc)
        return run.succeeded(value)


async def execute_async(
    app: PgQueue,
    job: Job,
    hostname: str,
    guard: Callable[[Awaitable[Any]], Awaitable[Any]],
) -> Outcome:
    """``execute`` on the running event loop: the task's awaitable is awaited through
    ``guard`` (the asyncio pool's, which turns its soft time limit into
    SoftTimeLimitExceeded inside the task). Run it as an asyncio task of its own, so that
    the request (a context variable) is this job's alone."""
    run = Execution.begin(app, job, hostname)
    if isinstance(run, Outcome):
        return run
    with run:
        try:
            value = run.call()
            if inspect.isawaitable(value):
                value = await guard(value)
        except BaseException as exc:
            return run.failed(exc)
        return run.succeeded(value)


class Execution:
    """The bookkeeping around one call of a task, shared by ``execute`` and
    ``execute_async``: entered, the job's request is current and task_prerun sent; then
    ``succeeded`` or ``failed`` make the outcome and send the signals that go with it,
    while the request is still current (as in Celery)."""

    def __init__(self, task: Task, job: Job, hostname: str) -> None:
        self.task = task
        self.job = job
        self.request = Request(
            id=job.id,
            task=job.task_name,
            args=list(job.args),
            kwargs=dict(job.kwargs),
            retries=job.retries,
            # Like Celery: set for a call given an eta or countdown, and for retries (when
            # the retry was due); None for a call sent to run at once.
            eta=job.run_at if job.retries or job.options.get("scheduled") else None,
            expires=job.expires_at,
            hostname=hostname,
            queue=job.queue,
            priority=job.priority,
            attempt=job.attempt,
            max_retries=job.max_retries,
            options=dict(job.options),
            called_directly=False,
        )
        self.store = not job.options.get("ignore_result", task.ignore_result)
        self.started = 0.0
        self._token: contextvars.Token[Request | None] | None = None
        self._traced: AbstractContextManager[Any] = contextlib.nullcontext()
        self._span: Any = None

    @classmethod
    def begin(cls, app: PgQueue, job: Job, hostname: str) -> Execution | Outcome:
        """The execution of the job's task, or the FAILURE of a task not registered here."""
        task = app.tasks.get(job.task_name)
        if task is None:  # the claim only takes registered names; kept for safety
            return Outcome.for_job(
                job,
                states.FAILURE,
                exc_type="pgqueue.exceptions.NotRegistered",
                exc_message=f"task {job.task_name!r} is not registered on worker {hostname}",
            )
        return cls(task, job, hostname)

    def __enter__(self) -> Execution:
        # the run's span (pgqueue[otel]), current while the task runs
        self._traced = tracing.process(self.job)
        self._span = self._traced.__enter__()
        self._token = set_current_request(self.request)
        signals.task_prerun.send(
            sender=self.task,
            task_id=self.job.id,
            task=self.task,
            args=self.request.args,
            kwargs=self.request.kwargs,
        )
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._token is not None:
            reset_current_request(self._token)
        self._traced.__exit__(*exc_info)

    def call(self) -> Any:
        """Call the task with the job's arguments (for an ``async def`` task: its
        coroutine, not awaited yet)."""
        return self.task(*self.job.args, **self.job.kwargs)

    def succeeded(self, value: Any) -> Outcome:
        """The outcome of a task that returned ``value``: SUCCESS, or FAILURE with
        EncodeError if the value cannot be stored."""
        elapsed = _since(self.started)
        task, job, store = self.task, self.job, self.store
        try:
            result_json = (
                dumps_result(value, task.app.conf.task_max_payload_size) if store else None
            )
        except EncodeError as exc:
            return self._settled(Outcome.failure(job, exc, tb=None, time_taken=elapsed), exc)
        outcome = Outcome.for_job(
            job, states.SUCCESS, result_json=result_json, time_taken=elapsed, store=store
        )
        return self._settled(outcome, value)

    def failed(self, exc: BaseException) -> Outcome:
        """The outcome of a task that raised ``exc``: an automatic retry if its
        ``autoretry_for`` says so, RETRY, IGNORED, a rejection, or FAILURE."""
        task, job = self.task, self.job
        if isinstance(exc, Exception) and autoretries(task, type(exc)):
            try:
                # raises Retry, or exc when exhausted
                task.retry(exc=exc, **autoretry_options(task, job))
            except BaseException as raised:
                exc = raised
        return self._settled(self._error_outcome(exc), exc)

    def _error_outcome(self, exc: BaseException) -> Outcome:
        job, store, elapsed = self.job, self.store, _since(self.started)
        if isinstance(exc, Retry):
            return _retry_outcome(job, exc, elapsed, store, self.task.app.conf.timezone)
        if isinstance(exc, Ignore):
            return Outcome.for_job(job, states.IGNORED, time_taken=elapsed)
        if isinstance(exc, Reject):
            reject = {
                "exc_type": "pgqueue.exceptions.Reject",
                "exc_message": str(exc),
                "time_taken": elapsed,
            }
            if exc.requeue:
                return Outcome.for_job(
                    job, states.RETRY, countdown=0.0, store=store, extra={"requeue": True}, **reject
                )
            return Outcome.for_job(job, states.FAILURE, store=True, **reject)
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return Outcome.failure(job, exc, tb=tb, time_taken=elapsed)

    def _settled(self, outcome: Outcome, retval: Any) -> Outcome:
        tracing.finished(self._span, outcome.state, outcome.exc_type, outcome.exc_message)
        _send_outcome(self.task, self.request, outcome, retval)
        return outcome


def _send_outcome(task: Task, request: Request, outcome: Outcome, retval: Any) -> None:
    """task_success, task_failure or task_retry as the outcome says, then task_postrun; in
    the process that ran the task, while its request is still current (as in Celery)."""
    if outcome.state == states.SUCCESS:
        signals.task_success.send(sender=task, result=retval)
    elif outcome.state == states.FAILURE:
        signals.task_failure.send(
            sender=task,
            task_id=request.id,
            exception=retval,
            args=request.args,
            kwargs=request.kwargs,
            traceback=getattr(retval, "__traceback__", None),
            einfo=outcome.traceback,
        )
    elif outcome.state == states.RETRY:
        reason = retval.exc if isinstance(retval, Retry) and retval.exc is not None else retval
        signals.task_retry.send(
            sender=task, request=request, reason=reason, einfo=outcome.traceback
        )
    signals.task_postrun.send(
        sender=task,
        task_id=request.id,
        task=task,
        args=request.args,
        kwargs=request.kwargs,
        retval=retval,
        state=outcome.state,
    )


def lost(job: Job, exc: BaseException, time_taken: float) -> Outcome:
    """A failure the pool decided on (hard time limit, dead child); the worker applies the
    task's retry policy to it (pgqueue.policy), so it carries the job and the error class."""
    outcome = Outcome.failure(job, exc, time_taken=time_taken)
    outcome.pool_failure = (job, type(exc))
    return outcome


async def _await(value: Any) -> Any:
    return await value


def _since(started: float) -> float:
    return time.perf_counter() - started


def _retry_outcome(job: Job, retry: Retry, elapsed: float, store: bool, zone: str) -> Outcome:
    exc = retry.exc
    outcome = Outcome.for_job(
        job,
        states.RETRY,
        exc_type=exception_name(exc) if exc is not None else "pgqueue.exceptions.Retry",
        exc_message=str(exc) if exc is not None else str(retry),
        traceback="".join(traceback.format_exception(exc)) if exc is not None else None,
        time_taken=elapsed,
        store=store,
    )
    if isinstance(retry, RetryWithArguments):
        outcome.args_json = retry.args_json
        outcome.kwargs_json = retry.kwargs_json
    if isinstance(retry.when, dt.datetime):
        when = retry.when
        # naive: in conf.timezone, as for apply_async(eta=...)
        outcome.eta = when if when.tzinfo else when.replace(tzinfo=ZoneInfo(zone or "UTC"))
    else:
        outcome.countdown = float(retry.when or 0.0)
    return outcome
