-- 0005_questions.sql: the question log. Every question `lode ask` or POST /v1/ask
-- answers is one row: what was asked, which chunks retrieval returned (with their
-- scores and the passage number each got in the prompt), the answer, which passages the
-- answer cited, and how long each stage took. Chunk ids are never reused, so the ids
-- here keep meaning the same chunk (or none, once it is deleted).
--   retrieved: JSON array of {"chunk_id", "score", "n"}; n is the passage number in the
--              prompt, null for a chunk that did not fit the context budget
--   cited:     JSON array of the chunk ids the answer cited, in order of first citation
--   finish:    how generation ended: stop, length, cancelled, error, no_passages
-- Times: created_at is Unix seconds; *_ms are milliseconds.
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
