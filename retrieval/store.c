/*
 * store.c: the SQLite store: opening and migrating, write transactions, documents and
 * their chunks (replaced atomically, with a change row per write), ingest runs and counts.
 * SQLite result codes become lode_status here, with the detail in the handle's message.
 */
#include "retrieval/store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MIGRATION_DIR   "sql/migrations/"
#define DEFAULT_BUSY_MS 60000
#define SCHEMA_FILE     "sql/schema.sql"
#define MAX_MIGRATIONS  256

/* ---- status conversion -------------------------------------------------------------- */
lode_status ret_status_from_sqlite(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return LODE_OK;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return LODE_ERR_BUSY;
    case SQLITE_NOMEM:
        return LODE_ERR_NOMEM;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
        return LODE_ERR_IO;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return LODE_ERR_FORMAT;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
        return LODE_ERR_INVALID;
    case SQLITE_TOOBIG:
        return LODE_ERR_LIMIT;
    case SQLITE_INTERRUPT:
        return LODE_ERR_CANCELLED;
    default:
        return LODE_ERR_DB;
    }
}

lode_status ret_store_dberr(ret_store *s, int rc, const char *what)
{
    lode_status st = ret_status_from_sqlite(rc);
    if (st == LODE_OK) st = LODE_ERR_INTERNAL;
    const char *m = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    if (st == LODE_ERR_BUSY)
        return lode_seterr(s->err, sizeof s->err, st,
                           "%s: the store is locked by another writer and the wait for it "
                           "timed out (%s)",
                           what, m);
    return lode_seterr(s->err, sizeof s->err, st, "%s: %s", what, m);
}

/* ---- embedded SQL ------------------------------------------------------------------- */
const char *ret_sql_file(const char *name)
{
    for (int i = 0; i < lode_sql_count; i++)
        if (!strcmp(lode_sql_names[i], name)) return lode_sql_texts[i];
    return NULL;
}

/* Migration number of an embedded file "sql/migrations/NNNN_name.sql", or 0. */
static int migration_number(const char *name)
{
    size_t dl = strlen(MIGRATION_DIR);
    if (strncmp(name, MIGRATION_DIR, dl)) return 0;
    const char *p = name + dl;
    int v = 0, digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 6) v = v * 10 + (*p++ - '0'), digits++;
    return digits && *p == '_' ? v : 0;
}

/* The migrations by number: texts[v] is migration v's SQL, for v in 1..returned count.
 * Returns -1 when the numbering has a gap or a duplicate (a build defect). */
static int migrations(const char *texts[MAX_MIGRATIONS + 1])
{
    int n = 0;
    memset(texts, 0, sizeof(const char *) * (MAX_MIGRATIONS + 1));
    for (int i = 0; i < lode_sql_count; i++) {
        int v = migration_number(lode_sql_names[i]);
        if (v <= 0) continue;
        if (v > MAX_MIGRATIONS || texts[v]) return -1;
        texts[v] = lode_sql_texts[i];
        n = LODE_MAX(n, v);
    }
    for (int v = 1; v <= n; v++)
        if (!texts[v]) return -1;
    return n;
}

int ret_store_schema_version(void)
{
    const char *texts[MAX_MIGRATIONS + 1];
    int n = migrations(texts);
    return n < 0 ? 0 : n;
}

static lode_status exec_sql(sqlite3 *db, const char *sql, const char *what, char *err,
                            size_t errlen)
{
    char *m = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &m);
    if (rc == SQLITE_OK) return LODE_OK;
    lode_status st = ret_status_from_sqlite(rc);
    lode_seterr(err, errlen, st, "%s: %s", what, m ? m : sqlite3_errstr(rc));
    sqlite3_free(m);
    return st;
}

static lode_status set_user_version(sqlite3 *db, int v, char *err, size_t errlen)
{
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v);
    return exec_sql(db, sql, "setting the schema version", err, errlen);
}

static lode_status get_user_version(sqlite3 *db, int *v, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *v = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        return LODE_OK;
    }
    lode_status s = ret_status_from_sqlite(rc);
    if (s == LODE_OK) s = LODE_ERR_DB;
    lode_seterr(err, errlen, s, "reading the schema version: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return s;
}

/* Applies migrations from+1 .. to in order. */
static lode_status migrate(sqlite3 *db, int from, int to, char *err, size_t errlen)
{
    const char *texts[MAX_MIGRATIONS + 1];
    if (migrations(texts) < to)
        return lode_seterr(err, errlen, LODE_ERR_INTERNAL, "embedded migrations are incomplete");
    for (int v = from + 1; v <= to; v++) {
        char what[64];
        snprintf(what, sizeof what, "applying migration %04d", v);
        lode_status st = exec_sql(db, texts[v], what, err, errlen);
        if (st) return st;
    }
    return set_user_version(db, to, err, errlen);
}

