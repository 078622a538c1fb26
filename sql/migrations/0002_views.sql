-- 0002_views.sql: the user-facing views, for the sqlite3 shell and `lode sql`.

CREATE VIEW v_documents AS
SELECT d.id, d.uri, d.title, d.media_type, d.size, d.sha256,
       datetime(d.mtime_ns / 1000000000, 'unixepoch') AS modified,
       datetime(d.ingested_at, 'unixepoch') AS ingested,
       (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS chunks,
       (SELECT coalesce(sum(c.token_count), 0) FROM chunks c WHERE c.document_id = d.id)
           AS tokens
FROM documents d;

CREATE VIEW v_chunks AS
SELECT c.id, c.document_id, d.uri, d.title, c.ordinal, c.heading_path,
       c.char_start, c.char_end, c.token_count, length(c.text) AS chars, c.text
FROM chunks c JOIN documents d ON d.id = c.document_id;

CREATE VIEW v_ingest_runs AS
SELECT id, datetime(started_at, 'unixepoch') AS started,
       datetime(finished_at, 'unixepoch') AS finished,
       round(finished_at - started_at, 3) AS seconds, status, paths,
       files_seen, files_added, files_updated, files_skipped, files_failed, files_pruned,
       bytes,
       CASE WHEN finished_at > started_at
            THEN round(bytes / 1048576.0 / (finished_at - started_at), 2) END AS mb_per_s
FROM ingest_runs;
