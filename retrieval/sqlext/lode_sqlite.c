/*
 * lode_sqlite.c: the SQLite loadable extension build/lode_sqlite.so. It gives the stock
 * sqlite3 shell (and any program that loads extensions) lode's own search over the store
 * it has open, as a table-valued function:
 *
 *   .load build/lode_sqlite.so
 *   SELECT rank, score, document, heading_path, text FROM lode_search('query', 10);
 *
 * lode_search(query [, k [, mode]]) is an eponymous virtual table: each call runs the same
 * search as `lode search` and returns the hits best first, one row each, which join with
 * the store's tables and views on chunk_id (chunks.id, v_chunks.id) and document_id
 * (documents.id, v_documents.id). Hidden arguments: k (default 10, at most
 * RET_SEARCH_MAX_K) and mode: 'lexical' (BM25), 'dense' (the query embedded by the
 * store's model, nearest chunks in the FAISS index), 'hybrid' (both fused by reciprocal
 * rank fusion) or 'auto', the default: hybrid when the store has an embedding model,
 * lexical when it has none. All of it is ret_hybrid_search (retrieval/hybrid.h), the one
 * search entry point the CLI and the server use too.
 *
 * Why a second connection: the search code works on a ret_store handle (its prepared
 * statements and per-handle state), so the extension opens the file of the shell's main
 * database read-only through ret_store_open, once per connection, on first use. In WAL
 * mode it sees everything committed; it never writes (the FAISS index is caught up in
 * memory, never saved from here).
 *
 * The embedding model for queries: the folder named by the environment variable
 * LODE_EMBED_MODEL when set, else the path the store recorded when its chunks were
 * embedded (settings.embed_path), else RET_DEFAULT_EMBED_MODEL; relative paths are from
 * the shell's working directory. A model other than the one the store's vectors came from
 * is refused (ret_dense_open). The model and the index are loaded on the first dense or
 * hybrid search of a connection and kept until it closes.
 */
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include "common/lode.h"
#include "retrieval/dense.h"
#include "retrieval/hybrid.h"
#include "retrieval/search.h"
#include "retrieval/store.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Columns of the table; the last three are the function's arguments. */
enum {
    COL_RANK,
    COL_CHUNK_ID,
    COL_DOCUMENT_ID,
    COL_SCORE,
    COL_DOCUMENT,
    COL_URI,
    COL_HEADING_PATH,
    COL_TEXT,
    COL_SNIPPET,
    COL_LEXICAL_RANK,
    COL_DENSE_RANK,
    COL_QUERY, /* hidden */
    COL_K,     /* hidden */
    COL_MODE,  /* hidden */
};
#define N_ARGS 3

static const char SCHEMA[] =
    "CREATE TABLE x(rank INTEGER, chunk_id INTEGER, document_id INTEGER, score REAL, "
    "document TEXT, uri TEXT, heading_path TEXT, text TEXT, snippet TEXT, "
    "lexical_rank INTEGER, dense_rank INTEGER, "
    "query HIDDEN, k HIDDEN, mode HIDDEN)";

/* One connection's view of the store. */
typedef struct lode_vtab {
    sqlite3_vtab base;
    sqlite3 *db;      /* the host connection */
    ret_store *store; /* opened on first use */
    ret_dense *dense; /* the embedder and vector index, on the first search that needs them */
} lode_vtab;

typedef struct lode_cursor {
    sqlite3_vtab_cursor base;
    ret_results *res; /* the current search's rows */
    size_t i;
    sqlite3_value *args[N_ARGS];
} lode_cursor;

/* Sets the table's error message (what the shell prints) and returns SQLITE_ERROR. */
__attribute__((format(printf, 2, 3))) static int vt_error(sqlite3_vtab *vt, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sqlite3_free(vt->zErrMsg);
    vt->zErrMsg = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    return SQLITE_ERROR;
}

static int x_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out,
                     char **err)
{
    int rc = sqlite3_declare_vtab(db, SCHEMA);
    if (rc != SQLITE_OK) return rc;
    lode_vtab *v = sqlite3_malloc(sizeof *v);
    if (!v) return SQLITE_NOMEM;
    memset(v, 0, sizeof *v);
    v->db = db;
    *out = &v->base;
    return SQLITE_OK;
}

static int x_disconnect(sqlite3_vtab *vt)
{
    lode_vtab *v = (lode_vtab *)vt;
    ret_dense_close(v->dense);
    ret_store_close(v->store);
    sqlite3_free(v);
    return SQLITE_OK;
}

/* Plans: the arguments are equality constraints on the hidden columns, passed to
 * x_filter in column order; idx_num has bit i set when argument i is there. An argument
 * that cannot be used yet (its value comes from a table not yet scanned) makes this plan
 * unusable, so SQLite puts that table first. */
