/*
 * routes_ask.c: POST /v1/ask, the RAG answer path over HTTP (orchestrate/ask.h).
 * Body: {question, k, mode, filters: {uri, media_type}, stream, max_tokens, temperature,
 * seed, model}.
 * Retrieval and prompt assembly run in the handler (the store under store_mu), generation
 * on the engine. Without streaming the connection is deferred until the answer is
 * complete and gets one JSON object (answer, citations, passages, timings, usage); with
 * stream: true it gets server-sent events: {"object":"ask.delta","delta":...} for the
 * answer's text as it comes, one {"object":"ask.answer",...} with everything (citations
 * and timings included), then `data: [DONE]`. A client that goes away cancels the
 * generation; shutdown cancels every answer still running.
 *
 * Each answer that completed is logged in the store's question log when its request
 * ends, on the HTTP worker's thread (never on the engine's, which a busy store would
 * stall): cancelled and failed answers are not logged.
 */
#include "server/srv_int.h"

#include "engine/engine.h"
#include "orchestrate/ask.h"
#include "retrieval/store.h"

#include <stdio.h>
#include <string.h>

typedef struct ask_job {
    srv_job base; /* first: the shared life cycle (job.c) */
    orc_answer *a;
    int done; /* on_done ran (under base.mu) */
} ask_job;

static void job_destroy(srv_job *b)
{
    ask_job *j = (ask_job *)b;
    orc_answer_free(j->a);
    lode_free(j);
}

static void job_cancel(srv_job *b)
{
    ask_job *j = (ask_job *)b;
    pthread_mutex_lock(&b->mu);
    int running = !j->done;
    pthread_mutex_unlock(&b->mu);
    if (running) orc_cancel(j->a);
}

/* The request ended: log a completed answer, cancel an unfinished one. */
static void job_ended(srv_job *b, int client_gone)
{
    ask_job *j = (ask_job *)b;
    pthread_mutex_lock(&b->mu);
    int done = j->done;
    pthread_mutex_unlock(&b->mu);
    if (!done) {
        job_cancel(b);
    } else if (j->a->status == LODE_OK && j->a->finish != ENG_FINISH_CANCELLED &&
               j->a->finish != ENG_FINISH_ERROR) {
        srv_server *s = b->srv;
        pthread_mutex_lock(&s->store_mu);
        lode_status st = orc_log(s->be->store, j->a, NULL);
        if (st)
            LODE_WARN("/v1/ask: the question was not logged: %s", ret_store_errmsg(s->be->store));
        pthread_mutex_unlock(&s->store_mu);
    }
}

static const srv_job_ops ask_ops = {job_cancel, job_ended, job_destroy};

static json_t *answer_json(ask_job *j)
{
    json_t *v = orc_answer_json(j->a, 1);
    if (v) {
        json_object_set_new(v, "id", json_string(j->base.id));
        json_object_set_new(v, "created", json_integer((json_int_t)j->base.created));
        if (j->base.srv->be->model_id)
            json_object_set_new(v, "model", json_string(j->base.srv->be->model_id));
    }
    return v;
}

static void on_delta(void *user, const char *text, size_t len)
{
    ask_job *j = user;
    if (!j->base.stream || !len) return;
    size_t ok = lode_utf8_valid_prefix(text, len);
    srv_job_event(&j->base, json_pack("{s:s, s:s, s:s%}", "object", "ask.delta", "id", j->base.id,
                                      "delta", text, ok));
}

static void on_done(void *user, orc_answer *a)
{
    ask_job *j = user;
    if (!a->no_passages)
        srv_metrics_generation(&j->base.srv->m, a->n_prompt, a->n_tokens, a->t.prefill_ms / 1e3,
                               a->t.decode_ms / 1e3, a->finish == ENG_FINISH_CANCELLED,
                               a->finish == ENG_FINISH_ERROR);
    pthread_mutex_lock(&j->base.mu);
    j->done = 1;
    pthread_mutex_unlock(&j->base.mu);
    srv_error e;
    int failed = a->finish == ENG_FINISH_ERROR || (a->status && a->finish != ENG_FINISH_CANCELLED);
    if (failed)
        srv_error_set(&e, a->status ? a->status : LODE_ERR_INTERNAL, 500, "server_error", NULL,
                      NULL, "generation failed: %s", lode_strerror(a->status));
    else if (a->finish == ENG_FINISH_CANCELLED && j->base.shutdown_cancel)
        srv_error_set(&e, LODE_ERR_CANCELLED, 503, "server_error", "shutting_down", NULL,
                      "the server shut down before the answer was complete");
    int err = failed || (a->finish == ENG_FINISH_CANCELLED && j->base.shutdown_cancel);
    if (j->base.stream) {
        if (err)
            srv_job_event_error(&j->base, &e);
        else
            srv_job_event(&j->base, answer_json(j));
        srv_job_event_end(&j->base);
    } else if (err) {
        srv_conn *conn = srv_job_conn(&j->base);
        if (conn) srv_deliver_error(conn, &e);
    } else {
        json_t *v = answer_json(j);
        srv_job_answer(&j->base, v);
        json_decref(v);
    }
    srv_job_unlist(&j->base);
    srv_job_unref(&j->base);
}

