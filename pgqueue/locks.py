"""Advisory lock keys (``pg_advisory_lock``'s bigint) that pgqueue takes, all in one place.
They share the prefix 0x70677175 ("pgqu"); a new key must not collide with these.

An advisory lock carries no privilege: any role that can connect may take any key and hold
it for ever. So none may decide anything another role could stall by holding it: the
maintenance services are elected through pgqueue.maintenance (migration 0011), the claims
of a limited task serialized and the shared stats sample refreshed under row locks only the
worker role can take (migration 0013), and a worker's liveness lock counts only when held by
its own claiming backend (workers.lock_pid, migration 0013)."""

# Held by whoever migrates the schema or rewrites the roles' grants (pgqueue migrate,
# pgqueue roles --apply): concurrent GRANTs on one object fail. Another role holding it
# holds up those two commands, run by hand, not the running queue.
MIGRATION_LOCK = 0x70677175_0001

# First key of every worker's session advisory lock, its liveness (the second key is
# workers.lock_key): Postgres drops it the moment the worker's claiming connection dies.
# The rescue counts it only when held by the server process recorded in workers.lock_pid;
# a worker that finds its key held by another session draws a new one (relock_worker).
WORKER_LOCK_CLASS = 0x70677175

# Retired, not to be reused (an older pgqueue may still take them):
# - 0x70677175_0002: the maintenance services' single key, once;
# - 0x70677175_0004: the shared queue_stats sample's refresh, until migration 0013;
# - 0x70677175_0010 to 0x70677175_0014: each maintenance service's key, until migration 0011;
# - 0x70677176 (first key; the second hashtext of 'task:' || task or 'queue:' || queue): the
#   claims of one limited task or queue (pgqueue.claim_limited), until migration 0013.
