-- pgqueue schema, version 8: queue controls.
--
-- 1. Paused queues. pgqueue.queues holds a row per queue an operator has paused (or
--    resumed); a queue without a row is running. Workers claim nothing from a paused queue
--    (pgqueue.queue_levels, which every claim walks, leaves it out) and the jobs trigger
--    hands none of its new jobs to an idle worker; enqueueing goes on as before. Resuming
--    sends a NOTIFY on pgqueue_jobs naming the queue, so idle workers claim at once.

CREATE TABLE pgqueue.queues (
    name      text PRIMARY KEY,
    paused    boolean NOT NULL DEFAULT false,
    -- when the queue was last paused or resumed, and by which database role
    changed_at timestamptz NOT NULL DEFAULT now(),
    changed_by text NOT NULL DEFAULT current_user
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

-- As in version 1, bar paused queues: a claim and the idle sleep's next_run_delay see no
-- level of theirs. (One primary-key probe per queue a worker consumes, per claim.)
CREATE OR REPLACE FUNCTION pgqueue.queue_levels(queues text[])
RETURNS TABLE (queue text, priority integer)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE levels AS (
        SELECT q.name, l.priority
          FROM unnest(queue_levels.queues) AS q(name),
               LATERAL (SELECT j.priority FROM pgqueue.jobs AS j
                         WHERE j.worker_id IS NULL AND j.queue = q.name
                         ORDER BY j.priority DESC LIMIT 1) AS l
         WHERE NOT EXISTS (SELECT 1 FROM pgqueue.queues AS p WHERE p.name = q.name AND p.paused)
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

-- As in version 6, bar paused queues: none of their new jobs is handed to a worker, and no
-- worker is woken for them.
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
                                WHERE q.name = n.queue AND q.paused)
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
