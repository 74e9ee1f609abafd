-- pgqueue schema, version 11: the maintenance services (pgqueue/maintenance/: rescue,
-- expiry, result cleanup, vacuum, the unserved-tasks warning) are elected through a table
-- only the worker role may write, instead of advisory locks. Any role that can connect may
-- take any advisory lock and hold it for ever: one that held the maintenance keys stopped
-- every rescue and cleanup without a trace. A row lock or an UPDATE here needs the UPDATE
-- privilege, which sql/roles.sql grants to the worker role alone (the operator may read).
--
-- No "compatible_from" line: a pgqueue before this one still elects with advisory locks,
-- so beside a newer worker each service would have two leaders, and two rescues at once are
-- not provably harmless (a job rescued by one and claimed again by a worker registered since
-- the other's snapshot can be taken from that worker). Stop the old workers before this
-- migration, as for every migration before 0010 (docs/how-to/upgrading.md).

CREATE TABLE pgqueue.maintenance (
    -- the service's name (Service.name in pgqueue/maintenance/)
    service          text PRIMARY KEY,
    -- No pass starts before this (the database's clock). The winner of a pass sets it one
    -- interval ahead in the statement that elects it; a pass that stopped at a full batch
    -- sets it back to now so that the next runner to look carries on at once.
    next_run_at      timestamptz NOT NULL DEFAULT '-infinity',
    -- The last pass that started, and who ran it (the worker's name, pgqueue@host:pid).
    -- A pass in a transaction (all but vacuum) commits these with its work, so a pass that
    -- rolled back leaves no trace here but last_error.
    last_started_at  timestamptz,
    last_worker      text,
    last_finished_at timestamptz,
    -- The server process running a pass outside a transaction (vacuum) until it ends: no
    -- other is elected while that process lives.
    running_pid      integer,
    -- Why the last pass failed, and when; cleared by the next pass that succeeds.
    last_error       text,
    last_error_at    timestamptz
);

-- The services pgqueue ships, so that operators see every one before its first pass;
-- a runner adds the row of a service it does not find.
INSERT INTO pgqueue.maintenance (service)
VALUES ('rescue'), ('expire'), ('results'), ('vacuum'), ('unserved');
