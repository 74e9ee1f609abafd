"""Editing the ``pgqueue.periodic_tasks`` table: the code's schedule synced in when a beat
starts, and the entries ``pgqueue beat add|remove|enable|disable|list`` work on."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from .. import queries
from ..db import translate_errors
from ..exceptions import ConfigurationError
from .entries import BrokenEntry, PeriodicEntry, declared_entries, read_entry

if TYPE_CHECKING:
    from ..app import PgQueue

log = logging.getLogger("pgqueue.beat")


@dataclass(frozen=True)
class SyncResult:
    declared: list[str]
    disabled: list[str]


def sync_schedule(app: PgQueue, conn: psycopg.Connection[Any]) -> SyncResult:
    """Upsert the code's entries and disable (not delete) code entries no longer declared.

    One transaction, rows written in name order so that beats starting together cannot
    deadlock. An operator's ``disable`` of a code entry survives restarts; changing its
    schedule in code restarts its ticks from now.
    """
    entries = declared_entries(app)
    names = [e.name for e in entries]
    with translate_errors(), conn.transaction():
        for entry in entries:
            conn.execute(queries.get("beat_sync_entry"), entry.row())
        disabled = [
            r[0] for r in conn.execute(queries.get("beat_disable_undeclared"), {"names": names})
        ]
    for name in disabled:
        log.warning("beat: periodic task %r is no longer declared in code: disabled", name)
    return SyncResult(names, disabled)


def list_rows(conn: psycopg.Connection[Any]) -> list[PeriodicEntry | BrokenEntry]:
    """Every row, enabled or not, by name: an entry, or a BrokenEntry for a bad row."""
    with translate_errors(), conn.cursor(row_factory=dict_row) as cur:
        return [read_entry(r) for r in cur.execute(queries.get("beat_list"))]


def list_entries(conn: psycopg.Connection[Any]) -> list[PeriodicEntry]:
    """Every usable entry, enabled or not, by name (broken rows: see list_rows)."""
    return [e for e in list_rows(conn) if isinstance(e, PeriodicEntry)]


def add_entry(conn: psycopg.Connection[Any], entry: PeriodicEntry) -> None:
    """Insert a new entry; its first tick is the first after now. Refuses an existing name."""
    with translate_errors():
        added = conn.execute(queries.get("beat_add"), entry.row()).fetchone()
    if added is None:
        raise ConfigurationError(
            f"a periodic task named {entry.name!r} already exists: remove it first, or pick "
            "another name"
        )


def remove_entry(conn: psycopg.Connection[Any], name: str) -> bool:
    """Delete an entry; returns whether code declares it (it comes back when beat starts)."""
    with translate_errors():
        row = conn.execute(queries.get("beat_remove"), {"name": name}).fetchone()
    if row is None:
        raise ConfigurationError(f"no periodic task named {name!r}")
    return bool(row[0])


def set_enabled(conn: psycopg.Connection[Any], name: str, enabled: bool) -> None:
    """Enable or disable an entry. Enabling restarts it from now: no catch-up for the pause."""
    with translate_errors():
        row = conn.execute(
            queries.get("beat_set_enabled"), {"name": name, "enabled": enabled}
        ).fetchone()
    if row is None:
        raise ConfigurationError(f"no periodic task named {name!r}")
