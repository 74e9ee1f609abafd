-- Claim the next ready job and finish it in one statement and one commit: the least work
-- a worker can do per job (no STARTED mark, no result row).
WITH next AS (
    SELECT id
      FROM pgqueue.jobs
     WHERE worker_id IS NULL AND queue = 'default' AND run_at <= now()
     ORDER BY priority DESC, run_at, seq
     LIMIT 1
       FOR UPDATE SKIP LOCKED
)
DELETE FROM pgqueue.jobs AS j USING next WHERE j.id = next.id;
