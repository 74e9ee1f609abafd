-- pgqueue schema, version 10: each migration says which older pgqueue keeps working on the
-- schema it leaves, so that workers and producers can be upgraded one by one after
-- `pgqueue migrate` instead of all at once (docs/how-to/upgrading.md).
--
-- A migration file declares it in a line of its header, read by pgqueue/migrate.py:
--   -- compatible_from: N
-- meaning: a pgqueue whose newest migration is N (or later) runs unchanged on this schema.
-- A file without that line breaks every older pgqueue, as every file before this one does.
-- This one only adds a column older code never reads:
-- compatible_from: 9

ALTER TABLE pgqueue.schema_migrations
    -- What the file's "compatible_from" line said; NULL: only a pgqueue that ships this
    -- migration may run on the schema.
    ADD COLUMN compatible_from integer CHECK (compatible_from < version);
