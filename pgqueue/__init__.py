"""pgqueue: a distributed task queue for Python whose only moving part is PostgreSQL.

Celery's programming model (``@app.task``, ``delay``, ``apply_async``, ``AsyncResult``),
with jobs enqueued in the caller's own transaction.
"""

from . import exceptions, signals, states
from .app import PgQueue
from .result import AsyncResult
from .schedules import crontab
from .task import Request, Signature, Task
from .version import __version__
from .worker import Worker

__all__ = [
    "AsyncResult",
    "PgQueue",
    "Request",
    "Signature",
    "Task",
    "Worker",
    "__version__",
    "crontab",
    "exceptions",
    "signals",
    "states",
]
