/*
 * store_int.h: the store's insides, shared by the retrieval files and the tests: the handle's
 * body, the per-handle prepared-statement cache, the embedded SQL files and schema
 * set-up. Not for other modules: they use store.h.
 */
#ifndef LODE_RETRIEVAL_STORE_INT_H
#define LODE_RETRIEVAL_STORE_INT_H

#include "retrieval/store.h"

#include <sqlite3.h>

/* The sql/ files compiled into the binary (scripts/embed.sh, the Makefile's gen rule). */
extern const int lode_sql_count;
extern const char *const lode_sql_names[];
extern const char *const lode_sql_texts[];
/* The text of an embedded file by its path ("sql/schema.sql"); NULL when absent. */
const char *ret_sql_file(const char *name);

/* The status of the statement that just failed on s (never LODE_OK: LODE_ERR_DB when
 * SQLite's code maps to nothing more precise). */
lode_status ret_stmt_failed(ret_store *s);

/* Slots of the prepared-statement cache: each is prepared on first use and kept. */
typedef enum ret_stmt_id {
    RET_STMT_DOC_LOOKUP,
    RET_STMT_DOC_INSERT,
    RET_STMT_DOC_UPDATE,
    RET_STMT_DOC_DELETE,
    RET_STMT_DOC_SET_MTIME,
    RET_STMT_DOC_URIS,
    RET_STMT_CHUNK_IDS,
    RET_STMT_CHUNKS_DELETE,
    RET_STMT_CHUNK_INSERT,
    RET_STMT_FTS_INSERT,
    RET_STMT_CHANGE_INSERT,
    RET_STMT_RUN_START,
    RET_STMT_RUN_FINISH,
    RET_STMT_COUNTS,
    RET_STMT_CHANGES,
    RET_STMT_SEARCH,
    RET_STMT_SEARCH_FTS5,
    RET_STMT_TERM_COUNT,
    RET_STMT_DATA_VERSION,
    RET_STMT_ROW_COUNT,
    RET_STMT_SEARCH_F,
    RET_STMT_SEARCH_FTS5_F,
    RET_STMT_EMBED_GET,
    RET_STMT_SETTING_PUT,
    RET_STMT_VECTOR_PUT,
    RET_STMT_DOC_VECTOR_PUT,
    RET_STMT_VECTOR_COUNTS,
    RET_STMT_VECTOR_COUNT,
    RET_STMT_VECTOR_GET,
    RET_STMT_VECTORS_OF,
    RET_STMT_UNEMBEDDED,
    RET_STMT_CHUNK_META,
    RET_STMT_CHUNK_DOC,
    RET_STMT_SEARCH_IDS,
    RET_STMT_SEARCH_IDS_F,
    RET_STMT_SNIPPET,
    RET_STMT_DENSE_STATE,
    RET_STMT_COUNT
} ret_stmt_id;

/* The BM25 column weights (text, heading_path), as the schema's rank setting has them. */
#define RET_FTS_WEIGHTS "1.0, 2.0"

/* The document filter of search.h's ret_filter as SQL over documents d, with its four
 * values bound at parameters ?F1..?F4 (ret_filter_bind binds them from first). */
#define RET_FILTER_SQL(F1, F2, F3, F4)                                                             \
    "(?" F1 " IS NULL OR d.uri GLOB ?" F1 ") AND (?" F2 " IS NULL OR d.media_type = ?" F2          \
    " OR (substr(?" F2 ", -1) = '/' AND substr(d.media_type, 1, length(?" F2 ")) = ?" F2           \
    ")) AND (?" F3 " IS NULL OR d.mtime_ns >= ?" F3 ") AND (?" F4 " IS NULL OR d.mtime_ns < ?" F4  \
    ")"
struct ret_filter;
/* Binds f's four values (NULL for unset ones) at parameters first..first+3. */
void ret_filter_bind(sqlite3_stmt *q, int first, const struct ret_filter *f);

struct ret_search_state; /* search.c's per-handle state */
void ret_search_state_free(struct ret_search_state *ss);

struct ret_store {
    sqlite3 *db;
    struct ret_search_state *search; /* NULL until the first search */
    unsigned flags;
    int txn; /* an explicit transaction (ret_store_begin) is open */
    sqlite3_stmt *stmt[RET_STMT_COUNT];
    char err[1024];
};

/* The cached statement of slot id, prepared from sql on first use, reset and with its
 * bindings cleared. NULL on failure, with the handle's message set. Owned by the handle. */
sqlite3_stmt *ret_store_stmt(ret_store *s, ret_stmt_id id, const char *sql);
/* Sets the handle's message to "<what>: <SQLite's message>" and returns the status that
 * rc maps to. */
lode_status ret_store_dberr(ret_store *s, int rc, const char *what);

/* Creates the current schema in an empty database: from sql/schema.sql, or, with
 * via_migrations, by applying every migration in order. Sets user_version. Runs inside
 * the caller's transaction. For ret_store_open and the tests' schema-equality check. */
lode_status ret_schema_create(sqlite3 *db, int via_migrations, char *err, size_t errlen);

#endif
