/*
 * routes_store.c: the store over HTTP: GET /v1/search (retrieval's hybrid search:
 * lexical, dense or fused), the document routes (upload as JSON text, a multipart file or
 * a URL fetched with libcurl; list; one; delete) and the store's size for /metrics. An
 * upload goes through ingest's preparation (ing_prepare) and, when the store has dense
 * search, is embedded with the store's model and written with its vectors in one
 * transaction, so it is stored exactly as `lode ingest` would store the same file. The
 * store handle is used by one worker at a time (store_mu); embedding (an upload's chunks,
 * a search's query) happens before that lock is taken, through the server's embedding
 * queue when it has one, so a long upload does not hold searches back.
 */
#include "server/srv_int.h"

#include "ingest/ingest.h"
#include "ingest/run.h"
#include "engine/bert.h"
#include "retrieval/dense.h"
#include "retrieval/hybrid.h"
#include "retrieval/search.h"
#include "retrieval/store.h"

#include <curl/curl.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int srv_has_store(srv_server *s)
{
    return s->be && s->be->store;
}

/* One integer from a query; -1 when it fails. Call under store_mu. */
static long long scalar(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    long long v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

lode_status srv_metrics_render_backends(srv_server *s, lode_buf *b)
{
    lode_status rc = LODE_OK;
    if (s->emb) {
        srv_embed_stats es;
        srv_embedder_stats(s->emb, &es);
        rc = lode_buf_printf(
            b,
            "# HELP lode_embed_queue_depth Embedding jobs waiting for the encoder.\n"
            "# TYPE lode_embed_queue_depth gauge\nlode_embed_queue_depth %d\n"
            "# HELP lode_embed_running Embedding jobs in the encoder now.\n"
            "# TYPE lode_embed_running gauge\nlode_embed_running %d\n"
            "# HELP lode_embed_batches_total Encoder batches run.\n"
            "# TYPE lode_embed_batches_total counter\nlode_embed_batches_total %llu\n"
            "# HELP lode_embed_texts_total Texts embedded.\n"
            "# TYPE lode_embed_texts_total counter\nlode_embed_texts_total %llu\n"
            "# HELP lode_embed_seconds_total Time the encoder ran; texts/s = "
            "rate(texts) / rate(seconds).\n"
            "# TYPE lode_embed_seconds_total counter\nlode_embed_seconds_total %.6f\n"
            "# HELP lode_embed_rejected_total Embedding jobs refused because the queue was "
            "full (answered 429).\n"
            "# TYPE lode_embed_rejected_total counter\nlode_embed_rejected_total %llu\n"
            "# HELP lode_embed_shared_scheduler 1 when encoder batches run on the generation "
            "model's scheduler thread, sharing its time with generation.\n"
            "# TYPE lode_embed_shared_scheduler gauge\nlode_embed_shared_scheduler %d\n",
            es.queued, es.running, (unsigned long long)es.batches, (unsigned long long)es.texts,
            es.seconds, (unsigned long long)es.rejected, es.hosted);
        if (rc) return rc;
    }
    if (!srv_has_store(s)) return LODE_OK;
    ret_store_counts n;
    long long db_bytes = -1, src_bytes = -1;
    pthread_mutex_lock(&s->store_mu);
    lode_status st = ret_store_get_counts(s->be->store, &n);
    if (!st) {
        sqlite3 *db = ret_store_sqlite(s->be->store);
        db_bytes = scalar(db, "SELECT page_count * page_size FROM pragma_page_count(), "
                              "pragma_page_size()");
        src_bytes = scalar(db, "SELECT coalesce(sum(size), 0) FROM documents");
    }
    pthread_mutex_unlock(&s->store_mu);
    if (st) return LODE_OK; /* a busy store leaves the gauges out of this scrape */
    rc = lode_buf_printf(b,
                         "# HELP lode_store_documents Documents in the store.\n"
                         "# TYPE lode_store_documents gauge\nlode_store_documents %lld\n"
                         "# HELP lode_store_chunks Chunks in the store.\n"
                         "# TYPE lode_store_chunks gauge\nlode_store_chunks %lld\n"
                         "# HELP lode_store_change_seq The store's latest change number.\n"
                         "# TYPE lode_store_change_seq gauge\nlode_store_change_seq %lld\n",
                         (long long)n.documents, (long long)n.chunks, (long long)n.change_seq);
    if (!rc && db_bytes >= 0)
        rc = lode_buf_printf(b,
                             "# HELP lode_store_bytes Size of the store's database file (without "
                             "its write-ahead log).\n"
                             "# TYPE lode_store_bytes gauge\nlode_store_bytes %lld\n",
                             db_bytes);
    if (!rc && src_bytes >= 0)
        rc = lode_buf_printf(b,
                             "# HELP lode_store_source_bytes Bytes of the stored documents' "
                             "sources.\n"
                             "# TYPE lode_store_source_bytes gauge\nlode_store_source_bytes "
                             "%lld\n",
                             src_bytes);
    return rc;
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

/* The search's options from the query string: q, k, mode (auto, lexical or its alias bm25,
 * dense, hybrid), match (auto, all, any: lexical matching), path (a URI glob), type (a
 * media type or a prefix like "text/"). 0 and a 400 sent on a bad one. */
static int search_query(srv_conn *c, ret_query *q)
{
    long long k;
    memset(q, 0, sizeof *q);
    q->text = srv_query(c, "q");
    if (!q->text) {
        srv_reply_errorf(c, 400, "invalid_request_error", NULL, "q",
                         "missing required parameter 'q' (the search text)");
        return 0;
    }
    if (!srv_query_int(c, "k", 1, RET_SEARCH_MAX_K, 10, &k)) return 0;
    q->k = (int)k;
    const char *mode = srv_query(c, "mode"), *match = srv_query(c, "match");
    int m =
        mode ? (!strcmp(mode, "bm25") ? RET_MODE_LEXICAL : ret_mode_parse(mode)) : RET_MODE_AUTO;
    if (m < 0) {
        srv_reply_errorf(c, 400, "invalid_request_error", NULL, "mode",
                         "'mode' must be 'auto', 'lexical' (or 'bm25'), 'dense' or 'hybrid', "
                         "got '%.40s'",
                         mode);
        return 0;
    }
    q->mode = (ret_mode)m;
    if (match && !strcmp(match, "all"))
        q->match = RET_MATCH_ALL;
    else if (match && !strcmp(match, "any"))
        q->match = RET_MATCH_ANY;
    else if (match && strcmp(match, "auto")) {
        srv_reply_errorf(c, 400, "invalid_request_error", NULL, "match",
                         "'match' must be 'auto', 'all' or 'any', got '%.40s'", match);
        return 0;
    }
    q->filter.path_glob = srv_query(c, "path");
    q->filter.media_type = srv_query(c, "type");
    return 1;
}

static json_t *result_json(const ret_result *h)
{
    json_t *o = json_pack("{s:s, s:I, s:I, s:f, s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "object",
                          "search_result", "chunk_id", (json_int_t)h->chunk_id, "document_id",
                          (json_int_t)h->document_id, "score", h->score, "uri", h->uri, "title",
                          h->title, "heading_path", h->heading_path, "media_type",
                          h->media_type ? h->media_type : "", "snippet", h->snippet, "char_start",
                          (json_int_t)h->char_start, "char_end", (json_int_t)h->char_end);
    if (o && h->lexical_rank &&
        (json_object_set_new(o, "lexical_rank", json_integer(h->lexical_rank)) ||
         json_object_set_new(o, "lexical_score", json_real(h->lexical_score)))) {
        json_decref(o);
        return NULL;
    }
    if (o && h->dense_rank &&
        (json_object_set_new(o, "dense_rank", json_integer(h->dense_rank)) ||
         json_object_set_new(o, "dense_score", json_real(h->dense_score)))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

void srv_h_search(srv_conn *c)
{
    srv_server *s = c->srv;
    ret_query q;
    if (!search_query(c, &q) || !srv_need_store(c)) return;
    ret_results *res = NULL;
    char msg[512];
    /* the query is embedded before the store lock is taken, so that it waits neither for
     * an upload being embedded nor holds the store while it sits in the encoder queue
     * (if this fails, the search embeds it again and reports why) */
    float *qv = NULL;
    double embed_ms = 0;
    ret_dense *dn = s->be->dense;
    if (dn && q.mode != RET_MODE_LEXICAL &&
        (qv = lode_malloc(sizeof(float) * (size_t)ret_dense_dim(dn)))) {
        double t0 = lode_now_s();
        if (ret_dense_embed(dn, q.text ? q.text : "", qv) == LODE_OK) {
            q.vec = qv;
            embed_ms = (lode_now_s() - t0) * 1e3;
        }
    }
    pthread_mutex_lock(&s->store_mu);
    lode_status st = ret_hybrid_search(s->be->store, dn, &q, &res);
    if (st) snprintf(msg, sizeof msg, "%s", ret_store_errmsg(s->be->store));
    pthread_mutex_unlock(&s->store_mu);
    lode_free(qv);
    if (!st && q.vec && res->mode != RET_MODE_LEXICAL) res->embed_ms = embed_ms;
    if (st == LODE_ERR_UNSUPPORTED) {
        srv_reply_errorf(c, 400, "invalid_request_error", "dense_unavailable", "mode", "%s", msg);
        return;
    }
    if (st) {
        srv_reply_store_error(c, st, msg);
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; data && i < res->n; i++) {
        json_t *o = result_json(&res->r[i]);
        if (!o || json_array_append_new(data, o)) {
            json_decref(data);
            data = NULL;
        }
    }
    json_t *out =
        data ? json_pack("{s:s, s:s, s:s, s:o, s:f}", "object", "list", "query", q.text, "mode",
                         ret_mode_name(res->mode), "data", data, "took_ms", res->took_ms)
             : NULL;
    if (out && res->note[0]) json_object_set_new(out, "note", json_string(res->note));
    ret_results_free(res);
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

/* ---- POST /v1/documents ------------------------------------------------------------- */

#define DEFAULT_FETCH_TIMEOUT 30

/* What an upload carries, whichever way it came (JSON, multipart, URL). */
typedef struct upload {
    const char *data;
    size_t len;
    const char *name;  /* the URI to store it under; NULL: content-addressed */
    const char *title; /* NULL: the document's own or the name */
    ing_media media;   /* ING_MEDIA_UNKNOWN: by the name, else sniffed */
} upload;

/* A multipart/form-data body, parsed by libmicrohttpd's post processor: the part "file"
 * (its file name and content type), and the fields name, title and media_type. */
typedef struct form {
    lode_buf file;
    int has_file;
    char filename[256];
    char file_type[128];
    lode_buf name, title, media_type;
    int failed;
} form;

static enum MHD_Result form_part(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *content_type,
                                 const char *transfer_encoding, const char *data, uint64_t off,
                                 size_t size)
{
    form *f = cls;
    lode_buf *b = NULL;
    if (!key) return MHD_YES;
    if (!strcmp(key, "file")) {
        if (!f->has_file) {
            f->has_file = 1;
            snprintf(f->filename, sizeof f->filename, "%s", filename ? filename : "");
            snprintf(f->file_type, sizeof f->file_type, "%s", content_type ? content_type : "");
        }
        b = &f->file;
    } else if (!strcmp(key, "name") || !strcmp(key, "uri")) {
        b = &f->name;
    } else if (!strcmp(key, "title")) {
        b = &f->title;
    } else if (!strcmp(key, "media_type")) {
        b = &f->media_type;
    } else {
        return MHD_YES; /* other fields are ignored, as JSON's unknown keys are */
    }
    if (size && lode_buf_append(b, data, size)) {
        f->failed = 1;
        return MHD_NO;
    }
    if (!b->data) lode_buf_puts(b, ""); /* present, even when empty */
    return MHD_YES;
}

static void form_free(form *f)
{
    lode_buf_free(&f->file);
    lode_buf_free(&f->name);
    lode_buf_free(&f->title);
    lode_buf_free(&f->media_type);
}

/* Parses the multipart body into f. 0 and a 400 sent on failure. */
static int parse_form(srv_conn *c, form *f)
{
    f->file.max = f->name.max = f->title.max = f->media_type.max = c->srv->cfg.max_body + 1;
    struct MHD_PostProcessor *pp = MHD_create_post_processor(c->mhd, 64 * 1024, form_part, f);
    if (!pp) {
        srv_reply_errorf(c, 400, "invalid_request_error", "invalid_multipart", NULL,
                         "the multipart/form-data body cannot be read (is the boundary "
                         "parameter missing?)");
        return 0;
    }
    enum MHD_Result ok = MHD_post_process(pp, c->body.data ? c->body.data : "", c->body.len);
    if (MHD_destroy_post_processor(pp) != MHD_YES) ok = MHD_NO;
    if (f->failed) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        return 0;
    }
    if (ok != MHD_YES) {
        srv_reply_errorf(c, 400, "invalid_request_error", "invalid_multipart", NULL,
                         "the multipart/form-data body is malformed or truncated");
        return 0;
    }
    if (!f->has_file) {
        srv_reply_errorf(c, 400, "invalid_request_error", NULL, "file",
                         "missing required part 'file' (the document to upload)");
        return 0;
    }
    if (f->file.len == 0) {
        srv_reply_errorf(c, 400, "invalid_request_error", NULL, "file", "'file' is empty");
        return 0;
    }
    return 1;
}

/* ---- URL fetch ---- */

typedef struct fetch {
    lode_buf body;
    int too_large;
} fetch;

static size_t fetch_write(char *p, size_t sz, size_t n, void *ud)
{
    fetch *f = ud;
    if (lode_buf_append(&f->body, p, sz * n)) {
        f->too_large = 1;
        return 0; /* aborts the transfer */
    }
    return sz * n;
}

/* Fetches url (http or https only, redirects followed up to 5, within the server's body
 * limit and fetch timeout) into f->body; ctype receives the Content-Type. 0 and an error
 * answer sent on failure. */
static int fetch_url(srv_conn *c, const char *url, fetch *f, char *ctype, size_t ctlen)
{
    srv_server *s = c->srv;
    long timeout = s->cfg.fetch_timeout_s > 0 ? s->cfg.fetch_timeout_s : DEFAULT_FETCH_TIMEOUT;
    char cerr[CURL_ERROR_SIZE] = "";
    long status = 0;
    int ok = 0;
    f->body.max = s->cfg.max_body;
    ctype[0] = 0;
    CURL *h = curl_easy_init();
    if (!h) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "cannot start a URL fetch");
        return 0;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, ""); /* the limit applies to decoded bytes */
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)s->cfg.max_body);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "lode");
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, fetch_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    char *ct = NULL;
    if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
        snprintf(ctype, ctlen, "%s", ct);
    if (f->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
        srv_reply_errorf(c, 413, "invalid_request_error", "url_content_too_large", "url",
                         "the document at the URL is over the limit of %zu bytes", s->cfg.max_body);
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        srv_reply_errorf(c, 504, "server_error", "url_fetch_timeout", "url",
                         "fetching the URL took longer than %ld s", timeout);
    } else if (rc != CURLE_OK) {
        srv_reply_errorf(c, 400, "invalid_request_error", "url_fetch_failed", "url",
                         "cannot fetch the URL: %s", cerr[0] ? cerr : curl_easy_strerror(rc));
    } else if (status < 200 || status > 299) {
        srv_reply_errorf(c, 400, "invalid_request_error", "url_fetch_failed", "url",
                         "fetching the URL answered HTTP %ld", status);
    } else if (f->body.len == 0) {
        srv_reply_errorf(c, 400, "invalid_request_error", "url_fetch_failed", "url",
                         "the URL's document is empty");
    } else {
        ok = 1;
    }
    curl_easy_cleanup(h);
    return ok;
}

