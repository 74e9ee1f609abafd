"""Advisory lock keys (``pg_advisory_lock``'s bigint) that pgqueue takes, all in one place.
They share the prefix 0x70677175 ("pgqu"); a new key must not collide with these."""

# Held by whoever migrates the schema or rewrites the roles' grants (pgqueue migrate,
# pgqueue roles --apply): concurrent GRANTs on one object fail.
MIGRATION_LOCK = 0x70677175_0001

# First key of every worker's session advisory lock, its liveness (the second key is
# workers.lock_key): Postgres drops it the moment the worker's claiming connection dies.
WORKER_LOCK_CLASS = 0x70677175

# The maintenance services' election: each service's key is MAINTENANCE_LOCK_BASE plus its
# own offset (pgqueue/maintenance/), so one process at a time does each service.
# (0x70677175_0002 was the single key of every service before they ran apart.)
MAINTENANCE_LOCK_BASE = 0x70677175_0010

# First key of the advisory lock serializing the claims of one limited task (the second is
# hashtext(task name)), taken by pgqueue.claim_limited (migration 0008).
LIMIT_LOCK_CLASS = 0x70677176
