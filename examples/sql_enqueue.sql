-- Enqueue from plain SQL: a trigger on an application table queues a job with
-- pgqueue.enqueue(...), in the same transaction as the row. Whatever inserts the row (psql,
-- another language, a migration) queues the job; a rolled-back insert leaves no job.
--
-- After `pgqueue migrate`, on the same database:
--
--   psql "$PGQUEUE_DSN" -f examples/sql_enqueue.sql
--   psql "$PGQUEUE_DSN" -c "INSERT INTO signups (email) VALUES ('ada@example.com') RETURNING *"
--   cd examples/quickstart && pgqueue worker -A tasks:app -Q emails    # runs emails.send
--
-- Running this file again is harmless.

CREATE TABLE IF NOT EXISTS signups (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text NOT NULL,
    welcome_job uuid,  -- set by the trigger: the job sending the welcome mail
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION signups_queue_welcome() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.welcome_job := pgqueue.enqueue(
        'emails.send',                  -- a task name: examples/quickstart/tasks.py has it
        jsonb_build_array(NEW.email),   -- args, as a JSON array
        queue => 'emails',
        countdown => 0                  -- seconds; also priority, run_at, expires_in, ...
    );
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS signups_queue_welcome ON signups;
CREATE TRIGGER signups_queue_welcome
    BEFORE INSERT ON signups
    FOR EACH ROW EXECUTE FUNCTION signups_queue_welcome();
