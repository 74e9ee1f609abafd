-- Every statement pgqueue runs, each under a name; pgqueue/queries.py loads them.
-- Parameters use the %(name)s style so the enqueue statements also run through
-- other DB-API drivers (psycopg2, Django's cursor) inside the caller's transaction.

-- name: enqueue_jobs
-- Every enqueue from Python, one job (delay) or a batch (enqueue_many): the jobs travel as
-- one JSON array. A plain statement, which the driver prepares once per connection (the SQL
-- function pgqueue.enqueue(), for SQL callers, has its body planned again at every call).
INSERT INTO pgqueue.jobs (id, task_name, args, kwargs, queue, priority, run_at,
                          expires_at, max_retries, time_limit, soft_time_limit, options)
SELECT j.id, j.task_name, coalesce(j.args, '[]'), coalesce(j.kwargs, '{}'),
       j.queue, coalesce(j.priority, 0),
       coalesce(j.run_at, statement_timestamp() + make_interval(secs => j.countdown), now()),
       coalesce(j.expires_at, statement_timestamp() + make_interval(secs => j.expires_in)),
       j.max_retries, j.time_limit, j.soft_time_limit, coalesce(j.options, '{}')
  FROM ROWS FROM (jsonb_to_recordset(%(jobs)s::jsonb) AS (
       id uuid, task_name text, args jsonb, kwargs jsonb, queue text, priority integer,
       run_at timestamptz, countdown double precision, expires_at timestamptz,
       expires_in double precision, max_retries integer, time_limit double precision,
       soft_time_limit double precision, options jsonb))
       WITH ORDINALITY AS j(id, task_name, args, kwargs, queue, priority, run_at, countdown,
                            expires_at, expires_in, max_retries, time_limit, soft_time_limit,
                            options, ord)
 ORDER BY j.ord

-- name: enqueue_workflow
-- A chain, group or chord (pgqueue/canvas.py), whole, in one statement, so that it is all
-- or nothing on any caller's connection, autocommit included: its workflows, members and
-- chord counters (%(workflows)s, %(members)s, %(chords)s: JSON arrays of rows by column
-- name), then the jobs that start now (%(jobs)s, as enqueue_jobs takes them). The jobs that
-- follow travel inside these jobs' options (see 0007_workflows.sql).
WITH flows AS (
    INSERT INTO pgqueue.workflows (id, kind, parent_id)
    SELECT w.id, w.kind, w.parent_id
      FROM jsonb_to_recordset(%(workflows)s::jsonb) AS w(id uuid, kind text, parent_id uuid)
), members AS (
    INSERT INTO pgqueue.workflow_members (workflow_id, position, task_id, task_name)
    SELECT m.workflow_id, m.position, m.task_id, m.task_name
      FROM jsonb_to_recordset(%(members)s::jsonb)
           AS m(workflow_id uuid, position integer, task_id uuid, task_name text)
), counters AS (
    INSERT INTO pgqueue.chords (id, size, remaining, callback_id, callback)
    SELECT c.id, c.size, c.size, c.callback_id, c.callback
      FROM jsonb_to_recordset(%(chords)s::jsonb)
           AS c(id uuid, size integer, callback_id uuid, callback jsonb)
)
INSERT INTO pgqueue.jobs (id, task_name, args, kwargs, queue, priority, run_at,
                          expires_at, max_retries, time_limit, soft_time_limit, options)
SELECT j.id, j.task_name, coalesce(j.args, '[]'), coalesce(j.kwargs, '{}'),
       j.queue, coalesce(j.priority, 0),
       coalesce(j.run_at, statement_timestamp() + make_interval(secs => j.countdown), now()),
       coalesce(j.expires_at, statement_timestamp() + make_interval(secs => j.expires_in)),
       j.max_retries, j.time_limit, j.soft_time_limit, coalesce(j.options, '{}')
  FROM ROWS FROM (jsonb_to_recordset(%(jobs)s::jsonb) AS (
       id uuid, task_name text, args jsonb, kwargs jsonb, queue text, priority integer,
       run_at timestamptz, countdown double precision, expires_at timestamptz,
       expires_in double precision, max_retries integer, time_limit double precision,
       soft_time_limit double precision, options jsonb))
       WITH ORDINALITY AS j(id, task_name, args, kwargs, queue, priority, run_at, countdown,
                            expires_at, expires_in, max_retries, time_limit, soft_time_limit,
                            options, ord)
 ORDER BY j.ord

-- name: enqueue_unique_jobs
-- enqueue_jobs for a batch holding jobs with a unique key (each job's document may add
-- unique_key and unique_until): the id of each job in order, its own or, when its key was
-- taken, that of the job holding it (see pgqueue.enqueue_unique, migration 0008).
SELECT u.id::text FROM pgqueue.enqueue_unique(%(jobs)s::jsonb) AS u ORDER BY u.ord

-- name: copy_jobs
-- enqueue_many on pgqueue's own connection: the jobs COPY can take as they are (run_at
-- defaults to the transaction's start, as in enqueue_jobs; jobs with an ETA, countdown or
-- expiry go through enqueue_jobs, which works their times out on the database's clock).
COPY pgqueue.jobs (id, task_name, args, kwargs, queue, priority, max_retries, time_limit,
                   soft_time_limit, options) FROM STDIN

-- name: claim_jobs
-- Take up to %(limit)s ready jobs this worker can run. SKIP LOCKED lets any number of
-- workers claim side by side without waiting on each other's rows. Each (queue, priority)
-- level is read through jobs_claim_idx as a range on run_at, in claim order, so jobs
-- scheduled for later, at any priority, cost nothing; the best candidates of all levels win.
-- The best %(start)s of them, the worker's free slots, are STARTED at once, so that a job
-- goes from queued to running in one round trip; the rest wait in the worker's buffer and
-- are marked STARTED when a slot frees (mark_started). An expired job is never started.
WITH candidates AS (
    SELECT c.ctid, c.priority, c.run_at, c.seq, c.expires_at
      FROM pgqueue.queue_levels(%(queues)s::text[]) AS l,
           LATERAL (
               SELECT j.ctid, j.priority, j.run_at, j.seq, j.expires_at
                 FROM pgqueue.jobs AS j
                WHERE j.worker_id IS NULL
                  AND j.queue = l.queue
                  AND j.priority = l.priority
                  AND j.run_at <= now()
                  AND j.task_name = ANY(%(tasks)s::text[])
                ORDER BY j.run_at, j.seq
                LIMIT %(limit)s
                  FOR UPDATE SKIP LOCKED
           ) AS c
     ORDER BY c.priority DESC, c.run_at, c.seq
     LIMIT %(limit)s
), next AS (
    SELECT c.ctid,
           row_number() OVER (ORDER BY c.priority DESC, c.run_at, c.seq) <= %(start)s
           AND (c.expires_at IS NULL OR c.expires_at > now()) AS go
      FROM candidates AS c
), claimed AS (
    UPDATE pgqueue.jobs AS j
       SET worker_id = %(worker_id)s, claimed_at = now(), attempt = j.attempt + 1,
           state = CASE WHEN next.go THEN 'STARTED' ELSE j.state END,
           started_at = CASE WHEN next.go THEN now() ELSE j.started_at END,
           -- what mark_started would set: the call's acks_late, else the task's (a value
           -- not a boolean, written by hand, must not fail every claim: it is ignored)
           acks_late = CASE WHEN next.go
                            THEN coalesce(CASE jsonb_typeof(j.options -> 'acks_late')
                                          WHEN 'boolean' THEN (j.options ->> 'acks_late')::boolean
                                          END,
                                          NOT (j.task_name = ANY(%(at_most_once)s::text[])))
                            ELSE j.acks_late END
      FROM next
     WHERE j.ctid = next.ctid
       -- Redundant for the result; it gives the planner a TID scan of exactly the
       -- candidates, whatever it estimates their number to be (see claim_settings).
       AND j.ctid = ANY (ARRAY(SELECT ctid FROM candidates))
    -- pgqueue.job_document() is the job as the worker receives it (a hand-off sends the
    -- same); inlined here, it reads the updated row's columns directly.
    RETURNING pgqueue.job_document(j, next.go) AS document, j.priority, j.run_at, j.seq,
              next.go AS started, j.acks_late
)
-- One JSON document for the whole batch, in claim order: the worker decodes it in one
-- call, where row by row decoding cost it more than the claim itself.
SELECT coalesce(json_agg(c.document ORDER BY c.priority DESC, c.run_at, c.seq), '[]')::text,
       -- see claim_settings: an at-most-once job starts only once its claim is durable
       CASE WHEN bool_or(c.started AND NOT c.acks_late)
            THEN set_config('synchronous_commit', %(synchronous_commit)s, true) END
  FROM claimed AS c

-- name: claim_limited_jobs
-- Up to %(room)s jobs of this worker's limited tasks and limited queues (%(tasks)s: its
-- tasks without limits of their own), STARTED at once (see
-- pgqueue.claim_limited, migration 0008), and when to look again for those held back.
SELECT document, retry_in
  FROM pgqueue.claim_limited(%(worker_id)s, %(queues)s::text[], %(tasks)s::text[],
                             %(limits)s::jsonb, %(room)s, %(at_most_once)s::text[],
                             %(synchronous_commit)s)

