-- pgqueue schema, version 12: retrying a workflow's step carries the workflow on.
-- Only new functions, which older code never calls (its `pgqueue retry` runs as before):
-- compatible_from: 11
--
-- `pgqueue retry` (ops_retry_results in queries.sql) requeues a failed step with its
-- workflow, and in the same statement removes what the failure wrote in its wake: the
-- REVOKED "not run" rows of the steps after it (else the step's new success would enqueue
-- none of them: enqueue_documents skips an id that has a result) and the results of its
-- link_error targets (so that a new failure runs them again, as Celery calls an errback on
-- each failure). The two functions below only read: the statement runs with the
-- operator's own rights (DELETE on results, INSERT on jobs), and a role that cannot
-- requeue a job cannot do so through them.

-- A document's id, or NULL when it is not a uuid (see above: bad documents are passed over).
CREATE FUNCTION pgqueue.uuid_or_null(value text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN value ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                THEN value::uuid END
$$;

-- Every job that follows the end of a job whose workflow is ``flow`` (its results.workflow
-- or options -> 'workflow'), at any depth: what its success enqueues (link and chain, then
-- theirs; errback false) and what its failure enqueues (link_error, then everything that
-- follows those; errback true); ``chord`` when that job is a chord's member. The documents
-- come from job rows any producer can write: one that is not what a producer writes is
-- passed over, never an error that would stop a retry.
CREATE FUNCTION pgqueue.workflow_followers(flow jsonb)
RETURNS TABLE (task_id uuid, task_name text, chord uuid, errback boolean)
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
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
     WHERE pgqueue.uuid_or_null(f.doc ->> 'id') IS NOT NULL
$$;

-- Whether a result is one of the REVOKED rows workflow_not_run (0007) writes for a job that
-- will never run because the chain stopped before it (its workflow column is NULL when the
-- job's document had no workflow of its own, so the row is known by what it says).
CREATE FUNCTION pgqueue.workflow_never_ran(state text, exc_type text, exc_message text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT state = 'REVOKED' AND exc_type = 'pgqueue.exceptions.TaskRevokedError'
           AND starts_with(exc_message, 'not run: the chain stopped at ')
$$;

-- Why a stored result (its state, exc_type, exc_message and workflow ``flow``) cannot be
-- retried, or NULL when it can: its requeued run would not be followed exactly once, in
-- order, as its first run would have been.
CREATE FUNCTION pgqueue.workflow_retry_refusal(state text, exc_type text, exc_message text,
                                               flow jsonb)
RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(CASE
        -- Run now, it would run out of order, without the result of the step before it,
        -- and again when that step is retried and succeeds.
        WHEN pgqueue.workflow_never_ran(state, exc_type, exc_message) THEN
            format('never ran (%s): retry the step that stopped the chain, which then goes on',
                   exc_message)
        WHEN flow IS NULL OR jsonb_typeof(flow) <> 'object' THEN NULL
        -- Its chord has failed and its callback ended ChordError; a member's new success
        -- would count for nothing.
        WHEN flow ? 'chord' THEN
            format('is a member of chord %s, which failed (its callback ended ChordError): '
                   'a chord''s member cannot be retried alone, send the chord again',
                   flow ->> 'chord')
        WHEN exc_type = 'pgqueue.exceptions.ChordError' THEN
            'is the callback of a chord that failed before it ran (ChordError): it has no '
            'arguments to run with, send the chord again'
        ELSE (SELECT format('is followed by chord %s, which its failure failed: '
                            'send the workflow again', f.chord)
                FROM pgqueue.workflow_followers(flow) AS f
               WHERE NOT f.errback AND f.chord IS NOT NULL
               LIMIT 1)
    END,
    -- A new failure enqueues its link_error again only once the first run of it has ended.
    (SELECT format('its link_error %s[%s] has not finished: retry once it has',
                   f.task_name, f.task_id)
       FROM pgqueue.workflow_followers(flow) AS f
       JOIN pgqueue.jobs AS j ON j.id = f.task_id
      WHERE f.errback
      LIMIT 1))
$$;
