"""Advisory lock keys (``pg_advisory_lock``'s bigint) that pgqueue takes. They share the
prefix 0x70677175 ("pgqu"), as do the worker's WORKER_LOCK_CLASS (worker.py) and
MAINTENANCE_LOCK (maintenance.py); a new key must not collide with those."""

# Held by whoever migrates the schema or rewrites the roles' grants (pgqueue migrate,
# pgqueue roles --apply): concurrent GRANTs on one object fail.
MIGRATION_LOCK = 0x70677175_0001
