/*
 * routes_store.c: the store over HTTP: GET /v1/search (BM25 over FTS5), the document
 * routes (upload, list, one, delete) and the store's size for /metrics. An upload goes
 * through ingest's loaders and chunker, so it is stored exactly as `lode ingest` would
 * store the same file. The store handle is used by one worker at a time (store_mu).
 */
#include "server/srv_int.h"

#include "ingest/ingest.h"
#include "retrieval/search.h"
#include "retrieval/store.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static ing_media media_of(const char *mt)
{
    if (!strcmp(mt, "text/plain")) return ING_MEDIA_TEXT;
    if (!strcmp(mt, "text/markdown")) return ING_MEDIA_MARKDOWN;
    if (!strcmp(mt, "text/html")) return ING_MEDIA_HTML;
    return ING_MEDIA_UNKNOWN;
}

void srv_h_documents_post(srv_conn *c)
{
    srv_server *s = c->srv;
    json_t *root = NULL, *out = NULL;
    lode_json_err je;
    ing_doc *doc = NULL;
    ing_chunk *chunks = NULL;
    ret_chunk_in *cin = NULL;
    char *texts = NULL;
    size_t n_chunks = 0;
    const char *text = NULL, *uri = NULL, *title = NULL, *mt = NULL;
    char sha[65], gen_uri[96], err[256] = "", msg[512] = "";
    srv_error e;

    if (lode_json_parse(c->body.data, c->body.len, &root, &je)) {
        srv_error_set(&e, LODE_ERR_FORMAT, 400, "invalid_request_error", "invalid_json", NULL, "%s",
                      je.message);
        srv_reply_error(c, &e);
        goto out;
    }
    if (!json_is_object(root)) {
        srv_reply_errorf(c, 400, "invalid_request_error", NULL, NULL,
                         "the request body must be a JSON object, got %s",
                         lode_json_type_name(root));
        goto out;
    }
    if (lode_json_get_string(root, "text", NULL, 1, &text, NULL, &je) ||
        lode_json_get_string(root, "uri", NULL, 0, &uri, NULL, &je) ||
        lode_json_get_string(root, "title", NULL, 0, &title, NULL, &je) ||
        lode_json_get_string(root, "media_type", NULL, 0, &mt, NULL, &je)) {
        srv_reply_errorf(c, 400, "invalid_request_error", NULL, je.field, "%s", je.message);
        goto out;
    }
    size_t len = json_string_length(json_object_get(root, "text"));
    if (len == 0 || (uri && !*uri)) {
        srv_reply_errorf(c, 400, "invalid_request_error", NULL, len == 0 ? "text" : "uri",
                         "'%s' must not be empty", len == 0 ? "text" : "uri");
        goto out;
    }
    ing_media media = ING_MEDIA_UNKNOWN;
    if (mt && (media = media_of(mt)) == ING_MEDIA_UNKNOWN) {
        srv_reply_errorf(c, 400, "invalid_request_error", NULL, "media_type",
                         "'media_type' must be text/plain, text/markdown or text/html, got "
                         "'%.60s'",
                         mt);
        goto out;
    }
    if (!mt && uri) media = ing_media_from_name(uri);
    if (!srv_need_store(c)) goto out;
    if (ing_sha256_hex(text, len, sha)) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "cannot hash the text");
        goto out;
    }
    if (!uri) { /* content-addressed: the same text uploaded twice is one document */
        snprintf(gen_uri, sizeof gen_uri, "upload:sha256:%s", sha);
        uri = gen_uri;
    }
    lode_status st = ing_load(text, len, media, &doc, err, sizeof err);
    if (st == LODE_OK) st = ing_chunk_doc(doc, NULL, &chunks, &n_chunks);
    if (st == LODE_ERR_NOMEM) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        goto out;
    }
    if (st || n_chunks == 0) {
        srv_reply_errorf(c, 400, "invalid_request_error", "unprocessable_document", "text",
                         "the text cannot be stored: %s", st ? err : "it holds no text");
        goto out;
    }
    size_t total = 0;
    for (size_t i = 0; i < n_chunks; i++) total += chunks[i].end - chunks[i].start + 1;
    texts = lode_malloc(total);
    cin = lode_calloc(n_chunks, sizeof *cin);
    if (!texts || !cin) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        goto out;
    }
    char *o = texts;
    for (size_t i = 0; i < n_chunks; i++) {
        size_t n = chunks[i].end - chunks[i].start;
        memcpy(o, doc->text + chunks[i].start, n);
        o[n] = 0;
        cin[i].text = o;
        cin[i].heading_path = doc->paths[chunks[i].path];
        cin[i].char_start = (int64_t)chunks[i].char_start;
        cin[i].char_end = (int64_t)chunks[i].char_end;
        cin[i].token_count = chunks[i].tokens;
        o += n + 1;
    }
    if (!title || !*title) title = doc->title[0] ? doc->title : uri;
    ret_doc d = {.uri = uri,
                 .title = title,
                 .media_type = ing_media_mime(doc->media),
                 .sha256 = sha,
                 .size = (int64_t)len,
                 .mtime_ns = (int64_t)time(NULL) * 1000000000};
    ret_doc_info old;
    int64_t id = 0;
    const char *what = "created";
    pthread_mutex_lock(&s->store_mu);
    st = ret_store_doc_lookup(s->be->store, uri, &old);
    if (st == LODE_OK && !strcmp(old.sha256, sha)) {
        what = "unchanged";
        id = old.id;
    } else if (st == LODE_OK || st == LODE_ERR_NOTFOUND) {
        if (st == LODE_OK) what = "updated";
        st = ret_store_doc_replace(s->be->store, &d, cin, n_chunks, &id);
    }
    if (st) snprintf(msg, sizeof msg, "%s", ret_store_errmsg(s->be->store));
    pthread_mutex_unlock(&s->store_mu);
    if (st) {
        srv_reply_store_error(c, st, msg);
        goto out;
    }
    out = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s}", "id", (json_int_t)id, "object",
                    "document", "uri", uri, "title", title, "media_type", d.media_type, "sha256",
                    sha, "size", (json_int_t)len, "chunks", (json_int_t)n_chunks, "status", what);
    if (!out) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        goto out;
    }
    srv_reply_json(c, strcmp(what, "created") ? 200 : 201, out);
out:
    json_decref(out);
    json_decref(root);
    lode_free(texts);
    lode_free(cin);
    lode_free(chunks);
    ing_doc_destroy(doc);
}