lode_status ret_schema_create(sqlite3 *db, int via_migrations, char *err, size_t errlen)
{
    int known = ret_store_schema_version();
    if (known <= 0)
        return lode_seterr(err, errlen, LODE_ERR_INTERNAL, "no schema migrations are embedded");
    if (via_migrations) return migrate(db, 0, known, err, errlen);
    const char *schema = ret_sql_file(SCHEMA_FILE);
    if (!schema)
        return lode_seterr(err, errlen, LODE_ERR_INTERNAL, "%s is not embedded", SCHEMA_FILE);
    lode_status st = exec_sql(db, schema, "creating the schema", err, errlen);
    if (st) return st;
    return set_user_version(db, known, err, errlen);
}

/* 1 when the database holds no schema object at all (a new file). */
static lode_status db_is_empty(sqlite3 *db, int *empty, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_schema", -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *empty = sqlite3_column_int(st, 0) == 0;
        sqlite3_finalize(st);
        return LODE_OK;
    }
    lode_status s = ret_status_from_sqlite(rc);
    if (s == LODE_OK) s = LODE_ERR_DB;
    lode_seterr(err, errlen, s, "reading the schema: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return s;
}

static lode_status newer_error(const char *path, int v, int known, char *err, size_t errlen)
{
    return lode_seterr(err, errlen, LODE_ERR_VERSION,
                       "%s has store schema version %d, but this lode knows versions up to %d: "
                       "it was written by a newer lode; use that version (or a new store)",
                       path, v, known);
}

/* Brings the schema of a read-write store up to date inside one BEGIN IMMEDIATE
 * transaction (concurrent openers wait, then see the finished schema). */
