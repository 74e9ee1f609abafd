-- pgqueue schema, version 3: operations. Views that answer "what is the queue doing?" from
-- psql or any SQL client, and the index that keeps them cheap.
--
-- Each view reads only live rows (jobs, workers) and, of the history in `results`, one
-- index range (the last hour, or the newest failures): never a scan of all results.

-- Finished jobs by outcome and time. The last hour's SUCCESS/FAILURE counts per queue are
-- an index-only range scan (queue is included), the newest failures a backward scan, and
-- `pgqueue retry --failed --since ...` reads one range. Building it locks writes to results
-- for as long as it takes: on a very large results table, create it CONCURRENTLY by hand
-- first, under this name, and the migration will keep it.
CREATE INDEX IF NOT EXISTS results_state_done_idx
    ON pgqueue.results (state, date_done) INCLUDE (queue);

-- Every registered worker and whether it is alive: its session advisory lock is held
-- (Postgres drops the lock the moment the worker's connection dies) and its heartbeat is
-- recent. Rows of dead workers stay until a live worker's rescue removes them. The heartbeat
-- limit is the default worker_lost_timeout, 20 s; for workers configured otherwise, set
-- pgqueue.worker_lost_timeout (ALTER DATABASE ... SET pgqueue.worker_lost_timeout = 60).
-- (Named worker_status: pgqueue.workers is the table workers register in.)
CREATE VIEW pgqueue.worker_status AS
SELECT w.id,
       w.name,
       w.hostname,
       w.pid,
       w.queues,
       w.pool,
       w.concurrency,
       w.started_at,
       w.heartbeat_at,
       EXISTS (SELECT 1
                 FROM pg_locks AS l
                WHERE l.locktype = 'advisory'
                  AND l.database = (SELECT d.oid FROM pg_database AS d
                                     WHERE d.datname = current_database())
                  -- 0x70677175: the first key of every worker's lock (worker.py)
                  AND l.classid = 1885827445::oid
                  AND l.objid = w.lock_key::bigint::oid
                  AND l.objsubid = 2
                  AND l.granted)
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

-- Each running job, longest-running first, with the worker running it.
-- (worker_id IS NOT NULL holds for every STARTED job; it lets the planner read
-- jobs_worker_idx, which holds only claimed jobs, instead of the whole queue.)
CREATE VIEW pgqueue.running AS
SELECT j.id,
       j.task_name,
       j.queue,
       w.name AS worker,
       w.hostname,
       w.pid,
       j.started_at,
       now() - j.started_at AS runtime,
       j.retries,
       j.args,
       j.kwargs,
       j.worker_id
  FROM pgqueue.jobs AS j
  LEFT JOIN pgqueue.workers AS w ON w.id = j.worker_id
 WHERE j.worker_id IS NOT NULL
   AND j.state = 'STARTED'
 ORDER BY j.started_at, j.id;

-- Failed jobs still kept (results live for result_expires, a day by default), newest first:
-- `SELECT * FROM pgqueue.failures LIMIT 20` reads 20 entries of results_state_done_idx.
CREATE VIEW pgqueue.failures AS
SELECT r.task_id,
       r.task_name,
       r.queue,
       r.exc_type,
       r.exc_message,
       r.date_done,
       r.retries,
       r.worker,
       r.time_taken,
       r.args,
       r.kwargs
  FROM pgqueue.results AS r
 WHERE r.state = 'FAILURE'
 ORDER BY r.date_done DESC;

-- Per queue, in one pass over the live jobs:
--   ready        unclaimed, due now (what workers take next)
--   scheduled    unclaimed PENDING jobs due later (countdown/eta)
--   retrying     unclaimed RETRY jobs waiting out their retry countdown
--   reserved     claimed by a worker, not started yet (prefetched)
--   running      STARTED
--   failed_last_hour, succeeded_last_hour   FAILURE/SUCCESS results of the last hour
--   lag          age of the oldest ready job: how long it has waited past its run_at
--   unregistered unclaimed jobs no live worker consuming the queue has registered the task
--                of: nobody will run them until such a worker starts
--   workers      live workers consuming the queue
-- ready + scheduled + retrying + reserved + running = the queue's live jobs.
CREATE VIEW pgqueue.queue_stats AS
WITH live AS (
    SELECT s.queues, s.tasks FROM pgqueue.worker_status AS s WHERE s.alive
), by_task AS (
    SELECT j.queue,
           j.task_name,
           count(*) FILTER (WHERE j.worker_id IS NULL AND j.run_at <= now()) AS ready,
           count(*) FILTER (WHERE j.worker_id IS NULL AND j.run_at > now()
                              AND j.state = 'PENDING') AS scheduled,
           count(*) FILTER (WHERE j.worker_id IS NULL AND j.run_at > now()
                              AND j.state = 'RETRY') AS retrying,
           count(*) FILTER (WHERE j.worker_id IS NOT NULL AND j.state <> 'STARTED') AS reserved,
           count(*) FILTER (WHERE j.worker_id IS NOT NULL AND j.state = 'STARTED') AS running,
           count(*) FILTER (WHERE j.worker_id IS NULL) AS unclaimed,
           min(j.run_at) FILTER (WHERE j.worker_id IS NULL AND j.run_at <= now()) AS oldest_ready
      FROM pgqueue.jobs AS j
     GROUP BY j.queue, j.task_name
), by_queue AS (
    -- whether a live worker can run a task is asked once per (queue, task), not per job
    SELECT t.queue,
           sum(t.ready) AS ready,
           sum(t.scheduled) AS scheduled,
           sum(t.retrying) AS retrying,
           sum(t.reserved) AS reserved,
           sum(t.running) AS running,
           min(t.oldest_ready) AS oldest_ready,
           coalesce(sum(t.unclaimed) FILTER (
               WHERE NOT EXISTS (SELECT 1 FROM live AS w
                                  WHERE t.queue = ANY(w.queues)
                                    AND t.task_name = ANY(w.tasks))), 0) AS unregistered
      FROM by_task AS t
     GROUP BY t.queue
), done AS (
    SELECT r.queue,
           count(*) FILTER (WHERE r.state = 'FAILURE') AS failed,
           count(*) FILTER (WHERE r.state = 'SUCCESS') AS succeeded
      FROM pgqueue.results AS r
     WHERE r.state IN ('FAILURE', 'SUCCESS')
       AND r.date_done > now() - interval '1 hour'
     GROUP BY r.queue
), consumed AS (
    SELECT q.queue, count(*) AS workers
      FROM live AS w, unnest(w.queues) AS q(queue)
     GROUP BY q.queue
), queues AS (
    SELECT queue FROM by_queue
    UNION
    SELECT queue FROM done
    UNION
    SELECT queue FROM consumed
)
SELECT q.queue,
       coalesce(b.ready, 0)::bigint AS ready,
       coalesce(b.scheduled, 0)::bigint AS scheduled,
       coalesce(b.retrying, 0)::bigint AS retrying,
       coalesce(b.reserved, 0)::bigint AS reserved,
       coalesce(b.running, 0)::bigint AS running,
       coalesce(d.failed, 0) AS failed_last_hour,
       coalesce(d.succeeded, 0) AS succeeded_last_hour,
       now() - b.oldest_ready AS lag,
       coalesce(b.unregistered, 0)::bigint AS unregistered,
       coalesce(c.workers, 0) AS workers
  FROM queues AS q
  LEFT JOIN by_queue AS b USING (queue)
  LEFT JOIN done AS d USING (queue)
  LEFT JOIN consumed AS c USING (queue)
 ORDER BY q.queue;
