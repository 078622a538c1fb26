/*
 * http.c: the server proper on libmicrohttpd: binding, the worker thread pool, routing,
 * API-key checks, body and concurrency limits, replies (immediate, deferred through
 * suspend/resume, streamed), the request log and graceful shutdown.
 *
 * A request passes these gates in order, each answering with an OpenAI-style error:
 * shutting down (503), unknown path (404), wrong method (405), API key (401), concurrency
 * (429), Content-Length over the limit (413); then the body is read, still bounded (413
 * when a chunked body grows past the limit), and the route's handler runs.
 */
#include "server/srv_int.h"

#include "retrieval/dense.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_BODY       ((size_t)8 << 20)
#define DEFAULT_MAX_CONCURRENT 64
#define DEFAULT_THREADS        4
/* After the body limit, this much more is read and dropped so the client sees the 413;
 * beyond it the connection is closed. */
#define DISCARD_CAP ((uint64_t)16 << 20)

typedef struct route_def {
    const char *path;
    int has_arg; /* path is a prefix followed by one {id} segment */
    srv_route route;
    srv_handler_fn get, post, del;
    int open; /* no API key, no concurrency slot */
} route_def;

static const route_def routes[] = {
    {"/health", 0, SRV_ROUTE_HEALTH, srv_h_health, NULL, NULL, 1},
    {"/metrics", 0, SRV_ROUTE_METRICS, srv_h_metrics, NULL, NULL, 1},
    {"/v1/models", 0, SRV_ROUTE_MODELS, srv_h_models, NULL, NULL, 0},
    {"/v1/models/", 1, SRV_ROUTE_MODEL, srv_h_model, NULL, NULL, 0},
    {"/v1/chat/completions", 0, SRV_ROUTE_CHAT, NULL, srv_h_chat, NULL, 0},
    {"/v1/completions", 0, SRV_ROUTE_COMPLETIONS, NULL, srv_h_completions, NULL, 0},
    {"/v1/embeddings", 0, SRV_ROUTE_EMBEDDINGS, NULL, srv_h_embeddings, NULL, 0},
    {"/v1/ask", 0, SRV_ROUTE_ASK, NULL, srv_h_ask, NULL, 0},
    {"/v1/search", 0, SRV_ROUTE_SEARCH, srv_h_search, NULL, NULL, 0},
    {"/v1/documents", 0, SRV_ROUTE_DOCUMENTS, srv_h_documents_get, srv_h_documents_post, NULL, 0},
    {"/v1/documents/", 1, SRV_ROUTE_DOCUMENT, srv_h_document_get, NULL, srv_h_document_delete, 0},
};

const char *srv_route_label(srv_route r)
{
    for (size_t i = 0; i < LODE_ARRAY_LEN(routes); i++)
        if (routes[i].route == r)
            return routes[i].has_arg
                       ? (r == SRV_ROUTE_MODEL ? "/v1/models/{id}" : "/v1/documents/{id}")
                       : routes[i].path;
    return "other";
}

/* Finds the route of a path; arg receives the {id} segment. NULL: no such path. */
static const route_def *match(const char *url, char *arg, size_t argcap)
{
    arg[0] = 0;
    for (size_t i = 0; i < LODE_ARRAY_LEN(routes); i++) {
        const route_def *d = &routes[i];
        size_t n = strlen(d->path);
        if (!d->has_arg) {
            /* one trailing slash is tolerated: /v1/models/ is /v1/models */
            if (!strncmp(url, d->path, n) && (url[n] == 0 || (url[n] == '/' && url[n + 1] == 0)))
                return d;
        } else if (!strncmp(url, d->path, n) && url[n] && !strchr(url + n, '/')) {
            if (strlen(url + n) >= argcap) return NULL;
            snprintf(arg, argcap, "%s", url + n);
            return d;
        }
    }
    return NULL;
}

