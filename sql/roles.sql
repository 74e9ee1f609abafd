-- pgqueue roles: least privilege for each part of a deployment.
--
-- Four group roles (NOLOGIN); give each component a LOGIN user that is a member of one:
--
--   <prefix>_owner     owns the pgqueue schema and everything in it: runs `pgqueue migrate`
--   <prefix>_producer  enqueues (delay, apply_async, enqueue_many, SQL pgqueue.enqueue()) and
--                      reads results (AsyncResult.get/state); cannot change or delete a job,
--                      nor see workers or their hand-off slots
--   <prefix>_worker    everything `pgqueue worker` and `pgqueue beat` do: claim, run, record
--                      outcomes, register, heartbeat, offer hand-off slots, rescue, expire,
--                      clean up results, send periodic tasks
--   <prefix>_operator  the command line and the ops views: status, workers, jobs, inspect,
--                      result, purge, retry, revoke, beat list/add/remove/enable/disable/run;
--                      no DDL, no migrations, no hand-off slots
--
-- The prefix is `pgqueue` unless set first: `SET pgqueue.role_prefix = 'shop';` (separate
-- prefixes keep two applications on one cluster apart: roles are cluster-wide).
--
-- Run as a superuser (on a managed service, its administrator role), on the database that
-- holds, or will hold, the schema:
--
--   psql -1 -v ON_ERROR_STOP=1 -d mydb -f sql/roles.sql      (or: pgqueue roles --apply)
--
-- Every part may be run again: roles that exist are kept, the schema is handed to the owner
-- role, and each role's privileges are set to exactly the list below (anything else granted
-- on pgqueue's tables and functions to these three roles is revoked).
--
-- Then, e.g.:
--   CREATE ROLE shop_web LOGIN PASSWORD '...' IN ROLE pgqueue_producer;
--   CREATE ROLE shop_worker1 LOGIN PASSWORD '...' IN ROLE pgqueue_worker;
--
-- Later migrations: `pgqueue migrate` runs as the schema's owner and applies the last part
-- of this file (grant_privileges) in the migration's transaction, so a table a new version
-- adds is granted as it is created. A role takes part if it is NOLOGIN, holds USAGE on the schema
-- and its name ends in _producer, _worker or _operator: the roles this file made.

-- name: create_roles
DO $$
DECLARE
    prefix CONSTANT text :=
        coalesce(nullif(current_setting('pgqueue.role_prefix', true), ''), 'pgqueue');
    role_name text;
BEGIN
    IF octet_length(prefix) > 54 THEN
        RAISE EXCEPTION 'pgqueue.role_prefix % is too long: role names stop at 63 bytes, '
                        'so the prefix may have 54 at most', quote_literal(prefix);
    END IF;
    FOREACH role_name IN ARRAY ARRAY[prefix || '_owner', prefix || '_producer',
                                     prefix || '_worker', prefix || '_operator'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                -- created meanwhile by a run on another database of this cluster
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;

-- name: own_schema
-- The owner role owns the schema and every object in it, so that it can migrate, and so that
-- the SECURITY DEFINER trigger functions run with its rights, not a superuser's. A schema
-- migrated earlier by another role is handed over whole.
DO $$
DECLARE
    prefix CONSTANT text :=
        coalesce(nullif(current_setting('pgqueue.role_prefix', true), ''), 'pgqueue');
    owner_role CONSTANT text := prefix || '_owner';
    object record;
BEGIN
    IF to_regnamespace('pgqueue') IS NULL THEN
        EXECUTE format('CREATE SCHEMA pgqueue AUTHORIZATION %I', owner_role);
    ELSE
        EXECUTE format('ALTER SCHEMA pgqueue OWNER TO %I', owner_role);
        -- tables (with their identity sequences and indexes), views
        FOR object IN
            SELECT c.oid::regclass AS name, c.relkind
              FROM pg_class AS c
             WHERE c.relnamespace = 'pgqueue'::regnamespace
               AND c.relkind IN ('r', 'p', 'v', 'm')
        LOOP
            EXECUTE format('ALTER %s %s OWNER TO %I',
                           CASE object.relkind WHEN 'v' THEN 'VIEW'
                                               WHEN 'm' THEN 'MATERIALIZED VIEW'
                                               ELSE 'TABLE' END,
                           object.name, owner_role);
        END LOOP;
        FOR object IN
            SELECT p.oid::regprocedure AS name
              FROM pg_proc AS p
             WHERE p.pronamespace = 'pgqueue'::regnamespace
        LOOP
            EXECUTE format('ALTER ROUTINE %s OWNER TO %I', object.name, owner_role);
        END LOOP;
        FOR object IN
            SELECT t.oid::regtype AS name
              FROM pg_type AS t
             WHERE t.typnamespace = 'pgqueue'::regnamespace
               AND t.typtype IN ('c', 'd', 'e')
               AND NOT EXISTS (SELECT FROM pg_class AS c
                                WHERE c.oid = t.typrelid AND c.relkind <> 'c')
        LOOP
            EXECUTE format('ALTER TYPE %s OWNER TO %I', object.name, owner_role);
        END LOOP;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I, %I, %I, %I', current_database(),
                   owner_role, prefix || '_producer', prefix || '_worker', prefix || '_operator');
    -- Holding USAGE on the schema is what makes a role take part in grant_privileges.
    EXECUTE format('GRANT USAGE ON SCHEMA pgqueue TO %I, %I, %I',
                   prefix || '_producer', prefix || '_worker', prefix || '_operator');