-- name: split_jobs_document
-- A claim's (or hand-off's) document the worker could not decode, one entry per row, with
-- what it needs to end that job FAILURE: the id, attempt, task name and queue, read by the
-- database, which wrote them. (json, not jsonb: each entry comes back as it was written.)
-- %(fields)s: the names of an entry's fields in order (Job's, see pgqueue.job_document()).
SELECT e ->> (array_position(f.names, 'id') - 1) AS id,
       (e ->> (array_position(f.names, 'attempt') - 1))::integer AS attempt,
       e ->> (array_position(f.names, 'task_name') - 1) AS task_name,
       e ->> (array_position(f.names, 'queue') - 1) AS queue,
       e::text AS entry
  FROM json_array_elements(%(document)s::json) AS e, (SELECT %(fields)s::text[]) AS f(names)

-- name: handoff_job_document
-- The job document of a verified hand-off body ([slot, count, document]) the worker could
-- not parse, as it was written (json, not jsonb), for split_jobs_document's caller.
SELECT (%(body)s::json -> 2)::text

-- name: claim_settings
-- Sent first in the transaction that claims jobs and marks them STARTED.
-- - A claim is a lease: lost in a database crash, its jobs are simply ready again and run
--   again, which at-least-once allows. So its commit does not wait for the WAL flush,
--   unless it starts an at-most-once job: mark_started and claim_jobs then set
--   synchronous_commit back to the worker's setting, %(synchronous_commit)s.
-- - Plan the statements once per connection (a generic plan) instead of at every call:
--   planning a custom plan was most of the time an idle worker spent between a NOTIFY and
--   the job's start, and the claim reads the same index ranges whatever its parameters.
--   JIT is off because a generic plan's row estimates (a tenth of the table for LIMIT $n)
--   would otherwise pay for a compilation costing a thousand times the claim itself.
SELECT set_config('synchronous_commit', 'off', true),
       set_config('plan_cache_mode', 'force_generic_plan', true),
       set_config('jit', 'off', true)

-- name: mark_started
-- The jobs still ours, each with whether it started: one revoked or rescued since the claim
-- is not returned; one that expired while it waited in the worker's buffer is returned
-- unstarted, and the worker ends it REVOKED. Expiry by the database's clock.
-- %(jobs)s: a JSON array of [id, attempt, acks_late].
WITH s AS (
    SELECT (e ->> 0)::uuid AS id, (e ->> 1)::integer AS attempt,
           (e ->> 2)::boolean AS acks_late
      FROM jsonb_array_elements(%(jobs)s::jsonb) AS e
), started AS (
    UPDATE pgqueue.jobs AS j
       SET state = 'STARTED', started_at = now(), acks_late = s.acks_late
      FROM s
     WHERE j.id = s.id AND j.attempt = s.attempt AND j.worker_id = %(worker_id)s
       -- Redundant for the result: it has the planner look the jobs up by primary key,
       -- where it would otherwise read every job this worker holds (jobs_worker_idx).
       AND j.id = ANY (ARRAY(SELECT id FROM s))
       AND (j.expires_at IS NULL OR j.expires_at > now())
    RETURNING j.id
)
SELECT j.id::text, j.id IN (SELECT id FROM started),
       -- an at-most-once job must not start before its STARTED mark is durable
       CASE WHEN NOT s.acks_late AND j.id IN (SELECT id FROM started)
            THEN set_config('synchronous_commit', %(synchronous_commit)s, true) END
  FROM pgqueue.jobs AS j JOIN s ON j.id = s.id AND j.attempt = s.attempt
 WHERE j.worker_id = %(worker_id)s AND j.id = ANY (ARRAY(SELECT id FROM s))

-- name: finish_jobs
-- Write outcomes and remove the jobs in one statement. The (id, attempt, worker_id)
-- match is the fence: a worker whose claim was handed to someone else writes nothing.
-- %(outcomes)s: a JSON array of [id, attempt, state, result (JSON text), exc_type,
-- exc_message, traceback, time_taken, store]; one document is far cheaper for the worker
-- to send than an array per column.
WITH outcome AS (
    SELECT (e ->> 0)::uuid AS id, (e ->> 1)::integer AS attempt, e ->> 2 AS state,
           (e ->> 3)::jsonb AS result, e ->> 4 AS exc_type, e ->> 5 AS exc_message,
           e ->> 6 AS traceback, (e ->> 7)::double precision AS time_taken,
           (e ->> 8)::boolean AS store
      FROM jsonb_array_elements(%(outcomes)s::jsonb) AS e
), done AS (
    DELETE FROM pgqueue.jobs AS j
     USING outcome AS o
     WHERE j.id = o.id AND j.attempt = o.attempt AND j.worker_id = %(worker_id)s
    RETURNING j.id, j.task_name, j.queue, j.retries, j.args, j.kwargs, j.started_at,
              j.options -> 'workflow' AS workflow
), stored AS (
    -- A job of a workflow (see 0007_workflows.sql) always leaves a result row: its
    -- results_workflow trigger enqueues what follows, in this transaction. Rows go in
    -- chord order, so that two workers ending members of the same chords lock their
    -- counters in the same order.
    INSERT INTO pgqueue.results AS r
           (task_id, task_name, queue, state, result, exc_type, exc_message, traceback,
            retries, args, kwargs, worker, date_started, date_done, time_taken, expires_at,
            workflow)
    SELECT d.id, d.task_name, d.queue, o.state, o.result, o.exc_type, o.exc_message,
           o.traceback, d.retries,
           CASE WHEN o.state = 'SUCCESS' THEN NULL ELSE d.args END,
           CASE WHEN o.state = 'SUCCESS' THEN NULL ELSE d.kwargs END,
           %(worker_name)s, d.started_at, now(), o.time_taken,
           now() + make_interval(secs => %(result_expires)s::double precision), d.workflow
      FROM done AS d JOIN outcome AS o USING (id)
     WHERE o.store OR d.workflow IS NOT NULL
     ORDER BY d.workflow ->> 'chord'
    ON CONFLICT (task_id) DO UPDATE
       SET state = excluded.state, result = excluded.result, exc_type = excluded.exc_type,
           exc_message = excluded.exc_message, traceback = excluded.traceback,
           retries = excluded.retries, args = excluded.args, kwargs = excluded.kwargs,
           worker = excluded.worker, date_started = excluded.date_started,
           date_done = excluded.date_done, time_taken = excluded.time_taken,
           expires_at = excluded.expires_at, workflow = excluded.workflow
)
SELECT id::text FROM done

-- name: release_jobs
-- Hand claimed-but-unstarted jobs back (warm shutdown) and wake the other workers. (A job
-- handed to this worker came STARTED: it goes back as it was before.)
WITH released AS (
    UPDATE pgqueue.jobs AS j
       SET worker_id = NULL, claimed_at = NULL, started_at = NULL,
           state = CASE WHEN j.state <> 'STARTED' THEN j.state
                        WHEN j.retries > 0 THEN 'RETRY' ELSE 'PENDING' END
      FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[]) AS s(id, attempt)
     WHERE j.id = s.id AND j.attempt = s.attempt AND j.worker_id = %(worker_id)s
    RETURNING j.queue
)
SELECT q.queue, q.n, pg_notify('pgqueue_jobs', q.queue)
  FROM (SELECT queue, count(*) AS n FROM released GROUP BY queue) AS q

-- name: release_held_jobs
-- After a reconnect: jobs this worker holds but is neither running nor about to finish go
-- back to the queue. They were claimed, or marked STARTED, in a round trip whose reply
-- was lost with the connection, so this worker never ran them; nobody else would free
-- them while the worker lives. Their attempt counts stay: a later claim moves past them.
-- A job is kept only at the attempt the worker runs: at another, its outcome would be
-- refused by the fence and the job left STARTED for ever.
WITH released AS (
    UPDATE pgqueue.jobs AS j
       SET worker_id = NULL, claimed_at = NULL, started_at = NULL,
           state = CASE WHEN j.state <> 'STARTED' THEN j.state
                        WHEN j.retries > 0 THEN 'RETRY' ELSE 'PENDING' END
     WHERE j.worker_id = %(worker_id)s
       AND NOT EXISTS (SELECT 1 FROM unnest(%(keep)s::uuid[], %(keep_attempts)s::integer[])
                                     AS k(id, attempt)
                        WHERE k.id = j.id AND k.attempt = j.attempt)
    RETURNING j.queue
)
SELECT q.queue, q.n, pg_notify('pgqueue_jobs', q.queue)
  FROM (SELECT queue, count(*) AS n FROM released GROUP BY queue) AS q

