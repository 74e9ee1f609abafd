-- pgqueue schema, version 13: no advisory lock left that another role could hold to stall
-- pgqueue. Any role that can connect may take any advisory lock and keep it for ever
-- (0011 moved the maintenance election off them for that reason); the three that were left
-- become row locks, or are matched to the worker that took them:
--
-- 1. The claims of each limited task or queue were serialized by a blocking advisory lock
--    (class 0x70677176, key hashtext(cell)): a role holding one stalled every claim of that
--    task, and the worker's claim statement with it. They now lock the limit's row of
--    pgqueue.rate_limits (FOR UPDATE), which needs UPDATE on the table: the worker role's.
-- 2. A worker was taken for alive while any session held its liveness key (0x70677175,
--    workers.lock_key): a role that took a dead worker's key held its jobs until the
--    heartbeat went stale, and one that took the keys next to be registered kept workers
--    from starting. The key now counts only when the worker's own claiming backend holds it
--    (workers.lock_pid), and a worker that finds its key taken draws another.
-- 3. The shared queue_stats sample was refreshed under pg_try_advisory_xact_lock: a role
--    holding that key kept it stale for ever. The refresh now locks the sample's own row
--    (FOR UPDATE SKIP LOCKED), which only the worker role may.
--
-- No "compatible_from" line: an older worker would still serialize limited claims with the
-- advisory lock while a newer one locks rows, so side by side they could exceed a
-- concurrency or rate limit; and an older worker does not record its claiming backend when
-- it reconnects, so a newer rescue would take it for lost. Stop the old workers before this
-- migration (docs/how-to/upgrading.md).

-- 1. Limited claims.
-- pgqueue.rate_limits now has a row for every limit that has been claimed under, rate or
-- concurrency (next_at -infinity until a rate holds a start back): the row each claim of
-- that limit locks, so the table is also what serializes them.

-- As in version 8, but each limit's claims are serialized by a lock on its row of
-- pgqueue.rate_limits (FOR UPDATE, all taken first, in name order) instead of an advisory
-- lock: only a role that may update the table (the worker role) can hold a claim up. Each
-- statement after the locks sees what the previous holder committed (a new snapshot per
-- statement, in READ COMMITTED): a count cannot be raced. Runs with the caller's rights
-- (not SECURITY DEFINER): a role without the worker's grants that calls it is refused at
-- its first read, before it locks anything.
CREATE OR REPLACE FUNCTION pgqueue.claim_limited(worker_id uuid, queues text[], tasks text[],
                                      limits jsonb, room integer, at_most_once text[],
                                      synchronous_commit text)
RETURNS TABLE (document text, retry_in double precision)
LANGUAGE plpgsql AS $$
DECLARE
    lim         record;
    open_queues text[];
    want        integer;
    got         integer;
    taken       integer := 0;
    wait        double precision;
    due         timestamptz;
    docs        json[] := '{}';
    batch       json[];
    durable     boolean := false;
    cells       jsonb;
