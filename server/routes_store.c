/*
 * routes_store.c: the store over HTTP: GET /v1/search (BM25 over FTS5), the document
 * routes (list, one, delete; upload in routes_upload.c) and the store's size for
 * /metrics. The store handle is used by one worker at a time (store_mu).
 */
#include "server/srv_int.h"

#include "retrieval/search.h"
#include "retrieval/store.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

int srv_has_store(srv_server *s)
{
    return s->be && s->be->store;
}

lode_status srv_metrics_render_backends(srv_server *s, lode_buf *b)
{
    if (!srv_has_store(s)) return LODE_OK;
    ret_store_counts n;
    pthread_mutex_lock(&s->store_mu);
    lode_status st = ret_store_get_counts(s->be->store, &n);
    pthread_mutex_unlock(&s->store_mu);
    if (st) return LODE_OK; /* a busy store leaves the gauges out of this scrape */
    return lode_buf_printf(b,
                           "# HELP lode_store_documents Documents in the store.\n"
                           "# TYPE lode_store_documents gauge\nlode_store_documents %lld\n"
                           "# HELP lode_store_chunks Chunks in the store.\n"
                           "# TYPE lode_store_chunks gauge\nlode_store_chunks %lld\n"
                           "# HELP lode_store_change_seq The store's latest change number.\n"
                           "# TYPE lode_store_change_seq gauge\nlode_store_change_seq %lld\n",
                           (long long)n.documents, (long long)n.chunks, (long long)n.change_seq);
}

/* Answers a store failure: busy is 503 (retry), bad input 400, anything else 500. */
void srv_reply_store_error(srv_conn *c, lode_status st, const char *msg)
{
    if (st == LODE_ERR_BUSY)
        srv_reply_errorf(c, 503, "server_error", "store_busy", NULL, "the store is busy: %s", msg);
    else if (st == LODE_ERR_INVALID || st == LODE_ERR_UTF8)
        srv_reply_errorf(c, 400, "invalid_request_error", NULL, NULL, "%s", msg);
    else
        srv_reply_errorf(c, 500, "server_error", "store_error", NULL, "store error: %s", msg);
}

int srv_need_store(srv_conn *c)
{
    if (srv_has_store(c->srv)) return 1;
    srv_reply_errorf(c, 503, "server_error", "no_store", NULL,
                     "no store is open (start the server with --db PATH)");
    return 0;
}

