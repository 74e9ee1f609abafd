-- pgqueue schema, version 6: a worker acts only on what pgqueue sent, and a connection blip
-- is not death.
--
-- 1. Signed hand-offs. Any role that can connect may NOTIFY any channel, so a notification
--    alone must never make a worker run something. Each listening connection of a worker
--    now has a secret HMAC-SHA256 key (stored XORed with HMAC's inner and outer pads, so
--    SQL needs only the built-in sha256()); the trigger signs every hand-off with the key
--    of the worker it hands to and the slot's hand-off count, and the worker runs only
--    documents whose signature and count check out. Only the owner and worker roles can
--    read the keys; producers reach them through the trigger, which now runs with its
--    owner's rights (SECURITY DEFINER): a producer needs INSERT on pgqueue.jobs, nothing
--    on the hand-off tables.
-- 2. Reconnect grace. A worker whose liveness lock disappears (its backends terminated, a
--    network blip) is no longer lost at once: the rescue first records when it saw the lock
--    missing and only rescues the worker's jobs once it has been missing for longer than
--    the worker's own reconnect_grace (worker_reconnect_grace). A worker that reconnects
--    within the grace keeps its jobs: no second run, no false WorkerLostError.
-- 3. One job document. pgqueue.job_document() now builds what both the claim and the
--    hand-off send a worker, from the row as the claim leaves it.

-- What a worker's listening connection serves, and its hand-off key, in a row of its own:
-- the slot rows producers flip at each hand-off shrink to a few dozen bytes, so a page holds
-- a hundred versions of them and page pruning keeps the table at one page even while a
-- concurrent snapshot holds back the removal of old versions for a while (with what a
-- worker serves in every slot row, a page held six, and a busy server grew the table a page
-- per hand-off until vacuum).
CREATE TABLE pgqueue.worker_channels (
    worker_id    uuid NOT NULL,
    listener_pid integer NOT NULL,
    channel      text NOT NULL,
    queues       text[] NOT NULL,
    tasks        text[] NOT NULL,
    -- tasks whose jobs are at-most-once (acks_late false) unless the call says otherwise:
    -- their STARTED mark must be durable before they run, which only the worker ensures
    at_most_once text[] NOT NULL,
    -- the HMAC key XORed with 0x36... and with 0x5c... (64 bytes each)
    key_inner    bytea NOT NULL,
    key_outer    bytea NOT NULL,
    PRIMARY KEY (worker_id, listener_pid)
);

-- Slots of a worker of an older pgqueue have no channel row: they are never handed a job.
DELETE FROM pgqueue.worker_slots;
ALTER TABLE pgqueue.worker_slots
    DROP COLUMN channel,
    DROP COLUMN queues,
    DROP COLUMN tasks,
    DROP COLUMN at_most_once,
    -- hand-offs through this slot so far: each is signed with its count, so a replayed
    -- notification (an old count) is refused
    ADD COLUMN handoffs bigint NOT NULL DEFAULT 0;

ALTER TABLE pgqueue.workers
    -- seconds the worker may be without its liveness lock before its jobs are rescued
    ADD COLUMN reconnect_grace    double precision NOT NULL DEFAULT 0,
    -- when a rescue first found the lock missing; cleared when the worker is back
    ADD COLUMN lock_missing_since timestamptz;

-- One job as a worker receives it, from a claim (claim_jobs) or a hand-off (notify_jobs):
-- the one definition of the document both send. `j` is the row as the claim leaves it;
-- `started`: whether the claim STARTED it (else it waits in the worker's buffer). An array,
-- not an object: half the bytes, and a third of the worker's time to parse. Its fields are
-- those of Job (pgqueue/execution.py), in this order, by the same names; tests/
-- test_claim_document.py fails when the two disagree. Times travel as microseconds since
-- the epoch, exact and independent of the session's TimeZone, clamped to the years 1-9999
-- Python can hold: a row written by hand with 'infinity' (or year 20000) would otherwise
-- fail every claim, or the worker's decoding. A plain SQL expression, so that the planner
-- inlines it into the claim: a column of `j` is read straight from the updated row.
DROP FUNCTION pgqueue.job_document(pgqueue.jobs);
CREATE FUNCTION pgqueue.job_document(j pgqueue.jobs, started boolean) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_array(
               j.id,
               j.seq,
               j.task_name,
               j.queue,
               j.args,
               j.kwargs,
               j.priority,
               -- run_at
               (extract(epoch FROM least(greatest(j.run_at, '0001-01-01 00:00:00+00'),
                                         '9999-12-31 23:59:59.999999+00')) * 1000000)::bigint,
               -- expires_at (greatest() skips a NULL)
               (extract(epoch FROM CASE WHEN j.expires_at IS NOT NULL
                                   THEN least(greatest(j.expires_at, '0001-01-01 00:00:00+00'),
                                              '9999-12-31 23:59:59.999999+00') END)
                * 1000000)::bigint,
               -- expired
               j.expires_at IS NOT NULL AND j.expires_at <= now(),
               j.retries,
               j.max_retries,
               j.time_limit,
               j.soft_time_limit,
               j.options,
               j.attempt,
               job_document.started)
$$;

-- Hand ready jobs to offered slots, in claim order, until one finds no slot; then one
-- notification per queue per statement (not per row) for the rest. The hand-off payload is
-- "<hex HMAC-SHA256><body>", body = [slot, hand-off count, job document], signed with the
-- key of the worker's listening connection.
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
              WHERE n.worker_id IS NULL AND NOT (n.id = ANY(handed))) AS q;
    RETURN NULL;
END
$$;