/* Checks a declared media type (a field, a part's or a response's Content-Type): one lode
 * reads sets *media; octet-stream or none leaves it for the name and the bytes to decide;
 * anything else is answered with 415. */
static int declared_media(srv_conn *c, const char *mt, const char *param, ing_media *media)
{
    int m = 0;
    if (!mt || !*mt || !strncasecmp(mt, "application/octet-stream", 24)) return 1;
    if (srv_media_type_ok(mt, &m)) {
        *media = (ing_media)m;
        return 1;
    }
    srv_reply_errorf(c, 415, "invalid_request_error", "unsupported_media_type", param,
                     "the document's type '%.80s' is not one lode reads (text/plain, "
                     "text/markdown, text/html)",
                     mt);
    return 0;
}

/* The vectors of the prepared document's chunks (*vecs, the caller frees) when the store
 * has dense search, else *vecs NULL; embedded with the store's model from the texts
 * ret_embed_input builds, as `lode ingest` does. Called without store_mu: the embedding
 * queue (or, without one, the dense side's own lock) serializes the encoder, so searches
 * and questions keep using the store while a document is embedded, and their query
 * texts join the next encoder batch beside its chunks. Returns the status with msg set
 * on failure. */
static lode_status embed_doc(srv_server *s, const ing_prepared *pr, float **vecs, char *msg,
                             size_t msglen)
{
    ret_dense *dn = s->be->dense;
    struct eng_bert *m = dn ? ret_dense_embedder(dn) : NULL;
    lode_buf *in = NULL;
    const char **texts = NULL;
    lode_status rc = LODE_OK;
    *vecs = NULL;
    if (!m || pr->n_chunks == 0) return LODE_OK;
    in = lode_calloc(pr->n_chunks, sizeof *in);
    texts = lode_calloc(pr->n_chunks, sizeof *texts);
    *vecs = lode_malloc(sizeof(float) * (size_t)eng_bert_dim(m) * pr->n_chunks);
    if (!in || !texts || !*vecs) {
        rc = lode_seterr(msg, msglen, LODE_ERR_NOMEM, "out of memory for embeddings");
        goto out;
    }
    for (size_t i = 0; i < pr->n_chunks; i++) {
        if ((rc = ret_embed_input(&in[i], pr->cin[i].heading_path, pr->cin[i].text))) {
            lode_seterr(msg, msglen, rc, "out of memory for embeddings");
            goto out;
        }
        texts[i] = in[i].data;
    }
    /* through the shared embedding queue when the server has one for this model */
    if ((rc = ret_dense_embed_many(dn, texts, pr->n_chunks, *vecs)))
        lode_seterr(msg, msglen, rc, "cannot embed the document: %s", ret_dense_errmsg(dn));
out:
    for (size_t i = 0; in && i < pr->n_chunks; i++) lode_buf_free(&in[i]);
    lode_free(in);
    lode_free(texts);
    if (rc) {
        lode_free(*vecs);
        *vecs = NULL;
    }
    return rc;
}

