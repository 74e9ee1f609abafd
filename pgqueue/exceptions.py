"""pgqueue's exceptions. Names follow Celery's where Celery has one."""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import sys
from typing import Any

import psycopg


class PgQueueError(Exception):
    """Base class of every error pgqueue raises on purpose."""


class ConfigurationError(PgQueueError):
    """The app or worker is set up wrongly (bad DSN, bad option, nothing to import)."""


class InvalidSchedule(ConfigurationError, ValueError):
    """A schedule that cannot be used: a bad cron expression, interval or time zone, or an
    APScheduler trigger pgqueue cannot represent."""


class IgnoredSettingWarning(UserWarning):
    """A Celery setting that means nothing to pgqueue was given (once per setting name)."""


class DatabaseUnavailable(PgQueueError, psycopg.OperationalError):
    """Postgres could not be reached, or the connection broke mid-call."""


class SchemaMissingError(PgQueueError):
    """The database has no pgqueue schema, or an older one than this code needs."""


class SchemaTooNewError(PgQueueError):
    """A newer pgqueue migrated the database: this one may not read or write its tables."""


class NotRegistered(PgQueueError, KeyError):
    """No task of this name is registered with the app."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "task not registered"


class EncodeError(PgQueueError, TypeError):
    """A task argument or result cannot be carried as JSON."""


class DecodeError(PgQueueError, ValueError):
    """A claimed job's row cannot be turned into a call (it was written by hand, with args
    that are not a JSON array, say); the job ends FAILURE with this error."""


class TimeoutError(PgQueueError, builtins.TimeoutError):
    """``AsyncResult.get()`` waited longer than its timeout."""


class TaskRevokedError(PgQueueError):
    """The task was revoked (or expired) before it could run."""


class ChordError(PgQueueError):
    """A chord's member failed (or was revoked, or expired): the chord's callback ends
    FAILURE with this error, naming the member, and does not run."""


class WorkerLostError(PgQueueError):
    """The worker running an at-most-once task died before the task finished."""


class SoftTimeLimitExceeded(Exception):
    """Raised inside a running task when its soft time limit passes; catch it to clean up."""


class TimeLimitExceeded(PgQueueError):
    """The task ran past its hard time limit and was stopped."""


class MaxRetriesExceededError(PgQueueError):
    """``Task.retry()`` was called after the task's retries were used up."""


class Retry(PgQueueError):
    """Raised by ``Task.retry()``: the job goes back to the queue for another attempt."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | dt.datetime | None = None,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        super().__init__(message or (f"Retry in {when}" if when is not None else "Retry"))


class Ignore(PgQueueError):
    """Raise inside a task to end it in state IGNORED, storing no result."""


class Reject(PgQueueError):
    """Raise inside a task to reject it: with ``requeue=True`` it goes back, else it fails."""

    def __init__(self, reason: str | None = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason or "rejected")


class TaskFailure(PgQueueError):
    """A task failed on a worker. ``get()`` raises a subclass named like the original error.

    When the original exception class is a builtin one (``ValueError``...) or importable from
    a module the caller already imported, the raised exception is also an instance of it, so
    ``except ValueError`` works as it does with Celery.
    """

    exc_type: str = ""
    exc_message: str = ""
    remote_traceback: str | None = None
    task_id: str = ""

    def __str__(self) -> str:
        return self.exc_message


def _original_class(exc_type: str) -> type[BaseException] | None:
    module, _, name = exc_type.rpartition(".")
    owner: Any = sys.modules.get(module or "builtins")
    found = getattr(owner, name, None) if owner is not None else None
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


def rebuild_exception(
    task_id: str, exc_type: str | None, message: str | None, traceback: str | None
) -> TaskFailure:
    """Turn a stored failure back into an exception a caller can catch by its type."""
    exc_type = exc_type or "Exception"
    name = exc_type.rpartition(".")[2]
    bases: tuple[type, ...] = (TaskFailure,)
    original = _original_class(exc_type)
    cls: type[TaskFailure] = type(name, bases, {})
    if original is not None and not issubclass(original, TaskFailure):
        # incompatible instance layouts (e.g. OSError subclasses) keep the plain class
        with contextlib.suppress(TypeError):
            cls = type(name, (TaskFailure, original), {})
    error = cls.__new__(cls)
    Exception.__init__(error, message or "")
    error.exc_type = exc_type
    error.exc_message = message or ""
    error.remote_traceback = traceback
    error.task_id = task_id
    return error