static int x_best_index(sqlite3_vtab *vt, sqlite3_index_info *ii)
{
    int where[N_ARGS] = {-1, -1, -1}, unusable = 0;
    for (int c = 0; c < ii->nConstraint; c++) {
        const struct sqlite3_index_constraint *k = &ii->aConstraint[c];
        if (k->iColumn < COL_QUERY || k->op != SQLITE_INDEX_CONSTRAINT_EQ) continue;
        int a = k->iColumn - COL_QUERY;
        if (!k->usable) {
            unusable |= 1 << a;
            continue;
        }
        where[a] = c;
    }
    for (int a = 0; a < N_ARGS; a++)
        if ((unusable & (1 << a)) && where[a] < 0) return SQLITE_CONSTRAINT;
    int idx = 0, argv_i = 1;
    for (int a = 0; a < N_ARGS; a++) {
        if (where[a] < 0) continue;
        idx |= 1 << a;
        ii->aConstraintUsage[where[a]].argvIndex = argv_i++;
        ii->aConstraintUsage[where[a]].omit = 1;
    }
    ii->idxNum = idx;
    ii->estimatedCost = (idx & 1) ? 1000.0 : 1e12;
    ii->estimatedRows = 10;
    /* rows come out by rank */
    if (ii->nOrderBy == 1 && ii->aOrderBy[0].iColumn == COL_RANK && !ii->aOrderBy[0].desc)
        ii->orderByConsumed = 1;
    return SQLITE_OK;
}

static int x_open(sqlite3_vtab *vt, sqlite3_vtab_cursor **out)
{
    lode_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    *out = &c->base;
    return SQLITE_OK;
}

static void cursor_reset(lode_cursor *c)
{
    ret_results_free(c->res);
    c->res = NULL;
    c->i = 0;
    for (int a = 0; a < N_ARGS; a++) {
        sqlite3_value_free(c->args[a]);
        c->args[a] = NULL;
    }
}

static int x_close(sqlite3_vtab_cursor *cur)
{
    lode_cursor *c = (lode_cursor *)cur;
    cursor_reset(c);
    sqlite3_free(c);
    return SQLITE_OK;
}

/* Opens the store behind the host connection's main database, once. */
static int ensure_store(lode_vtab *v)
{
    if (v->store) return SQLITE_OK;
    const char *path = sqlite3_db_filename(v->db, "main");
    if (!path || !*path)
        return vt_error(&v->base, "%s",
                        "lode_search: the main database is not a file; open a lode store "
                        "(sqlite3 lode.db) before searching it");
    char err[512];
    if (ret_store_open(path, RET_STORE_READONLY, &v->store, err, sizeof err) != LODE_OK)
        return vt_error(&v->base, "lode_search: %s", err);
    return SQLITE_OK;
}

/* Opens the dense side for mode (not lexical), once per connection. A store without an
 * embedding model leaves v->dense NULL: fine for 'auto' (lexical then), an error for
 * 'dense' and 'hybrid'. */
static int ensure_dense(lode_vtab *v, ret_mode mode)
{
    if (v->dense || mode == RET_MODE_LEXICAL) return SQLITE_OK;
    const char *env = getenv("LODE_EMBED_MODEL");
    ret_dense_opts o = {.model_path = env && *env ? env : NULL, .no_save = 1};
    char err[1024];
    lode_status st = ret_dense_open(v->store, &o, &v->dense, err, sizeof err);
    if (st == LODE_OK || (st == LODE_ERR_NOTFOUND && mode == RET_MODE_AUTO)) return SQLITE_OK;
    return vt_error(&v->base,
                    "lode_search: %s search: %s (LODE_EMBED_MODEL names the embedding model's "
                    "folder; mode 'lexical' needs none)",
                    ret_mode_name(mode), err);
}

