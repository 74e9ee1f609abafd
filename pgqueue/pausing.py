"""Pausing and resuming queues, for the whole cluster, through ``pgqueue.queues``.

A paused queue still takes jobs (enqueueing goes on) but no worker claims from it, and the
jobs trigger hands none of its new jobs to an idle worker; jobs already running finish.
The state is a row in the database: it survives restarts of workers and of the server.
Each function takes a psycopg connection in autocommit (e.g. ``app.connect()``); within a
transaction of the caller's, the change takes effect when it commits.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg

from . import queries
from .db import translate_errors
from .exceptions import PgQueueError


class QueueNameError(PgQueueError, ValueError):
    """A queue name that cannot name a queue (empty, or not a string)."""


@dataclass(frozen=True)
class QueueState:
    """One queue as ``pgqueue queue list`` shows it. ``changed_at``/``changed_by``: the last
    pause or resume (None if it never had one); ready, running and workers as in
    ``pgqueue.queue_stats``."""

    name: str
    paused: bool
    changed_at: dt.datetime | None
    changed_by: str | None
    ready: int
    running: int
    workers: int


def pause_queue(conn: psycopg.Connection[Any], name: str) -> bool:
    """Pause queue ``name`` (which need not hold jobs yet); True if it was running.

    Every claim that starts after the pause commits leaves the queue alone; one already
    under way at that moment may still take a batch. Jobs a worker claimed before the pause
    and holds unstarted in its buffer (at most its free slots' worth) still run.
    """
    with translate_errors():
        (changed,) = queries.one(conn.execute(queries.get("queue_pause"), {"name": _check(name)}))
    return bool(changed)


def resume_queue(conn: psycopg.Connection[Any], name: str) -> bool:
    """Resume queue ``name``; True if it was paused. Idle workers consuming it are woken
    (a NOTIFY on ``pgqueue_jobs`` when this commits) and claim at once."""
    with translate_errors():
        (changed,) = queries.one(conn.execute(queries.get("queue_resume"), {"name": _check(name)}))
    return bool(changed)


def list_queues(conn: psycopg.Connection[Any]) -> list[QueueState]:
    """Every queue that is or was paused, or is in ``pgqueue.queue_stats``, by name."""
    with translate_errors():
        rows = conn.execute(queries.get("queue_list"), prepare=False).fetchall()
    return [QueueState(*row) for row in rows]


def paused_queues(conn: psycopg.Connection[Any]) -> list[str]:
    """The names of the paused queues."""
    with translate_errors():
        rows = conn.execute(queries.get("queue_paused")).fetchall()
    return [r[0] for r in rows]


def _check(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise QueueNameError(
            f"a queue name must be a non-empty string, not {name!r}: pass the name the "
            "tasks are routed to (e.g. 'default')"
        )
    return name


def pause_states(conn: psycopg.Connection[Any]) -> dict[str, bool]:
    """Each queue ever paused or resumed, and whether it is paused now."""
    with translate_errors():
        rows = conn.execute(queries.get("queue_pause_states")).fetchall()
    return {r[0]: bool(r[1]) for r in rows}