static lode_status upgrade(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    int known = ret_store_schema_version(), v = 0, empty = 0;
    lode_status st =
        exec_sql(db, "BEGIN IMMEDIATE", "locking the store to set up its schema", err, errlen);
    if (st) return st;
    if ((st = get_user_version(db, &v, err, errlen))) goto out;
    if (v > known) {
        st = newer_error(path, v, known, err, errlen);
        goto out;
    }
    if (v == known) goto out;
    if (v == 0) {
        if ((st = db_is_empty(db, &empty, err, errlen))) goto out;
        if (!empty) {
            st = lode_seterr(err, errlen, LODE_ERR_FORMAT,
                             "%s is a SQLite database but not a lode store (it has tables and "
                             "no lode schema version)",
                             path);
            goto out;
        }
        st = ret_schema_create(db, 0, err, errlen);
    } else {
        LODE_INFO("migrating store %s from schema version %d to %d", path, v, known);
        st = migrate(db, v, known, err, errlen);
    }
out:
    if (st == LODE_OK) {
        st = exec_sql(db, "COMMIT", "committing the schema", err, errlen);
        if (st == LODE_OK) return LODE_OK;
    }
    if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

/* A read-only store must already be at the current version; *older says when it is
 * a lode store of an older version. */
static lode_status check_readonly(sqlite3 *db, const char *path, int *older, char *err,
                                  size_t errlen)
{
    int known = ret_store_schema_version(), v = 0, empty = 0;
    lode_status st = get_user_version(db, &v, err, errlen);
    if (st) return st;
    if (v > known) return newer_error(path, v, known, err, errlen);
    if (v == known) return LODE_OK;
    if (v == 0) {
        if ((st = db_is_empty(db, &empty, err, errlen))) return st;
        return lode_seterr(err, errlen, LODE_ERR_FORMAT, "%s is %s", path,
                           empty ? "empty, not a lode store yet (run `lode ingest` first)"
                                 : "a SQLite database but not a lode store");
    }
    *older = 1;
    return lode_seterr(err, errlen, LODE_ERR_VERSION,
                       "%s has the older store schema version %d (this lode uses %d); open it "
                       "once for writing (e.g. `lode ingest`) to migrate it",
                       path, v, known);
}

lode_status ret_store_open(const char *path, unsigned flags, ret_store **out, char *errmsg,
                           size_t errlen)
{
    char scratch[256];
    if (!errmsg || !errlen) errmsg = scratch, errlen = sizeof scratch;
    errmsg[0] = 0;
    if (out) *out = NULL;
    if (!path || !*path || !out)
        return lode_seterr(errmsg, errlen, LODE_ERR_INVALID, "ret_store_open: no path given");

    lode_status st = LODE_OK;
    int ro = (flags & RET_STORE_READONLY) != 0;
    ret_store *s = lode_calloc(1, sizeof *s);
    if (!s) return lode_seterr(errmsg, errlen, LODE_ERR_NOMEM, "out of memory opening %s", path);
    s->flags = flags;
    int oflags = ro ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = sqlite3_open_v2(path, &s->db, oflags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        st = ret_status_from_sqlite(rc);
        if (ro && (rc & 0xff) == SQLITE_CANTOPEN) {
            st = LODE_ERR_NOTFOUND;
            lode_seterr(errmsg, errlen, st, "no store at %s (run `lode ingest` to create one)",
                        path);
        } else {
            lode_seterr(errmsg, errlen, st, "cannot open store %s: %s", path,
                        s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        }
        goto out;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, DEFAULT_BUSY_MS);
    /* foreign_keys makes ON DELETE CASCADE remove a document's chunks (and, through the
     * triggers, their FTS rows). WAL lets readers run beside the writer; synchronous=NORMAL
     * in WAL loses nothing committed when the process dies, only on power loss. */
    if ((st = exec_sql(s->db, "PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536",
                       "opening the store", errmsg, errlen)))
        goto out;
    if (!ro) {
        /* Switching a new file to WAL takes a lock that SQLite does not wait for through
         * the busy handler: two processes creating one store at once got "database is
         * locked" here. Retry for as long as the busy timeout. */
        for (int waited = 0;; waited += 10) {
            st = exec_sql(s->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL",
                          "setting WAL mode", errmsg, errlen);
            if (st != LODE_ERR_BUSY || waited >= DEFAULT_BUSY_MS) break;
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (st) goto out;
        st = upgrade(s->db, path, errmsg, errlen);
    } else {
        int older = 0;
        st = check_readonly(s->db, path, &older, errmsg, errlen);
        if (st == LODE_ERR_VERSION && older && (flags & RET_STORE_UPGRADE)) {
            ret_store *rw = NULL;
            ret_store_close(s);
            s = NULL;
            st = ret_store_open(path, 0, &rw, errmsg, errlen);
            ret_store_close(rw);
            if (st == LODE_OK) return ret_store_open(path, RET_STORE_READONLY, out, errmsg, errlen);
        }
    }
out:
    if (st != LODE_OK) {
        if (st == LODE_ERR_DB && strstr(errmsg, "not a database")) st = LODE_ERR_FORMAT;
        ret_store_close(s);
        return st;
    }
    *out = s;
    return LODE_OK;
}

void ret_store_close(ret_store *s)
{
    if (!s) return;
    for (int i = 0; i < RET_STMT_COUNT; i++) sqlite3_finalize(s->stmt[i]);
    ret_search_state_free(s->search);
    if (s->db) {
        if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(s->db);
    }
    lode_free(s);
}

const char *ret_store_errmsg(const ret_store *s)
{
    if (!s) return "no store";
    return s->err[0] ? s->err : "no error";
}

struct sqlite3 *ret_store_sqlite(ret_store *s)
{
    return s ? s->db : NULL;
}

void ret_store_set_busy_timeout(ret_store *s, int ms)
{
    if (s) sqlite3_busy_timeout(s->db, ms < 0 ? 0 : ms);
}

sqlite3_stmt *ret_store_stmt(ret_store *s, ret_stmt_id id, const char *sql)
{
    sqlite3_stmt *st = s->stmt[id];
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return st;
    }
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        ret_store_dberr(s, rc, "preparing a statement");
        return NULL;
    }
    s->stmt[id] = st;
    return st;
}

/* Status of a prepared-statement failure: the handle's message was set by ret_store_stmt. */
lode_status ret_stmt_failed(ret_store *s)
{
    lode_status st = ret_status_from_sqlite(sqlite3_errcode(s->db));
    return st == LODE_OK ? LODE_ERR_DB : st;
}

/* Runs a statement that returns no rows to completion and resets it. */
static lode_status step_done(ret_store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    lode_status ls = rc == SQLITE_DONE ? LODE_OK : ret_store_dberr(s, rc, what);
    sqlite3_reset(st);
    return ls;
}

static double now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int utf8_ok(const char *p)
{
    if (!p) return 1;
    size_t n = strlen(p);
    return lode_utf8_valid_prefix(p, n) == n;
}

static int hex64(const char *p)
{
    if (!p) return 0;
    for (int i = 0; i < 64; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f') ||
              (p[i] >= 'A' && p[i] <= 'F')))
            return 0;
    return p[64] == 0;
}

/* ---- transactions ------------------------------------------------------------------- */
static lode_status exec_s(ret_store *s, const char *sql, const char *what)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? LODE_OK : ret_store_dberr(s, rc, what);
}

lode_status ret_store_begin(ret_store *s)
{
    if (s->flags & RET_STORE_READONLY)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID, "the store is read-only");
    if (s->txn || !sqlite3_get_autocommit(s->db))
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID,
                           "a transaction is already open on this store handle");
    lode_status st = exec_s(s, "BEGIN IMMEDIATE", "starting a write transaction");
    if (st == LODE_OK) s->txn = 1;
    return st;
}

lode_status ret_store_commit(ret_store *s)
{
    if (!s->txn)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID, "no transaction is open");
    lode_status st = exec_s(s, "COMMIT", "committing");
    s->txn = !sqlite3_get_autocommit(s->db);
    return st;
}

