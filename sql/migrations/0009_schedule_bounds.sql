-- pgqueue schema, version 9: periodic tasks that start and end, and one-off entries
-- (what APScheduler's start_date, end_date and DateTrigger say; see pgqueue/triggers.py).

ALTER TABLE pgqueue.periodic_tasks
    -- No tick before start_at. An interval's ticks fall on start_at + k * interval_seconds
    -- (without start_at, one interval after beat first reads the entry, then every
    -- interval). A one-off entry, with neither cron nor interval, runs once at start_at.
    ADD COLUMN start_at timestamptz,
    -- No tick after end_at. Once an entry has no tick left, beat disables it.
    ADD COLUMN end_at timestamptz,
    ADD CONSTRAINT periodic_tasks_bounds_check CHECK (end_at >= start_at),
    DROP CONSTRAINT periodic_tasks_check,
    ADD CONSTRAINT periodic_tasks_schedule_check CHECK (
        (cron IS NULL) <> (interval_seconds IS NULL)
        OR (cron IS NULL AND interval_seconds IS NULL AND start_at IS NOT NULL));

-- As in 0002, and a changed start or end also restarts the entry from now.
CREATE OR REPLACE FUNCTION pgqueue.periodic_tasks_reschedule() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at
       AND ((NEW.cron, NEW.day_or, NEW.interval_seconds, NEW.timezone, NEW.start_at,
             NEW.end_at)
                IS DISTINCT FROM (OLD.cron, OLD.day_or, OLD.interval_seconds, OLD.timezone,
                                  OLD.start_at, OLD.end_at)
            OR (NEW.enabled AND NOT OLD.enabled)) THEN
        NEW.next_run_at := NULL;
    END IF;
    RETURN NEW;
END
$$;
