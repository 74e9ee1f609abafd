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
from .locks import take_migration_lock
from .version import __version__

log = logging.getLogger("pgqueue.migrate")

_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
# A migration's promise that an older pgqueue runs unchanged on the schema it leaves: the
# pgqueue whose newest migration is that number, or later (sql/migrations/0010_*.sql).
_COMPATIBLE_FROM = re.compile(r"^-- compatible_from: (\d+)[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    # The oldest pgqueue (by its newest migration) that keeps working after this one; None:
    # none older does.
    compatible_from: int | None = None


def read_migration(path: Path) -> Migration | None:
    """The migration in this file (None for a file not named like ``0001_name.sql``)."""
    match = _FILE.match(path.name)
    if not match:
        return None
    version = int(match.group(1))
    declared = [int(n) for n in _COMPATIBLE_FROM.findall(path.read_text())]
    if len(declared) > 1 or any(n >= version for n in declared):
        raise ValueError(
            f"{path.name}: at most one '-- compatible_from: N' line, with N below {version}"
        )
    return Migration(version, match.group(2), path, declared[0] if declared else None)


def available() -> list[Migration]:
    """Every migration shipped with this version of pgqueue, in order."""
    found = []
    for path in sorted((queries.sql_dir() / "migrations").glob("*.sql")):
        migration = read_migration(path)
        if migration is not None:
            found.append(migration)
    return found


def latest_version() -> int:
    return max(m.version for m in available())


def migrate(
    conn: psycopg.Connection[Any], shipped: list[Migration] | None = None
) -> list[Migration]:
    """Bring the schema up to date; returns the migrations it applied (none if current).

    All pending files run in one transaction while holding a transaction-level advisory lock,
    so two processes migrating at once apply each file exactly once, and a failing file
    leaves the schema as it was. They run as the role owning the schema (where the caller
    is a member of it, or a superuser), which then grants the roles of ``sql/roles.sql`` what
    they need on everything the schema holds, new objects included. ``shipped``: the
    migrations to apply, all of this pgqueue's unless given.
    """
    shipped = available() if shipped is None else shipped
    applied_now = []
    with conn.transaction():
        take_migration_lock(conn)
        (has_schema,) = queries.one(conn.execute(queries.get("migrate_schema_exists")))
        if not has_schema:
            conn.execute(queries.get("migrate_create_schema"))
        conn.execute(queries.get("migrate_as_schema_owner"))
        conn.execute(queries.get("migrate_create_versions"))
        done = applied(conn)
        # A newer pgqueue migrated this database: applying nothing and saying "up to date"
        # would hide it, and there is no going back down, even to a schema declared
        # compatible (whoever migrates is meant to run the newest pgqueue of the deploy).
        refuse_newer(done, max(m.version for m in shipped), allow_compatible=False)
        for migration in shipped:
            if migration.version in done:
                continue
            log.info("applying migration %04d_%s", migration.version, migration.name)
            conn.execute(migration.path.read_text())
            record = {
                "version": migration.version,
                "name": migration.name,
                "compatible_from": migration.compatible_from,
            }
            if migration.compatible_from is None:
                conn.execute(queries.get("migrate_record_version"), record)
            else:
                conn.execute(queries.get("migrate_record_compatible_version"), record)
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
    done = applied(conn)
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
        refuse_newer(applied(conn))


def applied(conn: psycopg.Connection[Any]) -> dict[int, int | None]:
    """The migrations applied to this database: each one's version, and the oldest pgqueue
    it declared compatible (None: none older)."""
    return {row[0]: row[1] for row in conn.execute(queries.get("schema_versions"))}


def refuse_newer(
    done: dict[int, int | None], known: int | None = None, *, allow_compatible: bool = True
) -> None:
    """Raise SchemaTooNewError if ``done`` (the applied migrations, see ``applied``) has one
    this pgqueue (which knows up to ``known``, its latest by default) does not know, unless
    each such migration declared this pgqueue compatible and ``allow_compatible``."""
    known = latest_version() if known is None else known
    newer = sorted(v for v in done if v > known)
    if not newer:
        return
    breaking = [v for v in newer if (since := done[v]) is None or since > known]
    if allow_compatible and not breaking:
        if newer[-1] not in _said_compatible:
            _said_compatible.add(newer[-1])
            log.info(
                "the pgqueue schema has migration %04d, newer than this pgqueue %s (up to "
                "%04d), and each newer migration declared this pgqueue compatible: running "
                "on it; upgrade pgqueue here to use what they add",
                newer[-1],
                __version__,
                known,
            )
        return
    why = (
        f", and migration {breaking[0]:04d} does not keep it working"
        if breaking
        else " (it runs on it, but migrates only with the newest pgqueue of the deploy)"
    )
    raise SchemaTooNewError(
        f"the pgqueue schema in this database is newer than this pgqueue: it has "
        f"migration {newer[-1]:04d}, this pgqueue {__version__} knows up to {known:04d}{why}. "
        "Upgrade pgqueue here (`pgqueue migrate` never downgrades a schema)"
    )


# The newest migration already logged as compatible, so that each connection a producer
# opens does not log it again.
_said_compatible: set[int] = set()