static unsigned method_bit(const char *m)
{
    if (!strcmp(m, "GET") || !strcmp(m, "HEAD")) return SRV_M_GET;
    if (!strcmp(m, "POST")) return SRV_M_POST;
    if (!strcmp(m, "DELETE")) return SRV_M_DELETE;
    return SRV_M_OTHER;
}

static void allow_header(const route_def *d, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s%s", d->get ? "GET, HEAD" : "",
             d->post ? (d->get ? ", POST" : "POST") : "",
             d->del ? (d->get || d->post ? ", DELETE" : "DELETE") : "");
}

/* ---- replies ----------------------------------------------------------------------- */

static struct MHD_Response *make_buf_response(lode_buf *b, const char *ctype)
{
    size_t len = b->len;
    char *data = lode_buf_take(b);
    if (!data) return NULL;
    struct MHD_Response *r =
        MHD_create_response_from_buffer_with_free_callback(len, data, lode_free);
    if (!r) {
        lode_free(data);
        return NULL;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    return r;
}

static void add_error_headers(srv_conn *c, struct MHD_Response *r, unsigned status)
{
    if (status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (status == 429 || status == 503)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == 405) {
        char allow[64];
        char arg[128];
        const route_def *d = match(c->path, arg, sizeof arg);
        if (d) {
            allow_header(d, allow, sizeof allow);
            MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
        }
    }
}

static void queue(srv_conn *c, unsigned status, struct MHD_Response *r, uint64_t len)
{
    c->answered = 1;
    c->status = status;
    if (!r) {
        /* Out of memory for the response itself: give the slot back and close the
         * connection (the access handler answers MHD_NO), never leave it hanging. */
        c->status = 500;
        c->failed = 1;
        if (c->holds_slot) {
            atomic_fetch_sub(&c->srv->slots, 1);
            c->holds_slot = 0;
        }
        return;
    }
    add_error_headers(c, r, status);
    /* The work is done once the answer is queued: free the slot before the client can
     * see the answer and send its next request. Streams keep theirs until they end. */
    if (c->holds_slot) {
        atomic_fetch_sub(&c->srv->slots, 1);
        c->holds_slot = 0;
    }
    if (MHD_queue_response(c->mhd, status, r) == MHD_YES) atomic_store(&c->bytes, len);
    MHD_destroy_response(r);
}

void srv_reply_buf(srv_conn *c, unsigned status, const char *content_type, lode_buf *b)
{
    uint64_t len = b->len;
    queue(c, status, make_buf_response(b, content_type), len);
}

static lode_status json_body(lode_buf *b, const json_t *v)
{
    lode_status st = lode_json_append(b, v);
    if (!st) st = lode_buf_putc(b, '\n');
    return st;
}

void srv_reply_json(srv_conn *c, unsigned status, const json_t *v)
{
    lode_buf b = LODE_BUF_INIT;
    if (json_body(&b, v)) {
        lode_buf_free(&b);
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    srv_reply_buf(c, status, "application/json", &b);
}

static lode_status error_body(lode_buf *b, const srv_error *e)
{
    lode_status st = srv_error_append_json(e, b);
    if (!st) st = lode_buf_putc(b, '\n');
    return st;
}

void srv_reply_error(srv_conn *c, const srv_error *e)
{
    lode_buf b = LODE_BUF_INIT;
    if (error_body(&b, e)) {
        /* The error object could not be built: a fixed one, from static memory. */
        static const char fixed[] = "{\"error\":{\"message\":\"internal error while reporting "
                                    "an error\",\"type\":\"server_error\",\"param\":null,"
                                    "\"code\":null}}\n";
        lode_buf_free(&b);
        struct MHD_Response *r = MHD_create_response_from_buffer(sizeof fixed - 1, (void *)fixed,
                                                                 MHD_RESPMEM_PERSISTENT);
        if (r) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        queue(c, 500, r, sizeof fixed - 1);
        return;
    }
    srv_reply_buf(c, (unsigned)e->status, "application/json", &b);
}

void srv_reply_errorf(srv_conn *c, int status, const char *type, const char *code,
                      const char *param, const char *fmt, ...)
{
    srv_error e;
    srv_error_set(&e, LODE_ERR_INVALID, status, type, code, param, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.j.message, sizeof e.j.message, fmt, ap);
    va_end(ap);
    srv_reply_error(c, &e);
}

void srv_defer(srv_conn *c)
{
    pthread_mutex_lock(&c->mu);
    c->deferred = 1;
    c->answered = 1;
    MHD_suspend_connection(c->mhd);
    pthread_mutex_unlock(&c->mu);
}

static void deliver(srv_conn *c, unsigned status, lode_buf *b)
{
    uint64_t len = b->len;
    struct MHD_Response *r = make_buf_response(b, "application/json");
    pthread_mutex_lock(&c->mu);
    c->ready = r;
    c->ready_status = r ? status : 500;
    c->ready_bytes = len;
    MHD_resume_connection(c->mhd);
    pthread_mutex_unlock(&c->mu);
}

void srv_deliver_json(srv_conn *c, unsigned status, const json_t *v)
{
    lode_buf b = LODE_BUF_INIT;
    if (json_body(&b, v)) lode_buf_reset(&b);
    deliver(c, status, &b);
}

void srv_deliver_error(srv_conn *c, const srv_error *e)
{
    lode_buf b = LODE_BUF_INIT;
    if (error_body(&b, e)) lode_buf_reset(&b);
    deliver(c, (unsigned)e->status, &b);
}

const char *srv_query(srv_conn *c, const char *name)
{
    return MHD_lookup_connection_value(c->mhd, MHD_GET_ARGUMENT_KIND, name);
}

/* ---- jobs -------------------------------------------------------------------------- */

void srv_job_add(srv_server *s, srv_job_link *l)
{
    pthread_mutex_lock(&s->mu);
    l->prev = &s->jobs;
    l->next = s->jobs.next;
    s->jobs.next->prev = l;
    s->jobs.next = l;
    pthread_mutex_unlock(&s->mu);
}

void srv_job_remove(srv_server *s, srv_job_link *l)
{
    pthread_mutex_lock(&s->mu);
    if (l->next) {
        l->prev->next = l->next;
        l->next->prev = l->prev;
        l->next = l->prev = NULL;
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- the request path -------------------------------------------------------------- */

static int key_ok(srv_server *s, struct MHD_Connection *mhd)
{
    if (!s->has_key) return 1;
    const char *h =
        MHD_lookup_connection_value(mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ') h++;
    size_t n = strlen(h);
    while (n && (h[n - 1] == ' ' || h[n - 1] == '\t')) n--;
    /* Comparing digests keeps the comparison's time independent of the key and its length. */
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)h, n, d);
    return CRYPTO_memcmp(d, s->key_sha, sizeof d) == 0;
}

static void log_request(srv_conn *c, int aborted, double ms)
{
    srv_server *s = c->srv;
    if (s->cfg.quiet) return;
    char ip[INET6_ADDRSTRLEN] = "-";
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->mhd, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, ip,
                      sizeof ip);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, ip,
                      sizeof ip);
    }
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    FILE *f = s->cfg.log ? s->cfg.log : stderr;
    pthread_mutex_lock(&s->log_mu);
    fprintf(f, "%s %s %s %s %u %llu %.1fms%s\n", ts, ip, c->method_name, c->path, c->status,
            (unsigned long long)atomic_load(&c->bytes), ms, aborted ? " aborted" : "");
    fflush(f);
    pthread_mutex_unlock(&s->log_mu);
}

