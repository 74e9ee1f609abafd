-- pgqueue schema, version 1.
--
-- Two tables carry the data path: `jobs` holds only live work (queued, scheduled,
-- claimed, running); `results` holds outcomes. A finished job leaves `jobs` in the
-- same transaction that writes its result, so the hot table never grows with history.

CREATE TABLE pgqueue.jobs (
    id              uuid PRIMARY KEY,
    -- enqueue order, the last tie-breaker of the claim order
    seq             bigint GENERATED ALWAYS AS IDENTITY,
    task_name       text NOT NULL,
    queue           text NOT NULL DEFAULT 'default',
    args            jsonb NOT NULL DEFAULT '[]',
    kwargs          jsonb NOT NULL DEFAULT '{}',
    priority        integer NOT NULL DEFAULT 0,
    state           text NOT NULL DEFAULT 'PENDING'
                    CHECK (state IN ('PENDING', 'RETRY', 'STARTED')),
    run_at          timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    retries         integer NOT NULL DEFAULT 0,
    -- NULL: the task's own default
    max_retries     integer,
    time_limit      double precision,
    soft_time_limit double precision,
    -- per-call overrides of task options (retry_backoff, ignore_result, ...)
    options         jsonb NOT NULL DEFAULT '{}',
    -- the claim: which worker holds the job, since when, and the fencing token.
    -- attempt grows by one at every claim; a worker may only finish a job whose
    -- attempt is still the one it claimed.
    worker_id       uuid,
    claimed_at      timestamptz,
    started_at      timestamptz,
    attempt         integer NOT NULL DEFAULT 0,
    -- set when the job starts: false means at-most-once (a lost run is not repeated)
    acks_late       boolean,
    -- the last error, kept while the job waits for its next retry
    exc_type        text,
    exc_message     text,
    traceback       text,
    enqueued_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (jsonb_typeof(args) = 'array'),
    CHECK (jsonb_typeof(kwargs) = 'object')
);

-- A queue table churns: vacuum and analyze it after a small share of changes, so dead
-- rows are reclaimed and the planner's row counts stay near the truth.
ALTER TABLE pgqueue.jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000
);

-- Exactly the claim predicate and order: unclaimed jobs, by queue, then
-- priority (higher first), run_at, enqueue order.
CREATE INDEX jobs_claim_idx ON pgqueue.jobs (queue, priority DESC, run_at, seq)
    WHERE worker_id IS NULL;
-- Finding the jobs a worker holds (release, rescue).
CREATE INDEX jobs_worker_idx ON pgqueue.jobs (worker_id) WHERE worker_id IS NOT NULL;
-- Sweeping expired jobs nobody claimed (e.g. of a task no worker has).
CREATE INDEX jobs_expires_idx ON pgqueue.jobs (expires_at)
    WHERE expires_at IS NOT NULL AND worker_id IS NULL;