-- name: register_worker
-- Also used on reconnection: the same worker id comes back with its jobs, if nobody
-- rescued them meanwhile.
-- A worker back within its reconnect grace finds its row and jobs as it left them.
-- Run on the claiming connection: its server process is the one whose liveness lock counts
-- (lock_pid), a reconnection's new one from now on.
INSERT INTO pgqueue.workers (id, name, hostname, pid, queues, tasks, pool, concurrency,
                             reconnect_grace, lock_pid)
VALUES (%(id)s, %(name)s, %(hostname)s, %(pid)s, %(queues)s, %(tasks)s, %(pool)s,
        %(concurrency)s, %(reconnect_grace)s, pg_backend_pid())
ON CONFLICT (id) DO UPDATE
   SET heartbeat_at = now(), lock_missing_since = NULL, lock_pid = pg_backend_pid()
RETURNING lock_key

-- name: lock_worker
SELECT pg_try_advisory_lock(%(lock_class)s, %(lock_key)s)

-- name: relock_worker
-- The worker's key is held by another session (any role may take any advisory key, and
-- the keys are handed out in order; or our own previous session, ended but not gone yet):
-- a fresh key from the identity, and the lock tried on it, in one round trip.
UPDATE pgqueue.workers
   SET lock_key = DEFAULT
 WHERE id = %(id)s
RETURNING lock_key, pg_try_advisory_lock(%(lock_class)s, lock_key)

-- name: set_synchronous_commit
SELECT set_config('synchronous_commit', %(value)s, false)

-- name: heartbeat
UPDATE pgqueue.workers
   SET heartbeat_at = now(), jobs_done = %(jobs_done)s
 WHERE id = %(id)s
RETURNING lock_key

-- name: unregister_worker
-- Slots a producer is handing a job to right now are left to the rescue (which requeues
-- that job): waiting for its transaction could hold the shutdown up without end.
WITH slots AS (
    DELETE FROM pgqueue.worker_slots
     WHERE ctid = ANY (ARRAY(SELECT ctid FROM pgqueue.worker_slots
                              WHERE worker_id = %(id)s FOR UPDATE SKIP LOCKED))
), channels AS (
    DELETE FROM pgqueue.worker_channels WHERE worker_id = %(id)s
)
DELETE FROM pgqueue.workers WHERE id = %(id)s

-- ---- hand-off: idle workers offer slots, the jobs_notify trigger fills them ----

-- name: create_slots
-- After (re)registering: this listening connection's channel row, with what it serves and
-- its new hand-off key (see 0006_trust.sql), and its slots, none offered yet. Rows of an
-- earlier connection are removed, bar slots a producer holds (the rescue removes those; a
-- producer holding one has read the channel row it needs already).
WITH old_slots AS (
    DELETE FROM pgqueue.worker_slots
     WHERE ctid = ANY (ARRAY(SELECT ctid FROM pgqueue.worker_slots
                              WHERE worker_id = %(worker_id)s FOR UPDATE SKIP LOCKED))
), old_channels AS (
    DELETE FROM pgqueue.worker_channels WHERE worker_id = %(worker_id)s
), channel AS (
    INSERT INTO pgqueue.worker_channels (worker_id, listener_pid, channel, queues, tasks,
                                         at_most_once, key_inner, key_outer)
    VALUES (%(worker_id)s, %(listener_pid)s, %(channel)s, %(queues)s, %(tasks)s,
            %(at_most_once)s, %(key_inner)s, %(key_outer)s)
)
INSERT INTO pgqueue.worker_slots (worker_id, listener_pid, slot)
SELECT %(worker_id)s, %(listener_pid)s, n FROM generate_series(1, %(slots)s) AS n

-- name: offer_slots
-- Offer the first %(n)s slots of this worker and withdraw the others (0 withdraws all).
-- A slot a producer holds is skipped: its job is on its way, or the slot comes back on a
-- rollback.
UPDATE pgqueue.worker_slots AS s
   SET offered = s.slot <= %(n)s
 WHERE s.ctid = ANY (ARRAY(SELECT ctid FROM pgqueue.worker_slots
                            WHERE worker_id = %(worker_id)s
                              AND offered <> (slot <= %(n)s)
                              FOR UPDATE SKIP LOCKED))

-- name: get_result
-- One snapshot: a job is in exactly one of the two tables, since finishing moves it.
SELECT state, result, exc_type, exc_message, traceback, retries, date_done, time_taken,
       task_name
  FROM pgqueue.results
 WHERE task_id = %(id)s
UNION ALL
SELECT state, NULL, exc_type, exc_message, traceback, retries, NULL, NULL, task_name
  FROM pgqueue.jobs
 WHERE id = %(id)s

-- name: get_results
-- get_result for many tasks at once (GroupResult), each with its id.
SELECT task_id::text, state, result, exc_type, exc_message, traceback, retries, date_done,
       time_taken, task_name
  FROM pgqueue.results
 WHERE task_id = ANY(%(ids)s::uuid[])
UNION ALL
SELECT id::text, state, NULL, exc_type, exc_message, traceback, retries, NULL, NULL,
       task_name
  FROM pgqueue.jobs
 WHERE id = ANY(%(ids)s::uuid[])

-- name: group_members
-- GroupResult.restore: a group's (or chord's) members in order.
-- A group found with no members gives one row of NULLs; an unknown id, none.
SELECT m.task_id::text, m.task_name
  FROM pgqueue.workflows AS w
  LEFT JOIN pgqueue.workflow_members AS m ON m.workflow_id = w.id
 WHERE w.id = %(id)s AND w.kind IN ('group', 'chord')
 ORDER BY m.position

-- name: forget_result
DELETE FROM pgqueue.results WHERE task_id = %(id)s

-- name: revoke
-- Queued, scheduled and claimed jobs end REVOKED; a running one only with terminate.
-- The worker holding a job hears of it on pgqueue_control (and kills it if terminating).
SELECT e.id, e.worker_id, e.state
  FROM pgqueue.end_jobs(
           ARRAY(SELECT j.id FROM pgqueue.jobs AS j
                  WHERE j.id = ANY(%(ids)s::uuid[])
                    AND (j.state <> 'STARTED' OR %(terminate)s)
                    FOR UPDATE),
           'REVOKED', 'pgqueue.exceptions.TaskRevokedError', 'revoked',
           %(keep_for)s::double precision) AS e
  LEFT JOIN LATERAL (
        SELECT pg_notify('pgqueue_control',
                         json_build_object('revoke', e.id, 'worker', e.worker_id,
                                           'terminate', %(terminate)s)::text)
         WHERE e.worker_id IS NOT NULL) AS n ON true

-- name: confirm_revoked
-- A revoke heard on pgqueue_control is only a hint (any role may NOTIFY): of the given jobs,
-- those the database shows revoked, no longer held by this worker.
SELECT r.task_id::text
  FROM pgqueue.results AS r
 WHERE r.task_id = ANY(%(ids)s::uuid[])
   AND r.state = 'REVOKED'
   AND NOT EXISTS (SELECT 1 FROM pgqueue.jobs AS j
                    WHERE j.id = r.task_id AND j.worker_id = %(worker_id)s)

