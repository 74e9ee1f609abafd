-- pgqueue schema, version 8: queue controls.
--
-- 1. Paused queues. pgqueue.queues holds a row per queue an operator has paused (or
--    resumed); a queue without a row is running. Workers claim nothing from a paused queue
--    (pgqueue.queue_levels, which every claim walks, leaves it out) and the jobs trigger
--    hands none of its new jobs to an idle worker; enqueueing goes on as before. Resuming
--    sends a NOTIFY on pgqueue_jobs naming the queue, so idle workers claim at once.
-- 2. Unique jobs. A job may carry a unique_key: while a job with that key is queued (or,
--    with unique_until = 'finished', until it finishes), enqueueing another with the same
--    key inserts nothing and returns the existing job's id (pgqueue.enqueue_unique).
-- 3. Concurrency and rate limits of tasks and of queues, for the whole cluster. A worker
--    claims the jobs of its limited tasks, and of queues with limits, with
--    pgqueue.claim_limited (never with claim_jobs, and none is handed off), which counts
--    them under an advisory lock per task or queue.

CREATE TABLE pgqueue.queues (
    name      text PRIMARY KEY,
    paused    boolean NOT NULL DEFAULT false,
    -- when the queue was last paused, resumed or limited, and by which database role
    changed_at timestamptz NOT NULL DEFAULT now(),
    changed_by text NOT NULL DEFAULT current_user,
    -- limits for the whole queue (see 3. and claim_limited): at most this many of its jobs
    -- claimed at once, at most this many starts per second
    concurrency_limit integer CHECK (concurrency_limit > 0),
    rate_limit double precision CHECK (rate_limit > 0 AND rate_limit < 'infinity')
);

-- Pause a queue: true if it was running. Claims that start after this commits take nothing
-- from it; one already under way when it commits may still take a batch.
CREATE FUNCTION pgqueue.pause_queue(name text) RETURNS boolean
LANGUAGE sql AS $$
    WITH upsert AS (
        INSERT INTO pgqueue.queues AS q (name, paused) VALUES (pause_queue.name, true)
        ON CONFLICT (name) DO UPDATE
           SET paused = true, changed_at = now(), changed_by = current_user
         WHERE NOT q.paused
        RETURNING q.name
    )
    SELECT EXISTS (SELECT 1 FROM upsert)
$$;

-- Resume a queue: true if it was paused. The NOTIFY is a hint to idle workers (they claim,
-- and the claim reads the table): it is sent on commit, when the claim can see the change.
CREATE FUNCTION pgqueue.resume_queue(name text) RETURNS boolean
LANGUAGE sql AS $$
    WITH resumed AS (
        UPDATE pgqueue.queues AS q
           SET paused = false, changed_at = now(), changed_by = current_user
         WHERE q.name = resume_queue.name AND q.paused
        RETURNING q.name
    )
    SELECT count(pg_notify('pgqueue_jobs', r.name)) > 0 FROM resumed AS r
$$;

-- Set or clear (NULL) a queue's limits; true if they changed. Workers are woken: they find
-- the queue limited in their next claim's next_run_delay.
CREATE FUNCTION pgqueue.set_queue_limits(name text, concurrency_limit integer,
                                         rate_limit double precision) RETURNS boolean
LANGUAGE sql AS $$
    WITH upsert AS (
        INSERT INTO pgqueue.queues AS q (name, concurrency_limit, rate_limit)
        VALUES (set_queue_limits.name, set_queue_limits.concurrency_limit,
                set_queue_limits.rate_limit)
        ON CONFLICT (name) DO UPDATE
           SET concurrency_limit = excluded.concurrency_limit,
               rate_limit = excluded.rate_limit, changed_at = now(),
               changed_by = current_user
         WHERE (q.concurrency_limit, q.rate_limit)
               IS DISTINCT FROM (excluded.concurrency_limit, excluded.rate_limit)
        RETURNING q.name
    )
    SELECT count(pg_notify('pgqueue_jobs', u.name)) > 0 FROM upsert AS u
$$;

-- As in version 1, bar paused queues, and queues with limits (claim_limited takes their
-- jobs): a claim and the idle sleep's next_run_delay see no level of theirs. (One
-- primary-key probe per queue a worker consumes, per claim.)
CREATE OR REPLACE FUNCTION pgqueue.queue_levels(queues text[])
RETURNS TABLE (queue text, priority integer)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE levels AS (
        SELECT q.name, l.priority
          FROM unnest(queue_levels.queues) AS q(name),
               LATERAL (SELECT j.priority FROM pgqueue.jobs AS j
                         WHERE j.worker_id IS NULL AND j.queue = q.name
                         ORDER BY j.priority DESC LIMIT 1) AS l
         WHERE NOT EXISTS (SELECT 1 FROM pgqueue.queues AS p
                            WHERE p.name = q.name
                              AND (p.paused OR p.concurrency_limit IS NOT NULL
                                   OR p.rate_limit IS NOT NULL))
        UNION ALL
        SELECT levels.name, l.priority
          FROM levels,
               LATERAL (SELECT j.priority FROM pgqueue.jobs AS j
                         WHERE j.worker_id IS NULL AND j.queue = levels.name
                           AND j.priority < levels.priority
                         ORDER BY j.priority DESC LIMIT 1) AS l
    )
    SELECT name, priority FROM levels