/* Writes the prepared document and, when the store has dense search, its chunks'
 * vectors (from embed_doc) in the same transaction, as `lode ingest` does. Call under
 * store_mu. Returns the store's status with msg set on failure. */
static lode_status write_doc(srv_server *s, const ret_doc *d, const ing_prepared *pr,
                             const float *vecs, int64_t *id, int *embedded, char *msg,
                             size_t msglen)
{
    ret_store *st = s->be->store;
    ret_dense *dn = s->be->dense;
    struct eng_bert *m = dn ? ret_dense_embedder(dn) : NULL;
    lode_status rc;
    *embedded = 0;
    if ((rc = ret_store_begin(st))) goto fail;
    rc = ret_store_doc_replace(st, d, pr->cin, pr->n_chunks, id);
    if (!rc && m && vecs)
        rc = ret_store_doc_vectors_put(st, eng_bert_name(m), eng_bert_dim(m), *id, pr->n_chunks,
                                       vecs);
    if (!rc) rc = ret_store_commit(st);
    if (rc) {
        snprintf(msg, msglen, "%s", ret_store_errmsg(st));
        if (ret_store_in_txn(st)) ret_store_rollback(st);
        return rc;
    }
    *embedded = m != NULL;
    return LODE_OK;
fail:
    snprintf(msg, msglen, "%s", ret_store_errmsg(st));
    return rc;
}