-- name: maintenance_seed
-- The row of a service the schema lacks (0011 adds pgqueue's own): a runner's own service.
-- DO NOTHING: an existing row is left alone, and never waited on, whoever has it locked.
INSERT INTO pgqueue.maintenance (service)
SELECT unnest(%(services)s::text[])
    ON CONFLICT (service) DO NOTHING

-- name: maintenance_elect
-- Leader election for one pass of one housekeeping service (pgqueue.maintenance, 0011): the
-- row is won when its next_run_at has come, or its last pass started one of the caller's
-- own intervals ago (workers configured apart keep their interval), by the database's
-- clock, and nobody holds it; the winner sets next_run_at one interval ahead, so that one
-- process per interval does that service, however many run it. SKIP LOCKED: a pass under
-- way elsewhere (its transaction holds the row) is skipped, not waited on. In a transaction
-- the row stays locked until the pass commits or rolls back (a rollback undoes the
-- election: the next runner to look retries).
-- A pass outside a transaction (vacuum) is committed at once and marks the row with its
-- server process, running_pid, which keeps others off while that process lives.
-- Returns whether this process won and, either way, how many seconds until the next pass
-- is due (from the row as this statement found it).
WITH found AS (
    SELECT m.service,
           least(m.next_run_at,
                 m.last_started_at + make_interval(secs => %(interval)s)) AS due_at
      FROM pgqueue.maintenance AS m
     WHERE m.service = %(service)s
), due AS (
    SELECT m.service
      FROM pgqueue.maintenance AS m
     WHERE m.service = %(service)s
       AND (m.next_run_at <= now()
            OR m.last_started_at <= now() - make_interval(secs => %(interval)s))
       AND (m.running_pid IS NULL
            OR NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(m.running_pid)))
       FOR UPDATE SKIP LOCKED
), won AS (
    UPDATE pgqueue.maintenance AS m
       SET next_run_at = now() + make_interval(secs => %(interval)s),
           last_started_at = now(),
           last_worker = %(worker)s,
           running_pid = CASE WHEN %(transactional)s THEN NULL ELSE pg_backend_pid() END
      FROM due
     WHERE m.service = due.service
    RETURNING m.service
)
SELECT EXISTS (SELECT 1 FROM won) AS won,
       -- NULL: the service has no row (maintenance_seed adds it)
       (SELECT extract(epoch FROM greatest(f.due_at, now()) - now()) FROM found AS f)::float8
           AS due_in

-- name: maintenance_finished
-- The end of a pass this process won (in its transaction, or after a pass outside one):
-- a full batch (%(again)s) makes the service due again at once, for whoever looks first.
UPDATE pgqueue.maintenance
   SET last_finished_at = clock_timestamp(),
       last_error = NULL,
       last_error_at = NULL,
       running_pid = NULL,
       next_run_at = CASE WHEN %(again)s THEN now() ELSE next_run_at END
 WHERE service = %(service)s
   AND (running_pid IS NULL OR running_pid = pg_backend_pid())

-- name: maintenance_failed
-- Why a pass failed, after its transaction rolled back. Skipped when another process
-- holds the row (its pass is under way): the log line of this one still says it.
UPDATE pgqueue.maintenance AS m
   SET last_error = %(error)s, last_error_at = now(), running_pid = NULL
  FROM (SELECT service FROM pgqueue.maintenance
         WHERE service = %(service)s
           AND (running_pid IS NULL OR running_pid = pg_backend_pid())
           FOR UPDATE SKIP LOCKED) AS mine
 WHERE m.service = mine.service

-- name: rescue_jobs
-- Workers are lost when their heartbeat is older than the lease, or when their session
-- advisory lock, held by their claiming connection (workers.lock_pid), has been gone for
-- longer than their reconnect grace: a worker whose backends were terminated, or whose network blipped,
-- reconnects and keeps its jobs within that time. The first rescue to find a lock gone
-- notes when (lock_missing_since); a worker holding its lock again is cleared. Jobs of lost
-- workers go back to the queue; a started at-most-once job (acks_late false) is not
-- repeated: it ends FAILURE instead.
WITH status AS (
    SELECT w.id, w.lock_missing_since, w.reconnect_grace,
           w.heartbeat_at < now() - make_interval(secs => %(lost_timeout)s) AS stale,
           -- held by the worker's own claiming backend: a foreign session holding the
           -- key (any role may take it) keeps no one alive
           coalesce(pgqueue.worker_lock_holder(w.lock_key) = w.lock_pid, false) AS locked
      FROM pgqueue.workers AS w
), lost AS (
    DELETE FROM pgqueue.workers AS w
     USING status AS s
     WHERE w.id = s.id
       AND (s.stale
            OR (NOT s.locked
                AND (s.reconnect_grace <= 0
                     OR s.lock_missing_since
                        <= now() - make_interval(secs => s.reconnect_grace))))
    RETURNING w.id
), marked AS (
    -- never a row of `lost` (a statement may change each row once): not stale, and either
    -- locked with a mark to clear or unlocked for the first time with a grace to wait out
    UPDATE pgqueue.workers AS w
       SET lock_missing_since = CASE WHEN s.locked THEN NULL ELSE now() END
      FROM status AS s
     WHERE w.id = s.id AND NOT s.stale
       AND ((s.locked AND s.lock_missing_since IS NOT NULL)
            OR (NOT s.locked AND s.lock_missing_since IS NULL AND s.reconnect_grace > 0))
    RETURNING NOT s.locked AS missing
), orphaned AS (
    SELECT j.id, j.state, j.acks_late
      FROM pgqueue.jobs AS j
     WHERE j.worker_id IS NOT NULL
       AND (j.worker_id IN (SELECT id FROM lost)
            OR NOT EXISTS (SELECT 1 FROM pgqueue.workers AS w WHERE w.id = j.worker_id))
       FOR UPDATE OF j SKIP LOCKED
), requeued AS (
    UPDATE pgqueue.jobs AS j
       SET worker_id = NULL, claimed_at = NULL, started_at = NULL,
           state = CASE WHEN o.state = 'STARTED' THEN 'RETRY' ELSE j.state END,
           retries = j.retries + CASE WHEN o.state = 'STARTED' THEN 1 ELSE 0 END,
           exc_type = CASE WHEN o.state = 'STARTED'
                           THEN 'pgqueue.exceptions.WorkerLostError' ELSE j.exc_type END,
           exc_message = CASE WHEN o.state = 'STARTED'
                              THEN 'the worker running this job was lost' ELSE j.exc_message END
      FROM orphaned AS o
     WHERE j.id = o.id AND NOT (o.state = 'STARTED' AND o.acks_late IS FALSE)
    RETURNING j.id, j.queue
), failed AS (
    SELECT e.id
      FROM pgqueue.end_jobs(
               ARRAY(SELECT o.id FROM orphaned AS o
                      WHERE o.state = 'STARTED' AND o.acks_late IS FALSE),
               'FAILURE', 'pgqueue.exceptions.WorkerLostError',
               'the worker running this at-most-once (acks_late=False) job was lost',
               %(keep_for)s::double precision) AS e
), woken AS (
    SELECT pg_notify('pgqueue_jobs', q.queue) FROM (SELECT DISTINCT queue FROM requeued) AS q
), stale_slots AS (
    -- slots of lost workers and of listening connections that are gone
    DELETE FROM pgqueue.worker_slots
     WHERE ctid = ANY (ARRAY(
               SELECT s.ctid FROM pgqueue.worker_slots AS s
                WHERE s.worker_id IN (SELECT id FROM lost)
                   OR NOT EXISTS (SELECT 1 FROM pgqueue.workers AS w WHERE w.id = s.worker_id)
                   OR NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(s.listener_pid))
                  FOR UPDATE SKIP LOCKED))
), stale_channels AS (
    DELETE FROM pgqueue.worker_channels AS c
     WHERE c.worker_id IN (SELECT id FROM lost)
        OR NOT EXISTS (SELECT 1 FROM pgqueue.workers AS w WHERE w.id = c.worker_id)
        OR NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(c.listener_pid))
)
SELECT (SELECT count(*) FROM lost), (SELECT count(*) FROM requeued),
       (SELECT count(*) FROM failed), (SELECT count(*) FROM woken),
       (SELECT count(*) FROM marked WHERE missing)

-- name: expire_jobs
-- Unclaimed jobs past their expiry, whatever their task: REVOKED as "expired".
SELECT count(*)
  FROM pgqueue.end_jobs(
           ARRAY(SELECT j.id FROM pgqueue.jobs AS j
                  WHERE j.worker_id IS NULL AND j.expires_at < now()
                  ORDER BY j.expires_at
                  LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED),
           'REVOKED', 'pgqueue.exceptions.TaskRevokedError', 'expired',
           %(keep_for)s::double precision)

-- name: autovacuum_setting
-- Whether the server's autovacuum is on, and whether this role may vacuum pgqueue.jobs: only
-- its owner (or a member, or a superuser) may; for anyone else VACUUM warns and does nothing.
SELECT current_setting('autovacuum'), pg_has_role(c.relowner, 'USAGE')
  FROM pg_class AS c
 WHERE c.oid = 'pgqueue.jobs'::regclass

-- name: vacuum_jobs
VACUUM (SKIP_LOCKED, ANALYZE) pgqueue.jobs

-- name: delete_expired_results
DELETE FROM pgqueue.results
 WHERE task_id IN (SELECT task_id FROM pgqueue.results
                    WHERE expires_at < now()
                    ORDER BY expires_at
                    LIMIT %(limit)s)

