-- 0004_vectors.sql: chunk embeddings. SQLite holds them (the FAISS index beside the
-- database is derived from this table and rebuilt from it). Each vector carries its
-- model's name and dimension, so vectors of two models never mix: changing the
-- embedding model means re-embedding, not reinterpreting. vec is dim little-endian
-- float32 values, L2-normalized.
CREATE TABLE vectors (
    chunk_id INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
    model    TEXT    NOT NULL,
    dim      INTEGER NOT NULL CHECK (dim > 0),
    vec      BLOB    NOT NULL CHECK (length(vec) = 4 * dim),
    PRIMARY KEY (chunk_id, model)
) WITHOUT ROWID;
CREATE INDEX vectors_model ON vectors(model);