/* Whether the document at uri must be written (*need): not when the store holds it with
 * the same hash (*what "unchanged", *id its id). Call under store_mu. */
static lode_status lookup_doc(srv_server *s, const char *uri, const char *sha, int *need,
                              const char **what, int64_t *id, char *msg, size_t msglen)
{
    ret_doc_info old;
    lode_status st = ret_store_doc_lookup(s->be->store, uri, &old);
    *need = 0;
    if (st == LODE_OK && !strcmp(old.sha256, sha)) {
        *what = "unchanged";
        *id = old.id;
        return LODE_OK;
    }
    if (st == LODE_OK || st == LODE_ERR_NOTFOUND) {
        *what = st == LODE_OK ? "updated" : "created";
        *need = 1;
        return LODE_OK;
    }
    snprintf(msg, msglen, "%s", ret_store_errmsg(s->be->store));
    return st;
}

static void store_upload(srv_conn *c, upload *u)
{
    srv_server *s = c->srv;
    ing_prepared pr = {0};
    json_t *out = NULL;
    char sha[65], gen_uri[96], err[256] = "", msg[512] = "";
    const char *uri = u->name;
    if (u->media == ING_MEDIA_UNKNOWN && uri) u->media = ing_media_from_name(uri);
    if (ing_sniff(u->data, u->len, &u->media, err, sizeof err) != LODE_OK) {
        srv_reply_errorf(c, 415, "invalid_request_error", "unsupported_media_type", NULL,
                         "the document is not text lode reads: %s", err);
        goto out;
    }
    if (ing_sha256_hex(u->data, u->len, sha)) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "cannot hash the document");
        goto out;
    }
    if (!uri) { /* content-addressed: the same text uploaded twice is one document */
        snprintf(gen_uri, sizeof gen_uri, "upload:sha256:%s", sha);
        uri = gen_uri;
    }
    lode_status st = ing_prepare(u->data, u->len, u->media, NULL, &pr, err, sizeof err);
    if (st == LODE_ERR_NOMEM) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        goto out;
    }
    if (st) {
        srv_reply_errorf(c, 400, "invalid_request_error", "unprocessable_document", NULL,
                         "the document cannot be stored: %s", err);
        goto out;
    }
    const char *title = u->title && *u->title ? u->title : pr.doc->title[0] ? pr.doc->title : uri;
    ret_doc d = {.uri = uri,
                 .title = title,
                 .media_type = ing_media_mime(pr.doc->media),
                 .sha256 = sha,
                 .size = (int64_t)u->len,
                 .mtime_ns = (int64_t)time(NULL) * 1000000000};
    int64_t id = 0;
    const char *what = "created";
    int embedded = 0;
    /* looked up under the store lock; a new or changed document is embedded outside it
     * (embed_doc), then looked up again and written under it */
    float *vecs = NULL;
    int need = 0;
    pthread_mutex_lock(&s->store_mu);
    st = lookup_doc(s, uri, sha, &need, &what, &id, msg, sizeof msg);
    pthread_mutex_unlock(&s->store_mu);
    if (!st && need && !(st = embed_doc(s, &pr, &vecs, msg, sizeof msg))) {
        pthread_mutex_lock(&s->store_mu);
        st = lookup_doc(s, uri, sha, &need, &what, &id, msg, sizeof msg);
        if (!st && need) st = write_doc(s, &d, &pr, vecs, &id, &embedded, msg, sizeof msg);
        pthread_mutex_unlock(&s->store_mu);
    }
    lode_free(vecs);
    if (st) {
        srv_reply_store_error(c, st, msg);
        goto out;
    }
    out = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:b, s:s}", "id", (json_int_t)id,
                    "object", "document", "uri", uri, "title", title, "media_type", d.media_type,
                    "sha256", sha, "size", (json_int_t)u->len, "chunks", (json_int_t)pr.n_chunks,
                    "embedded", embedded, "status", what);
    if (!out) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        goto out;
    }
    srv_reply_json(c, strcmp(what, "created") ? 200 : 201, out);