-- name: delete_finished_workflows
-- Workflow rows (0007_workflows.sql) kept as long as results are (%(keep_for)s seconds
-- from their creation) and then until nothing of them is live: no member, nor a member of
-- the chain they are a step of, has a job, and no chord counter of theirs waits.
DELETE FROM pgqueue.workflows
 WHERE id IN (SELECT w.id
                FROM pgqueue.workflows AS w
               WHERE w.created_at < now() - make_interval(secs => %(keep_for)s)
                 AND NOT EXISTS (SELECT 1 FROM pgqueue.chords AS c
                                  WHERE c.id = w.id AND c.state = 'PENDING')
                 AND NOT EXISTS (SELECT 1
                                   FROM pgqueue.workflow_members AS m
                                   JOIN pgqueue.jobs AS j ON j.id = m.task_id
                                  WHERE m.workflow_id = w.id OR m.workflow_id = w.parent_id)
               ORDER BY w.created_at
               LIMIT %(limit)s)

-- name: schema_versions
-- Each applied migration and the oldest pgqueue it declared compatible (migration 0010 added
-- the column: read through to_jsonb so that a schema from before 0010 answers NULL instead
-- of failing, and the caller can say "run pgqueue migrate").
SELECT m.version, (to_jsonb(m) ->> 'compatible_from')::integer AS compatible_from
  FROM pgqueue.schema_migrations AS m
 ORDER BY m.version

-- name: retry_jobs
-- Back to the queue for another attempt (state RETRY), fenced like finish_jobs; with the
-- arguments retry(args=, kwargs=) gave for it, if any.
WITH r AS (
    SELECT *
      FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[], %(countdowns)s::double precision[],
                  %(etas)s::timestamptz[], %(exc_types)s::text[], %(exc_messages)s::text[],
                  %(tracebacks)s::text[], %(increments)s::integer[], %(args)s::jsonb[],
                  %(kwargs)s::jsonb[])
           AS r(id, attempt, countdown, eta, exc_type, exc_message, traceback, increment,
                args, kwargs)
), retried AS (
    UPDATE pgqueue.jobs AS j
       SET state = 'RETRY', worker_id = NULL, claimed_at = NULL, started_at = NULL,
           retries = j.retries + r.increment,
           run_at = coalesce(r.eta, statement_timestamp()
                                    + make_interval(secs => coalesce(r.countdown, 0))),
           exc_type = r.exc_type, exc_message = r.exc_message, traceback = r.traceback,
           -- NULL: the next attempt keeps the arguments (retry() gave no new ones)
           args = coalesce(r.args, j.args), kwargs = coalesce(r.kwargs, j.kwargs)
      FROM r
     WHERE j.id = r.id AND j.attempt = r.attempt AND j.worker_id = %(worker_id)s
    RETURNING j.id, j.queue
)
SELECT retried.id, pg_notify('pgqueue_jobs', retried.queue) FROM retried

-- ---- beat ----
-- pgqueue/beat/ticks.py: periodic tasks from pgqueue.periodic_tasks. Each tick is sent in the
-- transaction that locks its entry (beat_claim_due) and advances it (beat_advance).

-- name: beat_listen
LISTEN pgqueue_beat

-- name: beat_claim_due
-- The next due entry no other beat holds. If another beat advanced it since this
-- statement's snapshot, Postgres re-checks the row after waiting for its lock, finds it
-- no longer due and leaves it out: a tick is never sent twice. %(now)s stands in for the
-- database clock only when a test replays a given time; normally it is NULL.
SELECT name, task_name, cron, day_or, interval_seconds, timezone, start_at, end_at, args,
       kwargs, queue, priority, expires, options, catch_up, tick_kwarg, enabled,
       declared_in_code, next_run_at, last_run_at, total_run_count,
       coalesce(%(now)s::timestamptz, now()) AS db_now
  FROM pgqueue.periodic_tasks
 WHERE enabled
   AND (next_run_at IS NULL OR next_run_at <= coalesce(%(now)s::timestamptz, now()))
   AND name <> ALL(%(skip)s::text[])
 ORDER BY next_run_at NULLS FIRST, name
 LIMIT 1
   FOR UPDATE SKIP LOCKED

-- name: beat_advance
-- %(finished)s: the entry has no tick left (past its end_at, a one-off that ran): disabled.
UPDATE pgqueue.periodic_tasks
   SET next_run_at = %(next_run_at)s::timestamptz,
       last_run_at = coalesce(%(last_run_at)s::timestamptz, last_run_at),
       total_run_count = total_run_count + %(sent)s::integer,
       enabled = enabled AND NOT %(finished)s::boolean
 WHERE name = %(name)s

-- name: beat_next_wakeup
-- Seconds until the earliest enabled entry is due (at most 0: now; NULL: none enabled).
SELECT extract(epoch FROM min(coalesce(next_run_at, now())) - now())::double precision
  FROM pgqueue.periodic_tasks
 WHERE enabled AND name <> ALL(%(skip)s::text[])

-- name: beat_sync_entry
-- Upsert an entry declared in code. Rows whose definition is unchanged are not written,
-- so their next_run_at stands; a changed schedule is reset by the reschedule trigger.
-- An operator's disable survives restarts; an entry returning to the code is enabled.
INSERT INTO pgqueue.periodic_tasks AS p
       (name, task_name, cron, day_or, interval_seconds, timezone, start_at, end_at, args,
        kwargs, queue, priority, expires, options, catch_up, tick_kwarg, declared_in_code)
VALUES (%(name)s, %(task_name)s, %(cron)s, %(day_or)s, %(interval_seconds)s, %(timezone)s,
        %(start_at)s, %(end_at)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(queue)s,
        %(priority)s, %(expires)s, %(options)s::jsonb, %(catch_up)s, %(tick_kwarg)s, true)
ON CONFLICT (name) DO UPDATE
   SET task_name = excluded.task_name, cron = excluded.cron, day_or = excluded.day_or,
       interval_seconds = excluded.interval_seconds, timezone = excluded.timezone,
       start_at = excluded.start_at, end_at = excluded.end_at,
       args = excluded.args, kwargs = excluded.kwargs, queue = excluded.queue,
       priority = excluded.priority, expires = excluded.expires, options = excluded.options,
       catch_up = excluded.catch_up, tick_kwarg = excluded.tick_kwarg,
       enabled = p.enabled OR NOT p.declared_in_code,
       declared_in_code = true
 WHERE NOT p.declared_in_code
    OR (p.task_name, p.cron, p.day_or, p.interval_seconds, p.timezone, p.start_at, p.end_at,
        p.args, p.kwargs, p.queue, p.priority, p.expires, p.options, p.catch_up,
        p.tick_kwarg)
       IS DISTINCT FROM
       (excluded.task_name, excluded.cron, excluded.day_or, excluded.interval_seconds,
        excluded.timezone, excluded.start_at, excluded.end_at, excluded.args,
        excluded.kwargs, excluded.queue, excluded.priority, excluded.expires,
        excluded.options, excluded.catch_up, excluded.tick_kwarg)

-- name: beat_disable_undeclared
-- Entries the code declared before but no longer does: disabled, kept for their history.
UPDATE pgqueue.periodic_tasks
   SET enabled = false, declared_in_code = false
 WHERE declared_in_code AND name <> ALL(%(names)s::text[])
RETURNING name

-- name: beat_list
SELECT name, task_name, cron, day_or, interval_seconds, timezone, start_at, end_at, args,
       kwargs, queue, priority, expires, options, catch_up, tick_kwarg, enabled,
       declared_in_code, next_run_at, last_run_at, total_run_count
  FROM pgqueue.periodic_tasks
 ORDER BY name

-- name: beat_add
INSERT INTO pgqueue.periodic_tasks
       (name, task_name, cron, day_or, interval_seconds, timezone, start_at, end_at, args,
        kwargs, queue, priority, expires, options, catch_up, tick_kwarg, enabled)
VALUES (%(name)s, %(task_name)s, %(cron)s, %(day_or)s, %(interval_seconds)s, %(timezone)s,
        %(start_at)s, %(end_at)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(queue)s,
        %(priority)s, %(expires)s, %(options)s::jsonb, %(catch_up)s, %(tick_kwarg)s,
        %(enabled)s)
ON CONFLICT (name) DO NOTHING
RETURNING name

-- name: beat_remove
DELETE FROM pgqueue.periodic_tasks WHERE name = %(name)s RETURNING declared_in_code

-- name: beat_set_enabled
UPDATE pgqueue.periodic_tasks SET enabled = %(enabled)s WHERE name = %(name)s RETURNING name

-- name: beat_lock_entry
-- One entry, locked (waiting for a beat sending its tick), for `pgqueue beat run`.
SELECT name, task_name, cron, day_or, interval_seconds, timezone, start_at, end_at, args,
       kwargs, queue, priority, expires, options, catch_up, tick_kwarg, enabled,
       declared_in_code, next_run_at, last_run_at, total_run_count, now() AS db_now
  FROM pgqueue.periodic_tasks
 WHERE name = %(name)s
   FOR UPDATE

