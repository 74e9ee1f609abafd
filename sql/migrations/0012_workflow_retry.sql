-- pgqueue schema, version 12: retrying a workflow's step carries the workflow on.
-- Only new functions, which older code never calls (its `pgqueue retry` runs as before):
-- compatible_from: 11
--
-- `pgqueue retry` (ops_retry_results in queries.sql) requeues a failed step with its
-- workflow, and in the same statement removes what the failure wrote in its wake: the
-- REVOKED "not run" rows of the steps after it (else the step's new success would enqueue
-- none of them: enqueue_documents skips an id that has a result) and the results of its
-- link_error targets (so that a new failure runs them again, as Celery calls an errback on
-- each failure). The functions below only read: the statement runs with the
-- operator's own rights (DELETE on results, INSERT on jobs), and a role that cannot
-- requeue a job cannot do so through them.

-- A document's id, or NULL when it is not a uuid (see below: bad documents are passed
-- over). This and workflow_never_ran pin no search_path, so that the planner inlines them
-- into the statement that calls them: they run with the caller's rights, name nothing of
-- the schema, and pg_catalog, where what they use lives, is searched first whatever the
-- caller's search_path.
CREATE FUNCTION pgqueue.uuid_or_null(value text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                THEN value::uuid END
$$;

-- Every job that follows the end of a job whose workflow is ``flow`` (its results.workflow
-- or options -> 'workflow'), at any depth: what its success enqueues (link and chain, then
-- theirs; errback false) and what its failure enqueues (link_error, then everything that
-- follows those; errback true); ``chord`` when that job is a chord's member. The documents
-- come from job rows any producer can write: one that is not what a producer writes is
-- passed over, never an error that would stop a retry.
-- plpgsql, with the few rows a workflow has (ROWS): the planner, left to guess at a jsonb
-- walk, expects thousands per step, and a bulk retry's statement then costs enough to be
-- JIT-compiled, batch after batch, plain jobs' retries included.
CREATE FUNCTION pgqueue.workflow_followers(flow jsonb)
RETURNS TABLE (task_id uuid, task_name text, chord uuid, errback boolean)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE ROWS 4
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    WITH RECURSIVE follower (doc, errback) AS (
        SELECT d, e.errback
          FROM (VALUES (false, coalesce(flow -> 'link', '[]') || coalesce(flow -> 'chain', '[]')),
                       (true, coalesce(flow -> 'link_error', '[]'))) AS e (errback, docs),
               jsonb_array_elements(CASE WHEN jsonb_typeof(e.docs) = 'array' THEN e.docs
                                         ELSE '[]' END) AS d
         WHERE jsonb_typeof(flow) = 'object'
        UNION ALL
        SELECT d, f.errback
          FROM follower AS f,
               LATERAL (SELECT f.doc -> 'options' -> 'workflow' AS w) AS o,
               LATERAL (SELECT coalesce(o.w -> 'link', '[]') || coalesce(o.w -> 'chain', '[]')
                               || CASE WHEN f.errback THEN coalesce(o.w -> 'link_error', '[]')
                                       ELSE '[]' END AS docs) AS n,
               jsonb_array_elements(CASE WHEN jsonb_typeof(n.docs) = 'array' THEN n.docs
                                         ELSE '[]' END) AS d
         WHERE jsonb_typeof(o.w) = 'object'
    )
    SELECT pgqueue.uuid_or_null(f.doc ->> 'id'), f.doc ->> 'task_name',
           pgqueue.uuid_or_null(f.doc -> 'options' -> 'workflow' ->> 'chord'), f.errback
      FROM follower AS f
     WHERE pgqueue.uuid_or_null(f.doc ->> 'id') IS NOT NULL;
END
$$;

-- Whether a result is one of the REVOKED rows workflow_not_run (0007) writes for a job that
-- will never run because the chain stopped before it (its workflow column is NULL when the
-- job's document had no workflow of its own, so the row is known by what it says).
CREATE FUNCTION pgqueue.workflow_never_ran(state text, exc_type text, exc_message text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT state = 'REVOKED' AND exc_type = 'pgqueue.exceptions.TaskRevokedError'
           AND starts_with(exc_message, 'not run: the chain stopped at ')
$$;

-- Why a stored result (its state, exc_type, exc_message and workflow ``flow``) cannot be
-- retried, or NULL when it can: its requeued run would not be followed exactly once, in
-- order, as its first run would have been.
CREATE FUNCTION pgqueue.workflow_retry_refusal(state text, exc_type text, exc_message text,
                                               flow jsonb)
RETURNS text
-- plpgsql: its statements' plans are kept for the session, where a SQL function's nested
-- calls would be planned again for each result a bulk retry looks at.
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    blocker record;
BEGIN
    -- Run now, it would run out of order, without the result of the step before it, and
    -- again when that step is retried and succeeds.
    IF pgqueue.workflow_never_ran(state, exc_type, exc_message) THEN
        RETURN format('never ran (%s): retry the step that stopped the chain, which then '
                      'goes on', exc_message);
    END IF;
    IF flow IS NULL OR jsonb_typeof(flow) <> 'object' THEN
        RETURN NULL;
    END IF;
    -- Its chord has failed and its callback ended ChordError: a member's new success would
    -- count for nothing.
    IF pgqueue.uuid_or_null(flow ->> 'chord') IS NOT NULL THEN
        RETURN format('is a member of chord %s, which failed (its callback ended ChordError): '
                      'a chord''s member cannot be retried alone, send the chord again',
                      flow ->> 'chord');
    END IF;
    IF exc_type = 'pgqueue.exceptions.ChordError' THEN
        RETURN 'is the callback of a chord that failed before it ran (ChordError): it has '
               'no arguments to run with, send the chord again';
    END IF;
    -- A chord after it, which its failure failed (as above).
    SELECT f.chord INTO blocker
      FROM pgqueue.workflow_followers(flow) AS f
     WHERE NOT f.errback AND f.chord IS NOT NULL
     LIMIT 1;
    IF FOUND THEN
        RETURN format('is followed by chord %s, which its failure failed: send the workflow '
                      'again', blocker.chord);
    END IF;
    -- A new failure enqueues its link_error again only once the first run of it has ended.
    -- One id at a time: a lookup of the primary key, whatever the plan kept for the
    -- session thinks of the size of pgqueue.jobs (a bulk retry fills it as it goes).
    FOR blocker IN
        SELECT f.task_id, f.task_name FROM pgqueue.workflow_followers(flow) AS f
         WHERE f.errback
    LOOP
        PERFORM FROM pgqueue.jobs AS j WHERE j.id = blocker.task_id;
        IF FOUND THEN
            RETURN format('its link_error %s[%s] has not finished: retry once it has',
                          blocker.task_name, blocker.task_id);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
