-- examples.sql: queries to run against a lode store in the stock shell,
--   sqlite3 lode.db < sql/examples.sql      (all of them)
-- or one at a time at the sqlite3 prompt, or with `lode sql "..."`. Each statement stands
-- alone and only reads. Change the search words to yours. Full-text queries use FTS5
-- syntax: words are ANDed, "quoted phrases", prefix*, OR, NOT, NEAR(a b, 5), and
-- column filters (text: or heading_path:). rank is BM25 (lower is better).
.headers on
.mode column

-- 1. How big is the store?
SELECT (SELECT count(*) FROM documents) AS documents,
       (SELECT count(*) FROM chunks) AS chunks,
       (SELECT sum(token_count) FROM chunks) AS tokens,
       (SELECT round(sum(size) / 1048576.0, 2) FROM documents) AS source_mb;

-- 2. Full-text search: the best chunks for some words, with a highlighted snippet.
SELECT v.title, v.heading_path, round(chunks_fts.rank, 2) AS bm25,
       snippet(chunks_fts, 0, '[', ']', '...', 12) AS snippet
FROM chunks_fts JOIN v_chunks v ON v.id = chunks_fts.rowid
WHERE chunks_fts MATCH 'write ahead log'
ORDER BY chunks_fts.rank LIMIT 10;

-- 3. A phrase and a prefix: chunks with "virtual table" and a word starting with modul.
SELECT v.uri, v.ordinal, snippet(chunks_fts, 0, '>>', '<<', '...', 10) AS snippet
FROM chunks_fts JOIN v_chunks v ON v.id = chunks_fts.rowid
WHERE chunks_fts MATCH '"virtual table" AND modul*'
ORDER BY chunks_fts.rank LIMIT 10;

-- 4. Documents, not chunks: the best documents for a query, by their best chunk.
SELECT d.title, d.uri, count(*) AS matching_chunks, round(min(chunks_fts.rank), 2) AS best
FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid
JOIN documents d ON d.id = c.document_id
WHERE chunks_fts MATCH 'index'
GROUP BY d.id ORDER BY best LIMIT 10;

-- 5. Search the section headings only (the heading_path column of the index).
SELECT DISTINCT v.title, v.heading_path
FROM chunks_fts JOIN v_chunks v ON v.id = chunks_fts.rowid
WHERE chunks_fts MATCH 'heading_path: pragma'
LIMIT 20;

-- 6. The biggest documents, with their chunk and token counts.
SELECT title, uri, size, chunks, tokens FROM v_documents ORDER BY size DESC LIMIT 10;

-- 7. The most recent ingest runs: what they saw, added, skipped and how fast.
SELECT id, started, seconds, status, files_seen, files_added, files_updated,
       files_skipped, files_failed, files_pruned, mb_per_s
FROM v_ingest_runs ORDER BY id DESC LIMIT 5;

-- 8. Chunks and tokens per section heading: where the text is.
SELECT heading_path, count(*) AS chunks, sum(token_count) AS tokens
FROM chunks WHERE heading_path <> ''
GROUP BY heading_path ORDER BY chunks DESC LIMIT 20;

-- 9. Chunk sizes: how many chunks have 0-49, 50-99, ... tokens.
SELECT (token_count / 50) * 50 AS tokens_from, count(*) AS chunks
FROM chunks GROUP BY 1 ORDER BY 1;

-- 10. Documents by media type.
SELECT media_type, count(*) AS documents, round(sum(size) / 1048576.0, 2) AS mb
FROM documents GROUP BY media_type ORDER BY documents DESC;

-- 11. Read one document back, chunk by chunk (put its URI in the WHERE clause).
SELECT ordinal, heading_path, char_start, char_end, substr(text, 1, 80) AS start
FROM v_chunks WHERE document_id = (SELECT min(id) FROM documents) ORDER BY ordinal;

-- 12. The latest changes, as a derived index (FAISS) replays them.
SELECT seq, op, uri, chunks_removed, chunks_added, datetime(at, 'unixepoch') AS at
FROM changes ORDER BY seq DESC LIMIT 10;

-- 13. The latest questions (lode ask, POST /v1/ask): how many passages the prompt held,
-- how many the answer cited, and the documents it cited.
SELECT q.id, q.created, substr(q.question, 1, 60) AS question, q.n_passages, q.n_cited,
       (SELECT group_concat(DISTINCT d.title)
        FROM json_each(q.cited) j JOIN chunks c ON c.id = j.value
        JOIN documents d ON d.id = c.document_id) AS cited_documents,
       q.total_ms
FROM v_questions q ORDER BY q.id DESC LIMIT 10;

-- 14. Where answering time goes: milliseconds per stage, averaged over all questions.
SELECT count(*) AS questions, round(avg(retrieve_ms), 1) AS retrieve_ms,
       round(avg(prompt_ms), 1) AS prompt_ms, round(avg(prefill_ms), 1) AS prefill_ms,
       round(avg(decode_ms), 1) AS decode_ms, round(avg(total_ms), 1) AS total_ms,
       round(avg(answer_tokens), 1) AS answer_tokens
FROM v_questions;