BEGIN
    SELECT array_agg(q.name) INTO open_queues
      FROM unnest(claim_limited.queues) AS q(name)
     WHERE NOT EXISTS (SELECT 1 FROM pgqueue.queues AS p WHERE p.name = q.name AND p.paused);
    IF open_queues IS NULL THEN
        RETURN QUERY SELECT '[]'::text, NULL::double precision;
        RETURN;
    END IF;
    SELECT coalesce(jsonb_agg(c ORDER BY c.cell), '[]') INTO cells
      FROM (SELECT 'task:' || l.task AS cell, l.task, NULL AS queue, l.concurrency,
                   l.key_name, l.key_pos, l.rate
              FROM jsonb_to_recordset(claim_limited.limits)
                   AS l(task text, concurrency integer, key_name text, key_pos integer,
                        rate double precision)
            UNION ALL
            SELECT 'queue:' || p.name, NULL, p.name, p.concurrency_limit, NULL, NULL,
                   p.rate_limit
              FROM pgqueue.queues AS p
             WHERE p.name = ANY(open_queues)
               AND (p.concurrency_limit IS NOT NULL OR p.rate_limit IS NOT NULL)) AS c;
    -- Each limit's row, added first if it is new (its next_at -infinity: nothing is held
    -- back yet), then all locked, in name order. Two phases, each in name order, cannot
    -- deadlock: a claim that added a row holds it, but any other claim needing that row
    -- waits for it in the first phase already, before it locks anything. (ON CONFLICT DO
    -- NOTHING does not wait for a row another claim has only locked.)
    INSERT INTO pgqueue.rate_limits AS r (name, next_at)
    SELECT e ->> 'cell', '-infinity' FROM jsonb_array_elements(cells) AS e
     ORDER BY 1
    ON CONFLICT (name) DO NOTHING;
    PERFORM 1 FROM pgqueue.rate_limits AS r
     WHERE r.name IN (SELECT e ->> 'cell' FROM jsonb_array_elements(cells) AS e)
     ORDER BY r.name
       FOR UPDATE;
    FOR lim IN
        SELECT * FROM jsonb_to_recordset(cells)
                      AS c(cell text, task text, queue text, concurrency integer,
                           key_name text, key_pos integer, rate double precision)
    LOOP
        EXIT WHEN taken >= claim_limited.room;
        want := claim_limited.room - taken;
        IF lim.rate IS NOT NULL THEN
            SELECT r.next_at INTO due FROM pgqueue.rate_limits AS r WHERE r.name = lim.cell;
            IF due > clock_timestamp() THEN
                -- only if a job is waiting for it
                IF EXISTS (SELECT 1 FROM pgqueue.jobs AS j
                            WHERE j.worker_id IS NULL
                              AND CASE WHEN lim.task IS NOT NULL THEN j.task_name = lim.task
                                       ELSE j.task_name = ANY(claim_limited.tasks)
                                            AND j.queue = lim.queue END
                              AND j.queue = ANY(open_queues) AND j.run_at <= now()) THEN
                    wait := least(wait, extract(epoch FROM due - clock_timestamp()));
                END IF;
                CONTINUE;
            END IF;
            want := 1;
        END IF;
        WITH running AS (
            SELECT CASE WHEN lim.key_name IS NOT NULL
                        THEN coalesce(j.kwargs -> lim.key_name, j.args -> lim.key_pos) END AS k,
                   count(*) AS n
              FROM pgqueue.jobs AS j
             WHERE j.worker_id IS NOT NULL
               AND CASE WHEN lim.task IS NOT NULL THEN j.task_name = lim.task
                        ELSE j.queue = lim.queue END
             GROUP BY 1
        ), ready AS (
            SELECT j.ctid, j.priority, j.run_at, j.seq,
                   CASE WHEN lim.key_name IS NOT NULL
                        THEN coalesce(j.kwargs -> lim.key_name, j.args -> lim.key_pos) END AS k
              FROM pgqueue.jobs AS j
             WHERE j.worker_id IS NULL
               AND CASE WHEN lim.task IS NOT NULL THEN j.task_name = lim.task
                        ELSE j.task_name = ANY(claim_limited.tasks) AND j.queue = lim.queue END
               AND j.queue = ANY(open_queues) AND j.run_at <= now()
               AND (j.expires_at IS NULL OR j.expires_at > now())
             ORDER BY j.priority DESC, j.run_at, j.seq
             -- enough to find `want` jobs past keys at their limit, in the usual case
             LIMIT CASE WHEN lim.key_name IS NULL THEN want ELSE 100 * want END
        ), chosen AS (
            SELECT r.ctid, r.priority, r.run_at, r.seq
              FROM (SELECT r.*, row_number() OVER (PARTITION BY r.k
                                                   ORDER BY r.priority DESC, r.run_at, r.seq)
                           AS nth
                      FROM ready AS r) AS r
              LEFT JOIN running AS u ON u.k IS NOT DISTINCT FROM r.k
             WHERE lim.concurrency IS NULL OR r.nth + coalesce(u.n, 0) <= lim.concurrency
             ORDER BY r.priority DESC, r.run_at, r.seq
             LIMIT want
        ), claimed AS (
            -- No other claim takes these rows (claim_jobs and the hand-off leave them alone,
            -- the other limited claims wait for our row locks); a revoke or purge may have:
            -- checked again.
            UPDATE pgqueue.jobs AS j
               SET worker_id = claim_limited.worker_id, claimed_at = now(),
                   attempt = j.attempt + 1, state = 'STARTED', started_at = clock_timestamp(),
                   acks_late = coalesce(CASE jsonb_typeof(j.options -> 'acks_late')
                                        WHEN 'boolean'
                                        THEN (j.options ->> 'acks_late')::boolean END,
                                        NOT (j.task_name = ANY(claim_limited.at_most_once)))
              FROM chosen AS c
             WHERE j.ctid = c.ctid AND j.worker_id IS NULL
            RETURNING pgqueue.job_document(j, true) AS document, j.acks_late, j.priority,
                      j.run_at, j.seq
        )
        SELECT coalesce(array_agg(c.document ORDER BY c.priority DESC, c.run_at, c.seq),
                        '{}'),
               count(*), coalesce(bool_or(NOT c.acks_late), false) OR durable
          INTO batch, got, durable
          FROM claimed AS c;
        docs := docs || batch;
        taken := taken + got;
        IF lim.rate IS NOT NULL AND got > 0 THEN
            UPDATE pgqueue.rate_limits AS r
               SET next_at = greatest(r.next_at, clock_timestamp())
                             + make_interval(secs => 1 / lim.rate)
             WHERE r.name = lim.cell;
            wait := least(wait, 1 / lim.rate);
        ELSIF got < want AND lim.concurrency IS NOT NULL
              AND EXISTS (SELECT 1 FROM pgqueue.jobs AS j
                           WHERE j.worker_id IS NULL
                             AND CASE WHEN lim.task IS NOT NULL THEN j.task_name = lim.task
                                      ELSE j.task_name = ANY(claim_limited.tasks)
                                           AND j.queue = lim.queue END
                             AND j.queue = ANY(open_queues) AND j.run_at <= now()
                             AND (j.expires_at IS NULL OR j.expires_at > now())) THEN
            -- held back at the limit: look again in a second (a worker finishing one of
            -- these jobs claims again at once; this covers the jobs others run)
            wait := least(wait, 1.0);
        END IF;
    END LOOP;
    IF durable THEN
        -- as claim_jobs: an at-most-once job starts only once its claim is durable
        PERFORM set_config('synchronous_commit', claim_limited.synchronous_commit, true);
    END IF;
    RETURN QUERY SELECT coalesce(array_to_json(docs), '[]')::text, wait;