lode_status ret_store_rollback(ret_store *s)
{
    lode_status st = LODE_OK;
    if (!sqlite3_get_autocommit(s->db)) st = exec_s(s, "ROLLBACK", "rolling back");
    s->txn = 0;
    return st;
}

int ret_store_in_txn(const ret_store *s)
{
    return s && s->txn;
}

/* One write call's atomic unit: its own BEGIN IMMEDIATE transaction, or, inside the
 * caller's explicit transaction, nothing: no savepoint, because FTS5 writes its pending
 * index data at every savepoint (a segment per document instead of one per batch). The
 * write functions check their input and allocate before the first write instead, so the
 * only failures after it are storage errors, after which the whole transaction is rolled
 * back (write_end with started = 1). */
static lode_status write_begin(ret_store *s)
{
    if (s->flags & RET_STORE_READONLY)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID, "the store is read-only");
    if (s->txn) return LODE_OK;
    return exec_s(s, "BEGIN IMMEDIATE", "starting a write transaction");
}

/* Ends a write call: commits its own transaction, or on failure rolls back its own
 * transaction, or the caller's when started says the call had begun writing. */
static lode_status write_end(ret_store *s, lode_status st, int started)
{
    if (st == LODE_OK) {
        if (s->txn) return LODE_OK;
        st = exec_s(s, "COMMIT", "committing");
        if (st == LODE_OK) return LODE_OK;
    }
    if (s->txn && (started || sqlite3_get_autocommit(s->db))) {
        if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        s->txn = 0;
        size_t l = strlen(s->err);
        snprintf(s->err + l, sizeof s->err - l,
                 " (the open transaction was rolled back: nothing since ret_store_begin was "
                 "kept)");
    } else if (!s->txn && !sqlite3_get_autocommit(s->db)) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    }
    return st;
}

/* ---- documents ---------------------------------------------------------------------- */
lode_status ret_store_doc_lookup(ret_store *s, const char *uri, ret_doc_info *out)
{
    if (!uri || !out)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID, "doc_lookup: no URI");
    sqlite3_stmt *st = ret_store_stmt(
        s, RET_STMT_DOC_LOOKUP, "SELECT id, sha256, size, mtime_ns FROM documents WHERE uri = ?1");
    if (!st) return ret_stmt_failed(s);
    sqlite3_bind_text(st, 1, uri, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    lode_status ls = LODE_OK;
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof *out);
        out->id = sqlite3_column_int64(st, 0);
        const unsigned char *h = sqlite3_column_text(st, 1);
        if (h) snprintf(out->sha256, sizeof out->sha256, "%s", (const char *)h);
        out->size = sqlite3_column_int64(st, 2);
        out->mtime_ns = sqlite3_column_int64(st, 3);
    } else if (rc == SQLITE_DONE) {
        ls = LODE_ERR_NOTFOUND;
    } else {
        ls = ret_store_dberr(s, rc, "looking up a document");
    }
    sqlite3_reset(st);
    return ls;
}

/* The ids of a document's chunks as a JSON array (owned by the caller) and their count. */
static lode_status chunk_ids(ret_store *s, int64_t doc_id, char **json, int64_t *count)
{
    *json = NULL;
    *count = 0;
    sqlite3_stmt *st = ret_store_stmt(s, RET_STMT_CHUNK_IDS,
                                      "SELECT count(*), json_group_array(id) FROM "
                                      "(SELECT id FROM chunks WHERE document_id = ?1 ORDER BY id)");
    if (!st) return ret_stmt_failed(s);
    sqlite3_bind_int64(st, 1, doc_id);
    int rc = sqlite3_step(st);
    lode_status ls = LODE_OK;
    if (rc == SQLITE_ROW) {
        *count = sqlite3_column_int64(st, 0);
        const char *t = (const char *)sqlite3_column_text(st, 1);
        *json = lode_strdup(t ? t : "[]");
        if (!*json) ls = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory");
    } else {
        ls = ret_store_dberr(s, rc, "listing a document's chunks");
    }
    sqlite3_reset(st);
    return ls;
}

