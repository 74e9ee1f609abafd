"""Advisory lock keys (``pg_advisory_lock``'s bigint) that pgqueue takes, all in one place.
They share the prefix 0x70677175 ("pgqu"); a new key must not collide with these.

An advisory lock carries no privilege: any role that can connect may take any key and hold
it for ever. So none may decide anything another role could stall by holding it: the
maintenance services are elected through pgqueue.maintenance (migration 0011), the claims
of a limited task serialized and the shared stats sample refreshed under row locks only the
worker role can take (migration 0013), and a worker's liveness lock counts only when held by
its own claiming backend (workers.lock_pid, migration 0013).

The one key pgqueue still waits for, the migration lock, is waited for by
``take_migration_lock``, which says who holds it while it waits."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import psycopg.errors

from . import queries

log = logging.getLogger("pgqueue.migrate")

# Held by whoever migrates the schema or rewrites the roles' grants (pgqueue migrate,
# pgqueue roles --apply): concurrent GRANTs on one object fail. Another role holding it
# holds up those two commands, run by hand, not the running queue.
MIGRATION_LOCK = 0x70677175_0001

# First key of every worker's session advisory lock, its liveness (the second key is
# workers.lock_key): Postgres drops it the moment the worker's claiming connection dies.
# The rescue counts it only when held by the server process recorded in workers.lock_pid
# (SQL pgqueue.worker_lock_holder, migration 0013, which spells this key as 1885827445);
# a worker that finds its key held by another session draws a new one (relock_worker).
WORKER_LOCK_CLASS = 0x70677175

# Retired, not to be reused (an older pgqueue may still take them):
# - 0x70677175_0002: the maintenance services' single key, once;
# - 0x70677175_0004: the shared queue_stats sample's refresh, until migration 0013;
# - 0x70677175_0010 to 0x70677175_0014: each maintenance service's key, until migration 0011;
# - 0x70677176 (first key; the second hashtext of 'task:' || task or 'queue:' || queue): the
#   claims of one limited task or queue (pgqueue.claim_limited), until migration 0013.


# How long pgqueue migrate (or roles --apply) waits for the migration lock before it says
# who holds it, and again between two such lines, in seconds.
LOCK_NOTICE_SECONDS = 10.0


def take_migration_lock(conn: psycopg.Connection[Any]) -> None:
    """Take the migration lock for the transaction under way on ``conn``, waiting as long as
    it takes, and logging who holds it every LOCK_NOTICE_SECONDS meanwhile: a migration of
    another deploy job (which is waited for), or a session holding the key by mistake."""
    timeout = f"{int(LOCK_NOTICE_SECONDS * 1000)}ms"
    (setting, _) = queries.one(conn.execute(queries.get("migrate_lock_wait"), {"timeout": timeout}))
    while True:
        try:
            with conn.transaction():  # a savepoint: a wait cut short leaves the rest usable
                conn.execute(queries.get("migrate_lock"), {"key": MIGRATION_LOCK})
            break
        except psycopg.errors.LockNotAvailable:
            holder = conn.execute(
                queries.get("migrate_lock_holder"), {"key": MIGRATION_LOCK}
            ).fetchone()
            if holder is None:
                continue  # released meanwhile
            pid, role, application, since = holder
            log.warning(
                "waiting for pgqueue's migration lock, held by server process %s (role %s, "
                "application %r, its transaction open since %s): another `pgqueue migrate` or "
                "`pgqueue roles --apply` at work, or a session holding "
                "pg_advisory_lock(%d) by mistake, which `SELECT pg_terminate_backend(%s)` ends",
                pid,
                role,
                application or "",
                since,
                MIGRATION_LOCK,
                pid,
            )
    conn.execute(queries.get("migrate_lock_restore"), {"setting": setting})
