-- pgqueue schema, version 7: workflows (Celery's canvas: chain, group, chord, link,
-- link_error), carried on by the database in the transaction that records each step's end.
--
-- The producer works out every job of a workflow in Python (routing, validation, payload
-- limits) and writes the jobs that can start now, plus the rows below, in one statement.
-- Jobs that must wait (a chain's next step, a chord's callback, link and link_error
-- targets) travel as enqueue documents, with ids given in advance, inside the options of
-- the job they follow: options -> 'workflow' = {"link": [...], "link_error": [...],
-- "chain": [...], "chord": "<chord id>"}: side-by-side follow-ups, errbacks, the steps
-- after it in order (flat: the trigger hands the rest on to the next step), and the chord it
-- is a member of. When a job ends, finish_jobs and end_jobs copy that object into
-- its results row (results.workflow); the trigger below, which fires only for such rows,
-- enqueues what follows in the same transaction. A crash between a step and the next is
-- therefore impossible: both commit or neither does.

-- One row per chain, group or chord, for a reader (GroupResult.restore, `pgqueue inspect`,
-- a DBA). A group's id is its GroupResult id; a chord's is the id of its group.
CREATE TABLE pgqueue.workflows (
    id         uuid PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('chain', 'group', 'chord')),
    -- the chain this group or chord is a step of, if any
    parent_id  uuid,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- the result cleanup removes workflows oldest first, once nothing of them is live
CREATE INDEX workflows_created_idx ON pgqueue.workflows (created_at);