static void on_completed(void *cls, struct MHD_Connection *mhd, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    srv_server *s = cls;
    srv_conn *c = *con_cls;
    if (!c) return;
    *con_cls = NULL;
    int aborted = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (c->stream) {
        srv_stream_closed_by_http(c->stream);
        srv_stream_release(c->stream);
    }
    if (c->job_release) c->job_release(c->job, aborted);
    if (c->ready) MHD_destroy_response(c->ready);
    double secs = (double)(lode_now_ns() - c->t0) / 1e9;
    if (!c->status) c->status = aborted ? 499 : 500; /* 499: the client closed first */
    srv_metrics_request(&s->m, c->route, c->status, secs);
    log_request(c, aborted, secs * 1e3);
    if (c->holds_slot) atomic_fetch_sub(&s->slots, 1);
    atomic_fetch_sub(&s->active, 1);
    lode_buf_free(&c->body);
    pthread_mutex_destroy(&c->mu);
    lode_free(c);
}

static srv_conn *conn_new(srv_server *s, struct MHD_Connection *mhd, const char *url,
                          const char *method)
{
    srv_conn *c = lode_calloc(1, sizeof *c);
    if (!c) return NULL;
    c->srv = s;
    c->mhd = mhd;
    c->t0 = lode_now_ns();
    c->route = SRV_ROUTE_UNKNOWN;
    c->method = method_bit(method);
    snprintf(c->method_name, sizeof c->method_name, "%s", method);
    snprintf(c->path, sizeof c->path, "%s", url);
    c->body.max = s->cfg.max_body;
    atomic_init(&c->bytes, 0);
    pthread_mutex_init(&c->mu, NULL);
    atomic_fetch_add(&s->active, 1);
    return c;
}

