"""Pausing, resuming and limiting queues, for the whole cluster, through ``pgqueue.queues``.

A paused queue still takes jobs (enqueueing goes on) but no worker claims from it, and the
jobs trigger hands none of its new jobs to an idle worker; jobs already running finish.
A queue's concurrency and rate limits hold across every worker (pgqueue.claim_limited).
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
from .controls import parse_rate
from .db import translate_errors
from .exceptions import ConfigurationError, PgQueueError


class QueueNameError(PgQueueError, ValueError):
    """A queue name that cannot name a queue (empty, or not a string), or a limit that is
    not one."""


@dataclass(frozen=True)
class QueueState:
    """One queue as ``pgqueue queue list`` shows it. ``changed_at``/``changed_by``: the last
    pause, resume or change of limits (None if it never had one); ready, running and
    workers as in ``pgqueue.queue_stats``."""

    name: str
    paused: bool
    changed_at: dt.datetime | None
    changed_by: str | None
    concurrency_limit: int | None
    rate_limit: float | None  # starts per second
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


def set_queue_limits(
    conn: psycopg.Connection[Any],
    name: str,
    *,
    concurrency_limit: int | None = None,
    rate_limit: str | float | None = None,
) -> bool:
    """Set queue ``name``'s limits for the whole cluster (None clears one); True if they
    changed. ``concurrency_limit``: at most this many of its jobs running at once;
    ``rate_limit``: Celery's syntax ("10/s", "100/m", "1000/h", or a number per second).
    Jobs of a task with limits of its own follow those instead."""
    if concurrency_limit is not None and (
        isinstance(concurrency_limit, bool)
        or not isinstance(concurrency_limit, int)
        or concurrency_limit < 1
    ):
        raise QueueNameError(
            f"queue {name!r}: concurrency_limit must be a whole number of jobs, at least 1 "
            f"(or None for no limit), not {concurrency_limit!r}"
        )
    try:
        rate = parse_rate(f"queue {name!r}", rate_limit)
    except ConfigurationError as exc:
        raise QueueNameError(str(exc)) from None
    params = {"name": _check(name), "concurrency_limit": concurrency_limit, "rate_limit": rate}
    with translate_errors():
        (changed,) = queries.one(conn.execute(queries.get("queue_limit"), params))
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
