"""Least-privilege roles: ``sql/roles.sql``, printed for a DBA or applied by ``pgqueue roles``.

The SQL is the whole story (who may do what is read there, not here); this module only runs
it: all of it on ``pgqueue roles --apply``, and its grant_privileges part at the end of every
``pgqueue migrate``, so that what a new migration creates is granted in the same transaction.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import psycopg.errors

from . import queries
from .exceptions import ConfigurationError
from .locks import take_migration_lock

FILE = "roles.sql"
DEFAULT_PREFIX = "pgqueue"
KINDS = ("owner", "producer", "worker", "operator")

# Role names stop at 63 bytes; the longest suffix, "_operator", takes 9. Lower case only, so
# that the names need no quoting in the GRANT and CREATE ROLE statements a DBA writes next.
_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,53}")


def role_names(prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """The four role names for ``prefix``, by kind."""
    check_prefix(prefix)
    return {kind: f"{prefix}_{kind}" for kind in KINDS}


def check_prefix(prefix: str) -> None:
    if not _PREFIX.fullmatch(prefix):
        raise ConfigurationError(
            f"role prefix {prefix!r} is not usable: give at most 54 characters of lower-case "
            "letters, digits and underscores, starting with a letter or underscore "
            "(e.g. --prefix shop)"
        )


def script(prefix: str = DEFAULT_PREFIX) -> str:
    """The text of ``sql/roles.sql``, set to ``prefix`` when it is not the default."""
    check_prefix(prefix)
    text = (queries.sql_dir() / FILE).read_text()
    if prefix == DEFAULT_PREFIX:
        return text
    return f"SET pgqueue.role_prefix = '{prefix}';\n\n{text}"


def apply(conn: psycopg.Connection[Any], prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """Create the roles (kept if they exist), hand the schema to the owner role and set each
    role's privileges, in one transaction; returns the role names by kind."""
    names = role_names(prefix)
    try:
        with conn.transaction():
            # Migrating rewrites the grants too, and concurrent GRANTs on one object fail.
            take_migration_lock(conn)
            conn.execute(queries.get("roles_set_prefix"), {"prefix": prefix})
            for part in ("create_roles", "own_schema", "grant_privileges"):
                conn.execute(queries.get(part, FILE))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigurationError(
            f"cannot set up the pgqueue roles as {conn.info.user!r}: "
            f"{str(exc).splitlines()[0]}; run `pgqueue roles --apply` (or "
            "psql -1 -f sql/roles.sql) as a superuser, or print the script with `pgqueue "
            "roles` for a DBA"
        ) from None
    except psycopg.errors.RaiseException as exc:
        raise ConfigurationError(str(exc).splitlines()[0]) from None
    return names


def grant(conn: psycopg.Connection[Any]) -> None:
    """Set the privileges of the roles of this database (those ``apply`` made) on what the
    schema holds now. Run inside ``pgqueue migrate``'s transaction, as the schema's owner."""
    conn.execute(queries.get("grant_privileges", FILE))
