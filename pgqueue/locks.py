"""Advisory lock keys (``pg_advisory_lock``'s bigint) that pgqueue takes, all in one place.
They share the prefix 0x70677175 ("pgqu"); a new key must not collide with these.

An advisory lock carries no privilege: any role that can connect may take any key and hold
it for ever. That is why the maintenance services are elected through pgqueue.maintenance,
a table only the worker role may write (migration 0011), and no longer with these keys."""

# Held by whoever migrates the schema or rewrites the roles' grants (pgqueue migrate,
# pgqueue roles --apply): concurrent GRANTs on one object fail.
MIGRATION_LOCK = 0x70677175_0001

# First key of every worker's session advisory lock, its liveness (the second key is
# workers.lock_key): Postgres drops it the moment the worker's claiming connection dies.
WORKER_LOCK_CLASS = 0x70677175

# Retired, not to be reused: 0x70677175_0002 (the maintenance services' single key, once),
# 0x70677175_0010 to 0x70677175_0014 (each service's key until migration 0011). An older
# pgqueue may still take them.

# First key of the advisory lock serializing the claims of one limited task (the second is
# hashtext(task name)), taken by pgqueue.claim_limited (migration 0008).
LIMIT_LOCK_CLASS = 0x70677176
