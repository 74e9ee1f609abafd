"""Apply the numbered SQL files in ``sql/migrations`` in order, once, under an advisory lock."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from . import queries, roles
from .exceptions import SchemaMissingError, SchemaTooNewError
from .locks import MIGRATION_LOCK
from .version import __version__

log = logging.getLogger("pgqueue.migrate")

_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def available() -> list[Migration]:
    """Every migration shipped with this version of pgqueue, in order."""
    found = []
    for path in sorted((queries.sql_dir() / "migrations").glob("*.sql")):
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path))
    return found


def latest_version() -> int:
    return max(m.version for m in available())


def migrate(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Bring the schema up to date; returns the migrations it applied (none if current).

    All pending files run in one transaction while holding a transaction-level advisory lock,
    so two processes migrating at once apply each file exactly once, and a failing file
    leaves the schema as it was. They run as the role owning the schema (where the caller
    is a member of it, or a superuser), which then grants the roles of ``sql/roles.sql`` what
    they need on everything the schema holds, new objects included.
    """
    applied_now = []
    with conn.transaction():
        conn.execute(queries.get("migrate_lock"), {"key": MIGRATION_LOCK})
        (has_schema,) = queries.one(conn.execute(queries.get("migrate_schema_exists")))
        if not has_schema:
            conn.execute(queries.get("migrate_create_schema"))
        conn.execute(queries.get("migrate_as_schema_owner"))
        conn.execute(queries.get("migrate_create_versions"))
        done = {row[0] for row in conn.execute(queries.get("schema_versions"))}
        # A newer pgqueue migrated this database: applying nothing and saying "up to date"
        # would hide it, and there is no going back down.
        refuse_newer(done)
        for migration in available():
            if migration.version in done:
                continue
            log.info("applying migration %04d_%s", migration.version, migration.name)
            conn.execute(migration.path.read_text())
            conn.execute(
                queries.get("migrate_record_version"),
                {"version": migration.version, "name": migration.name},
            )
            applied_now.append(migration)
        roles.grant(conn)
    return applied_now


def check(conn: psycopg.Connection[Any]) -> None:
    """Raise SchemaMissingError unless every shipped migration has been applied."""
    row = queries.one(conn.execute(queries.get("schema_exists")))
    if not row[0]:
        raise SchemaMissingError(
            "this database has no pgqueue schema: run `pgqueue migrate` (or app.migrate()) first"
        )
    done = {r[0] for r in conn.execute(queries.get("schema_versions"))}
    refuse_newer(done)
    missing = [m for m in available() if m.version not in done]
    if missing:
        raise SchemaMissingError(
            f"the pgqueue schema is out of date (missing migration "
            f"{', '.join(f'{m.version:04d}_{m.name}' for m in missing)}): run `pgqueue migrate`"
        )


def check_not_newer(conn: psycopg.Connection[Any]) -> None:
    """Raise SchemaTooNewError if a newer pgqueue migrated this database (the producer's
    check: an absent or older schema shows at its first statement)."""
    (exists,) = queries.one(conn.execute(queries.get("schema_exists")))
    if exists:
        refuse_newer({r[0] for r in conn.execute(queries.get("schema_versions"))})


def refuse_newer(done: set[int]) -> None:
    """Raise SchemaTooNewError if ``done`` (the applied migrations) has one this pgqueue
    does not know."""
    newest = max(done, default=0)
    if newest > latest_version():
        raise SchemaTooNewError(
            f"the pgqueue schema in this database is newer than this pgqueue: it has "
            f"migration {newest:04d}, this pgqueue {__version__} knows up to "
            f"{latest_version():04d}. Upgrade pgqueue here (`pgqueue migrate` never "
            "downgrades a schema)"
        )
