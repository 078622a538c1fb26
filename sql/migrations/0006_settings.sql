-- 0006_settings.sql: store-wide settings as key/value text. The embedding model of the
-- store's vectors lives here (embed_model, embed_dim, embed_path): queries must be
-- embedded by the same model, and a change of model re-embeds every chunk.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
