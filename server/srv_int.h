/*
 * srv_int.h: the server's internals shared by its files: the server and connection
 * structs, the route table, reply helpers (plain, deferred, streamed) and metrics.
 * Route handlers run on a worker thread with the whole body read; they must answer with
 * exactly one srv_reply_* call, or defer (srv_defer + srv_deliver later from any thread),
 * or start a stream (srv_stream_*).
 */
#ifndef LODE_SERVER_INT_H
#define LODE_SERVER_INT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#include "server/request.h"
#include "server/server.h"

typedef enum srv_route {
    SRV_ROUTE_HEALTH = 0,
    SRV_ROUTE_METRICS,
    SRV_ROUTE_MODELS,
    SRV_ROUTE_MODEL,
    SRV_ROUTE_CHAT,
    SRV_ROUTE_COMPLETIONS,
    SRV_ROUTE_EMBEDDINGS,
    SRV_ROUTE_ASK,
    SRV_ROUTE_SEARCH,
    SRV_ROUTE_DOCUMENTS,
    SRV_ROUTE_DOCUMENT,
    SRV_ROUTE_UNKNOWN, /* no such path: 404 */
    SRV_ROUTE_COUNT
} srv_route;

enum { SRV_M_GET = 1, SRV_M_POST = 2, SRV_M_DELETE = 4, SRV_M_OTHER = 8 };

typedef struct srv_conn srv_conn;
typedef struct srv_stream srv_stream;
typedef void (*srv_handler_fn)(srv_conn *c);

/* Something long-running a request started (a generation) that shutdown may cancel. */
typedef struct srv_job_link {
    void (*cancel)(void *arg);
    void *arg;
    struct srv_job_link *prev, *next;
} srv_job_link;

