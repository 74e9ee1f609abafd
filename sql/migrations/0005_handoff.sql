-- pgqueue schema, version 5: a new job goes straight to an idle worker.
--
-- An idle worker woken by NOTIFY still had to claim the job it was told of: one more round
-- trip, two thirds of the time from enqueue to task start. Now an idle worker offers some
-- of its free slots in worker_slots, and the insert trigger gives each new ready job to an
-- offered slot inside the producer's own transaction: the job is claimed and STARTED there,
-- as a claim would have left it, and the NOTIFY to that worker carries the whole job, so
-- the task starts the moment the producer commits. A rollback takes the hand-off back with
-- the job. Jobs no slot takes (none offered, a busy or dead worker, a different queue or
-- task, an ETA, an at-most-once task) are queued and announced as before.

-- One row per slot a worker may offer. Offering and taking a slot only flips `offered`,
-- which no index covers: every change is a HOT update, pruned within its page, so the
-- table stays a few pages even where nothing vacuums it. A worker's rows carry what it
-- serves, so the trigger needs no join to pgqueue.workers.
CREATE TABLE pgqueue.worker_slots (
    worker_id    uuid NOT NULL,
    -- the worker's listening connection: rows of a connection that is gone are passed over
    -- (and removed by the rescue), so a worker killed while idle is handed nothing
    listener_pid integer NOT NULL,
    slot         integer NOT NULL,
    offered      boolean NOT NULL DEFAULT false,
    channel      text NOT NULL,
    queues       text[] NOT NULL,
    tasks        text[] NOT NULL,
    -- tasks whose jobs are at-most-once (acks_late false) unless the call says otherwise:
    -- those must be marked STARTED durably by the worker before they run, so no hand-off
    at_most_once text[] NOT NULL,
    PRIMARY KEY (worker_id, listener_pid, slot)
) WITH (fillfactor = 50);

-- A job as claim_jobs describes it to the worker (see Job.from_claim), STARTED.
CREATE FUNCTION pgqueue.job_document(j pgqueue.jobs) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT json_build_array(
               j.id, j.seq, j.task_name, j.queue, j.args, j.kwargs, j.priority,
               (extract(epoch FROM j.run_at) * 1000000)::bigint,
               (extract(epoch FROM j.expires_at) * 1000000)::bigint,
               false, j.retries, j.max_retries, j.time_limit, j.soft_time_limit, j.options,
               j.attempt + 1, true)::text
$$;

-- Wake idle workers: hand ready jobs to offered slots, in claim order, until one finds no
-- slot; then one notification per queue per statement (not per row) for the rest.
CREATE OR REPLACE FUNCTION pgqueue.notify_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    job      pgqueue.jobs;
    document text;
    channel  text;
    handed   uuid[] := '{}';
BEGIN
    IF EXISTS (SELECT 1 FROM pgqueue.worker_slots WHERE offered) THEN
        FOR job IN
            SELECT * FROM new_jobs AS n
             WHERE n.worker_id IS NULL
               AND n.run_at <= statement_timestamp()
               AND (n.expires_at IS NULL OR n.expires_at > statement_timestamp())
             ORDER BY n.priority DESC, n.run_at, n.seq
             LIMIT (SELECT count(*) FROM pgqueue.worker_slots WHERE offered)
        LOOP
            document := pgqueue.job_document(job);
            -- NOTIFY payloads stop at 8000 bytes: a bigger job is claimed the usual way
            EXIT WHEN octet_length(document) > 7900;
            -- One statement takes a slot and claims the job for its worker.
            WITH slot AS (
                SELECT s.ctid, s.worker_id, s.channel
                  FROM pgqueue.worker_slots AS s
                 WHERE s.offered
                   AND job.queue = ANY(s.queues)
                   AND job.task_name = ANY(s.tasks)
                   AND coalesce((job.options ->> 'acks_late')::boolean,
                                NOT (job.task_name = ANY(s.at_most_once)))
                   AND EXISTS (SELECT 1 FROM pg_stat_get_activity(s.listener_pid))
                 LIMIT 1
                   FOR UPDATE SKIP LOCKED
            ), taken AS (
                UPDATE pgqueue.worker_slots AS s SET offered = false
                  FROM slot WHERE s.ctid = slot.ctid
                RETURNING slot.worker_id, slot.channel
            ), claimed AS (
                UPDATE pgqueue.jobs AS j
                   SET worker_id = t.worker_id, claimed_at = now(), attempt = j.attempt + 1,
                       state = 'STARTED', started_at = now(), acks_late = true
                  FROM taken AS t
                 WHERE j.id = job.id
                RETURNING t.channel
            )
            SELECT c.channel INTO channel FROM claimed AS c;
            EXIT WHEN NOT FOUND;
            PERFORM pg_notify(channel, document);
            handed := handed || job.id;
        END LOOP;
    END IF;
    PERFORM pg_notify('pgqueue_jobs', q.queue)
       FROM (SELECT DISTINCT n.queue FROM new_jobs AS n
              WHERE n.worker_id IS NULL AND NOT (n.id = ANY(handed))) AS q;
    RETURN NULL;
END
$$;