/* An orc_prepare failure as the API reports it. */
static void reply_prepare_error(srv_conn *c, lode_status st, const char *msg)
{
    switch (st) {
    case LODE_ERR_INVALID:
        srv_reply_errorf(c, 400, "invalid_request_error", NULL,
                         strstr(msg, "k must") ? "k" : "question", "%s", msg);
        break;
    case LODE_ERR_UNSUPPORTED:
        srv_reply_errorf(c, 400, "invalid_request_error", "unsupported_mode", "mode", "%s", msg);
        break;
    case LODE_ERR_RANGE:
        srv_reply_errorf(c, 400, "invalid_request_error", "context_length_exceeded",
                         strncmp(msg, "max_tokens", 10) ? "question" : "max_tokens", "%s", msg);
        break;
    case LODE_ERR_BUSY:
        srv_reply_errorf(c, 503, "server_error", "store_busy", NULL, "%s", msg);
        break;
    case LODE_ERR_NOMEM:
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        break;
    default:
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "%s", msg);
        break;
    }
}

void srv_h_ask(srv_conn *c)
{
    srv_server *s = c->srv;
    srv_ask_request r;
    srv_error e;
    orc_answer *a = NULL;
    ask_job *j = NULL;
    char err[1024];
    if (srv_ask_request_parse(c->body.data, c->body.len, &r, &e)) {
        srv_reply_error(c, &e);
        goto out;
    }
    orc_opts o = {0};
    if (orc_mode_parse(r.mode, &o.mode)) {
        srv_reply_errorf(c, 400, "invalid_request_error", NULL, "mode",
                         "'mode' is auto, hybrid, dense or lexical, not '%.60s'", r.mode);
        goto out;
    }
    eng_model *m = s->be ? s->be->model : NULL;
    if (r.model && (!m || !srv_model_matches(s, r.model))) {
        srv_reply_errorf(c, 404, "invalid_request_error", "model_not_found", "model",
                         "the model '%.100s' does not exist%s%s", r.model,
                         m ? "; this server has " : " (no model is loaded)",
                         m ? s->be->model_id : "");
        goto out;
    }
    if (!m) {
        srv_reply_errorf(c, 503, "server_error", "no_model", NULL,
                         "/v1/ask needs a generation model (start the server without --no-model)");
        goto out;
    }
    if (!srv_need_store(c)) goto out;
    o.k = (int)r.k;
    o.uri = r.uri;
    o.media_type = r.media_type;
    o.max_tokens = (int)r.max_tokens;
    if (r.has_temperature || r.has_seed) {
        eng_sampling_default(&o.sampling);
        o.sampling.repeat_penalty = 1.15f;
        o.sampling.temperature = (float)r.temperature;
        o.sampling.seed = (uint64_t)r.seed;
        o.has_sampling = 1;
    }
    /* the question is embedded before the store lock is taken (as a search's query is:
     * routes_store.c); if that fails, orc_prepare embeds it again and reports why */
    float *qv = NULL;
    if (s->be->dense && o.mode != ORC_MODE_LEXICAL &&
        (qv = lode_malloc(sizeof(float) * (size_t)ret_dense_dim(s->be->dense))) &&
        orc_embed_question(s->be->dense, r.question, qv, err, sizeof err) == LODE_OK)
        o.qvec = qv;
    pthread_mutex_lock(&s->store_mu);
    lode_status st =
        orc_prepare(s->be->store, s->be->dense, m, r.question, &o, &a, err, sizeof err);
    pthread_mutex_unlock(&s->store_mu);
    lode_free(qv);
    if (st) {
        reply_prepare_error(c, st, err);
        goto out;
    }

    if (!(j = lode_calloc(1, sizeof *j))) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        goto out;
    }
    j->a = a;
    a = NULL;
    srv_job_init(&j->base, c, &ask_ops, r.stream);
    snprintf(j->base.id, sizeof j->base.id, "ask-%016llx",
             (unsigned long long)lode_now_ns() ^ ((unsigned long long)(uintptr_t)j << 16));
    if (srv_job_open(&j->base)) {
        pthread_mutex_lock(&j->base.mu);
        j->done = 1; /* nothing runs: the connection's end must not cancel or log */
        j->a->status = LODE_ERR_NOMEM;
        pthread_mutex_unlock(&j->base.mu);
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        goto out;
    }
    srv_job_list(&j->base);
    srv_job_ref(&j->base); /* the engine's, released by on_done */
    if ((st = orc_start(j->a, on_delta, on_done, j))) {
        atomic_fetch_sub(&j->base.refs, 1); /* never the last: the connection holds one */
        srv_job_unlist(&j->base);
        j->base.linked = 0;
        pthread_mutex_lock(&j->base.mu);
        j->done = 1; /* nothing runs: the connection's end must not cancel or log */
        j->a->status = st;
        pthread_mutex_unlock(&j->base.mu);
        srv_error_engine_refused(&e, st, eng_errmsg(m));
        if (r.stream)
            srv_reply_error(c, &e);
        else
            srv_deliver_error(c, &e);
        goto out;
    }
    if (r.stream && srv_stream_start(c, j->base.out, "text/event-stream") != LODE_OK) {
        job_cancel(&j->base);
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
    }
out:
    orc_answer_free(a);
    srv_ask_request_clear(&r);
}