CREATE TABLE pgqueue.results (
    task_id      uuid PRIMARY KEY,
    task_name    text NOT NULL,
    queue        text NOT NULL,
    state        text NOT NULL
                 CHECK (state IN ('SUCCESS', 'FAILURE', 'REVOKED', 'IGNORED')),
    result       jsonb,
    exc_type     text,
    exc_message  text,
    traceback    text,
    retries      integer NOT NULL DEFAULT 0,
    -- kept for failed and revoked jobs so they can be inspected and retried
    args         jsonb,
    kwargs       jsonb,
    worker       text,
    date_started timestamptz,
    date_done    timestamptz NOT NULL DEFAULT now(),
    time_taken   double precision,
    expires_at   timestamptz
);
CREATE INDEX results_expires_idx ON pgqueue.results (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE pgqueue.workers (
    id           uuid PRIMARY KEY,
    -- the key of the session advisory lock the worker holds while it lives:
    -- Postgres releases it the moment the worker's connection dies
    lock_key     integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    name         text NOT NULL,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    queues       text[] NOT NULL,
    tasks        text[] NOT NULL,
    pool         text NOT NULL,
    concurrency  integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    jobs_done    bigint NOT NULL DEFAULT 0
);

-- Wake idle workers: one notification per queue per statement, not per row.
CREATE FUNCTION pgqueue.notify_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgqueue_jobs', q.queue)
       FROM (SELECT DISTINCT queue FROM new_jobs) AS q;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify
    AFTER INSERT ON pgqueue.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.notify_jobs();

-- Wake AsyncResult.get(): ids of finished tasks, comma-separated, in chunks that
-- stay under the 8000-byte payload limit.
CREATE FUNCTION pgqueue.notify_results() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgqueue_results', string_agg(c.task_id::text, ','))
       FROM (SELECT task_id, (row_number() OVER ()) / 150 AS chunk FROM new_results) AS c
      GROUP BY c.chunk;
    RETURN NULL;
END
$$;

CREATE TRIGGER results_notify_insert
    AFTER INSERT ON pgqueue.results
    REFERENCING NEW TABLE AS new_results
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.notify_results();

CREATE TRIGGER results_notify_update
    AFTER UPDATE ON pgqueue.results
    REFERENCING NEW TABLE AS new_results
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.notify_results();

-- The distinct (queue, priority) levels holding unclaimed jobs, for the given queues, by a
-- skip scan of jobs_claim_idx: one index probe per level, however many jobs each holds.
-- The claim and the idle sleep walk these levels, so ready jobs are found by an index range
-- on run_at within a level, never by stepping over jobs scheduled for later.
CREATE FUNCTION pgqueue.queue_levels(queues text[])
RETURNS TABLE (queue text, priority integer)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE levels AS (
        SELECT q.name, l.priority
          FROM unnest(queue_levels.queues) AS q(name),
               LATERAL (SELECT j.priority FROM pgqueue.jobs AS j
                         WHERE j.worker_id IS NULL AND j.queue = q.name
                         ORDER BY j.priority DESC LIMIT 1) AS l
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

-- End jobs without running them (revoked, expired, lost at-most-once): each leaves the
-- jobs table and gets a result with the given state and reason, in one statement.
CREATE FUNCTION pgqueue.end_jobs(
    job_ids       uuid[],
    end_state     text,
    error_type    text,
    error_message text,
    keep_for      double precision DEFAULT NULL
) RETURNS TABLE (id uuid, worker_id uuid, state text)
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM pgqueue.jobs AS j
         WHERE j.id = ANY(end_jobs.job_ids)
        RETURNING j.id, j.task_name, j.queue, j.retries, j.args, j.kwargs, j.started_at,
                  j.worker_id, j.state
    ), stored AS (
        INSERT INTO pgqueue.results AS r
               (task_id, task_name, queue, state, exc_type, exc_message, retries, args, kwargs,
                date_started, date_done, expires_at)
        SELECT g.id, g.task_name, g.queue, end_jobs.end_state, end_jobs.error_type,
               end_jobs.error_message, g.retries, g.args, g.kwargs, g.started_at, now(),
               now() + make_interval(secs => end_jobs.keep_for)
          FROM gone AS g
        ON CONFLICT (task_id) DO UPDATE
           SET state = excluded.state, result = NULL, exc_type = excluded.exc_type,
               exc_message = excluded.exc_message, traceback = NULL,
               retries = excluded.retries, args = excluded.args, kwargs = excluded.kwargs,
               date_started = excluded.date_started, date_done = excluded.date_done,
               expires_at = excluded.expires_at
    )
    SELECT g.id, g.worker_id, g.state FROM gone AS g
$$;

-- Enqueue from plain SQL, in the caller's transaction:
--   SELECT pgqueue.enqueue('emails.send', '["a@b.c"]');
--   SELECT pgqueue.enqueue('reports.build', kwargs => '{"day": "2026-01-01"}',
--                          queue => 'reports', countdown => 60);
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
    id              uuid DEFAULT NULL
) RETURNS uuid
LANGUAGE sql AS $$
    INSERT INTO pgqueue.jobs (id, task_name, args, kwargs, queue, priority, run_at,
                              expires_at, max_retries, time_limit, soft_time_limit, options)
    VALUES (
        coalesce(enqueue.id, gen_random_uuid()),
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
    )
    RETURNING jobs.id
$$;
