-- schema.sql: lode's whole current store schema (version 6), for reading.
-- A new store is made from this file; an older store is brought here by
-- sql/migrations/NNNN_*.sql in order. A test checks that both give the same schema.
-- PRAGMA user_version holds the schema version.
-- Times: *_at are Unix seconds (REAL); mtime_ns is nanoseconds since the epoch.
-- Ids are AUTOINCREMENT: a deleted chunk's id is never reused, so an index keyed by
-- chunk id (FAISS) cannot confuse an old vector with a new chunk.

CREATE TABLE documents (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uri         TEXT    NOT NULL UNIQUE,
    title       TEXT,
    media_type  TEXT    NOT NULL DEFAULT 'text/plain',
    sha256      TEXT    NOT NULL CHECK (length(sha256) = 64),
    size        INTEGER NOT NULL CHECK (size >= 0),
    mtime_ns    INTEGER NOT NULL DEFAULT 0,
    ingested_at REAL    NOT NULL
);

CREATE TABLE chunks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id  INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal      INTEGER NOT NULL CHECK (ordinal >= 0),
    text         TEXT    NOT NULL,
    heading_path TEXT    NOT NULL DEFAULT '',
    char_start   INTEGER NOT NULL CHECK (char_start >= 0),
    char_end     INTEGER NOT NULL CHECK (char_end >= char_start),
    token_count  INTEGER NOT NULL DEFAULT 0 CHECK (token_count >= 0),
    UNIQUE (document_id, ordinal)
);

CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, heading_path,
    content = 'chunks', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
-- Chunk text weighs 1, the heading path 2: a section's headings name what it is about.
INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('rank', 'bm25(1.0, 2.0)');

-- lode inserts a new chunk's FTS5 row itself, in the same transaction (a trigger would
-- give every insert its own savepoint, at which FTS5 writes a tiny index segment). A chunk
-- inserted by hand needs: INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild');
-- Deletes and updates are followed by triggers.
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, heading_path)
    VALUES ('delete', old.id, old.text, old.heading_path);
END;
CREATE TRIGGER chunks_au AFTER UPDATE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, heading_path)
    VALUES ('delete', old.id, old.text, old.heading_path);
    INSERT INTO chunks_fts(rowid, text, heading_path)
    VALUES (new.id, new.text, new.heading_path);
END;

CREATE TABLE ingest_runs (
    id            INTEGER PRIMARY KEY,
    started_at    REAL    NOT NULL,
    finished_at   REAL,
    paths         TEXT    NOT NULL DEFAULT '[]', -- JSON array of the paths given
    files_seen    INTEGER NOT NULL DEFAULT 0,
    files_added   INTEGER NOT NULL DEFAULT 0,
    files_updated INTEGER NOT NULL DEFAULT 0,
    files_skipped INTEGER NOT NULL DEFAULT 0,
    files_failed  INTEGER NOT NULL DEFAULT 0,
    files_pruned  INTEGER NOT NULL DEFAULT 0,
    bytes         INTEGER NOT NULL DEFAULT 0,
    status        TEXT    NOT NULL DEFAULT 'running'
);

-- Every change to documents and chunks, in commit order, written in the same
-- transaction as the change itself. Consumers (the FAISS index) remember the last seq
-- they applied and catch up from there. removed_ids/added_ids are JSON arrays of chunk ids.
CREATE TABLE changes (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    op             TEXT    NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    document_id    INTEGER NOT NULL,
    uri            TEXT    NOT NULL,
    chunks_removed INTEGER NOT NULL DEFAULT 0,
    chunks_added   INTEGER NOT NULL DEFAULT 0,
    removed_ids    TEXT    NOT NULL DEFAULT '[]',
    added_ids      TEXT    NOT NULL DEFAULT '[]',
    at             REAL    NOT NULL
);
CREATE INDEX changes_document ON changes(document_id);

-- Chunk embeddings (0004_vectors.sql): the source of truth for the FAISS index. vec is
-- dim little-endian float32 values, L2-normalized; model and dim travel with each vector.
CREATE TABLE vectors (
    chunk_id INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
    model    TEXT    NOT NULL,
    dim      INTEGER NOT NULL CHECK (dim > 0),
    vec      BLOB    NOT NULL CHECK (length(vec) = 4 * dim),
    PRIMARY KEY (chunk_id, model)
) WITHOUT ROWID;
CREATE INDEX vectors_model ON vectors(model);

-- The question log (0005_questions.sql): one row per answered question.
-- retrieved: JSON [{chunk_id, score, n}] (n: passage number in the prompt, null when it
-- did not fit); cited: JSON [chunk ids] the answer cited.
CREATE TABLE questions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at    REAL    NOT NULL,
    question      TEXT    NOT NULL,
    mode          TEXT    NOT NULL DEFAULT '',
    k             INTEGER NOT NULL DEFAULT 0,
    retrieved     TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(retrieved)),
    answer        TEXT    NOT NULL DEFAULT '',
    cited         TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(cited)),
    finish        TEXT    NOT NULL DEFAULT '',
    model         TEXT    NOT NULL DEFAULT '',
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    answer_tokens INTEGER NOT NULL DEFAULT 0,
    retrieve_ms   REAL    NOT NULL DEFAULT 0,
    prompt_ms     REAL    NOT NULL DEFAULT 0,
    prefill_ms    REAL    NOT NULL DEFAULT 0,
    decode_ms     REAL    NOT NULL DEFAULT 0,
    total_ms      REAL    NOT NULL DEFAULT 0
);
CREATE INDEX questions_created ON questions(created_at);

-- Store-wide settings (0006_settings.sql): embed_model, embed_dim and embed_path name the
-- model of the vectors; queries are embedded by it, and a new model re-embeds every chunk.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

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

CREATE VIEW v_questions AS
SELECT q.id, datetime(q.created_at, 'unixepoch') AS created, q.question, q.answer,
       q.mode, q.k, json_array_length(q.retrieved) AS n_retrieved,
       (SELECT count(*) FROM json_each(q.retrieved) r WHERE r.value ->> 'n' IS NOT NULL)
           AS n_passages,
       json_array_length(q.cited) AS n_cited, q.retrieved, q.cited, q.finish, q.model,
       q.prompt_tokens, q.answer_tokens, round(q.retrieve_ms, 2) AS retrieve_ms,
       round(q.prompt_ms, 2) AS prompt_ms, round(q.prefill_ms, 2) AS prefill_ms,
       round(q.decode_ms, 2) AS decode_ms, round(q.total_ms, 2) AS total_ms
FROM questions q;