$$;

-- As in version 6, bar paused queues and queues with limits: none of their new jobs is
-- handed to a worker (a limited queue's are claimed by claim_limited), and no worker is
-- woken for a paused queue's.
CREATE OR REPLACE FUNCTION pgqueue.notify_jobs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    job      pgqueue.jobs;
    document text;
    body     text;
    taken    record;
    handed   uuid[] := '{}';
BEGIN
    IF EXISTS (SELECT 1 FROM pgqueue.worker_slots WHERE offered) THEN
        FOR job IN
            SELECT * FROM new_jobs AS n
             WHERE n.worker_id IS NULL
               AND n.run_at <= statement_timestamp()
               AND (n.expires_at IS NULL OR n.expires_at > statement_timestamp())
               -- a row written by hand with an infinite time is left to a claim: the hand-off
               -- is the fast path for what producers enqueue, the claim takes any row
               AND isfinite(n.run_at) AND (n.expires_at IS NULL OR isfinite(n.expires_at))
               AND NOT EXISTS (SELECT 1 FROM pgqueue.queues AS q
                                WHERE q.name = n.queue
                                  AND (q.paused OR q.concurrency_limit IS NOT NULL
                                       OR q.rate_limit IS NOT NULL))
             ORDER BY n.priority DESC, n.run_at, n.seq
             LIMIT (SELECT count(*) FROM pgqueue.worker_slots WHERE offered)
        LOOP
            -- the document of the job as the claim below leaves it (attempt for attempt)
            job.attempt := job.attempt + 1;
            document := pgqueue.job_document(job, true)::text;
            -- NOTIFY payloads stop at 8000 bytes, signature and header included: a bigger
            -- job is claimed the usual way
            EXIT WHEN octet_length(document) > 7850;
            -- One statement takes a slot and claims the job for its worker.
            WITH slot AS (
                SELECT s.ctid, s.worker_id, c.channel, c.key_inner, c.key_outer
                  FROM pgqueue.worker_slots AS s
                  JOIN pgqueue.worker_channels AS c USING (worker_id, listener_pid)
                 WHERE s.offered
                   AND job.queue = ANY(c.queues)
                   AND job.task_name = ANY(c.tasks)
                   -- as claim_jobs reads it: an acks_late that is not a boolean is ignored
                   AND coalesce(CASE WHEN jsonb_typeof(job.options -> 'acks_late') = 'boolean'
                                     THEN (job.options ->> 'acks_late')::boolean END,
                                NOT (job.task_name = ANY(c.at_most_once)))
                   AND EXISTS (SELECT 1 FROM pg_stat_get_activity(s.listener_pid))
                 LIMIT 1
                   FOR UPDATE OF s SKIP LOCKED
            ), took AS (
                UPDATE pgqueue.worker_slots AS s
                   SET offered = false, handoffs = s.handoffs + 1
                  FROM slot WHERE s.ctid = slot.ctid
                RETURNING slot.worker_id, slot.channel, s.slot, s.handoffs, slot.key_inner,
                          slot.key_outer
            ), claimed AS (
                UPDATE pgqueue.jobs AS j
                   SET worker_id = t.worker_id, claimed_at = now(), attempt = j.attempt + 1,
                       state = 'STARTED', started_at = now(), acks_late = true
                  FROM took AS t
                 WHERE j.id = job.id
                RETURNING t.channel, t.slot, t.handoffs, t.key_inner, t.key_outer
            )
            SELECT c.* INTO taken FROM claimed AS c;
            EXIT WHEN NOT FOUND;
            body := '[' || taken.slot || ',' || taken.handoffs || ',' || document || ']';
            PERFORM pg_notify(
                taken.channel,
                encode(sha256(taken.key_outer
                              || sha256(taken.key_inner || convert_to(body, 'UTF8'))), 'hex')
                || body);
            handed := handed || job.id;
        END LOOP;
    END IF;
    PERFORM pg_notify('pgqueue_jobs', q.queue)
       FROM (SELECT DISTINCT n.queue FROM new_jobs AS n
              WHERE n.worker_id IS NULL AND NOT (n.id = ANY(handed))
                AND NOT EXISTS (SELECT 1 FROM pgqueue.queues AS p
                                 WHERE p.name = n.queue AND p.paused)) AS q;
    RETURN NULL;
END
$$;

-- A job's unique key, and how long it holds it: 'started' until a worker first takes the job
-- (its first claim or hand-off: attempt 0 -> 1; a retry or a job given back does not take
-- it again), 'finished' for as long as the job is in this table (queued, running, waiting
-- to retry). A finished job has left the table, so its key is free again.
ALTER TABLE pgqueue.jobs
    ADD COLUMN unique_key text,
    ADD COLUMN unique_until text,
    ADD CONSTRAINT jobs_unique_until_check
        CHECK ((unique_key IS NULL) = (unique_until IS NULL)
               AND unique_until IN ('started', 'finished'));

-- Only jobs with a key have an entry; the predicate reads columns the claim already changes
-- (attempt), so no update that could be HOT before becomes non-HOT.
CREATE UNIQUE INDEX jobs_unique_key_idx ON pgqueue.jobs (unique_key)
 WHERE unique_key IS NOT NULL AND (attempt = 0 OR unique_until = 'finished');

-- Enqueue a batch of jobs, some with a unique_key (the document of the enqueue_jobs
-- statement, plus unique_key and unique_until): one row per job, in order, with the id of
-- the job it wrote or of the job that already held its key. Jobs of one batch sharing a key
-- all get the first one's id. A concurrent enqueue of the same key waits for the first
-- inserter's transaction: if that commits, its job's id comes back; if it rolls back, this
-- one inserts. (ON CONFLICT DO UPDATE, not DO NOTHING: it returns the existing row even when
-- its insert committed after this statement's snapshot. The update writes the key it has.)
-- SECURITY DEFINER: a producer may insert jobs but not update them; it inserts here only
-- the columns a producer may insert, plus the key.
CREATE FUNCTION pgqueue.enqueue_unique(jobs jsonb)
RETURNS TABLE (ord bigint, id uuid)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH input AS (
        SELECT j.*,
               j.unique_key IS NULL
               OR row_number() OVER (PARTITION BY j.unique_key ORDER BY j.ord) = 1 AS first
          FROM ROWS FROM (jsonb_to_recordset(enqueue_unique.jobs) AS (
               id uuid, task_name text, args jsonb, kwargs jsonb, queue text, priority integer,
               run_at timestamptz, countdown double precision, expires_at timestamptz,
               expires_in double precision, max_retries integer, time_limit double precision,
               soft_time_limit double precision, options jsonb, unique_key text,
               unique_until text))
               WITH ORDINALITY AS j(id, task_name, args, kwargs, queue, priority, run_at,
                                    countdown, expires_at, expires_in, max_retries,
                                    time_limit, soft_time_limit, options, unique_key,
                                    unique_until, ord)
    ), written AS (
        INSERT INTO pgqueue.jobs AS t (id, task_name, args, kwargs, queue, priority, run_at,
                                       expires_at, max_retries, time_limit, soft_time_limit,
                                       options, unique_key, unique_until)
        SELECT i.id, i.task_name, coalesce(i.args, '[]'), coalesce(i.kwargs, '{}'),
               coalesce(i.queue, 'default'), coalesce(i.priority, 0),
               coalesce(i.run_at, statement_timestamp() + make_interval(secs => i.countdown),
                        now()),
               coalesce(i.expires_at,
                        statement_timestamp() + make_interval(secs => i.expires_in)),
               i.max_retries, i.time_limit, i.soft_time_limit, coalesce(i.options, '{}'),
               i.unique_key,
               CASE WHEN i.unique_key IS NOT NULL THEN coalesce(i.unique_until, 'started') END
          FROM input AS i
         WHERE i.first
         ORDER BY i.ord
        ON CONFLICT (unique_key)
           WHERE unique_key IS NOT NULL AND (attempt = 0 OR unique_until = 'finished')
        DO UPDATE SET unique_key = excluded.unique_key
        RETURNING t.id, t.unique_key
    )
    SELECT i.ord, coalesce(w.id, i.id)
      FROM input AS i
      LEFT JOIN written AS w ON w.unique_key = i.unique_key
     ORDER BY i.ord
$$;

-- As in version 1, and with a unique key: enqueue(..., unique_key => 'invoice:42') returns
-- the id of the job holding that key if there is one (see enqueue_unique). Calls of
-- version 1 work as they did (the new parameters come last, with defaults). Replaced, not
-- overloaded: with both, a call naming only the old parameters would match either.
DROP FUNCTION pgqueue.enqueue(text, jsonb, jsonb, text, integer, timestamptz,
                              double precision, timestamptz, double precision, integer,
                              double precision, double precision, jsonb, uuid);
CREATE FUNCTION pgqueue.enqueue(
    task_name       text,
    args            jsonb DEFAULT '[]',
    kwargs          jsonb DEFAULT '{}',
    queue           text DEFAULT 'default',
    priority        integer DEFAULT 0,
    run_at          timestamptz DEFAULT NULL,
    countdown       double precision DEFAULT NULL,
    expires_at      timestamptz DEFAULT NULL,
    expires_in      double precision DEFAULT NULL,
    max_retries     integer DEFAULT NULL,
    time_limit      double precision DEFAULT NULL,
    soft_time_limit double precision DEFAULT NULL,
    options         jsonb DEFAULT '{}',
    id              uuid DEFAULT NULL,
    unique_key      text DEFAULT NULL,
    unique_until    text DEFAULT 'started'
) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    new_id uuid := coalesce(enqueue.id, gen_random_uuid());
BEGIN
    IF enqueue.unique_key IS NOT NULL THEN
        SELECT u.id INTO new_id
          FROM pgqueue.enqueue_unique(jsonb_build_array(jsonb_build_object(
                   'id', new_id, 'task_name', enqueue.task_name, 'args', enqueue.args,
                   'kwargs', enqueue.kwargs, 'queue', enqueue.queue,
                   'priority', enqueue.priority, 'run_at', enqueue.run_at,
                   'countdown', enqueue.countdown, 'expires_at', enqueue.expires_at,
                   'expires_in', enqueue.expires_in, 'max_retries', enqueue.max_retries,
                   'time_limit', enqueue.time_limit,
                   'soft_time_limit', enqueue.soft_time_limit, 'options', enqueue.options,
                   'unique_key', enqueue.unique_key,
                   'unique_until', enqueue.unique_until))) AS u;
        RETURN new_id;
    END IF;
    INSERT INTO pgqueue.jobs AS j (id, task_name, args, kwargs, queue, priority, run_at,
                                   expires_at, max_retries, time_limit, soft_time_limit,
                                   options)
    VALUES (
        new_id,
        enqueue.task_name,
        coalesce(enqueue.args, '[]'),
        coalesce(enqueue.kwargs, '{}'),
        coalesce(enqueue.queue, 'default'),
        coalesce(enqueue.priority, 0),
        coalesce(enqueue.run_at,
                 statement_timestamp() + make_interval(secs => enqueue.countdown),
                 now()),
        coalesce(enqueue.expires_at,
                 statement_timestamp() + make_interval(secs => enqueue.expires_in)),
        enqueue.max_retries,
        enqueue.time_limit,
        enqueue.soft_time_limit,
        coalesce(enqueue.options, '{}')
    );
    RETURN new_id;
END
$$;

-- The rate limits' state (GCRA with a burst of one): no job of `name` ('task:' || task name,
-- or 'queue:' || queue name) starts before next_at; each start moves it one interval
-- (1 / rate) past the later of itself and the start.
CREATE TABLE pgqueue.rate_limits (
    name    text PRIMARY KEY,
    next_at timestamptz NOT NULL
);


-- Claim and start, for worker `worker_id` consuming `queues` and running `tasks`, up to
-- `room` jobs held back by limits: of its limited tasks, and of its queues with limits.
-- `limits`: a JSON array of {task, concurrency, key_name, key_pos, rate}, the worker's
-- limited tasks: at most `concurrency` jobs of the task claimed at once in the whole
-- cluster (per value of its argument key_name, found in kwargs or else at args[key_pos],
-- when given), at most `rate` starts per second. A queue's limits (pgqueue.queues) count
-- all its jobs, and govern those of tasks without limits of their own; a limited task's
-- jobs follow the task's limits, in any queue.
-- Each limit's claims are serialized by an advisory lock (class 0x70677176, key
-- hashtext('task:' || task) or hashtext('queue:' || queue)), all taken first, in name
-- order; each statement after that sees what the previous holder committed (a new
-- snapshot per statement, in READ COMMITTED): a count cannot be raced.
-- Returns the claimed jobs' document (as claim_jobs) and how many seconds until a job held
-- back by a limit may start (NULL: none is held back).
CREATE FUNCTION pgqueue.claim_limited(worker_id uuid, queues text[], tasks text[],
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
    PERFORM pg_advisory_xact_lock(1885827446, hashtext(e ->> 'cell'))
       FROM jsonb_array_elements(cells) AS e;
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
            -- the other limited claims wait for our lock); a revoke or purge may have:
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
            INSERT INTO pgqueue.rate_limits AS r (name, next_at)
            VALUES (lim.cell, clock_timestamp() + make_interval(secs => 1 / lim.rate))
            ON CONFLICT (name) DO UPDATE
               SET next_at = greatest(r.next_at, clock_timestamp())
                             + make_interval(secs => 1 / lim.rate);
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