static lode_status log_change(ret_store *s, const char *op, int64_t doc_id, const char *uri,
                              int64_t removed, const char *removed_ids, int64_t added,
                              const char *added_ids)
{
    sqlite3_stmt *st = ret_store_stmt(s, RET_STMT_CHANGE_INSERT,
                                      "INSERT INTO changes(op, document_id, uri, chunks_removed, "
                                      "chunks_added, removed_ids, added_ids, at) "
                                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    if (!st) return ret_stmt_failed(s);
    sqlite3_bind_text(st, 1, op, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, doc_id);
    sqlite3_bind_text(st, 3, uri, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, removed);
    sqlite3_bind_int64(st, 5, added);
    sqlite3_bind_text(st, 6, removed_ids ? removed_ids : "[]", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, added_ids ? added_ids : "[]", -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 8, now_unix());
    return step_done(s, st, "logging a change");
}

static lode_status check_doc(ret_store *s, const ret_doc *doc, const ret_chunk_in *chunks, size_t n)
{
    char *e = s->err;
    size_t el = sizeof s->err;
    if (!doc || !doc->uri || !*doc->uri)
        return lode_seterr(e, el, LODE_ERR_INVALID, "document without a URI");
    if (!utf8_ok(doc->uri))
        return lode_seterr(e, el, LODE_ERR_UTF8, "document URI is not valid UTF-8");
    if (!hex64(doc->sha256))
        return lode_seterr(e, el, LODE_ERR_INVALID, "%s: sha256 is not 64 hex digits", doc->uri);
    if (doc->size < 0) return lode_seterr(e, el, LODE_ERR_INVALID, "%s: negative size", doc->uri);
    if (!utf8_ok(doc->title) || !utf8_ok(doc->media_type))
        return lode_seterr(e, el, LODE_ERR_UTF8, "%s: title or media type is not valid UTF-8",
                           doc->uri);
    if (n && !chunks)
        return lode_seterr(e, el, LODE_ERR_INVALID, "%s: chunk array missing", doc->uri);
    for (size_t i = 0; i < n; i++) {
        const ret_chunk_in *c = &chunks[i];
        if (!c->text || !*c->text)
            return lode_seterr(e, el, LODE_ERR_INVALID, "%s: chunk %zu is empty", doc->uri, i);
        if (c->char_start < 0 || c->char_end < c->char_start || c->token_count < 0)
            return lode_seterr(e, el, LODE_ERR_INVALID,
                               "%s: chunk %zu has a bad span [%lld, %lld) or token count %d",
                               doc->uri, i, (long long)c->char_start, (long long)c->char_end,
                               (int)c->token_count);
        if (!utf8_ok(c->text) || !utf8_ok(c->heading_path))
            return lode_seterr(e, el, LODE_ERR_UTF8, "%s: chunk %zu is not valid UTF-8", doc->uri,
                               i);
    }
    return LODE_OK;
}

lode_status ret_store_doc_replace(ret_store *s, const ret_doc *doc, const ret_chunk_in *chunks,
                                  size_t n, int64_t *doc_id)
{
    lode_status st = check_doc(s, doc, chunks, n);
    if (st) return st;
    ret_doc_info old;
    int64_t id = 0, removed = 0;
    char *removed_ids = NULL;
    lode_buf added = LODE_BUF_INIT;
    int started = 0; /* set at the first write */
    /* everything that can fail for want of memory happens before the first write */
    if (n > (SIZE_MAX - 2) / 21 || lode_buf_reserve(&added, 2 + n * 21))
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM,
                           "%s: out of memory for %zu chunks", doc->uri, n);
    if ((st = write_begin(s))) {
        lode_buf_free(&added);
        return st;
    }

    /* looked up inside the write lock, so a concurrent writer cannot slip in between */
    int existed = 0;
    st = ret_store_doc_lookup(s, doc->uri, &old);
    if (st == LODE_OK) {
        existed = 1;
        id = old.id;
    } else if (st != LODE_ERR_NOTFOUND) {
        goto out;
    }
    st = LODE_OK;

    double now = now_unix();
    const char *media = doc->media_type && *doc->media_type ? doc->media_type : "text/plain";
    sqlite3_stmt *q;
    if (existed) {
        if ((st = chunk_ids(s, id, &removed_ids, &removed))) goto out;
        q = ret_store_stmt(s, RET_STMT_DOC_UPDATE,
                           "UPDATE documents SET title = ?2, media_type = ?3, sha256 = lower(?4), "
                           "size = ?5, mtime_ns = ?6, ingested_at = ?7 WHERE id = ?1");
        if (!q) {
            st = ret_stmt_failed(s);
            goto out;
        }
        sqlite3_bind_int64(q, 1, id);
    } else {
        q = ret_store_stmt(s, RET_STMT_DOC_INSERT,
                           "INSERT INTO documents(uri, title, media_type, sha256, size, mtime_ns, "
                           "ingested_at) VALUES (?1, ?2, ?3, lower(?4), ?5, ?6, ?7)");
        if (!q) {
            st = ret_stmt_failed(s);
            goto out;
        }
        sqlite3_bind_text(q, 1, doc->uri, -1, SQLITE_STATIC);
    }
    if (doc->title)
        sqlite3_bind_text(q, 2, doc->title, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 2);
    sqlite3_bind_text(q, 3, media, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, doc->sha256, 64, SQLITE_STATIC);
    sqlite3_bind_int64(q, 5, doc->size);
    sqlite3_bind_int64(q, 6, doc->mtime_ns);
    sqlite3_bind_double(q, 7, now);
    started = 1;
    if ((st = step_done(s, q, existed ? "updating a document" : "inserting a document"))) goto out;
    if (!existed) id = sqlite3_last_insert_rowid(s->db);

    if (existed && removed > 0) {
        q = ret_store_stmt(s, RET_STMT_CHUNKS_DELETE, "DELETE FROM chunks WHERE document_id = ?1");
        if (!q) {
            st = ret_stmt_failed(s);
            goto out;
        }
        sqlite3_bind_int64(q, 1, id);
        if ((st = step_done(s, q, "deleting old chunks"))) goto out;
    }

    q = ret_store_stmt(s, RET_STMT_CHUNK_INSERT,
                       "INSERT INTO chunks(document_id, ordinal, text, heading_path, char_start, "
                       "char_end, token_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    /* the FTS5 row is written here, not by a trigger: see sql/migrations/0003 */
    sqlite3_stmt *fq = q ? ret_store_stmt(s, RET_STMT_FTS_INSERT,
                                          "INSERT INTO chunks_fts(rowid, text, heading_path) "
                                          "VALUES (?1, ?2, ?3)")
                         : NULL;
    if (!q || !fq) {
        st = ret_stmt_failed(s);
        goto out;
    }
    lode_buf_putc(&added, '['); /* reserved above: cannot fail */
    for (size_t i = 0; i < n; i++) {
        const ret_chunk_in *c = &chunks[i];
        const char *heading = c->heading_path ? c->heading_path : "";
        sqlite3_bind_int64(q, 1, id);
        sqlite3_bind_int64(q, 2, (int64_t)i);
        sqlite3_bind_text(q, 3, c->text, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 4, heading, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 5, c->char_start);
        sqlite3_bind_int64(q, 6, c->char_end);
        sqlite3_bind_int(q, 7, c->token_count);
        if ((st = step_done(s, q, "inserting a chunk"))) goto out;
        int64_t cid = sqlite3_last_insert_rowid(s->db);
        sqlite3_bind_int64(fq, 1, cid);
        sqlite3_bind_text(fq, 2, c->text, -1, SQLITE_STATIC);
        sqlite3_bind_text(fq, 3, heading, -1, SQLITE_STATIC);
        if ((st = step_done(s, fq, "indexing a chunk"))) goto out;
        char num[24];
        int len = snprintf(num, sizeof num, "%s%lld", i ? "," : "", (long long)cid);
        lode_buf_append(&added, num, (size_t)len);
    }
    lode_buf_putc(&added, ']');
    st = log_change(s, existed ? "update" : "insert", id, doc->uri, removed, removed_ids,
                    (int64_t)n, added.data);
out:
    st = write_end(s, st, started);
    lode_free(removed_ids);
    lode_buf_free(&added);
    if (st == LODE_OK && doc_id) *doc_id = id;
    return st;
}

lode_status ret_store_doc_set_mtime(ret_store *s, int64_t doc_id, int64_t mtime_ns)
{
    lode_status st = write_begin(s);
    if (st) return st;
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_DOC_SET_MTIME,
                                     "UPDATE documents SET mtime_ns = ?2 WHERE id = ?1");
    if (!q) {
        st = ret_stmt_failed(s);
        goto out;
    }
    sqlite3_bind_int64(q, 1, doc_id);
    sqlite3_bind_int64(q, 2, mtime_ns);
    if ((st = step_done(s, q, "updating a document's mtime"))) goto out;
    if (sqlite3_changes(s->db) == 0)
        st = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOTFOUND, "no document with id %lld",
                         (long long)doc_id);