-- The tasks of a workflow in order: a chain's steps, a group's (or chord header's) members.
-- A member that is itself a chain is represented by the chain's last step, whose result is
-- the member's result.
CREATE TABLE pgqueue.workflow_members (
    workflow_id uuid NOT NULL REFERENCES pgqueue.workflows (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    task_id     uuid NOT NULL,
    task_name   text NOT NULL,
    -- chord members: when the member's first end was counted (a rewritten result row,
    -- an operator's retry, counts no second time)
    counted_at  timestamptz,
    PRIMARY KEY (workflow_id, position)
);
CREATE INDEX workflow_members_task_idx ON pgqueue.workflow_members (task_id);

-- A chord's counter. The row lock taken to decrement it serialises members finishing at
-- the same instant on different workers: the one that reaches 0 enqueues the callback.
CREATE TABLE pgqueue.chords (
    id            uuid PRIMARY KEY REFERENCES pgqueue.workflows (id) ON DELETE CASCADE,
    size          integer NOT NULL CHECK (size >= 0),
    remaining     integer NOT NULL CHECK (remaining >= 0),
    state         text NOT NULL DEFAULT 'PENDING' CHECK (state IN ('PENDING', 'FIRED', 'FAILED')),
    callback_id   uuid NOT NULL,
    -- the callback's enqueue document (args without the members' results)
    callback      jsonb NOT NULL,
    -- the member whose end failed the chord
    failed_member uuid,
    ended_at      timestamptz
);

-- `pgqueue inspect` of a chord's callback finds its chord
CREATE INDEX chords_callback_idx ON pgqueue.chords (callback_id);

-- The workflow of the job this result is the end of (its options -> 'workflow'); NULL for
-- a plain job, whose end then costs nothing more (the trigger's WHEN skips it).
ALTER TABLE pgqueue.results ADD COLUMN workflow jsonb;

-- Enqueue documents written by the trigger below: the columns enqueue_jobs (queries.sql)
-- takes from Python, with relative countdown/expiry worked out now. A document whose id
-- has a job or a result already is skipped: a step's follow-ups are enqueued once, even if
-- its result row is written again.
CREATE FUNCTION pgqueue.enqueue_documents(jobs jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO pgqueue.jobs (id, task_name, args, kwargs, queue, priority, run_at,
                              expires_at, max_retries, time_limit, soft_time_limit, options)
    SELECT j.id, j.task_name, coalesce(j.args, '[]'), coalesce(j.kwargs, '{}'),
           coalesce(j.queue, 'default'), coalesce(j.priority, 0),
           coalesce(j.run_at, statement_timestamp() + make_interval(secs => j.countdown),
                    now()),
           coalesce(j.expires_at,
                    statement_timestamp() + make_interval(secs => j.expires_in)),
           j.max_retries, j.time_limit, j.soft_time_limit, coalesce(j.options, '{}')
      FROM jsonb_to_recordset(enqueue_documents.jobs) AS j(
           id uuid, task_name text, args jsonb, kwargs jsonb, queue text, priority integer,
           run_at timestamptz, countdown double precision, expires_at timestamptz,
           expires_in double precision, max_retries integer, time_limit double precision,
           soft_time_limit double precision, options jsonb)
     WHERE NOT EXISTS (SELECT 1 FROM pgqueue.results AS r WHERE r.task_id = j.id)
    ON CONFLICT (id) DO NOTHING
$$;

-- Steps that will never run, because the step they follow ended otherwise than SUCCESS:
-- each gets a REVOKED result saying why, so that get() on it raises at once instead of
-- waiting for ever. Their own follow-ups go the same way (the results trigger fires for
-- these rows too, flagged not_run so that their link_error does not run: they did not fail).
CREATE FUNCTION pgqueue.workflow_not_run(docs jsonb, why text, keep_until timestamptz)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO pgqueue.results (task_id, task_name, queue, state, exc_type, exc_message,
                                 date_done, expires_at, workflow)
    SELECT (d ->> 'id')::uuid, d ->> 'task_name', coalesce(d ->> 'queue', 'default'),
           'REVOKED', 'pgqueue.exceptions.TaskRevokedError', workflow_not_run.why, now(),
           workflow_not_run.keep_until,
           CASE WHEN jsonb_typeof(d -> 'options' -> 'workflow') = 'object'
                THEN d -> 'options' -> 'workflow' || '{"not_run": true}' END
      FROM jsonb_array_elements(coalesce(workflow_not_run.docs, '[]')) AS d
     WHERE NOT EXISTS (SELECT 1 FROM pgqueue.jobs AS j WHERE j.id = (d ->> 'id')::uuid)
    ON CONFLICT (task_id) DO NOTHING
$$;

-- What follows the end of a workflow's job, in the transaction that records that end.
-- SECURITY DEFINER: a worker (or an operator revoking) carries a workflow on without
-- rights of its own on the workflow tables. The documents come from job rows, which any
-- producer can write: they are read as data only (no dynamic SQL), and one the function
-- cannot read stops that workflow with a WARNING instead of failing the statement that
-- ended the job (which would hold up every other outcome in its batch). Each of the two
-- parts (what follows the job; its chord) has its own exception block, a subtransaction
-- paid only by jobs of workflows.
CREATE FUNCTION pgqueue.workflow_step_ended() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    flow      jsonb := NEW.workflow;
    chord_id  uuid;
    counter   pgqueue.chords;
    why       text;
    members   jsonb;
    next_step jsonb;
BEGIN
    IF jsonb_typeof(flow) <> 'object' THEN
        RETURN NULL;
    END IF;
    BEGIN
        IF NEW.state = 'SUCCESS' THEN
            -- link, and the chain's next step (carrying the steps after it): the result
            -- goes first in the arguments, unless the target is immutable
            next_step := flow -> 'chain' -> 0;
            IF jsonb_array_length(flow -> 'chain') > 1 THEN
                next_step := jsonb_set(next_step, '{options,workflow}',
                                       coalesce(next_step -> 'options' -> 'workflow', '{}')
                                       || jsonb_build_object('chain', (flow -> 'chain') - 0));
            END IF;
            PERFORM pgqueue.enqueue_documents(jsonb_agg(
                        CASE WHEN d -> 'immutable' = 'true' THEN d
                             ELSE jsonb_set(d, '{args}', jsonb_build_array(NEW.result)
                                                         || coalesce(d -> 'args', '[]'))
                        END ORDER BY n))
               FROM jsonb_array_elements(coalesce(flow -> 'link', '[]')
                                         || CASE WHEN next_step IS NULL THEN '[]'
                                                 ELSE jsonb_build_array(next_step) END)
                    WITH ORDINALITY AS e(d, n)
             HAVING count(*) > 0;
        ELSE
            why := format('not run: the chain stopped at %s[%s], which ended %s',
                          NEW.task_name, NEW.task_id, NEW.state);
            PERFORM pgqueue.workflow_not_run(coalesce(flow -> 'link', '[]')
                                             || coalesce(flow -> 'chain', '[]'),
                                             why, NEW.expires_at);
            -- link_error: the failed task's id as the one argument (Celery's errback(task_id)),
            -- unless immutable; not for a step that never ran, nor for IGNORED
            IF NEW.state IN ('FAILURE', 'REVOKED') AND flow -> 'not_run' IS NULL THEN
                PERFORM pgqueue.enqueue_documents(jsonb_agg(
                            CASE WHEN d -> 'immutable' = 'true' THEN d
                                 ELSE jsonb_set(d, '{args}',
                                                jsonb_build_array(NEW.task_id::text)
                                                || coalesce(d -> 'args', '[]'))
                            END ORDER BY n))
                   FROM jsonb_array_elements(coalesce(flow -> 'link_error', '[]'))
                        WITH ORDINALITY AS e(d, n)
                 HAVING count(*) > 0;
            END IF;
        END IF;
    EXCEPTION
        -- Only errors a document can cause (bad values, a refused row, nesting too deep);
        -- anything else (a deadlock, a cancel) fails the statement, to be written again.
        WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded THEN
            RAISE WARNING 'pgqueue: what follows %[%] is not enqueued: its document cannot '
                          'be read (%: %)', NEW.task_name, NEW.task_id, SQLSTATE, SQLERRM;
    END;
    -- Apart: a chord counts its members whatever became of the documents above.
    BEGIN
        chord_id := (flow ->> 'chord')::uuid;
        IF chord_id IS NOT NULL THEN
            -- the lock that serialises this chord's members (see the chords table); taken
            -- in chord id order by finish_jobs and end_jobs, which insert their rows so
            SELECT * INTO counter FROM pgqueue.chords WHERE id = chord_id FOR UPDATE;
            IF FOUND AND counter.state = 'PENDING' THEN
                IF NEW.state = 'SUCCESS' THEN
                    UPDATE pgqueue.workflow_members
                       SET counted_at = now()
                     WHERE workflow_id = chord_id AND task_id = NEW.task_id
                       AND counted_at IS NULL;
                    IF FOUND THEN
                        UPDATE pgqueue.chords SET remaining = remaining - 1
                         WHERE id = chord_id
                        RETURNING * INTO counter;
                        IF counter.remaining = 0 THEN
                            -- This statement's snapshot is taken after the lock above was
                            -- granted: it sees every member result committed before ours.
                            SELECT coalesce(jsonb_agg(r.result ORDER BY m.position), '[]')
                              INTO members
                              FROM pgqueue.workflow_members AS m
                              LEFT JOIN pgqueue.results AS r ON r.task_id = m.task_id
                             WHERE m.workflow_id = chord_id;
                            UPDATE pgqueue.chords SET state = 'FIRED', ended_at = now()
                             WHERE id = chord_id;
                            PERFORM pgqueue.enqueue_documents(jsonb_build_array(
                                CASE WHEN counter.callback -> 'immutable' = 'true'
                                     THEN counter.callback
                                     ELSE jsonb_set(counter.callback, '{args}',
                                                    jsonb_build_array(members)
                                                    || coalesce(counter.callback -> 'args',
                                                                '[]'))
                                END));
                        END IF;
                    END IF;
                ELSIF EXISTS (SELECT 1 FROM pgqueue.workflow_members
                               WHERE workflow_id = chord_id AND task_id = NEW.task_id) THEN
                    UPDATE pgqueue.chords
                       SET state = 'FAILED', failed_member = NEW.task_id, ended_at = now()
                     WHERE id = chord_id;
                    -- The callback ends FAILURE without running; the results trigger then
                    -- runs its link_error and stops what follows it.
                    INSERT INTO pgqueue.results (task_id, task_name, queue, state, exc_type,
                                                 exc_message, date_done, expires_at, workflow)
                    SELECT counter.callback_id, counter.callback ->> 'task_name',
                           coalesce(counter.callback ->> 'queue', 'default'), 'FAILURE',
                           'pgqueue.exceptions.ChordError',
                           format('chord member %s[%s] ended %s: %s', NEW.task_name,
                                  NEW.task_id, NEW.state,
                                  concat_ws(': ', NEW.exc_type, NEW.exc_message)),
                           now(), NEW.expires_at,
                           CASE WHEN jsonb_typeof(counter.callback -> 'options' -> 'workflow')
                                     = 'object'
                                THEN counter.callback -> 'options' -> 'workflow' END
                    ON CONFLICT (task_id) DO NOTHING;
                END IF;
            END IF;
        END IF;
    EXCEPTION
        WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded THEN
            RAISE WARNING 'pgqueue: the chord of %[%] is not carried on: its document cannot '
                          'be read (%: %)', NEW.task_name, NEW.task_id, SQLSTATE, SQLERRM;
    END;
    RETURN NULL;
END
$$;

CREATE TRIGGER results_workflow
    AFTER INSERT OR UPDATE ON pgqueue.results
    FOR EACH ROW
    WHEN (NEW.workflow IS NOT NULL)
    EXECUTE FUNCTION pgqueue.workflow_step_ended();

-- end_jobs (revoke, expiry, lost at-most-once jobs) as in version 1, now also copying the
-- job's workflow into its result, rows in chord order (see workflow_step_ended).
CREATE OR REPLACE FUNCTION pgqueue.end_jobs(
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
                  j.worker_id, j.state, j.options -> 'workflow' AS workflow
    ), stored AS (
        INSERT INTO pgqueue.results AS r
               (task_id, task_name, queue, state, exc_type, exc_message, retries, args, kwargs,
                date_started, date_done, expires_at, workflow)
        SELECT g.id, g.task_name, g.queue, end_jobs.end_state, end_jobs.error_type,
               end_jobs.error_message, g.retries, g.args, g.kwargs, g.started_at, now(),
               now() + make_interval(secs => end_jobs.keep_for), g.workflow
          FROM gone AS g
         ORDER BY g.workflow ->> 'chord', g.id
        ON CONFLICT (task_id) DO UPDATE
           SET state = excluded.state, result = NULL, exc_type = excluded.exc_type,
               exc_message = excluded.exc_message, traceback = NULL,
               retries = excluded.retries, args = excluded.args, kwargs = excluded.kwargs,
               date_started = excluded.date_started, date_done = excluded.date_done,
               expires_at = excluded.expires_at, workflow = excluded.workflow
    )
    SELECT g.id, g.worker_id, g.state FROM gone AS g
$$;

-- Each member of each workflow with where it stands: the state of its result, else of its
-- job, else WAITING (not enqueued yet: what it follows has not finished).
CREATE VIEW pgqueue.workflow_status AS
SELECT w.id AS workflow_id, w.kind, w.parent_id, w.created_at, m.position, m.task_id,
       m.task_name, coalesce(r.state, j.state, 'WAITING') AS state, m.counted_at,
       r.date_done, r.exc_type, r.exc_message,
       c.size AS chord_size, c.remaining AS chord_remaining, c.state AS chord_state,
       c.callback_id AS chord_callback_id, c.failed_member AS chord_failed_member
  FROM pgqueue.workflows AS w
  JOIN pgqueue.workflow_members AS m ON m.workflow_id = w.id
  LEFT JOIN pgqueue.chords AS c ON c.id = w.id
  LEFT JOIN pgqueue.results AS r ON r.task_id = m.task_id
  LEFT JOIN pgqueue.jobs AS j ON j.id = m.task_id;