/* ---- metrics ----------------------------------------------------------------------- */
#define SRV_LAT_BUCKETS 14
#define SRV_N_STATUS    16
typedef struct srv_metrics {
    pthread_mutex_t mu;
    uint64_t requests[SRV_ROUTE_COUNT][SRV_N_STATUS];          /* by route and status slot */
    uint64_t lat_bucket[SRV_ROUTE_COUNT][SRV_LAT_BUCKETS + 1]; /* +Inf last; not cumulative */
    double lat_sum[SRV_ROUTE_COUNT];
    uint64_t gen_requests, gen_cancelled, gen_failed;
    uint64_t prompt_tokens, completion_tokens;
    double decode_seconds, prefill_seconds;
    double last_tokens_per_s; /* decode rate of the most recent finished generation */
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
void srv_metrics_destroy(srv_metrics *m);
void srv_metrics_request(srv_metrics *m, srv_route r, unsigned status, double seconds);
/* One generation (one choice) ended. */
void srv_metrics_generation(srv_metrics *m, int64_t prompt_tokens, int64_t completion_tokens,
                            double prefill_s, double decode_s, int cancelled, int failed);
/* Appends the Prometheus text exposition of everything the server knows. */
lode_status srv_metrics_render(srv_server *s, lode_buf *b);
/* Appends the backends' own gauges (store size, engine queue); routes_*.c. */
lode_status srv_metrics_render_backends(srv_server *s, lode_buf *b);

/* ---- the backends the server is lent --------------------------------------------------- */
/* Filled by the caller of srv_create (cli/cmd_serve.c). */
struct ret_store;
struct ret_dense;
struct eng_model;
struct eng_bert;
struct srv_backends {
    const char *model_id;    /* the name /v1/models reports; NULL when no model is loaded */
    int64_t created;         /* model file mtime, for /v1/models */
    struct ret_store *store; /* NULL: no store; used under srv_server.store_mu */
    struct eng_model *model; /* NULL: no generation */
    /* The store's dense side (embedder and FAISS index) for dense and hybrid search; NULL
     * when the store has no embedding model. Used under srv_server.store_mu only. */
    struct ret_dense *dense;
    /* The embedding model: NULL for none (/v1/embeddings answers 503). Used only through
     * the server's embedding queue (srv_server.emb), never directly. */
    struct eng_bert *embedder;
    const char *embed_model_id; /* its name for /v1/models and the "model" field */
    int embed_max_queue;        /* texts the embedding queue holds; beyond, 429; 0: default */
    int64_t embed_created;
};

/* ---- the embedding queue (embed.c) ----------------------------------------------------- */
typedef struct srv_embedder srv_embedder;
/* One embedding job: n texts into out[n * dim]. The caller owns everything and keeps it
 * alive until done(j) is called (once, from the queue's worker thread), after which st
 * and err hold the outcome. */
typedef struct srv_embed_job {
    const char *const *texts;
    const size_t *lens; /* NULL: NUL-terminated */
    size_t n;
    float *out; /* OUT (n, dim) */
    void (*done)(struct srv_embed_job *j);
    void *user;
    lode_status st;
    char err[256];
    struct srv_embed_job *next;
} srv_embed_job;
typedef struct srv_embed_stats {
    int queued, running;
    uint64_t batches, texts, jobs;
    uint64_t rejected; /* jobs refused because the queue was full (429) */
    double seconds;
    int hosted; /* batches run on the generation model's scheduler thread */
} srv_embed_stats;
/* An embedding queue over m (borrowed; it must outlive the queue) whose batches run on
 * host's scheduler thread (host may be NULL: a thread of its own; when not NULL it must
 * outlive the queue). NULL on failure. */
srv_embedder *srv_embedder_create(struct eng_bert *m, struct eng_model *host, int max_queue);
struct eng_embedder *srv_embedder_engine(srv_embedder *e);
/* Fails what is still queued with LODE_ERR_CANCELLED, stops the worker, frees. NULL ok. */
void srv_embedder_destroy(srv_embedder *e);
int srv_embedder_dim(const srv_embedder *e);
/* Queues j. On error done is never called and j->err says why: LODE_ERR_BUSY when the
 * queue is full (429), LODE_ERR_CANCELLED once it is stopping, LODE_ERR_RANGE for more
 * texts than the queue holds, or a tokenizer error. */
lode_status srv_embed_submit(srv_embedder *e, srv_embed_job *j);
/* Queues n texts and waits for them: the synchronous form for searches and uploads. */
lode_status srv_embed_run(srv_embedder *e, const char *const *texts, const size_t *lens, size_t n,
                          float *out /* OUT */, char *err, size_t errlen);
void srv_embedder_stats(srv_embedder *e, srv_embed_stats *out /* OUT */);

/* ---- server ------------------------------------------------------------------------ */
struct srv_server {
    srv_config cfg;
    char host[128];
    unsigned char key_sha[32]; /* SHA-256 of the API key */
    int has_key;
    struct MHD_Daemon *d;
    int port;
    atomic_int slots;    /* requests holding a concurrency slot */
    atomic_int active;   /* every request in progress */
    atomic_int stopping; /* shutdown began: new requests get 503 */
    int shut;            /* srv_shutdown ran */
    srv_metrics m;
    int dense_shared;   /* be->dense embeds through emb */
    pthread_mutex_t mu; /* jobs list; the store */
    srv_job_link jobs;  /* list head */
    pthread_mutex_t log_mu;
    pthread_mutex_t store_mu; /* a store handle serves one thread at a time */
    int64_t started_ns;
    struct srv_backends *be;
    srv_embedder *emb; /* NULL when the backends have no embedding model */
    int curl_init;     /* curl_global_init succeeded */
    /* Streams in progress, for the keep-alive timer (stream.c); under streams_mu. */
    pthread_mutex_t streams_mu;
    pthread_cond_t streams_cv;
    srv_stream *streams; /* list head, linked through the streams */
    pthread_t keepalive_thread;
    int keepalive_running, keepalive_stop;
    int64_t keepalive_ns;            /* a comment after this long without output; 0: none */
    atomic_uint_fast64_t keepalives; /* comments sent */
};

struct srv_conn {
    srv_server *srv;
    struct MHD_Connection *mhd;
    srv_route route;
    unsigned method;
    char method_name[12];
    char path[200]; /* the URL path (truncated) for the log; never the query */
    char arg[128];  /* the {id} of /v1/documents/{id} or /v1/models/{id} */
    lode_buf body;
    uint64_t discarded; /* body bytes dropped after the limit */
    int started;        /* the first access-handler call happened */
    int too_large;
    int holds_slot;
    int answered; /* a response is queued (or a stream is running) */
    int failed;   /* no response could be made: the connection is closed */
    int64_t t0;
    unsigned status;
    atomic_uint_fast64_t bytes;
    srv_stream *stream; /* a ref, when the response is a stream */
    /* deferred replies */
    pthread_mutex_t mu;
    int deferred;               /* suspended, waiting for srv_deliver */
    struct MHD_Response *ready; /* delivered response, queued on the next handler call */
    unsigned ready_status;
    uint64_t ready_bytes;
    /* handler-owned state, released when the request ends (after the response is done) */
    void *job;
    void (*job_release)(void *job, int client_gone);
};

/* Replies. Each queues the response and records status and size for the log.
 * srv_reply_json: serializes v (does not take it). srv_reply_error: the error object. */
void srv_reply_json(srv_conn *c, unsigned status, const json_t *v);
void srv_reply_error(srv_conn *c, const srv_error *e);
void srv_reply_errorf(srv_conn *c, int status, const char *type, const char *code,
                      const char *param, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Takes b's data. */
void srv_reply_buf(srv_conn *c, unsigned status, const char *content_type, lode_buf *b);

/* Deferred replies: srv_defer suspends the connection from the handler; any thread later
 * hands over the finished body with srv_deliver_* (exactly once), which resumes it. */
void srv_defer(srv_conn *c);
void srv_deliver_json(srv_conn *c, unsigned status, const json_t *v);
void srv_deliver_error(srv_conn *c, const srv_error *e);

/* Streams (server-sent events and other chunked bodies). The creator holds one ref. */
srv_stream *srv_stream_create(size_t max_buffered);
/* Answers c with the stream (200, chunked). Returns LODE_OK or LODE_ERR_NOMEM. */
lode_status srv_stream_start(srv_conn *c, srv_stream *s, const char *content_type);
/* Producer side, any thread. write: LODE_ERR_CANCELLED once the client is gone,
 * LODE_ERR_LIMIT when the client reads too slowly and the bound is reached. */
lode_status srv_stream_write(srv_stream *s, const void *p, size_t n);
/* No more data: the response ends once the client has read what is buffered. */
void srv_stream_finish(srv_stream *s);
/* Called (once, without locks held) when the client goes away before the stream finished. */
void srv_stream_on_close(srv_stream *s, void (*fn)(void *arg), void *arg);
int srv_stream_client_gone(srv_stream *s);
void srv_stream_release(srv_stream *s);
/* Internal: the request ended; close the stream (client gone unless it finished). */
void srv_stream_closed_by_http(srv_stream *s);

/* Keep-alive for event streams. libmicrohttpd does not watch a suspended connection, so a
 * client that left while its stream waits for the next token would be noticed only at
 * that token's write, and a stalled or queued generation would hold the engine for
 * nothing. A timer thread writes an SSE comment (": keep-alive") into every event stream
 * that has been waiting cfg.keepalive_ms without output; the write to a closed socket
 * fails, the request ends and the stream's close hook cancels the generation.
 * start: LODE_OK, or a status when the thread cannot start. stop: joins it; call after
 * the daemon stopped (no stream is listed then). */
lode_status srv_keepalive_start(srv_server *s);
void srv_keepalive_stop(srv_server *s);

/* Jobs: shutdown cancels everything still listed. */
void srv_job_add(srv_server *s, srv_job_link *l);
void srv_job_remove(srv_server *s, srv_job_link *l);

/* ---- generation jobs (job.c) -------------------------------------------------------- */
/* The part of a generation-backed request that the routes share: a job lives until its
 * connection and everything it started let go of it (refs), answers either deferred in one
 * piece or as server-sent events (stream), is cancelled when its client goes away and is
 * listed with the server while it runs, so shutdown can cancel it. A route embeds it as
 * the first member of its own job and gives the operations below. */
typedef struct srv_job srv_job;
typedef struct srv_job_ops {
    /* Stops what runs (any thread; never called under the job's mu). */
    void (*cancel)(srv_job *j);
    /* The request ended (client_gone: before its answer was complete). */
    void (*ended)(srv_job *j, int client_gone);
    /* Frees the route's job; the base's stream is released after it. */
    void (*destroy)(srv_job *j);
} srv_job_ops;
struct srv_job {
    srv_server *srv;
    srv_conn *conn;  /* NULL once the request ended (under mu) */
    atomic_int refs; /* the connection's, plus one per running part */
    pthread_mutex_t mu;
    const srv_job_ops *ops;
    int stream;          /* answered as server-sent events on out */
    int shutdown_cancel; /* cancelled by the server's shutdown */
    srv_stream *out;
    srv_job_link link;
    int linked;
    char id[48];
    int64_t created;
};
/* Ties j (zeroed, owned by the caller until then) to c; the connection holds one ref. */
void srv_job_init(srv_job *j, srv_conn *c, const srv_job_ops *ops, int stream);
/* Streaming: creates the event stream (its loss cancels the job); else defers c.
 * LODE_ERR_NOMEM when the stream cannot be made (c is not answered then). */
lode_status srv_job_open(srv_job *j);
/* Listed with the server, so shutdown cancels it; unlist once nothing of it runs. */
void srv_job_list(srv_job *j);
void srv_job_unlist(srv_job *j);
void srv_job_ref(srv_job *j);
void srv_job_unref(srv_job *j);
/* The connection, or NULL once the request ended. */
srv_conn *srv_job_conn(srv_job *j);
/* Events: one holding v (taken); an error object; data: [DONE] and the end. */
lode_status srv_job_event(srv_job *j, json_t *v);
void srv_job_event_error(srv_job *j, const srv_error *e);
void srv_job_event_end(srv_job *j);
/* The deferred answer: v (not taken), or a 500 when v is NULL (out of memory). */
void srv_job_answer(srv_job *j, json_t *v);
/* The error for an engine that refused a request (eng_submit's status). */
void srv_error_engine_refused(srv_error *e, lode_status st, const char *detail);

/* Handlers (routes_*.c). */
void srv_h_health(srv_conn *c);
void srv_h_metrics(srv_conn *c);
void srv_h_models(srv_conn *c);
void srv_h_model(srv_conn *c);
void srv_h_chat(srv_conn *c);
void srv_h_completions(srv_conn *c);
void srv_h_embeddings(srv_conn *c);
void srv_h_ask(srv_conn *c);
void srv_h_search(srv_conn *c);
void srv_h_documents_get(srv_conn *c);
void srv_h_documents_post(srv_conn *c);
void srv_h_document_get(srv_conn *c);
void srv_h_document_delete(srv_conn *c);

/* Whether a store is open (routes_store.c). */
int srv_has_store(srv_server *s);
/* Whether name is the served model's id (routes_basic.c). */
int srv_model_matches(srv_server *s, const char *name);
/* 501 for a feature this build lacks. */
void srv_reply_unavailable(srv_conn *c, const char *what);

/* Store helpers (routes_store.c): a 503 when no store is open (returns 0); a store
 * failure as 503/400/500; an integer query argument or a 400 (returns 0). */
int srv_need_store(srv_conn *c);
void srv_reply_store_error(srv_conn *c, lode_status st, const char *msg);
int srv_query_int(srv_conn *c, const char *name, long long lo, long long hi, long long def,
                  long long *out);

/* A query-string argument or NULL. */
const char *srv_query(srv_conn *c, const char *name);
/* The route's label for metrics and logs. */
const char *srv_route_label(srv_route r);

#endif