-- ---- operations ----
-- pgqueue/ops.py: what `pgqueue status/jobs/inspect/purge/retry/workers` and the worker's
-- metrics read and do. The views are in sql/migrations/0003_ops.sql. The bulk statements
-- (purge, retry) act on one batch each, so a million rows are many short transactions.

-- name: ops_queue_stats
SELECT queue, ready, scheduled, retrying, reserved, running, failed_last_hour,
       succeeded_last_hour, extract(epoch FROM lag)::double precision AS lag, unregistered,
       workers
  FROM pgqueue.queue_stats

-- name: ops_sampled_queue_stats
-- queue_stats as of at most %(max_age)s seconds ago, computed by one caller for all
-- (see pgqueue.sampled_queue_stats in migration 0004).
SELECT queue, ready, scheduled, retrying, reserved, running, failed_last_hour,
       succeeded_last_hour, extract(epoch FROM lag)::double precision AS lag, unregistered,
       workers
  FROM pgqueue.sampled_queue_stats(%(max_age)s)

-- name: ops_unserved_tasks
-- Unclaimed jobs by queue and task, for each task no live worker consuming the queue has
-- registered: nobody runs them until such a worker starts (queue_stats.unregistered, by
-- task). Grouped before the check, which then runs once per (queue, task).
WITH live AS MATERIALIZED (
    SELECT w.queues, w.tasks FROM pgqueue.worker_status AS w WHERE w.alive
)
SELECT t.queue, t.task_name, t.jobs
  FROM (SELECT j.queue, j.task_name, count(*) AS jobs
          FROM pgqueue.jobs AS j
         WHERE j.worker_id IS NULL
         GROUP BY j.queue, j.task_name) AS t
 WHERE NOT EXISTS (SELECT 1 FROM live AS w
                    WHERE t.queue = ANY(w.queues) AND t.task_name = ANY(w.tasks))
 ORDER BY t.queue, t.task_name

-- name: unserved_tasks_sample
-- ops_unserved_tasks for maintenance, bounded: only among up to %(limit)s ready unclaimed
-- jobs (whichever the scan meets first), so that its cost does not grow with the queue.
WITH live AS MATERIALIZED (
    SELECT w.queues, w.tasks FROM pgqueue.worker_status AS w WHERE w.alive
), sample AS (
    SELECT j.queue, j.task_name
      FROM pgqueue.jobs AS j
     WHERE j.worker_id IS NULL AND j.run_at <= now()
     LIMIT %(limit)s
)
SELECT s.queue, s.task_name, count(*) AS jobs
  FROM sample AS s
 WHERE NOT EXISTS (SELECT 1 FROM live AS w
                    WHERE s.queue = ANY(w.queues) AND s.task_name = ANY(w.tasks))
 GROUP BY s.queue, s.task_name
 ORDER BY s.queue, s.task_name

-- name: ops_worker_status
SELECT id, name, hostname, pid, queues, pool, concurrency, started_at, heartbeat_at, alive,
       jobs_done, running, tasks
  FROM pgqueue.worker_status

-- name: ops_list_jobs
-- Live jobs, next due first. %(queue)s and %(task)s NULL: any.
SELECT j.id, j.task_name, j.queue, j.state, j.priority, j.retries, j.run_at, j.started_at,
       NULL::timestamptz AS date_done, w.name AS worker, j.exc_type, j.exc_message
  FROM pgqueue.jobs AS j
  LEFT JOIN pgqueue.workers AS w ON w.id = j.worker_id
 WHERE j.state = ANY(%(states)s::text[])
   AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
   AND (%(task)s::text IS NULL OR j.task_name = %(task)s::text)
 ORDER BY j.run_at, j.seq
 LIMIT %(limit)s

-- name: ops_list_results
-- Finished jobs, newest first: each state's newest entries of results_state_done_idx, so a
-- long history is not sorted.
SELECT f.*
  FROM unnest(%(states)s::text[]) AS s(state),
       LATERAL (
           SELECT r.task_id AS id, r.task_name, r.queue, r.state, NULL::integer AS priority,
                  r.retries, NULL::timestamptz AS run_at, r.date_started AS started_at,
                  r.date_done, r.worker, r.exc_type, r.exc_message
             FROM pgqueue.results AS r
            WHERE r.state = s.state
              AND (%(queue)s::text IS NULL OR r.queue = %(queue)s::text)
              AND (%(task)s::text IS NULL OR r.task_name = %(task)s::text)
            ORDER BY r.date_done DESC
            LIMIT %(limit)s
       ) AS f
 ORDER BY f.date_done DESC
 LIMIT %(limit)s

-- name: ops_inspect_job
SELECT j.id, j.task_name, j.queue, j.state, j.args, j.kwargs, j.priority, j.enqueued_at,
       j.run_at, j.expires_at, j.retries, j.max_retries, j.time_limit, j.soft_time_limit,
       j.options, j.worker_id, w.name AS worker, w.hostname, w.pid, j.claimed_at, j.started_at,
       j.attempt, j.acks_late, j.exc_type, j.exc_message, j.traceback
  FROM pgqueue.jobs AS j
  LEFT JOIN pgqueue.workers AS w ON w.id = j.worker_id
 WHERE j.id = %(id)s

-- name: ops_inspect_result
SELECT task_id AS id, task_name, queue, state, result, args, kwargs, retries, worker,
       date_started, date_done, time_taken, expires_at, exc_type, exc_message, traceback
  FROM pgqueue.results
 WHERE task_id = %(id)s

-- name: ops_workflows
-- `pgqueue inspect ID`: the workflows ID is (a chain's, group's or chord's id), is a member
-- of, or is the callback of, with the chains they are steps of; each member in order with
-- where it stands (pgqueue.workflow_status).
WITH RECURSIVE found AS (
    SELECT w.id FROM pgqueue.workflows AS w WHERE w.id = %(id)s
    UNION
    SELECT m.workflow_id FROM pgqueue.workflow_members AS m WHERE m.task_id = %(id)s
    UNION
    SELECT c.id FROM pgqueue.chords AS c WHERE c.callback_id = %(id)s
), outer_flows AS (
    SELECT id FROM found
    UNION
    SELECT w.parent_id FROM pgqueue.workflows AS w JOIN outer_flows AS o ON w.id = o.id
     WHERE w.parent_id IS NOT NULL
)
SELECT s.workflow_id::text, s.kind, s.parent_id::text, s.created_at, s.position,
       s.task_id::text, s.task_name, s.state, s.counted_at, s.exc_type, s.exc_message,
       s.chord_size, s.chord_remaining, s.chord_state, s.chord_callback_id::text,
       s.chord_failed_member::text
  FROM pgqueue.workflow_status AS s
 WHERE s.workflow_id IN (SELECT id FROM outer_flows)
 ORDER BY s.created_at, s.workflow_id, s.position

-- name: ops_job_states
SELECT id, state FROM pgqueue.jobs WHERE id = ANY(%(ids)s::uuid[])
UNION ALL
SELECT task_id, state FROM pgqueue.results WHERE task_id = ANY(%(ids)s::uuid[])

-- name: ops_count_purgeable
SELECT count(*)
  FROM pgqueue.jobs
 WHERE worker_id IS NULL
   AND state = ANY(%(states)s::text[])
   AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
   AND (%(task)s::text IS NULL OR task_name = %(task)s::text)

-- name: ops_purge_jobs
-- One batch of unclaimed jobs (a claimed or running job belongs to its worker). Rows a worker
-- is claiming at this moment are skipped, not waited for: they are no longer unclaimed.
DELETE FROM pgqueue.jobs
 WHERE id IN (SELECT id
                FROM pgqueue.jobs
               WHERE worker_id IS NULL
                 AND state = ANY(%(states)s::text[])
                 AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
                 AND (%(task)s::text IS NULL OR task_name = %(task)s::text)
               LIMIT %(limit)s
                 FOR UPDATE SKIP LOCKED)

-- name: ops_now
-- The database's clock: a bulk retry stops at the results written before it started, so
-- jobs it requeued that fail again are not taken again.
SELECT now()

-- name: ops_count_retryable
SELECT count(*)
  FROM pgqueue.results AS r
 WHERE r.state = %(state)s::text
   AND (%(ids)s::uuid[] IS NULL OR r.task_id = ANY(%(ids)s::uuid[]))
   AND (%(queue)s::text IS NULL OR r.queue = %(queue)s::text)
   AND (%(task)s::text IS NULL OR r.task_name = %(task)s::text)
   AND (%(since)s::timestamptz IS NULL OR r.date_done >= %(since)s::timestamptz)
   AND (r.workflow IS NULL AND r.state <> 'REVOKED'
        OR pgqueue.workflow_retry_refusal(r.state, r.exc_type, r.exc_message, r.workflow)
           IS NULL)

-- name: ops_retry_refusals
-- Why each of these stored results, a workflow's job, cannot be retried (see
-- 0012_workflow_retry.sql); those that can are not listed.
SELECT r.task_id, pgqueue.workflow_retry_refusal(r.state, r.exc_type, r.exc_message, r.workflow)
  FROM pgqueue.results AS r
 WHERE r.task_id = ANY(%(ids)s::uuid[])
   AND pgqueue.workflow_retry_refusal(r.state, r.exc_type, r.exc_message, r.workflow)
       IS NOT NULL