out:
    return write_end(s, st, 0);
}

lode_status ret_store_doc_delete(ret_store *s, const char *uri)
{
    if (!uri) return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID, "doc_delete: no URI");
    ret_doc_info old;
    char *removed_ids = NULL;
    int64_t removed = 0;
    int started = 0;
    lode_status st = write_begin(s);
    if (st) return st;
    st = ret_store_doc_lookup(s, uri, &old);
    if (st == LODE_ERR_NOTFOUND) {
        lode_seterr(s->err, sizeof s->err, st, "no document %s in the store", uri);
        goto out;
    }
    if (st) goto out;
    if ((st = chunk_ids(s, old.id, &removed_ids, &removed))) goto out;
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_DOC_DELETE, "DELETE FROM documents WHERE id = ?1");
    if (!q) {
        st = ret_stmt_failed(s);
        goto out;
    }
    sqlite3_bind_int64(q, 1, old.id);
    started = 1;
    if ((st = step_done(s, q, "deleting a document"))) goto out;
    st = log_change(s, "delete", old.id, uri, removed, removed_ids, 0, "[]");
out:
    st = write_end(s, st, started);
    lode_free(removed_ids);
    return st;
}

void ret_strv_free(char **v, size_t n)
{
    if (!v) return;
    for (size_t i = 0; i < n; i++) lode_free(v[i]);
    lode_free(v);
}