/* The first call: headers are in, the body is not. Returns 1 when a response was queued. */
static int gate(srv_conn *c, const route_def **out)
{
    srv_server *s = c->srv;
    *out = NULL;
    if (atomic_load(&s->stopping)) {
        srv_reply_errorf(c, 503, "server_error", "shutting_down", NULL,
                         "the server is shutting down");
        return 1;
    }
    const route_def *d = match(c->path, c->arg, sizeof c->arg);
    if (!d) {
        srv_reply_errorf(c, 404, "invalid_request_error", "unknown_url", NULL,
                         "unknown URL: %s %.100s", c->method_name, c->path);
        return 1;
    }
    c->route = d->route;
    srv_handler_fn h = c->method == SRV_M_GET      ? d->get
                       : c->method == SRV_M_POST   ? d->post
                       : c->method == SRV_M_DELETE ? d->del
                                                   : NULL;
    if (!h) {
        srv_reply_errorf(c, 405, "invalid_request_error", "method_not_allowed", NULL,
                         "method %s is not allowed on %s", c->method_name,
                         srv_route_label(d->route));
        return 1;
    }
    if (!d->open && !key_ok(s, c->mhd)) {
        srv_reply_errorf(c, 401, "invalid_request_error", "invalid_api_key", NULL,
                         "missing or incorrect API key: send 'Authorization: Bearer KEY'");
        return 1;
    }
    if (!d->open) {
        int cur = atomic_fetch_add(&s->slots, 1);
        c->holds_slot = 1;
        if (cur >= s->cfg.max_concurrent) {
            srv_reply_errorf(c, 429, "rate_limit_error", "too_many_requests", NULL,
                             "too many concurrent requests (limit %d); retry later",
                             s->cfg.max_concurrent);
            return 1;
        }
    }
    const char *cl =
        MHD_lookup_connection_value(c->mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        if (errno || end == cl || v > s->cfg.max_body) {
            srv_reply_errorf(c, 413, "invalid_request_error", "request_too_large", NULL,
                             "request body of %s bytes is over the limit of %zu bytes", cl,
                             s->cfg.max_body);
            return 1;
        }
    }
    *out = d;
    return 0;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *mhd, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    srv_server *s = cls;
    srv_conn *c = *con_cls;
    if (!c) {
        if (!(c = conn_new(s, mhd, url, method))) return MHD_NO;
        *con_cls = c;
        c->started = 1;
        const route_def *d;
        gate(c, &d);
        return MHD_YES;
    }
    if (*upload_size && c->answered) { /* answered before the body: drop it */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!c->too_large && lode_buf_append(&c->body, upload, *upload_size) != LODE_OK) {
            c->too_large = 1;
            lode_buf_free(&c->body);
            c->body.max = s->cfg.max_body;
        }
        if (c->too_large) {
            c->discarded += *upload_size;
            if (c->discarded > DISCARD_CAP) {
                c->status = 413;
                return MHD_NO;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (c->deferred) {
        pthread_mutex_lock(&c->mu);
        struct MHD_Response *r = c->ready;
        c->ready = NULL;
        if (!r) { /* resumed without a reply: wait again */
            MHD_suspend_connection(mhd);
            pthread_mutex_unlock(&c->mu);
            return MHD_YES;
        }
        c->deferred = 0;
        pthread_mutex_unlock(&c->mu);
        queue(c, c->ready_status, r, c->ready_bytes);
        return MHD_YES;
    }
    if (c->answered) return c->failed ? MHD_NO : MHD_YES;
    if (c->too_large) {
        srv_reply_errorf(c, 413, "invalid_request_error", "request_too_large", NULL,
                         "request body is over the limit of %zu bytes", s->cfg.max_body);
        return c->failed ? MHD_NO : MHD_YES;
    }
    char arg[sizeof c->arg];
    const route_def *d = match(c->path, arg, sizeof arg);
    srv_handler_fn h = !d                          ? NULL
                       : c->method == SRV_M_GET    ? d->get
                       : c->method == SRV_M_POST   ? d->post
                       : c->method == SRV_M_DELETE ? d->del
                                                   : NULL;
    if (h) h(c);
    if (!c->answered)
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "the request was not answered");
    return c->failed ? MHD_NO : MHD_YES;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    if (lode_log_get_level() < LODE_LOG_INFO) return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    LODE_INFO("http: %s", msg);
}

/* ---- life cycle -------------------------------------------------------------------- */

srv_server *srv_create(const srv_config *cfg, char *err, size_t errlen)
{
    srv_server *s = lode_calloc(1, sizeof *s);
    struct addrinfo *ai = NULL;
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    snprintf(s->host, sizeof s->host, "%s", cfg->host && *cfg->host ? cfg->host : "127.0.0.1");
    s->cfg.host = s->host;
    if (!s->cfg.max_body) s->cfg.max_body = DEFAULT_MAX_BODY;
    if (s->cfg.max_concurrent <= 0) s->cfg.max_concurrent = DEFAULT_MAX_CONCURRENT;
    if (s->cfg.threads <= 0) s->cfg.threads = DEFAULT_THREADS;
    if (s->cfg.shutdown_grace_s < 0) s->cfg.shutdown_grace_s = 10;
    if (cfg->api_key && *cfg->api_key) {
        SHA256((const unsigned char *)cfg->api_key, strlen(cfg->api_key), s->key_sha);
        s->has_key = 1;
    }
    s->cfg.api_key = NULL; /* only the digest is kept */
    s->be = cfg->backends;
    s->jobs.next = s->jobs.prev = &s->jobs;
    atomic_init(&s->slots, 0);
    atomic_init(&s->active, 0);
    atomic_init(&s->stopping, 0);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->log_mu, NULL);
    pthread_mutex_init(&s->store_mu, NULL);
    pthread_mutex_init(&s->streams_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->streams_cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&s->keepalives, 0);
    s->keepalive_ns = cfg->keepalive_ms == 0  ? 1000000000
                      : cfg->keepalive_ms < 0 ? 0
                                              : (int64_t)cfg->keepalive_ms * 1000000;
    srv_metrics_init(&s->m);
    s->started_ns = lode_now_ns();
    /* before any worker thread may fetch a URL (curl_global_init is reference-counted) */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "cannot initialize libcurl");
        goto fail;
    }
    s->curl_init = 1;
    if (s->be && s->be->embedder &&
        !(s->emb = srv_embedder_create(s->be->embedder, s->be->model, s->be->embed_max_queue))) {
        snprintf(err, errlen, "cannot start the embedding queue");
        goto fail;
    }
    /* search queries and uploaded documents join the same queue when the store was
     * embedded with the same model (else the dense side embeds directly) */
    if (s->emb && s->be->dense &&
        ret_dense_use_embedder(s->be->dense, srv_embedder_engine(s->emb)) == LODE_OK)
        s->dense_shared = 1;

    if (srv_keepalive_start(s)) {
        snprintf(err, errlen, "cannot start the stream keep-alive thread");
        goto fail;
    }

    if (cfg->port < 0 || cfg->port > 65535) {
        snprintf(err, errlen, "port %d is out of range", cfg->port);
        goto fail;
    }
    struct addrinfo hints = {0};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%d", cfg->port);
    int gai = getaddrinfo(s->host, portstr, &hints, &ai);
    if (gai) {
        snprintf(err, errlen, "cannot resolve host '%s': %s", s->host, gai_strerror(gai));
        goto fail;
    }
    /* poll(), not epoll: with epoll, MHD_quiesce_daemon (graceful shutdown) races the worker
     * threads, which also take the listening socket out of their epoll sets once they see
     * the daemon quiesced; whichever comes second fails and libmicrohttpd aborts the
     * process ("Failed to remove listen FD from epoll set"). With poll() the workers are
     * told through their inter-thread channel (MHD_ALLOW_SUSPEND_RESUME includes
     * MHD_USE_ITC) and nothing is removed twice. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->d = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_access, s,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE,
                            (unsigned)s->cfg.threads, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_CONNECTION_LIMIT, 1024u,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_END);
    if (!s->d) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use or not available)", s->host,
                 cfg->port);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    freeaddrinfo(ai);
    return s;
fail:
    if (ai) freeaddrinfo(ai);
    s->shut = 1;
    srv_destroy(s);
    return NULL;
}

int srv_port(const srv_server *s)
{
    return s->port;
}

/* Idle: no request in progress and no job whose callbacks may still use the server. */
static int idle(srv_server *s)
{
    pthread_mutex_lock(&s->mu);
    int jobs = s->jobs.next != &s->jobs;
    pthread_mutex_unlock(&s->mu);
    return !jobs && atomic_load(&s->active) == 0;
}