-- name: ops_retry_results
-- One batch: results of the given state become queued jobs again under the same id (so
-- AsyncResult(id) follows the new run), in one statement: the result row is deleted and the
-- job inserted together. Priority, limits and per-call options of the first call are not
-- kept by results: the new job has priority 0, the task's own limits and a fresh retry
-- budget. An id that has a live job again (re-sent with the same task_id) is left alone.
-- A workflow's job keeps its workflow, and what its end wrote in its wake goes in the same
-- statement (see 0012_workflow_retry.sql): the REVOKED "not run" rows of the jobs that
-- follow it, so that its success enqueues them as a first success would have, and its
-- link_error targets' results, so that a new failure runs them again. A job whose retry
-- would not carry its workflow on exactly once is not taken (ops_retry_refusals says why).
-- Two retries of one id at once: the second skips the row the first locked, or finds the
-- job the first committed.
WITH picked AS (
    SELECT r.task_id
      FROM pgqueue.results AS r
     WHERE r.state = %(state)s::text
       AND (%(ids)s::uuid[] IS NULL OR r.task_id = ANY(%(ids)s::uuid[]))
       AND (%(queue)s::text IS NULL OR r.queue = %(queue)s::text)
       AND (%(task)s::text IS NULL OR r.task_name = %(task)s::text)
       AND (%(since)s::timestamptz IS NULL OR r.date_done >= %(since)s::timestamptz)
       AND r.date_done <= %(until)s::timestamptz
       AND NOT EXISTS (SELECT 1 FROM pgqueue.jobs AS j WHERE j.id = r.task_id)
       -- a plain job's failure needs no look (a step that never ran may have no workflow
       -- of its own, but is REVOKED)
       AND (r.workflow IS NULL AND r.state <> 'REVOKED'
            OR pgqueue.workflow_retry_refusal(r.state, r.exc_type, r.exc_message, r.workflow)
               IS NULL)
     ORDER BY r.date_done
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM pgqueue.results AS r
     USING picked AS p
     WHERE r.task_id = p.task_id
    RETURNING r.task_id, r.task_name, r.queue, r.args, r.kwargs, r.workflow
), undone AS (
    DELETE FROM pgqueue.results AS r
     USING gone AS g, pgqueue.workflow_followers(g.workflow) AS f
     WHERE g.workflow IS NOT NULL
       AND r.task_id = f.task_id
       AND (f.errback OR pgqueue.workflow_never_ran(r.state, r.exc_type, r.exc_message))
)
INSERT INTO pgqueue.jobs (id, task_name, queue, args, kwargs, options)
SELECT g.task_id, g.task_name, g.queue, coalesce(g.args, '[]'), coalesce(g.kwargs, '{}'),
       -- as plan.document writes a workflow's job: its result is always stored
       CASE WHEN g.workflow IS NULL THEN '{}'
            ELSE jsonb_build_object('workflow', g.workflow, 'ignore_result', false) END
  FROM gone AS g
RETURNING id

-- ---- queue controls ----
-- pgqueue/queue_controls.py: pause, resume and limit queues (the functions are in migration
-- 0008).

-- name: queue_pause
SELECT pgqueue.pause_queue(%(name)s)

-- name: queue_resume
SELECT pgqueue.resume_queue(%(name)s)

-- name: queue_limit
SELECT pgqueue.set_queue_limits(%(name)s, %(concurrency_limit)s, %(rate_limit)s)

-- name: queue_list
-- Every queue that is paused, was paused or limited once, or holds live jobs, results of
-- the last hour or a live worker (pgqueue.queue_stats), by name.
SELECT coalesce(q.name, s.queue) AS name, coalesce(q.paused, false) AS paused,
       q.changed_at, q.changed_by, q.concurrency_limit, q.rate_limit,
       coalesce(s.ready, 0) AS ready,
       coalesce(s.running, 0) AS running, coalesce(s.workers, 0) AS workers
  FROM pgqueue.queues AS q
  FULL JOIN pgqueue.queue_stats AS s ON s.queue = q.name
 ORDER BY 1

-- name: queue_paused
SELECT name FROM pgqueue.queues WHERE paused ORDER BY name

-- name: queue_pause_states
-- Each queue ever paused, and whether it is now (for the metrics).
SELECT name, paused FROM pgqueue.queues

-- name: ops_statement_timeout
SELECT set_config('statement_timeout', %(ms)s::text, false)

-- ---- set-up and listening ----
-- pgqueue/migrate.py, pgqueue/db.py, and the LISTENs of worker.py and result.py. Channel
-- names are fixed: the triggers and statements above notify on exactly these.

-- name: migrate_lock
-- Held to the end of the migrating transaction: a second process waits here, then finds
-- every file recorded and applies none. The wait is cut every few seconds (migrate_lock_wait)
-- to say who holds the lock, then taken up again.
SELECT pg_advisory_xact_lock(%(key)s)

-- name: migrate_lock_wait
-- How long one wait for the migration lock lasts before it says who holds it; the setting
-- it replaces, for migrate_lock_restore once the lock is held.
SELECT current_setting('lock_timeout'), set_config('lock_timeout', %(timeout)s, true)

-- name: migrate_lock_restore
SELECT set_config('lock_timeout', %(setting)s, true)

-- name: migrate_lock_holder
-- Who holds the migration lock (any role may take any advisory key: a session can hold it
-- by mistake, or on purpose).
SELECT l.pid, a.usename, a.application_name, a.xact_start
  FROM pg_locks AS l
  LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted
   AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
   AND l.classid = (%(key)s::bigint >> 32)::oid
   AND l.objid = (%(key)s::bigint & 4294967295)::oid
   AND l.objsubid = 1
 LIMIT 1

-- name: migrate_schema_exists
SELECT to_regnamespace('pgqueue') IS NOT NULL

-- name: migrate_create_schema
-- Only when missing: even with IF NOT EXISTS, CREATE SCHEMA asks for CREATE on the database,
-- which the owner role of sql/roles.sql does not have.
CREATE SCHEMA IF NOT EXISTS pgqueue

-- name: migrate_as_schema_owner
-- Migrations run as the role owning the schema (pgqueue_owner where sql/roles.sql was
-- applied) when the caller is a member of it or a superuser: what they create is the
-- owner's too, SECURITY DEFINER functions run with its rights, and it may grant on all of it.
-- Only where that role owns everything in the schema, as sql/roles.sql leaves it: in a
-- schema of mixed ownership it could not alter the rest, and the caller migrates as before.
SELECT set_config('role', r.rolname, true)
  FROM pg_namespace AS n JOIN pg_roles AS r ON r.oid = n.nspowner
 WHERE n.nspname = 'pgqueue'
   AND r.rolname <> current_user
   AND pg_has_role(r.oid, 'MEMBER')
   AND NOT EXISTS (SELECT FROM pg_class AS c
                    WHERE c.relnamespace = n.oid AND c.relowner <> n.nspowner)
   AND NOT EXISTS (SELECT FROM pg_proc AS p
                    WHERE p.pronamespace = n.oid AND p.proowner <> n.nspowner)

-- name: roles_set_prefix
-- The prefix of the role names sql/roles.sql uses, for this transaction.
SELECT set_config('pgqueue.role_prefix', %(prefix)s, true)

-- name: migrate_create_versions
CREATE TABLE IF NOT EXISTS pgqueue.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: migrate_record_version
INSERT INTO pgqueue.schema_migrations (version, name) VALUES (%(version)s, %(name)s)

-- name: migrate_record_compatible_version
-- For a file that declares which older pgqueue keeps working (from 0010 on, which adds the
-- column: the files before it run before the column exists).
INSERT INTO pgqueue.schema_migrations (version, name, compatible_from)
VALUES (%(version)s, %(name)s, %(compatible_from)s)

-- name: schema_exists
SELECT to_regclass('pgqueue.schema_migrations') IS NOT NULL

-- name: database_exists
SELECT 1 FROM pg_database WHERE datname = %(name)s

-- name: create_database
-- {name} is filled in with psycopg.sql.Identifier: CREATE DATABASE takes no parameters.
CREATE DATABASE {name}