lode_status ret_store_doc_uris(ret_store *s, const char *prefix, char ***uris, size_t *n)
{
    *uris = NULL;
    *n = 0;
    if (!prefix) prefix = "";
    /* the range [prefix, prefix with its last byte below 0xff incremented) is every string
     * that starts with prefix under BINARY collation, and uses the URI index */
    size_t pl = strlen(prefix);
    char *upper = lode_strdup(prefix);
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    lode_status st = LODE_OK;
    if (!upper) return lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory");
    while (pl > 0 && (unsigned char)upper[pl - 1] == 0xff) upper[--pl] = 0;
    if (pl > 0) upper[pl - 1] = (char)((unsigned char)upper[pl - 1] + 1);
    sqlite3_stmt *q =
        ret_store_stmt(s, RET_STMT_DOC_URIS,
                       "SELECT uri FROM documents WHERE uri >= ?1 AND (?2 IS NULL OR uri < ?2) "
                       "ORDER BY uri");
    if (!q) {
        st = ret_stmt_failed(s);
        goto out;
    }
    sqlite3_bind_text(q, 1, prefix, -1, SQLITE_STATIC);
    if (pl > 0)
        sqlite3_bind_text(q, 2, upper, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 2);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **nv = lode_realloc(v, ncap * sizeof *nv);
            if (!nv) goto nomem;
            v = nv;
            cap = ncap;
        }
        const char *u = (const char *)sqlite3_column_text(q, 0);
        if (!(v[cnt] = lode_strdup(u ? u : ""))) goto nomem;
        cnt++;
    }
    if (rc != SQLITE_DONE) st = ret_store_dberr(s, rc, "listing documents");
    goto out;
nomem:
    st = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory listing documents");
out:
    if (q) sqlite3_reset(q);
    lode_free(upper);
    if (st) {
        ret_strv_free(v, cnt);
        return st;
    }
    *uris = v;
    *n = cnt;
    return LODE_OK;
}

/* ---- ingest runs -------------------------------------------------------------------- */
static lode_status json_string(lode_buf *b, const char *p)
{
    lode_status st = lode_buf_putc(b, '"');
    for (; !st && *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\')
            st = lode_buf_printf(b, "\\%c", c);
        else if (c < 0x20)
            st = lode_buf_printf(b, "\\u%04x", c);
        else
            st = lode_buf_putc(b, (char)c);
    }
    return st ? st : lode_buf_putc(b, '"');
}

lode_status ret_store_run_start(ret_store *s, const char *const *paths, size_t n_paths,
                                int64_t *run_id)
{
    lode_buf js = LODE_BUF_INIT;
    lode_status st = lode_buf_putc(&js, '[');
    for (size_t i = 0; !st && i < n_paths; i++) {
        if (!utf8_ok(paths[i]))
            return lode_buf_free(&js), lode_seterr(s->err, sizeof s->err, LODE_ERR_UTF8,
                                                   "run_start: a path is not valid UTF-8");
        if (i) st = lode_buf_putc(&js, ',');
        if (!st) st = json_string(&js, paths[i] ? paths[i] : "");
    }
    if (!st) st = lode_buf_putc(&js, ']');
    if (st) {
        lode_buf_free(&js);
        return lode_seterr(s->err, sizeof s->err, st, "run_start: out of memory");
    }
    if ((st = write_begin(s))) goto done;
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_RUN_START,
                                     "INSERT INTO ingest_runs(started_at, paths) VALUES (?1, ?2)");
    if (!q) {
        st = ret_stmt_failed(s);
    } else {
        sqlite3_bind_double(q, 1, now_unix());
        sqlite3_bind_text(q, 2, js.data, -1, SQLITE_STATIC);
        st = step_done(s, q, "starting an ingest run");
        if (!st && run_id) *run_id = sqlite3_last_insert_rowid(s->db);
    }
    st = write_end(s, st, 0);
done:
    lode_buf_free(&js);
    return st;
}

lode_status ret_store_run_finish(ret_store *s, int64_t run_id, const ret_run_stats *rs,
                                 const char *status)
{
    if (!rs || !status || !utf8_ok(status))
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID, "run_finish: bad arguments");
    lode_status st = write_begin(s);
    if (st) return st;
    sqlite3_stmt *q = ret_store_stmt(
        s, RET_STMT_RUN_FINISH,
        "UPDATE ingest_runs SET finished_at = ?2, files_seen = ?3, files_added = ?4, "
        "files_updated = ?5, files_skipped = ?6, files_failed = ?7, files_pruned = ?8, "
        "bytes = ?9, status = ?10 WHERE id = ?1");
    if (!q) {
        st = ret_stmt_failed(s);
        goto out;
    }
    sqlite3_bind_int64(q, 1, run_id);
    sqlite3_bind_double(q, 2, now_unix());
    sqlite3_bind_int64(q, 3, rs->files_seen);
    sqlite3_bind_int64(q, 4, rs->files_added);
    sqlite3_bind_int64(q, 5, rs->files_updated);
    sqlite3_bind_int64(q, 6, rs->files_skipped);
    sqlite3_bind_int64(q, 7, rs->files_failed);
    sqlite3_bind_int64(q, 8, rs->files_pruned);
    sqlite3_bind_int64(q, 9, rs->bytes);
    sqlite3_bind_text(q, 10, status, -1, SQLITE_STATIC);
    if ((st = step_done(s, q, "finishing an ingest run"))) goto out;
    if (sqlite3_changes(s->db) == 0)
        st = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOTFOUND, "no ingest run %lld",
                         (long long)run_id);