static int x_filter(sqlite3_vtab_cursor *cur, int idx, const char *idx_str, int argc,
                    sqlite3_value **argv)
{
    lode_cursor *c = (lode_cursor *)cur;
    lode_vtab *v = (lode_vtab *)cur->pVtab;
    cursor_reset(c);
    int ai = 0;
    for (int a = 0; a < N_ARGS; a++)
        if (idx & (1 << a)) {
            c->args[a] = sqlite3_value_dup(argv[ai++]);
            if (!c->args[a]) return SQLITE_NOMEM;
        }
    if (!c->args[0] || sqlite3_value_type(c->args[0]) == SQLITE_NULL)
        return vt_error(&v->base, "%s",
                        "lode_search: a query is needed, as in SELECT * FROM "
                        "lode_search('write-ahead log', 10)");
    const char *query = (const char *)sqlite3_value_text(c->args[0]);
    if (!query) return SQLITE_NOMEM;
    int k = 10;
    if (c->args[1] && sqlite3_value_type(c->args[1]) != SQLITE_NULL) {
        if (sqlite3_value_numeric_type(c->args[1]) != SQLITE_INTEGER)
            return vt_error(&v->base, "%s", "lode_search: k must be an integer");
        sqlite3_int64 kk = sqlite3_value_int64(c->args[1]);
        if (kk < 1 || kk > RET_SEARCH_MAX_K)
            return vt_error(&v->base, "lode_search: k must be 1 to %d", RET_SEARCH_MAX_K);
        k = (int)kk;
    }
    ret_mode mode = RET_MODE_AUTO;
    if (c->args[2] && sqlite3_value_type(c->args[2]) != SQLITE_NULL) {
        const char *m = (const char *)sqlite3_value_text(c->args[2]);
        if (!m) return SQLITE_NOMEM;
        int pm = ret_mode_parse(m);
        if (pm < 0)
            return vt_error(&v->base,
                            "lode_search: mode must be 'lexical', 'dense', 'hybrid' or 'auto', "
                            "not '%s'",
                            m);
        mode = (ret_mode)pm;
    }
    int rc = ensure_store(v);
    if (rc == SQLITE_OK) rc = ensure_dense(v, mode);
    if (rc != SQLITE_OK) return rc;
    ret_query q = {.text = query, .k = k, .mode = mode};
    if (ret_hybrid_search(v->store, v->dense, &q, &c->res) != LODE_OK)
        return vt_error(&v->base, "lode_search: %s", ret_store_errmsg(v->store));
    return SQLITE_OK;
}

static int x_next(sqlite3_vtab_cursor *cur)
{
    ((lode_cursor *)cur)->i++;
    return SQLITE_OK;
}

static int x_eof(sqlite3_vtab_cursor *cur)
{
    lode_cursor *c = (lode_cursor *)cur;
    return !c->res || c->i >= c->res->n;
}

static int x_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col)
{
    lode_cursor *c = (lode_cursor *)cur;
    const ret_result *r = &c->res->r[c->i];
    switch (col) {
    case COL_RANK:
        sqlite3_result_int64(ctx, (sqlite3_int64)c->i + 1);
        break;
    case COL_CHUNK_ID:
        sqlite3_result_int64(ctx, r->chunk_id);
        break;
    case COL_DOCUMENT_ID:
        sqlite3_result_int64(ctx, r->document_id);
        break;
    case COL_SCORE:
        sqlite3_result_double(ctx, r->score);
        break;
    case COL_DOCUMENT:
        sqlite3_result_text(ctx, r->title, -1, SQLITE_TRANSIENT);
        break;
    case COL_URI:
        sqlite3_result_text(ctx, r->uri, -1, SQLITE_TRANSIENT);
        break;
    case COL_HEADING_PATH:
        sqlite3_result_text(ctx, r->heading_path, -1, SQLITE_TRANSIENT);
        break;
    case COL_TEXT:
        sqlite3_result_text(ctx, r->text, -1, SQLITE_TRANSIENT);
        break;
    case COL_SNIPPET:
        sqlite3_result_text(ctx, r->snippet, -1, SQLITE_TRANSIENT);
        break;
    case COL_LEXICAL_RANK:
        if (r->lexical_rank) sqlite3_result_int(ctx, r->lexical_rank);
        break;
    case COL_DENSE_RANK:
        if (r->dense_rank) sqlite3_result_int(ctx, r->dense_rank);
        break;
    case COL_QUERY:
    case COL_K:
    case COL_MODE:
        if (c->args[col - COL_QUERY]) sqlite3_result_value(ctx, c->args[col - COL_QUERY]);
        break;
    }
    return SQLITE_OK;
}

static int x_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid)
{
    *rowid = (sqlite3_int64)((lode_cursor *)cur)->i + 1;
    return SQLITE_OK;
}

static const sqlite3_module lode_search_module = {
    .iVersion = 0,
    .xCreate = NULL, /* eponymous only: no CREATE VIRTUAL TABLE ... USING lode_search */
    .xConnect = x_connect,
    .xBestIndex = x_best_index,
    .xDisconnect = x_disconnect,
    .xDestroy = x_disconnect,
    .xOpen = x_open,
    .xClose = x_close,
    .xFilter = x_filter,
    .xNext = x_next,
    .xEof = x_eof,
    .xColumn = x_column,
    .xRowid = x_rowid,
};

/* The entry point SQLite derives from the file name lode_sqlite.so. Registers
 * lode_search on db. Returns SQLITE_OK or an error code with *err set. */
#ifdef _WIN32
__declspec(dllexport)
#endif
    int sqlite3_lodesqlite_init(sqlite3 *db, char **err, const sqlite3_api_routines *api)
{
    SQLITE_EXTENSION_INIT2(api);
    int rc = sqlite3_create_module(db, "lode_search", &lode_search_module, NULL);
    if (rc != SQLITE_OK && err) *err = sqlite3_mprintf("lode_search: %s", sqlite3_errstr(rc));
    return rc;
}
