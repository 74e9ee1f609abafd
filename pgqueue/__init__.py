"""pgqueue: a distributed task queue for Python whose only moving part is PostgreSQL.

Celery's programming model (``@app.task``, ``delay``, ``apply_async``, ``AsyncResult``),
with jobs enqueued in the caller's own transaction.
"""

from . import exceptions, signals, states
from .app import PgQueue
from .canvas import Signature, chain, chord, group
from .groupresult import GroupResult
from .mapping import chunks, xmap, xstarmap
from .result import AsyncResult
from .schedules import crontab
from .shared import shared_task
from .task import Request, Task
from .version import __version__
from .worker import Worker

# Celery's class name, so that `from celery import Celery` ports by changing the import.
Celery = PgQueue

__all__ = [
    "AsyncResult",
    "Celery",
    "GroupResult",
    "PgQueue",
    "Request",
    "Signature",
    "Task",
    "Worker",
    "__version__",
    "chain",
    "chord",
    "chunks",
    "crontab",
    "exceptions",
    "group",
    "shared_task",
    "signals",
    "states",
    "xmap",
    "xstarmap",
]
