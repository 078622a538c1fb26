-- 0003_fts_insert_by_lode.sql: lode writes a new chunk's FTS5 row itself, in the same
-- transaction, instead of an AFTER INSERT trigger. Why: FTS5 (SQLite 3.40) writes its
-- pending index data to disk at every savepoint, and a trigger turns each chunk insert
-- into a statement with its own savepoint, so each chunk became a tiny index segment to
-- merge later: bulk ingest ran 5 to 10 times slower. Deletes and updates of chunks are
-- still followed by triggers. A chunk inserted by hand (sqlite3 shell) needs
--   INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild');
DROP TRIGGER chunks_ai;
