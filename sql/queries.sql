-- Every statement pgqueue runs, each under a name; pgqueue/queries.py loads them.
-- Parameters use the %(name)s style so the enqueue statements also run through
-- other DB-API drivers (psycopg2, Django's cursor) inside the caller's transaction.

-- name: enqueue
SELECT pgqueue.enqueue(
    task_name       => %(task_name)s::text,
    args            => %(args)s::jsonb,
    kwargs          => %(kwargs)s::jsonb,
    queue           => %(queue)s::text,
    priority        => %(priority)s::integer,
    run_at          => %(run_at)s::timestamptz,
    countdown       => %(countdown)s::double precision,
    expires_at      => %(expires_at)s::timestamptz,
    expires_in      => %(expires_in)s::double precision,
    max_retries     => %(max_retries)s::integer,
    time_limit      => %(time_limit)s::double precision,
    soft_time_limit => %(soft_time_limit)s::double precision,
    options         => %(options)s::jsonb,
    id              => %(id)s::uuid
)

-- name: enqueue_many
-- One statement for a whole batch: the jobs travel as one JSON array.
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

-- name: claim_jobs
-- Take up to %(limit)s ready jobs this worker can run. SKIP LOCKED lets any number
-- of workers claim side by side without waiting on each other's rows.
WITH next AS (
    SELECT id
      FROM pgqueue.jobs
     WHERE worker_id IS NULL
       AND queue = ANY(%(queues)s::text[])
       AND run_at <= now()
       AND task_name = ANY(%(tasks)s::text[])
     ORDER BY priority DESC, run_at, seq
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE pgqueue.jobs AS j
   SET worker_id = %(worker_id)s, claimed_at = now(), attempt = j.attempt + 1
  FROM next
 WHERE j.id = next.id
RETURNING j.id, j.seq, j.task_name, j.queue, j.args, j.kwargs, j.priority, j.run_at,
          j.expires_at, (j.expires_at IS NOT NULL AND j.expires_at <= now()) AS expired,
          j.retries, j.max_retries, j.time_limit, j.soft_time_limit, j.options, j.attempt

-- name: next_run_at
-- When the earliest job this worker could run becomes due; drives the idle sleep.
SELECT min(run_at)
  FROM pgqueue.jobs
 WHERE worker_id IS NULL
   AND queue = ANY(%(queues)s::text[])
   AND task_name = ANY(%(tasks)s::text[])

-- name: mark_started
UPDATE pgqueue.jobs AS j
   SET state = 'STARTED', started_at = now()
  FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[]) AS s(id, attempt)
 WHERE j.id = s.id AND j.attempt = s.attempt AND j.worker_id = %(worker_id)s

-- name: finish_jobs
-- Write outcomes and remove the jobs in one statement. The (id, attempt, worker_id)
-- match is the fence: a worker whose claim was handed to someone else writes nothing.
WITH outcome AS (
    SELECT *
      FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[], %(states)s::text[],
                  %(results)s::jsonb[], %(exc_types)s::text[], %(exc_messages)s::text[],
                  %(tracebacks)s::text[], %(times)s::double precision[], %(store)s::boolean[])
           AS o(id, attempt, state, result, exc_type, exc_message, traceback, time_taken, store)
), done AS (
    DELETE FROM pgqueue.jobs AS j
     USING outcome AS o
     WHERE j.id = o.id AND j.attempt = o.attempt AND j.worker_id = %(worker_id)s
    RETURNING j.id, j.task_name, j.queue, j.retries, j.args, j.kwargs, j.started_at
), stored AS (
    INSERT INTO pgqueue.results AS r
           (task_id, task_name, queue, state, result, exc_type, exc_message, traceback,
            retries, args, kwargs, worker, date_started, date_done, time_taken, expires_at)
    SELECT d.id, d.task_name, d.queue, o.state, o.result, o.exc_type, o.exc_message,
           o.traceback, d.retries,
           CASE WHEN o.state = 'SUCCESS' THEN NULL ELSE d.args END,
           CASE WHEN o.state = 'SUCCESS' THEN NULL ELSE d.kwargs END,
           %(worker_name)s, d.started_at, now(), o.time_taken,
           now() + make_interval(secs => %(result_expires)s::double precision)
      FROM done AS d JOIN outcome AS o USING (id)
     WHERE o.store
    ON CONFLICT (task_id) DO UPDATE
       SET state = excluded.state, result = excluded.result, exc_type = excluded.exc_type,
           exc_message = excluded.exc_message, traceback = excluded.traceback,
           retries = excluded.retries, args = excluded.args, kwargs = excluded.kwargs,
           worker = excluded.worker, date_started = excluded.date_started,
           date_done = excluded.date_done, time_taken = excluded.time_taken,
           expires_at = excluded.expires_at
)
SELECT id FROM done

-- name: release_jobs
-- Hand claimed-but-unstarted jobs back (warm shutdown) and wake the other workers.
WITH released AS (
    UPDATE pgqueue.jobs AS j
       SET worker_id = NULL, claimed_at = NULL
      FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[]) AS s(id, attempt)
     WHERE j.id = s.id AND j.attempt = s.attempt AND j.worker_id = %(worker_id)s
    RETURNING j.queue
)
SELECT q.queue, q.n, pg_notify('pgqueue_jobs', q.queue)
  FROM (SELECT queue, count(*) AS n FROM released GROUP BY queue) AS q

-- name: register_worker
INSERT INTO pgqueue.workers (id, name, hostname, pid, queues, tasks, pool, concurrency)
VALUES (%(id)s, %(name)s, %(hostname)s, %(pid)s, %(queues)s, %(tasks)s, %(pool)s,
        %(concurrency)s)
RETURNING lock_key

-- name: lock_worker
SELECT pg_try_advisory_lock(%(lock_class)s, %(lock_key)s)

-- name: unregister_worker
DELETE FROM pgqueue.workers WHERE id = %(id)s

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

-- name: forget_result
DELETE FROM pgqueue.results WHERE task_id = %(id)s

-- name: schema_versions
SELECT version FROM pgqueue.schema_migrations ORDER BY version

-- name: retry_jobs
-- Back to the queue for another attempt (state RETRY), fenced like finish_jobs.
WITH r AS (
    SELECT *
      FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[], %(countdowns)s::double precision[],
                  %(etas)s::timestamptz[], %(exc_types)s::text[], %(exc_messages)s::text[],
                  %(tracebacks)s::text[], %(increments)s::integer[])
           AS r(id, attempt, countdown, eta, exc_type, exc_message, traceback, increment)
), retried AS (
    UPDATE pgqueue.jobs AS j
       SET state = 'RETRY', worker_id = NULL, claimed_at = NULL, started_at = NULL,
           retries = j.retries + r.increment,
           run_at = coalesce(r.eta, statement_timestamp()
                                    + make_interval(secs => coalesce(r.countdown, 0))),
           exc_type = r.exc_type, exc_message = r.exc_message, traceback = r.traceback
      FROM r
     WHERE j.id = r.id AND j.attempt = r.attempt AND j.worker_id = %(worker_id)s
    RETURNING j.id, j.queue
)
SELECT retried.id, pg_notify('pgqueue_jobs', retried.queue) FROM retried