END
$$;

-- name: grant_privileges
-- Each role's privileges, exactly: what is not listed is revoked. Objects a schema not yet
-- migrated lacks are skipped (`pgqueue migrate` grants them when it creates them). Every
-- table, view and function of the schema is named here, for some role or as the owner's
-- alone; tests/test_roles.py fails when a migration adds one this file does not mention.
-- The owner's alone:
--   FUNCTION pgqueue.notify_jobs, FUNCTION pgqueue.notify_results,
--   FUNCTION pgqueue.notify_beat, FUNCTION pgqueue.periodic_tasks_reschedule,
--   FUNCTION pgqueue.workflow_step_ended
--     (trigger functions: they fire, nobody calls them)
--   FUNCTION pgqueue.enqueue_documents, FUNCTION pgqueue.workflow_not_run
--     (called by workflow_step_ended, which runs with the owner's rights)
DO $$
DECLARE
    member record;
    grant_row record;
BEGIN
    -- Only the owner (or a superuser) may set them; run by anyone else, this changes nothing.
    IF NOT pg_has_role((SELECT nspowner FROM pg_namespace WHERE nspname = 'pgqueue'),
                       'MEMBER') THEN
        RETURN;
    END IF;
    FOR member IN
        SELECT r.rolname, substring(r.rolname FROM '_(producer|worker|operator)$') AS kind
          FROM pg_namespace AS n, aclexplode(n.nspacl) AS a, pg_roles AS r
         WHERE n.nspname = 'pgqueue'
           AND a.privilege_type = 'USAGE'
           AND r.oid = a.grantee
           AND NOT r.rolcanlogin
           AND r.rolname ~ '_(producer|worker|operator)$'
    LOOP
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA pgqueue FROM %I', member.rolname);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgqueue FROM %I', member.rolname);
        EXECUTE format('REVOKE ALL ON ALL ROUTINES IN SCHEMA pgqueue FROM %I', member.rolname);
        FOR grant_row IN
            SELECT g.privileges, g.object
              FROM (VALUES
                -- producer: enqueue; read results and the state of a job not finished yet
                -- (the enqueue() function's RETURNING reads the new id). The identity
                -- column seq needs no sequence privilege. Only the columns of a call: a
                -- producer cannot insert a job claimed, started or attempted already.
                ('producer', 'INSERT (id, task_name, args, kwargs, queue, priority, run_at,'
                             ' expires_at, max_retries, time_limit, soft_time_limit, options)',
                 'TABLE pgqueue.jobs'),
                ('producer', 'SELECT (id, task_name, state, retries, exc_type, exc_message,'
                             ' traceback)', 'TABLE pgqueue.jobs'),
                ('producer', 'SELECT', 'TABLE pgqueue.results'),
                ('producer', 'SELECT', 'TABLE pgqueue.schema_migrations'),
                ('producer', 'EXECUTE', 'FUNCTION pgqueue.enqueue'),
                -- a workflow's rows are written with its first jobs (enqueue_workflow);
                -- GroupResult.restore reads them. What follows a step is the trigger's.
                ('producer', 'SELECT, INSERT', 'TABLE pgqueue.workflows'),
                ('producer', 'SELECT, INSERT', 'TABLE pgqueue.workflow_members'),
                ('producer', 'SELECT, INSERT', 'TABLE pgqueue.chords'),
                ('producer', 'SELECT', 'TABLE pgqueue.workflow_status'),
                ('producer', 'EXECUTE', 'FUNCTION pgqueue.enqueue_unique'),

                -- worker: the claim loop, outcomes, hand-off slots, registration and
                -- heartbeat, maintenance (rescue, expiry, result clean-up), metrics' shared
                -- sample, and beat (worker -B, or `pgqueue beat` run as this role)
                ('worker', 'SELECT, INSERT, UPDATE, DELETE', 'TABLE pgqueue.jobs'),
                ('worker', 'SELECT, INSERT, UPDATE, DELETE', 'TABLE pgqueue.results'),
                ('worker', 'SELECT, INSERT, UPDATE, DELETE', 'TABLE pgqueue.workers'),
                ('worker', 'SELECT, INSERT, UPDATE, DELETE', 'TABLE pgqueue.worker_slots'),
                ('worker', 'SELECT, INSERT, UPDATE, DELETE', 'TABLE pgqueue.worker_channels'),
                ('worker', 'SELECT, INSERT, UPDATE', 'TABLE pgqueue.periodic_tasks'),
                ('worker', 'SELECT, INSERT, DELETE', 'TABLE pgqueue.queue_stats_samples'),
                -- (refreshed under a lock on its row: only a role that may update it can
                -- hold the refresh up)
                ('worker', 'SELECT, INSERT, UPDATE', 'TABLE pgqueue.queue_stats_sampled'),
                ('worker', 'SELECT', 'TABLE pgqueue.schema_migrations'),
                ('worker', 'SELECT', 'TABLE pgqueue.queues'),
                -- the limits' rows: each claim of a limited task or queue locks its row
                -- (FOR UPDATE needs UPDATE), so no other role can hold those claims up
                ('worker', 'SELECT, INSERT, UPDATE', 'TABLE pgqueue.rate_limits'),
                ('worker', 'EXECUTE', 'FUNCTION pgqueue.claim_limited'),
                ('worker', 'SELECT', 'TABLE pgqueue.queue_stats'),
                ('worker', 'SELECT', 'TABLE pgqueue.worker_status'),
                ('worker', 'EXECUTE', 'FUNCTION pgqueue.worker_lock_holder'),
                ('worker', 'SELECT', 'TABLE pgqueue.running'),
                ('worker', 'SELECT', 'TABLE pgqueue.failures'),
                ('worker', 'EXECUTE', 'FUNCTION pgqueue.queue_levels'),
                ('worker', 'EXECUTE', 'FUNCTION pgqueue.job_document'),
                ('worker', 'EXECUTE', 'FUNCTION pgqueue.end_jobs'),
                ('worker', 'EXECUTE', 'FUNCTION pgqueue.enqueue'),
                ('worker', 'EXECUTE', 'FUNCTION pgqueue.enqueue_unique'),
                ('worker', 'EXECUTE', 'FUNCTION pgqueue.sampled_queue_stats'),
                -- a task may send a workflow too; the follow-ups of a step's end are the
                -- results trigger's (it runs with the owner's rights); the result cleanup
                -- deletes finished workflows (their members and counters go with them)
                ('worker', 'SELECT, INSERT, DELETE', 'TABLE pgqueue.workflows'),
                ('worker', 'SELECT, INSERT', 'TABLE pgqueue.workflow_members'),
                ('worker', 'SELECT, INSERT', 'TABLE pgqueue.chords'),
                ('worker', 'SELECT', 'TABLE pgqueue.workflow_status'),
                -- the election of maintenance passes: only roles that may lock or update
                -- these rows can take a pass, so no other role can hold maintenance up
                -- (as any role could hold the advisory locks that elected it before 0011)
                ('worker', 'SELECT, INSERT, UPDATE', 'TABLE pgqueue.maintenance'),

                -- operator: read everything but the hand-off slots; purge and revoke (delete
                -- jobs, write their results; revoke locks the rows it ends), retry (results
                -- back into jobs), edit periodic tasks, pause and resume queues
                ('operator', 'SELECT, INSERT, UPDATE, DELETE', 'TABLE pgqueue.jobs'),
                ('operator', 'SELECT, INSERT, UPDATE, DELETE', 'TABLE pgqueue.results'),
                ('operator', 'SELECT', 'TABLE pgqueue.workers'),
                ('operator', 'SELECT, INSERT, UPDATE, DELETE', 'TABLE pgqueue.periodic_tasks'),
                ('operator', 'SELECT', 'TABLE pgqueue.queue_stats_samples'),
                ('operator', 'SELECT', 'TABLE pgqueue.queue_stats_sampled'),
                ('operator', 'SELECT', 'TABLE pgqueue.schema_migrations'),
                ('operator', 'SELECT, INSERT, UPDATE', 'TABLE pgqueue.queues'),
                -- read only: a row lock on a limit's row would stall its claims
                ('operator', 'SELECT', 'TABLE pgqueue.rate_limits'),
                ('operator', 'EXECUTE', 'FUNCTION pgqueue.pause_queue'),
                ('operator', 'EXECUTE', 'FUNCTION pgqueue.resume_queue'),
                ('operator', 'EXECUTE', 'FUNCTION pgqueue.set_queue_limits'),
                ('operator', 'SELECT', 'TABLE pgqueue.queue_stats'),
                ('operator', 'SELECT', 'TABLE pgqueue.worker_status'),
                ('operator', 'EXECUTE', 'FUNCTION pgqueue.worker_lock_holder'),
                ('operator', 'SELECT', 'TABLE pgqueue.running'),
                ('operator', 'SELECT', 'TABLE pgqueue.failures'),
                ('operator', 'EXECUTE', 'FUNCTION pgqueue.queue_levels'),
                ('operator', 'EXECUTE', 'FUNCTION pgqueue.end_jobs'),
                ('operator', 'EXECUTE', 'FUNCTION pgqueue.enqueue'),
                ('operator', 'SELECT', 'TABLE pgqueue.workflows'),
                ('operator', 'SELECT', 'TABLE pgqueue.workflow_members'),
                ('operator', 'SELECT', 'TABLE pgqueue.chords'),
                ('operator', 'SELECT', 'TABLE pgqueue.workflow_status'),
                ('operator', 'EXECUTE', 'FUNCTION pgqueue.enqueue_unique'),
                -- when each maintenance service last ran, who ran it, its last error;
                -- read only: a row lock (FOR UPDATE, FOR SHARE) needs UPDATE
                ('operator', 'SELECT', 'TABLE pgqueue.maintenance'),
                -- retry of a workflow's step: read-only helpers of the retry statement,
                -- which deletes and inserts with the operator's own rights (0012)
                ('operator', 'EXECUTE', 'FUNCTION pgqueue.workflow_retry_refusal'),
                ('operator', 'EXECUTE', 'FUNCTION pgqueue.workflow_followers'),
                ('operator', 'EXECUTE', 'FUNCTION pgqueue.workflow_never_ran'),
                ('operator', 'EXECUTE', 'FUNCTION pgqueue.uuid_or_null')
              ) AS g(kind, privileges, object)
             WHERE g.kind = member.kind
               AND CASE split_part(g.object, ' ', 1)
                       WHEN 'TABLE' THEN to_regclass(split_part(g.object, ' ', 2)) IS NOT NULL
                       ELSE EXISTS (SELECT FROM pg_proc AS p
                                     WHERE p.pronamespace = 'pgqueue'::regnamespace
                                       AND p.proname = split_part(split_part(g.object, ' ', 2),
                                                                  '.', 2))
                   END
        LOOP
            EXECUTE format('GRANT %s ON %s TO %I', grant_row.privileges, grant_row.object,
                           member.rolname);
        END LOOP;
    END LOOP;
END
$$;