out:
    json_decref(out);
    ing_prepared_clear(&pr);
}

void srv_h_documents_post(srv_conn *c)
{
    srv_doc_request req = {0};
    form f = {0};
    fetch fe = {0};
    srv_error e;
    upload u = {0};
    char ctype[128];
    const char *ct =
        MHD_lookup_connection_value(c->mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ct && !strncasecmp(ct, "multipart/form-data", 19)) {
        if (!parse_form(c, &f)) goto out;
        u.data = f.file.data;
        u.len = f.file.len;
        u.name = f.name.data && *f.name.data ? f.name.data : f.filename[0] ? f.filename : NULL;
        u.title = f.title.data;
        if (f.media_type.data && *f.media_type.data) {
            int m;
            if (!srv_media_type_ok(f.media_type.data, &m)) {
                srv_reply_errorf(c, 400, "invalid_request_error", NULL, "media_type",
                                 "'media_type' must be text/plain, text/markdown or text/html, "
                                 "got '%.60s'",
                                 f.media_type.data);
                goto out;
            }
            u.media = (ing_media)m;
        } else if (!declared_media(c, f.file_type, "file", &u.media)) {
            goto out;
        }
        if (u.media == ING_MEDIA_UNKNOWN && f.filename[0])
            u.media = ing_media_from_name(f.filename);
    } else { /* any other body is read as JSON, as the OpenAI routes do */
        if (srv_doc_request_parse(c->body.data, c->body.len, &req, &e)) {
            srv_reply_error(c, &e);
            goto out;
        }
        u.name = req.name;
        u.title = req.title;
        if (req.media_type) {
            int m = 0;
            srv_media_type_ok(req.media_type, &m);
            u.media = (ing_media)m;
        }
        if (req.text) {
            u.data = req.text;
            u.len = req.text_len;
        }
    }
    if (!srv_need_store(c)) goto out;
    if (req.url) {
        if (!fetch_url(c, req.url, &fe, ctype, sizeof ctype)) goto out;
        if (!req.media_type && !declared_media(c, ctype, "url", &u.media)) goto out;
        u.data = fe.body.data;
        u.len = fe.body.len;
        if (!u.name) u.name = req.url;
    }
    store_upload(c, &u);
out:
    srv_doc_request_clear(&req);
    form_free(&f);
    lode_buf_free(&fe.body);
}