END
$$;

-- 2. Worker liveness.
ALTER TABLE pgqueue.workers
    -- The server process of the worker's claiming connection, which holds its liveness
    -- lock (WORKER_LOCK_CLASS, lock_key); set at each registration, a reconnection's too.
    -- The lock counts only when this process holds it: any session may take any advisory
    -- key, so a foreign one holding the key proves nothing.
    ADD COLUMN lock_pid integer;

-- The server process holding the worker liveness key `lock_key` (first key 0x70677175,
-- WORKER_LOCK_CLASS in pgqueue/locks.py), NULL when none does. A worker's lock counts only
-- when this is its lock_pid: read by the worker_status view and the rescue (rescue_jobs).
CREATE FUNCTION pgqueue.worker_lock_holder(lock_key bigint) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT l.pid
      FROM pg_locks AS l
     WHERE l.locktype = 'advisory'
       AND l.database = (SELECT d.oid FROM pg_database AS d
                          WHERE d.datname = current_database())
       AND l.classid = 1885827445::oid
       AND l.objid = lock_key::oid
       AND l.objsubid = 2
       AND l.granted
     LIMIT 1
$$;

-- Workers registered before: whoever holds their key now (their claiming backend, unless
-- they are gone).
UPDATE pgqueue.workers SET lock_pid = pgqueue.worker_lock_holder(lock_key);
-- A worker registers on its claiming connection: the registering session is the one.
ALTER TABLE pgqueue.workers ALTER COLUMN lock_pid SET DEFAULT pg_backend_pid();

