-- pgqueue schema, version 2: beat, periodic tasks from a table.
--
-- One row per periodic entry. This table is the only store of the schedule: every beat
-- process reads and advances it, so it may be edited with plain SQL while beats run.
-- A tick is enqueued in the same transaction that moves next_run_at past it, on the row
-- locked FOR UPDATE SKIP LOCKED, so any number of beats enqueue each tick exactly once.

CREATE TABLE pgqueue.periodic_tasks (
    name             text PRIMARY KEY,
    task_name        text NOT NULL,
    -- The schedule: a cron expression (5 fields, or croniter's 6th field for seconds)
    -- read as wall-clock time in `timezone`, or a fixed interval in seconds.
    cron             text,
    -- Both day fields restricted: run on days matching either (classic cron, true) or
    -- both (false: Celery's crontab(day_of_week=..., day_of_month=...)).
    day_or           boolean NOT NULL DEFAULT true,
    interval_seconds double precision CHECK (interval_seconds > 0),
    timezone         text NOT NULL DEFAULT 'UTC',
    -- The call: what apply_async would get.
    args             jsonb NOT NULL DEFAULT '[]',
    kwargs           jsonb NOT NULL DEFAULT '{}',
    queue            text,
    priority         integer,
    -- seconds after enqueue; a tick's job not started by then ends REVOKED
    expires          double precision CHECK (expires > 0),
    -- other apply_async options (max_retries, time_limit, ignore_result, ...)
    options          jsonb NOT NULL DEFAULT '{}',
    -- After beats were down for several ticks: 'once' sends one job for the latest missed
    -- tick, 'all' one job per missed tick.
    catch_up         text NOT NULL DEFAULT 'once' CHECK (catch_up IN ('once', 'all')),
    -- when set, the tick time (ISO 8601, UTC) is passed to the task as this keyword argument
    tick_kwarg       text,
    enabled          boolean NOT NULL DEFAULT true,
    -- true while the app's code (beat_schedule, add_periodic_task) declares the entry;
    -- beat start-up disables, never deletes, such entries once the code drops them.
    declared_in_code boolean NOT NULL DEFAULT false,
    -- NULL: beat computes the first tick after now (a new, re-enabled or rescheduled entry)
    next_run_at      timestamptz,
    -- the tick of the last job sent
    last_run_at      timestamptz,
    total_run_count  bigint NOT NULL DEFAULT 0,
    CHECK ((cron IS NULL) <> (interval_seconds IS NULL)),
    CHECK (jsonb_typeof(args) = 'array'),
    CHECK (jsonb_typeof(kwargs) = 'object'),
    CHECK (jsonb_typeof(options) = 'object')
);

-- Exactly the due predicate and order of the beat's claim.
CREATE INDEX periodic_tasks_due_idx ON pgqueue.periodic_tasks (next_run_at NULLS FIRST)
    WHERE enabled;

-- A changed schedule, or an entry enabled again, restarts from now: beat recomputes the
-- next tick instead of catching up on ticks from before the change. An UPDATE that sets
-- next_run_at itself keeps its value.
CREATE FUNCTION pgqueue.periodic_tasks_reschedule() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at
       AND ((NEW.cron, NEW.day_or, NEW.interval_seconds, NEW.timezone)
                IS DISTINCT FROM (OLD.cron, OLD.day_or, OLD.interval_seconds, OLD.timezone)
            OR (NEW.enabled AND NOT OLD.enabled)) THEN
        NEW.next_run_at := NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER periodic_tasks_reschedule
    BEFORE UPDATE ON pgqueue.periodic_tasks
    FOR EACH ROW EXECUTE FUNCTION pgqueue.periodic_tasks_reschedule();

-- Wake sleeping beats when an edit may make something due sooner than they planned: an
-- insert, an entry enabled, rescheduled or moved earlier. A beat advancing next_run_at
-- (later) wakes nobody.
CREATE FUNCTION pgqueue.notify_beat() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('pgqueue_beat', '') WHERE EXISTS (SELECT FROM new_rows WHERE enabled);
    ELSE
        PERFORM pg_notify('pgqueue_beat', '')
          WHERE EXISTS (SELECT FROM new_rows AS n JOIN old_rows AS o USING (name)
                         WHERE n.enabled
                           AND (NOT o.enabled
                                OR n.next_run_at IS NULL
                                OR n.next_run_at < o.next_run_at));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER periodic_tasks_notify_insert
    AFTER INSERT ON pgqueue.periodic_tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.notify_beat();

CREATE TRIGGER periodic_tasks_notify_update
    AFTER UPDATE ON pgqueue.periodic_tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.notify_beat();
