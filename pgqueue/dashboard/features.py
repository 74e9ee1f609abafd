"""The dashboard's one meeting point with features a database may not have yet: queue
pause/resume (a ``pgqueue.queues`` table) and workflows (chains, groups and chords:
``ops.workflow``). Every page asks here, and gets "not available" (None or False) until the
migration and library code that bring them are in place; nothing else in the dashboard
names them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from .. import ops, queries
from ..db import translate_errors
from ..exceptions import PgQueueError

if TYPE_CHECKING:
    from ..app import PgQueue


class FeatureMissing(PgQueueError):
    """The database or this pgqueue has no such feature yet (e.g. pausing a queue)."""


def _has_relation(conn: psycopg.Connection[Any], name: str) -> bool:
    with translate_errors():
        return bool(
            queries.one(conn.execute(queries.get("dashboard_relation_exists"), {"name": name}))[0]
        )


# -- queue pause ---------------------------------------------------------------------------


def paused_queues(conn: psycopg.Connection[Any]) -> set[str] | None:
    """The paused queues' names, or None when this database has no queue pause."""
    if not _has_relation(conn, "pgqueue.queues"):
        return None
    with translate_errors():
        rows = conn.execute(queries.get("dashboard_queue_controls")).fetchall()
    # The table's own names are not settled here: a queue's name is read from whichever
    # of "queue" or "name" it has.
    return {
        str(r.get("queue", r.get("name")))
        for (r,) in rows
        if isinstance(r, dict) and r.get("paused") is True
    }


def _pause_functions(app: PgQueue) -> tuple[Any, Any] | None:
    """The library's pause and resume, as ``(conn, name)`` callables: ``ops.pause_queue``
    / ``ops.resume_queue``, else ``app.control.pause_queue`` / ``resume_queue``."""
    pause, resume = getattr(ops, "pause_queue", None), getattr(ops, "resume_queue", None)
    if callable(pause) and callable(resume):
        return pause, resume
    control = app.control
    pause, resume = getattr(control, "pause_queue", None), getattr(control, "resume_queue", None)
    if callable(pause) and callable(resume):
        return (lambda conn, name: pause(name)), (lambda conn, name: resume(name))
    return None


def can_pause(app: PgQueue, conn: psycopg.Connection[Any]) -> bool:
    """Whether pausing works here: the library has it and the database has its table."""
    return _pause_functions(app) is not None and _has_relation(conn, "pgqueue.queues")


def set_paused(app: PgQueue, conn: psycopg.Connection[Any], queue: str, paused: bool) -> None:
    """Pause or resume ``queue`` with the same library code as the command line."""
    functions = _pause_functions(app)
    if functions is None or not _has_relation(conn, "pgqueue.queues"):
        raise FeatureMissing(
            "pausing queues needs a pgqueue with queue pause/resume and its migration "
            "(`pgqueue migrate`)"
        )
    functions[0 if paused else 1](conn, queue)


# -- workflows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkflowView:
    """One workflow as the job page shows it: its own fields (kind, id, a chord's counter
    flattened to ``chord size``, ``chord remaining``...), and each list it holds (its
    members) as rows of fields."""

    fields: dict[str, Any]
    lists: dict[str, list[dict[str, Any]]]


def workflows(conn: psycopg.Connection[Any], job_id: str) -> list[WorkflowView] | None:
    """The workflows (chain, group, chord; an enclosing chain too) the job is part of, as
    ``ops.workflow`` reads them, outermost first; None: in none, or this database has no
    workflows."""
    read = getattr(ops, "workflow", None)
    if not callable(read) or not _has_relation(conn, "pgqueue.workflows"):
        return None
    found = read(conn, job_id)
    if not found:
        return None
    return [_view(flow) for flow in (found if isinstance(found, list | tuple) else [found])]


def _view(flow: Any) -> WorkflowView:
    fields: dict[str, Any] = {}
    lists: dict[str, list[dict[str, Any]]] = {}
    for key, value in _as_dict(flow).items():
        if isinstance(value, list | tuple):
            lists[key] = [_as_dict(member) for member in value]
        elif isinstance(value, Mapping):
            fields.update({f"{key} {k}": v for k, v in value.items()})
        else:
            fields[key] = value
    return WorkflowView(fields, lists)


def _as_dict(value: Any) -> dict[str, Any]:
    # ops.workflow gives dicts; a dataclass or an object with fields is read the same way.
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "__dict__"):
        return dict(vars(value))
    return {"value": value}