-- As in version 3, but the liveness lock counts only when held by the worker's own
-- claiming backend (lock_pid).
CREATE OR REPLACE VIEW pgqueue.worker_status AS
SELECT w.id,
       w.name,
       w.hostname,
       w.pid,
       w.queues,
       w.pool,
       w.concurrency,
       w.started_at,
       w.heartbeat_at,
       coalesce(pgqueue.worker_lock_holder(w.lock_key) = w.lock_pid, false)
       AND w.heartbeat_at >= now() - make_interval(secs => coalesce(
               nullif(current_setting('pgqueue.worker_lost_timeout', true), '')::double precision,
               20)) AS alive,
       w.jobs_done,
       -- through jobs_worker_idx: only the jobs this worker holds are read
       (SELECT count(*) FROM pgqueue.jobs AS j
         WHERE j.worker_id = w.id AND j.state = 'STARTED') AS running,
       w.tasks
  FROM pgqueue.workers AS w
 ORDER BY w.hostname, w.name;


-- 3. The shared queue_stats sample.
-- Its one row of queue_stats_sampled exists from now on (-infinity: never sampled), so
-- that a refresh always has a row to lock.
INSERT INTO pgqueue.queue_stats_sampled (sampled_at) VALUES ('-infinity')
ON CONFLICT (only_row) DO NOTHING;

-- As in version 4, but a refresh is elected by locking that row (FOR UPDATE SKIP LOCKED:
-- the UPDATE privilege on it, the worker role's) instead of an advisory lock any role
-- could hold. A caller that finds a refresh under way (the row locked) returns the previous
-- sample rather than wait.
CREATE OR REPLACE FUNCTION pgqueue.sampled_queue_stats(max_age double precision)
RETURNS TABLE (queue text, ready bigint, scheduled bigint, retrying bigint, reserved bigint,
               running bigint, failed_last_hour bigint, succeeded_last_hour bigint,
               lag interval, unregistered bigint, workers bigint, sampled_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    fresh CONSTANT text :=
        'SELECT EXISTS (SELECT 1 FROM pgqueue.queue_stats_sampled AS s'
        ' WHERE s.sampled_at > now() - make_interval(secs => $1))';
    is_fresh boolean;
    elected  boolean;
BEGIN
    EXECUTE fresh INTO is_fresh USING max_age;
    IF NOT is_fresh THEN
        PERFORM 1 FROM pgqueue.queue_stats_sampled FOR UPDATE SKIP LOCKED;
        elected := FOUND;
        IF NOT elected AND NOT EXISTS (SELECT 1 FROM pgqueue.queue_stats_sampled) THEN
            -- the row was deleted (by the owner): put it back, held by this insert
            INSERT INTO pgqueue.queue_stats_sampled (sampled_at) VALUES ('-infinity')
            ON CONFLICT (only_row) DO NOTHING;
            elected := FOUND;
        END IF;
        IF elected THEN
            -- Checked again under the lock: each statement here sees what committed before
            -- it, so a refresh another caller finished meanwhile is not done twice.
            EXECUTE fresh INTO is_fresh USING max_age;
            IF NOT is_fresh THEN
                DELETE FROM pgqueue.queue_stats_samples;
                INSERT INTO pgqueue.queue_stats_samples
                SELECT v.queue, v.ready, v.scheduled, v.retrying, v.reserved, v.running,
                       v.failed_last_hour, v.succeeded_last_hour, v.lag, v.unregistered,
                       v.workers
                  FROM pgqueue.queue_stats AS v;
                UPDATE pgqueue.queue_stats_sampled SET sampled_at = now();
            END IF;
        END IF;
    END IF;
    RETURN QUERY
    SELECT q.queue, q.ready, q.scheduled, q.retrying, q.reserved, q.running,
           q.failed_last_hour, q.succeeded_last_hour, q.lag, q.unregistered, q.workers,
           s.sampled_at
      FROM pgqueue.queue_stats_samples AS q, pgqueue.queue_stats_sampled AS s
     ORDER BY q.queue;
END;
$$;
