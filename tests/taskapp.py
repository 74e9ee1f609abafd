"""Tasks used by the test suite; workers in tests run ``-A tests.taskapp:app``.

The DSN comes from PGQUEUE_DSN, which each test sets to its own fresh database.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import psycopg

from pgqueue import PgQueue

app = PgQueue("tests")

_conn: dict[int, Any] = {}


def db() -> Any:
    """A connection of this process (prefork child or thread) for tasks that record things."""
    key = os.getpid()
    if key not in _conn:
        _conn[key] = psycopg.connect(os.environ["PGQUEUE_DSN"], autocommit=True)
    return _conn[key]


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="tests.record")
def record(tag: str) -> int:
    """Append a row to test_runs and return the time it ran, for order and once-only checks."""
    db().execute("INSERT INTO test_runs (tag, pid) VALUES (%s, %s)", (tag, os.getpid()))
    return time.time_ns()


@app.task
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task
def returns_set() -> Any:
    return {1, 2}


@app.task
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0.01)
    return x + y


@app.task(queue="emails", name="emails.send")
def send_email(to: str) -> str:
    return f"sent to {to}"


@app.task
def now_ns() -> int:
    return time.time_ns()