/* Reads an integer query argument within [lo, hi]; absent: def. 0 and a 400 on error. */
int srv_query_int(srv_conn *c, const char *name, long long lo, long long hi, long long def,
                  long long *out)
{
    const char *v = srv_query(c, name);
    *out = def;
    if (!v) return 1;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        srv_reply_errorf(c, 400, "invalid_request_error", NULL, name,
                         "'%s' must be an integer between %lld and %lld", name, lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

void srv_h_search(srv_conn *c)
{
    srv_server *s = c->srv;
    long long k;
    const char *q = srv_query(c, "q");
    if (!q) {
        srv_reply_errorf(c, 400, "invalid_request_error", NULL, "q",
                         "missing required parameter 'q' (the search text)");
        return;
    }
    if (!srv_query_int(c, "k", 1, RET_SEARCH_MAX_K, 10, &k)) return;
    if (!srv_need_store(c)) return;
    ret_search_opts o = {0};
    o.k = (int)k;
    ret_hits *hits = NULL;
    char msg[512];
    pthread_mutex_lock(&s->store_mu);
    lode_status st = ret_search_bm25(s->be->store, q, &o, &hits);
    if (st) snprintf(msg, sizeof msg, "%s", ret_store_errmsg(s->be->store));
    pthread_mutex_unlock(&s->store_mu);
    if (st) {
        srv_reply_store_error(c, st, msg);
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; data && i < hits->n; i++) {
        const ret_hit *h = &hits->hit[i];
        json_t *o2 = json_pack("{s:s, s:I, s:I, s:f, s:b, s:s, s:s, s:s, s:s, s:I, s:I}", "object",
                               "search_result", "chunk_id", (json_int_t)h->chunk_id, "document_id",
                               (json_int_t)h->document_id, "score", h->score, "all_terms",
                               h->all_terms, "uri", h->uri, "title", h->title, "heading_path",
                               h->heading_path, "snippet", h->snippet, "char_start",
                               (json_int_t)h->char_start, "char_end", (json_int_t)h->char_end);
        if (!o2 || json_array_append_new(data, o2)) {
            json_decref(data);
            data = NULL;
        }
    }
    ret_hits_free(hits);
    json_t *out =
        data ? json_pack("{s:s, s:s, s:o}", "object", "list", "query", q, "data", data) : NULL;
    if (!out) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    srv_reply_json(c, 200, out);
    json_decref(out);
}

static json_t *doc_row(sqlite3_stmt *st)
{
    const char *title = (const char *)sqlite3_column_text(st, 2);
    return json_pack(
        "{s:I, s:s, s:s, s:o, s:s, s:I, s:s, s:I, s:I, s:s}", "id",
        (json_int_t)sqlite3_column_int64(st, 0), "object", "document", "uri",
        (const char *)sqlite3_column_text(st, 1), "title", title ? json_string(title) : json_null(),
        "media_type", (const char *)sqlite3_column_text(st, 3), "size",
        (json_int_t)sqlite3_column_int64(st, 4), "sha256", (const char *)sqlite3_column_text(st, 5),
        "chunks", (json_int_t)sqlite3_column_int64(st, 6), "tokens",
        (json_int_t)sqlite3_column_int64(st, 7), "ingested",
        sqlite3_column_text(st, 8) ? (const char *)sqlite3_column_text(st, 8) : "");
}

#define DOC_COLS "id, uri, title, media_type, size, sha256, chunks, tokens, ingested"

void srv_h_documents_get(srv_conn *c)
{
    srv_server *s = c->srv;
    long long limit, offset;
    if (!srv_query_int(c, "limit", 1, 1000, 100, &limit)) return;
    if (!srv_query_int(c, "offset", 0, INT64_MAX, 0, &offset)) return;
    if (!srv_need_store(c)) return;
    json_t *data = json_array();
    long long total = 0;
    int rc = SQLITE_OK;
    char msg[512] = "";
    pthread_mutex_lock(&s->store_mu);
    sqlite3 *db = ret_store_sqlite(s->be->store);
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM documents", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        total = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(
            db, "SELECT " DOC_COLS " FROM v_documents ORDER BY id LIMIT ?1 OFFSET ?2", -1, &st,
            NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, limit);
        sqlite3_bind_int64(st, 2, offset);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            if (data && json_array_append_new(data, doc_row(st))) {
                json_decref(data);
                data = NULL;
            }
        if (rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->store_mu);
    if (rc != SQLITE_OK) {
        json_decref(data);
        srv_reply_store_error(c, ret_status_from_sqlite(rc), msg);
        return;
    }
    json_t *out = data ? json_pack("{s:s, s:o, s:I, s:I, s:I}", "object", "list", "data", data,
                                   "total", (json_int_t)total, "limit", (json_int_t)limit, "offset",
                                   (json_int_t)offset)
                       : NULL;
    if (!out) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    srv_reply_json(c, 200, out);
    json_decref(out);
}

/* The {id} of /v1/documents/{id}: a positive integer, or a 404 sent. */
static int doc_id_arg(srv_conn *c, int64_t *id)
{
    char *end;
    errno = 0;
    long long v = strtoll(c->arg, &end, 10);
    if (errno || end == c->arg || *end || v <= 0) {
        srv_reply_errorf(c, 404, "invalid_request_error", "document_not_found", "id",
                         "no document with id '%.60s' (ids are positive integers)", c->arg);
        return 0;
    }
    *id = v;
    return 1;
}

/* Loads one document's row as JSON (*out NULL when absent). Call under store_mu. */
static int load_doc(srv_server *s, int64_t id, json_t **out, char **uri, char *msg, size_t msglen)
{
    sqlite3 *db = ret_store_sqlite(s->be->store);
    sqlite3_stmt *st = NULL;
    *out = NULL;
    int rc =
        sqlite3_prepare_v2(db, "SELECT " DOC_COLS " FROM v_documents WHERE id = ?1", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = doc_row(st);
            if (uri) *uri = lode_strdup((const char *)sqlite3_column_text(st, 1));
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK) snprintf(msg, msglen, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return rc;
}

void srv_h_document_get(srv_conn *c)
{
    srv_server *s = c->srv;
    int64_t id;
    char msg[512];
    json_t *doc = NULL;
    if (!doc_id_arg(c, &id) || !srv_need_store(c)) return;
    pthread_mutex_lock(&s->store_mu);
    int rc = load_doc(s, id, &doc, NULL, msg, sizeof msg);
    pthread_mutex_unlock(&s->store_mu);
    if (rc != SQLITE_OK) {
        srv_reply_store_error(c, ret_status_from_sqlite(rc), msg);
    } else if (!doc) {
        srv_reply_errorf(c, 404, "invalid_request_error", "document_not_found", "id",
                         "no document with id %lld", (long long)id);
    } else {
        srv_reply_json(c, 200, doc);
    }
    json_decref(doc);
}

void srv_h_document_delete(srv_conn *c)
{
    srv_server *s = c->srv;
    int64_t id;
    char msg[512] = "";
    json_t *doc = NULL;
    char *uri = NULL;
    lode_status st = LODE_OK;
    if (!doc_id_arg(c, &id) || !srv_need_store(c)) return;
    pthread_mutex_lock(&s->store_mu);
    int rc = load_doc(s, id, &doc, &uri, msg, sizeof msg);
    if (rc == SQLITE_OK && doc) {
        if (!uri)
            st = LODE_ERR_NOMEM;
        else if ((st = ret_store_doc_delete(s->be->store, uri)))
            snprintf(msg, sizeof msg, "%s", ret_store_errmsg(s->be->store));
    }
    pthread_mutex_unlock(&s->store_mu);
    if (rc != SQLITE_OK) {
        srv_reply_store_error(c, ret_status_from_sqlite(rc), msg);
    } else if (!doc || st == LODE_ERR_NOTFOUND) {
        srv_reply_errorf(c, 404, "invalid_request_error", "document_not_found", "id",
                         "no document with id %lld", (long long)id);
    } else if (st) {
        srv_reply_store_error(c, st, st == LODE_ERR_NOMEM ? "out of memory" : msg);
    } else {
        json_t *o = json_pack("{s:I, s:s, s:s, s:b}", "id", (json_int_t)id, "object", "document",
                              "uri", uri, "deleted", 1);
        if (o)
            srv_reply_json(c, 200, o);
        else
            srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        json_decref(o);
    }
    json_decref(doc);
    lode_free(uri);
}

void srv_h_documents_post(srv_conn *c)
{
    srv_reply_unavailable(c, "document upload (it needs ingest/)");
}
