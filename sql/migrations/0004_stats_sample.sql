-- pgqueue schema, version 4: one shared sample of queue_stats.
--
-- queue_stats counts the live jobs, so its cost grows with the queue (about 0.35 s with a
-- million pending jobs on a 2-core machine). Every worker serving Prometheus metrics needs
-- those numbers; instead of each one computing them on each scrape, the first caller past
-- the sample's age refreshes this table, under an advisory lock so that only one does, and
-- everyone else reads the stored rows. The view stays the exact, live answer for psql.

CREATE TABLE pgqueue.queue_stats_samples (
    queue               text PRIMARY KEY,
    ready               bigint NOT NULL,
    scheduled           bigint NOT NULL,
    retrying            bigint NOT NULL,
    reserved            bigint NOT NULL,
    running             bigint NOT NULL,
    failed_last_hour    bigint NOT NULL,
    succeeded_last_hour bigint NOT NULL,
    lag                 interval,
    unregistered        bigint NOT NULL,
    workers             bigint NOT NULL
);

-- When the rows above were taken: one row, kept apart so that "no queue at all" is a
-- sample too.
CREATE TABLE pgqueue.queue_stats_sampled (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    sampled_at timestamptz NOT NULL
);

-- The sample, refreshed first if it is older than max_age seconds. A caller that finds a
-- refresh under way (the lock is taken) returns the previous sample rather than wait.
CREATE FUNCTION pgqueue.sampled_queue_stats(max_age double precision)
RETURNS TABLE (queue text, ready bigint, scheduled bigint, retrying bigint, reserved bigint,
               running bigint, failed_last_hour bigint, succeeded_last_hour bigint,
               lag interval, unregistered bigint, workers bigint, sampled_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    fresh CONSTANT text :=
        'SELECT EXISTS (SELECT 1 FROM pgqueue.queue_stats_sampled AS s'
        ' WHERE s.sampled_at > now() - make_interval(secs => $1))';
    is_fresh boolean;
BEGIN
    EXECUTE fresh INTO is_fresh USING max_age;
    -- 0x70677175_0004, beside the migration (…0001) and maintenance (…0002) locks
    IF NOT is_fresh AND pg_try_advisory_xact_lock(123589587435524) THEN
        -- Checked again under the lock: each statement here sees what committed before it,
        -- so a refresh another caller finished meanwhile is not done twice.
        EXECUTE fresh INTO is_fresh USING max_age;
        IF NOT is_fresh THEN
            DELETE FROM pgqueue.queue_stats_samples;
            INSERT INTO pgqueue.queue_stats_samples
            SELECT v.queue, v.ready, v.scheduled, v.retrying, v.reserved, v.running,
                   v.failed_last_hour, v.succeeded_last_hour, v.lag, v.unregistered, v.workers
              FROM pgqueue.queue_stats AS v;
            INSERT INTO pgqueue.queue_stats_sampled (sampled_at) VALUES (now())
            ON CONFLICT (only_row) DO UPDATE SET sampled_at = excluded.sampled_at;
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