out:
    return write_end(s, st, 0);
}

/* ---- counts ------------------------------------------------------------------------- */
lode_status ret_store_get_counts(ret_store *s, ret_store_counts *out)
{
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_COUNTS,
                                     "SELECT (SELECT count(*) FROM documents), "
                                     "(SELECT count(*) FROM chunks), "
                                     "(SELECT coalesce(max(seq), 0) FROM changes)");
    if (!q) return ret_stmt_failed(s);
    int rc = sqlite3_step(q);
    lode_status st = LODE_OK;
    if (rc == SQLITE_ROW) {
        out->documents = sqlite3_column_int64(q, 0);
        out->chunks = sqlite3_column_int64(q, 1);
        out->change_seq = sqlite3_column_int64(q, 2);
    } else {
        st = ret_store_dberr(s, rc, "counting documents and chunks");
    }
    sqlite3_reset(q);
    return st;
}

/* ---- change log --------------------------------------------------------------------- */
/* Parses a JSON array of integers as lode writes it ("[]", "[1,2,3]") into a new array. */
static lode_status parse_ids(const char *t, int64_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!t || *t++ != '[') return LODE_ERR_FORMAT;
    size_t cap = 0;
    int64_t *v = NULL;
    while (*t && *t != ']') {
        char *end = NULL;
        long long x = strtoll(t, &end, 10);
        if (end == t || (*end != ',' && *end != ']')) goto bad;
        if (*n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            int64_t *nv = lode_realloc(v, ncap * sizeof *nv);
            if (!nv) {
                lode_free(v);
                *n = 0;
                return LODE_ERR_NOMEM;
            }
            v = nv;
            cap = ncap;
        }
        v[(*n)++] = (int64_t)x;
        t = *end == ',' ? end + 1 : end;
    }
    if (*t != ']' || t[1]) goto bad;
    *out = v;
    return LODE_OK;
bad:
    lode_free(v);
    *n = 0;
    return LODE_ERR_FORMAT;
}

void ret_changes_free(ret_change *v, size_t n)
{
    if (!v) return;
    for (size_t i = 0; i < n; i++) {
        lode_free(v[i].removed);
        lode_free(v[i].added);
    }
    lode_free(v);
}

lode_status ret_store_changes(ret_store *s, int64_t after, size_t max, ret_change **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (max == 0) max = 1000;
    if (max > 100000) max = 100000;
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_CHANGES,
                                     "SELECT seq, op, document_id, removed_ids, added_ids "
                                     "FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2");
    if (!q) return ret_stmt_failed(s);
    sqlite3_bind_int64(q, 1, after);
    sqlite3_bind_int64(q, 2, (int64_t)max);
    ret_change *v = lode_calloc(max, sizeof *v);
    size_t cnt = 0;
    lode_status st = LODE_OK;
    int rc = SQLITE_DONE;
    if (!v) {
        st = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory for changes");
        goto out;
    }
    while (cnt < max && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        ret_change *c = &v[cnt++];
        c->seq = sqlite3_column_int64(q, 0);
        const char *op = (const char *)sqlite3_column_text(q, 1);
        c->op = op && !strcmp(op, "insert")   ? 'i'
                : op && !strcmp(op, "update") ? 'u'
                : op && !strcmp(op, "delete") ? 'd'
                                              : 0;
        c->document_id = sqlite3_column_int64(q, 2);
        if (!c->op ||
            (st = parse_ids((const char *)sqlite3_column_text(q, 3), &c->removed, &c->n_removed)) ||
            (st = parse_ids((const char *)sqlite3_column_text(q, 4), &c->added, &c->n_added))) {
            if (st == LODE_OK || st == LODE_ERR_FORMAT)
                st = lode_seterr(s->err, sizeof s->err, LODE_ERR_FORMAT,
                                 "change %lld is malformed (op or chunk id list)",
                                 (long long)c->seq);
            else
                st = lode_seterr(s->err, sizeof s->err, st, "out of memory for changes");
            goto out;
        }
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) st = ret_store_dberr(s, rc, "reading changes");
out:
    sqlite3_reset(q);
    if (st) {
        ret_changes_free(v, cnt);
        return st;
    }
    if (cnt == 0) {
        lode_free(v);
        v = NULL;
    }
    *out = v;
    *n = cnt;
    return LODE_OK;
}