static int wait_idle(srv_server *s, double seconds)
{
    int64_t until = lode_now_ns() + (int64_t)(seconds * 1e9);
    while (!idle(s)) {
        if (lode_now_ns() >= until) return 0;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 1;
}

void srv_shutdown(srv_server *s)
{
    if (!s || s->shut) return;
    s->shut = 1;
    atomic_store(&s->stopping, 1);
    MHD_socket fd = MHD_quiesce_daemon(s->d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
    if (!wait_idle(s, s->cfg.shutdown_grace_s)) {
        LODE_WARN("serve: %d request(s) still running after %ds; cancelling them",
                  atomic_load(&s->active), s->cfg.shutdown_grace_s);
        pthread_mutex_lock(&s->mu);
        for (srv_job_link *l = s->jobs.next; l != &s->jobs; l = l->next) l->cancel(l->arg);
        pthread_mutex_unlock(&s->mu);
        if (!wait_idle(s, 10.0))
            LODE_WARN("serve: %d request(s) did not end; closing their connections",
                      atomic_load(&s->active));
    }
    MHD_stop_daemon(s->d);
    s->d = NULL;
    srv_keepalive_stop(s); /* every stream ended with its connection */
}

void srv_destroy(srv_server *s)
{
    if (!s) return;
    srv_shutdown(s);
    if (s->d) MHD_stop_daemon(s->d);
    srv_keepalive_stop(s);
    if (s->dense_shared) ret_dense_use_embedder(s->be->dense, NULL);
    srv_embedder_destroy(s->emb);
    if (s->curl_init) curl_global_cleanup();
    srv_metrics_destroy(&s->m);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->log_mu);
    pthread_mutex_destroy(&s->store_mu);
    pthread_mutex_destroy(&s->streams_mu);
    pthread_cond_destroy(&s->streams_cv);
    lode_free(s);
}