-- name: worker_listen_jobs
LISTEN pgqueue_jobs

-- name: worker_listen_control
LISTEN pgqueue_control

-- name: worker_listen_handoff
-- {channel} is filled in with psycopg.sql.Identifier: the worker's own channel.
LISTEN {channel}

-- name: results_listen
LISTEN pgqueue_results

-- name: server_pid
-- The server process running this statement: not the backend pid the connection was given
-- when a pooler (PgBouncer) sits in between (pgqueue/pooler.py).
SELECT pg_backend_pid()

-- name: outcome_settings
-- First in each outcome write on a connection through a pooler, which cannot keep the
-- session-level set_synchronous_commit: the worker's setting for this transaction only.
SELECT set_config('synchronous_commit', %(synchronous_commit)s, true)

-- name: terminate_backend
-- A worker reconnecting ends its previous session, which may still hold its liveness lock.
SELECT pg_terminate_backend(%(pid)s)

-- ---- the worker's clock ----
-- Times are compared on the database's clock, never the worker's: they may drift apart.

-- name: next_run_delay
-- Seconds from the database's now until the earliest job this worker could run becomes
-- due (negative if already due; NULL if none); drives the idle sleep. Sent right after
-- each claim, in its transaction, so the jobs just claimed do not count. The earliest job
-- of each (queue, priority) level is the first index entry of that level. Infinities
-- (written by hand) cannot be subtracted: '-infinity' is due, 'infinity' never is.
-- The worker's limited tasks (`limited`) count only with jobs not yet due: a due one held
-- back by its limit would make the worker look again at once, in a loop (claim_limited
-- says when a limit lets one start); one with an ETA wakes the worker when it comes due.
-- Also whether any of these queues has limits: their jobs are claimed by claim_limited.
SELECT CASE WHEN isfinite(min(f.run_at))
            THEN extract(epoch FROM min(f.run_at) - now())::double precision
            WHEN min(f.run_at) < now() THEN 0.0 END,
       EXISTS (SELECT 1 FROM pgqueue.queues AS q
                WHERE q.name = ANY(%(queues)s::text[])
                  AND (q.concurrency_limit IS NOT NULL OR q.rate_limit IS NOT NULL))
  FROM pgqueue.queue_levels(%(queues)s::text[]) AS l,
       LATERAL ((SELECT j.run_at FROM pgqueue.jobs AS j
                  WHERE j.worker_id IS NULL AND j.queue = l.queue
                    AND j.priority = l.priority
                    AND j.task_name = ANY(%(tasks)s::text[])
                  ORDER BY j.run_at LIMIT 1)
                UNION ALL
                (SELECT j.run_at FROM pgqueue.jobs AS j
                  WHERE cardinality(%(limited)s::text[]) > 0
                    AND j.worker_id IS NULL AND j.queue = l.queue
                    AND j.priority = l.priority AND j.run_at > now()
                    AND j.task_name = ANY(%(limited)s::text[])
                  ORDER BY j.run_at LIMIT 1)) AS f

-- ---- the demo ----
-- pgqueue/demo.py's look at pgqueue's own tables. (Its demo_orders table stands in for the
-- application's, and keeps its SQL inline, like the examples/.)

-- name: demo_now
SELECT now()

-- name: demo_jobs_left
SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%(ids)s::uuid[])

-- name: demo_has_job
SELECT 1 FROM pgqueue.jobs WHERE id = %(id)s

-- name: demo_ticks_since
SELECT count(*)
  FROM pgqueue.results
 WHERE task_name = 'demo.tick' AND state = 'SUCCESS' AND date_done >= %(since)s

-- ---- the dashboard ----
-- pgqueue/dashboard/data.py: what `pgqueue dashboard` reads beyond pgqueue/ops.py. Reads
-- only, bar what ops.py and beat do for its actions; each statement runs with its
-- parameters bound (prepare=False), so that a filter left out (NULL) is planned away.

-- name: dashboard_list_jobs
-- One page of jobs, newest first by (at, id), after the keyset cursor (%(after_at)s,
-- %(after_id)s): at is when a live job was enqueued, or when a finished one finished. Live
-- jobs are the working set (one scan of pgqueue.jobs); finished ones, however many, come
-- from each state's newest entries of results_state_done_idx, so a page costs the same on
-- the first page as on the thousandth and no OFFSET is ever skipped over. Text is looked
-- for in the arguments as JSON, never in those of the tasks %(hidden)s names (LIKE
-- patterns): their arguments are not shown, so they must not be found either.
WITH live AS (
    SELECT j.id, j.task_name, j.queue, j.state, j.enqueued_at AS at, j.run_at, j.retries,
           w.name AS worker, j.exc_type, j.exc_message
      FROM pgqueue.jobs AS j
      LEFT JOIN pgqueue.workers AS w ON w.id = j.worker_id
     WHERE j.state = ANY(%(live_states)s::text[])
       AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
       AND (%(task)s::text IS NULL OR j.task_name = %(task)s::text)
       AND (%(since)s::timestamptz IS NULL OR j.enqueued_at >= %(since)s::timestamptz)
       AND (%(until)s::timestamptz IS NULL OR j.enqueued_at < %(until)s::timestamptz)
       AND (%(text)s::text IS NULL
            OR (strpos(lower(j.args::text || ' ' || j.kwargs::text), lower(%(text)s::text)) > 0
                AND NOT j.task_name LIKE ANY(%(hidden)s::text[])))
       AND (%(after_at)s::timestamptz IS NULL
            OR (j.enqueued_at, j.id) < (%(after_at)s::timestamptz, %(after_id)s::uuid))
     ORDER BY j.enqueued_at DESC, j.id DESC
     LIMIT %(limit)s
), done AS (
    SELECT f.*
      FROM unnest(%(done_states)s::text[]) AS s(state),
           LATERAL (
               SELECT r.task_id AS id, r.task_name, r.queue, r.state, r.date_done AS at,
                      NULL::timestamptz AS run_at, r.retries, r.worker, r.exc_type,
                      r.exc_message
                 FROM pgqueue.results AS r
                WHERE r.state = s.state
                  AND (%(queue)s::text IS NULL OR r.queue = %(queue)s::text)
                  AND (%(task)s::text IS NULL OR r.task_name = %(task)s::text)
                  AND (%(since)s::timestamptz IS NULL OR r.date_done >= %(since)s::timestamptz)
                  AND (%(until)s::timestamptz IS NULL OR r.date_done < %(until)s::timestamptz)
                  AND (%(text)s::text IS NULL
                       OR (strpos(lower(coalesce(r.args::text, '') || ' '
                                        || coalesce(r.kwargs::text, '')),
                                  lower(%(text)s::text)) > 0
                           AND NOT r.task_name LIKE ANY(%(hidden)s::text[])))
                  -- the first condition bounds the index range, the second breaks ties
                  AND (%(after_at)s::timestamptz IS NULL
                       OR r.date_done <= %(after_at)s::timestamptz)
                  AND (%(after_at)s::timestamptz IS NULL
                       OR (r.date_done, r.task_id) < (%(after_at)s::timestamptz,
                                                      %(after_id)s::uuid))
                ORDER BY r.date_done DESC, r.task_id DESC
                LIMIT %(limit)s
           ) AS f
)
SELECT u.id, u.task_name, u.queue, u.state, u.at, u.run_at, u.retries, u.worker, u.exc_type,
       u.exc_message
  FROM (SELECT * FROM live UNION ALL SELECT * FROM done) AS u
 ORDER BY u.at DESC, u.id DESC
 LIMIT %(limit)s

-- name: dashboard_throughput
-- Successes and failures per minute over the last hour (60 minutes, the current one
-- last): one range of the (state, date_done) index, counted, then spread over the minutes;
-- %(queue)s NULL: every queue.
WITH done AS (
    SELECT date_trunc('minute', r.date_done) AS minute,
           count(*) FILTER (WHERE r.state = 'SUCCESS') AS succeeded,
           count(*) FILTER (WHERE r.state = 'FAILURE') AS failed
      FROM pgqueue.results AS r
     WHERE r.state IN ('SUCCESS', 'FAILURE')
       AND r.date_done >= date_trunc('minute', now()) - interval '59 minutes'
       AND (%(queue)s::text IS NULL OR r.queue = %(queue)s::text)
     GROUP BY 1
)
SELECT m.minute, coalesce(d.succeeded, 0) AS succeeded, coalesce(d.failed, 0) AS failed
  FROM generate_series(date_trunc('minute', now()) - interval '59 minutes',
                       date_trunc('minute', now()), interval '1 minute') AS m(minute)
  LEFT JOIN done AS d USING (minute)
 ORDER BY m.minute
