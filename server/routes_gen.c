/*
 * routes_gen.c: the OpenAI generation routes, /v1/chat/completions and /v1/completions,
 * on the engine's asynchronous requests. A request becomes a job of n choices, each one
 * engine request. Without streaming the connection is suspended until the last choice
 * ends (srv_defer/srv_deliver); with stream: true every token becomes a server-sent event
 * on a srv_stream, ending in `data: [DONE]`. A client that goes away cancels its choices
 * (the stream's close hook calls eng_cancel); shutdown cancels every job still running.
 * /v1/embeddings validates and tokenizes on the HTTP worker, then hands the texts to the
 * server's embedding queue (embed.c), which batches them with other requests' texts; the
 * connection stays suspended until the queue's worker delivers the vectors.
 * /v1/ask is in routes_ask.c.
 */
#include "server/srv_int.h"

#include "engine/bert.h"
#include "engine/engine.h"

#include <openssl/evp.h>

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct gen_job gen_job;

typedef struct gen_choice {
    gen_job *job;
    int index;
    uint64_t eng_id;
    int submitted;
    int done;
    int n_tokens;
    lode_buf text; /* without streaming: the answer so far */
    json_t *lp;    /* without streaming, with logprobs: chat content[] or completions tokens[] */
    json_t *lp_values;  /* completions: token_logprobs[] */
    json_t *lp_offsets; /* completions: text_offset[] */
    eng_finish finish;
    lode_status st;
    eng_stats stats;
} gen_choice;

struct gen_job {
    srv_job base; /* first: the shared life cycle (job.c) */
    eng_model *model;
    srv_gen_kind kind;
    int include_usage, logprobs;
    char model_id[128];
    int n_choices, remaining; /* under base.mu */
    gen_choice *choices;
    int n_prompt;
    int refused; /* answered with an error at submit: callbacks stay silent */
};

static void job_destroy(srv_job *b)
{
    gen_job *j = (gen_job *)b;
    for (int i = 0; i < j->n_choices; i++) {
        lode_buf_free(&j->choices[i].text);
        json_decref(j->choices[i].lp);
        json_decref(j->choices[i].lp_values);
        json_decref(j->choices[i].lp_offsets);
    }
    lode_free(j->choices);
    lode_free(j);
}

/* Cancels every choice still running. Never holds mu while calling the engine. */
static void job_cancel(srv_job *b)
{
    gen_job *j = (gen_job *)b;
    uint64_t ids[SRV_MAX_N];
    int n = 0;
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < j->n_choices; i++)
        if (j->choices[i].submitted && !j->choices[i].done) ids[n++] = j->choices[i].eng_id;
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < n; i++) eng_cancel(j->model, ids[i]);
}

static void job_ended(srv_job *b, int client_gone)
{
    if (client_gone) job_cancel(b);
}

static const srv_job_ops gen_ops = {job_cancel, job_ended, job_destroy};

static const char *finish_reason(eng_finish f)
{
    switch (f) {
    case ENG_FINISH_LENGTH:
        return "length";
    case ENG_FINISH_EOG:
    case ENG_FINISH_STOP:
        return "stop";
    case ENG_FINISH_CANCELLED:
        return "cancelled";
    default:
        return "error";
    }
}

static json_t *usage_json(gen_job *j)
{
    int completion = 0;
    for (int i = 0; i < j->n_choices; i++) completion += j->choices[i].n_tokens;
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", j->n_prompt, "completion_tokens",
                     completion, "total_tokens", j->n_prompt + completion);
}

/* The token's own text for logprobs (it may differ from the streamed piece, which can hold
 * text back for stop strings or incomplete characters). */
static json_t *token_text(gen_job *j, int32_t tok)
{
    lode_buf b = LODE_BUF_INIT;
    json_t *s = NULL;
    if (eng_detokenize(j->model, &tok, 1, 0, &b) == LODE_OK) {
        size_t ok = lode_utf8_valid_prefix(b.data ? b.data : "", b.len);
        s = json_stringn(b.data ? b.data : "", ok);
    }
    lode_buf_free(&b);
    return s ? s : json_string("");
}

static json_t *chat_lp_entry(gen_job *j, int32_t tok, float lp)
{
    json_t *t = token_text(j, tok);
    json_t *bytes = json_array();
    const char *p = json_string_value(t);
    for (size_t i = 0; p && bytes && i < json_string_length(t); i++)
        json_array_append_new(bytes, json_integer((unsigned char)p[i]));
    return json_pack("{s:o, s:f, s:o, s:[]}", "token", t, "logprob", (double)lp, "bytes",
                     bytes ? bytes : json_null(), "top_logprobs");
}

static json_t *chunk_base(gen_job *j)
{
    return json_pack("{s:s, s:s, s:I, s:s}", "id", j->base.id, "object",
                     j->kind == SRV_GEN_CHAT ? "chat.completion.chunk" : "text_completion",
                     "created", (json_int_t)j->base.created, "model", j->model_id);
}

/* A chunk for one choice: delta text (may be NULL), logprobs entry (taken, may be NULL),
 * finish reason (NULL while running). */
static json_t *choice_chunk(gen_job *j, int index, const char *text, size_t len, json_t *lp,
                            const char *finish, int with_role)
{
    json_t *c = chunk_base(j);
    json_t *ch;
    json_t *lpo = json_null();
    if (j->kind == SRV_GEN_CHAT) {
        json_t *delta = json_object();
        if (with_role) json_object_set_new(delta, "role", json_string("assistant"));
        if (text) json_object_set_new(delta, "content", json_stringn(text, len));
        if (lp) {
            json_decref(lpo);
            lpo = json_pack("{s:[o]}", "content", lp);
        }
        ch = json_pack("{s:i, s:o, s:o, s:o}", "index", index, "delta", delta, "logprobs", lpo,
                       "finish_reason", finish ? json_string(finish) : json_null());
    } else {
        if (lp) {
            json_decref(lpo);
            lpo = lp; /* already the completions shape */
        }
        ch = json_pack("{s:i, s:s%, s:o, s:o}", "index", index, "text", text ? text : "",
                       text ? len : 0, "logprobs", lpo, "finish_reason",
                       finish ? json_string(finish) : json_null());
    }
    if (c && ch) {
        json_object_set_new(c, "choices", json_pack("[o]", ch));
        return c;
    }
    json_decref(c);
    json_decref(ch);
    return NULL;
}

static int on_token(void *user, int32_t tok, const char *piece, size_t len, float logprob)
{
    gen_choice *c = user;
    gen_job *j = c->job;
    c->n_tokens++;
    pthread_mutex_lock(&j->base.mu);
    int refused = j->refused;
    pthread_mutex_unlock(&j->base.mu);
    if (refused) return 1;
    if (j->base.stream) {
        json_t *lp = NULL;
        if (j->logprobs) {
            if (j->kind == SRV_GEN_CHAT) {
                lp = chat_lp_entry(j, tok, logprob);
            } else {
                json_t *t = token_text(j, tok);
                lp = json_pack("{s:[o], s:[f], s:n, s:[i]}", "tokens", t, "token_logprobs",
                               (double)logprob, "top_logprobs", "text_offset", 0);
            }
        } else if (len == 0) {
            return 0; /* nothing to say yet */
        }
        return srv_job_event(&j->base, choice_chunk(j, c->index, piece, len, lp, NULL, 0)) !=
               LODE_OK;
    }
    if (lode_buf_append(&c->text, piece, len)) return 1;
    if (j->logprobs) {
        if (j->kind == SRV_GEN_CHAT) {
            json_array_append_new(c->lp, chat_lp_entry(j, tok, logprob));
        } else {
            json_array_append_new(c->lp, token_text(j, tok));
            json_array_append_new(c->lp_values, json_real(logprob));
            json_array_append_new(c->lp_offsets, json_integer((json_int_t)(c->text.len - len)));
        }
    }
    return 0;
}

static json_t *final_response(gen_job *j)
{
    json_t *choices = json_array();
    for (int i = 0; choices && i < j->n_choices; i++) {
        gen_choice *c = &j->choices[i];
        const char *text = c->text.data ? c->text.data : "";
        json_t *lp = json_null(), *ch;
        if (j->logprobs && j->kind == SRV_GEN_CHAT) {
            json_decref(lp);
            lp = json_pack("{s:O}", "content", c->lp);
        } else if (j->logprobs) {
            json_decref(lp);
            lp = json_pack("{s:O, s:O, s:n, s:O}", "tokens", c->lp, "token_logprobs", c->lp_values,
                           "top_logprobs", "text_offset", c->lp_offsets);
        }
        if (j->kind == SRV_GEN_CHAT)
            ch = json_pack("{s:i, s:{s:s, s:s%}, s:o, s:s}", "index", i, "message", "role",
                           "assistant", "content", text, c->text.len, "logprobs", lp,
                           "finish_reason", finish_reason(c->finish));
        else
            ch = json_pack("{s:i, s:s%, s:o, s:s}", "index", i, "text", text, c->text.len,
                           "logprobs", lp, "finish_reason", finish_reason(c->finish));
        if (!ch || json_array_append_new(choices, ch)) {
            json_decref(choices);
            choices = NULL;
        }
    }
    if (!choices) return NULL;
    return json_pack("{s:s, s:s, s:I, s:s, s:o, s:o, s:n}", "id", j->base.id, "object",
                     j->kind == SRV_GEN_CHAT ? "chat.completion" : "text_completion", "created",
                     (json_int_t)j->base.created, "model", j->model_id, "choices", choices, "usage",
                     usage_json(j), "system_fingerprint");
}

static void on_done(void *user, lode_status st, eng_finish finish, const eng_stats *stats)
{
    gen_choice *c = user;
    gen_job *j = c->job;
    srv_metrics_generation(&j->base.srv->m, c->index == 0 ? stats->prompt_tokens : 0,
                           stats->generated, stats->prefill_ms / 1e3, stats->decode_ms / 1e3,
                           finish == ENG_FINISH_CANCELLED, finish == ENG_FINISH_ERROR);
    pthread_mutex_lock(&j->base.mu);
    c->done = 1;
    c->st = st;
    c->finish = finish;
    c->stats = *stats;
    int last = --j->remaining == 0;
    int refused = j->refused;
    pthread_mutex_unlock(&j->base.mu);

    srv_error e;
    if (refused) {
        /* the request was answered at submit */
    } else if (j->base.stream) {
        if (finish == ENG_FINISH_ERROR) {
            srv_error_set(&e, st, 500, "server_error", NULL, NULL, "generation failed: %s",
                          lode_strerror(st));
            srv_job_event_error(&j->base, &e);
        } else {
            srv_job_event(&j->base,
                          choice_chunk(j, c->index, NULL, 0, NULL, finish_reason(finish), 0));
        }
        if (last) {
            if (j->include_usage) {
                json_t *u = chunk_base(j);
                if (u) {
                    json_object_set_new(u, "choices", json_array());
                    json_object_set_new(u, "usage", usage_json(j));
                }
                srv_job_event(&j->base, u);
            }
            srv_job_event_end(&j->base);
        }
    } else if (last) {
        int failed = 0, cancelled = 0;
        for (int i = 0; i < j->n_choices; i++) {
            if (j->choices[i].finish == ENG_FINISH_ERROR) failed = 1;
            if (j->choices[i].finish == ENG_FINISH_CANCELLED) cancelled = 1;
        }
        srv_conn *conn = srv_job_conn(&j->base);
        if (!conn) {
            /* the client is gone: nobody to answer */
        } else if (failed) {
            srv_error_set(&e, LODE_ERR_INTERNAL, 500, "server_error", NULL, NULL,
                          "generation failed: %s", lode_strerror(st));
            srv_deliver_error(conn, &e);
        } else if (cancelled && j->base.shutdown_cancel) {
            srv_error_set(&e, LODE_ERR_CANCELLED, 503, "server_error", "shutting_down", NULL,
                          "the server shut down before the answer was complete");
            srv_deliver_error(conn, &e);
        } else {
            json_t *v = final_response(j);
            srv_job_answer(&j->base, v);
            json_decref(v);
        }
    }
    if (last) srv_job_unlist(&j->base);
    srv_job_unref(&j->base);
}

/* Renders the prompt and tokenizes it. Returns a status with e filled on failure. */
static lode_status build_prompt(eng_model *m, const srv_gen_request *r, int32_t **toks, size_t *n,
                                srv_error *e)
{
    lode_status st;
    if (r->kind == SRV_GEN_COMPLETION) {
        st = eng_tokenize(m, r->prompt, strlen(r->prompt), 1, 0, toks, n);
    } else {
        const char *roles[SRV_MAX_MESSAGES];
        const char *contents[SRV_MAX_MESSAGES];
        for (size_t i = 0; i < r->n_messages; i++) {
            roles[i] = srv_role_name(r->messages[i].role);
            contents[i] = r->messages[i].content;
        }
        lode_buf b = LODE_BUF_INIT;
        st = eng_chat_apply(m, roles, contents, r->n_messages, 1, &b);
        if (st == LODE_ERR_UNSUPPORTED) {
            lode_buf_free(&b);
            return srv_error_set(e, st, 400, "invalid_request_error", "unsupported_template",
                                 "messages",
                                 "the model's chat template is not supported; use "
                                 "/v1/completions");
        }
        if (!st) st = eng_tokenize(m, b.data ? b.data : "", b.len, 1, 1, toks, n);
        lode_buf_free(&b);
    }
    if (st)
        return srv_error_set(e, st, st == LODE_ERR_NOMEM ? 500 : 400,
                             st == LODE_ERR_NOMEM ? "server_error" : "invalid_request_error", NULL,
                             r->kind == SRV_GEN_CHAT ? "messages" : "prompt",
                             "cannot tokenize the prompt: %s", lode_strerror(st));
    if (*n == 0)
        return srv_error_set(e, LODE_ERR_INVALID, 400, "invalid_request_error", NULL,
                             r->kind == SRV_GEN_CHAT ? "messages" : "prompt",
                             "the prompt is empty");
    return LODE_OK;
}

static uint64_t random_seed(void)
{
    uint64_t s = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &s, sizeof s) != sizeof s) s = 0;
        close(fd);
    }
    return s ^ (uint64_t)lode_now_ns();
}

static void generate(srv_conn *c, srv_gen_kind kind)
{
    srv_server *s = c->srv;
    srv_gen_request req;
    srv_error e;
    int32_t *toks = NULL;
    size_t n_toks = 0;
    gen_job *j = NULL;
    if (srv_gen_request_parse(kind, c->body.data, c->body.len, &req, &e)) {
        srv_reply_error(c, &e);
        return;
    }
    eng_model *m = s->be ? s->be->model : NULL;
    if (!m || !srv_model_matches(s, req.model)) {
        srv_reply_errorf(c, 404, "invalid_request_error", "model_not_found", "model",
                         "the model '%.100s' does not exist%s%s", req.model,
                         m ? "; this server has " : " (no model is loaded)",
                         m ? s->be->model_id : "");
        goto out;
    }
    if (req.top_logprobs > 0) {
        srv_reply_errorf(c, 400, "invalid_request_error", "unsupported_parameter",
                         kind == SRV_GEN_CHAT ? "top_logprobs" : "logprobs",
                         "alternatives per token are not supported: lode returns the logprob "
                         "of each chosen token (%s)",
                         kind == SRV_GEN_CHAT ? "top_logprobs must be 0" : "logprobs must be 0");
        goto out;
    }
    if (build_prompt(m, &req, &toks, &n_toks, &e)) {
        srv_reply_error(c, &e);
        goto out;
    }
    eng_model_info info;
    eng_model_info_get(m, &info);
    int64_t want = req.max_tokens > 0 ? req.max_tokens : 1;
    if ((int64_t)n_toks + want > info.n_ctx) {
        srv_reply_errorf(c, 400, "invalid_request_error", "context_length_exceeded",
                         kind == SRV_GEN_CHAT ? "messages" : "prompt",
                         "this model's maximum context length is %d tokens, but %lld were "
                         "requested (%zu in the prompt, %lld for the completion)",
                         info.n_ctx, (long long)n_toks + (long long)want, n_toks, (long long)want);
        goto out;
    }

    j = lode_calloc(1, sizeof *j);
    if (!j || !(j->choices = lode_calloc((size_t)req.n, sizeof *j->choices))) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        lode_free(j);
        j = NULL;
        goto out;
    }
    j->model = m;
    j->kind = kind;
    j->include_usage = req.include_usage;
    j->logprobs = req.logprobs;
    j->n_choices = req.n;
    j->n_prompt = (int)n_toks;
    snprintf(j->model_id, sizeof j->model_id, "%s", s->be->model_id);
    snprintf(j->base.id, sizeof j->base.id, "%s-%016llx",
             kind == SRV_GEN_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)random_seed());
    srv_job_init(&j->base, c, &gen_ops, req.stream);
    for (int i = 0; i < req.n; i++) {
        gen_choice *ch = &j->choices[i];
        ch->job = j;
        ch->index = i;
        ch->text.max = (size_t)64 << 20;
        if (req.logprobs && !req.stream) {
            ch->lp = json_array();
            ch->lp_values = json_array();
            ch->lp_offsets = json_array();
        }
    }
    if (srv_job_open(&j->base)) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        goto out;
    }
    if (req.stream && kind == SRV_GEN_CHAT) /* the first chunk opens the assistant's message */
        for (int i = 0; i < req.n; i++)
            srv_job_event(&j->base, choice_chunk(j, i, "", 0, NULL, NULL, 1));

    eng_request er;
    memset(&er, 0, sizeof er);
    er.prompt = toks;
    er.n_prompt = (int)n_toks;
    eng_sampling_default(&er.sampling);
    er.sampling.temperature = (float)req.temperature;
    er.sampling.top_p = (float)req.top_p;
    er.sampling.presence_penalty = (float)req.presence_penalty;
    er.sampling.frequency_penalty = (float)req.frequency_penalty;
    er.max_tokens = req.max_tokens > 0 ? (int)req.max_tokens : 0;
    er.stop = req.stop;
    er.n_stop = (int)req.n_stop;
    er.want_logprobs = req.logprobs;
    er.on_token = on_token;
    er.on_done = on_done;
    uint64_t seed = req.has_seed ? req.seed : random_seed();
    j->remaining = req.n;
    /* Listed before any choice runs, so the last on_done always finds it to remove. */
    srv_job_list(&j->base);
    lode_status st = LODE_OK;
    int submitted = 0;
    for (int i = 0; i < req.n; i++) {
        uint64_t id = 0;
        er.sampling.seed = seed + (uint64_t)i;
        er.user = &j->choices[i];
        srv_job_ref(&j->base); /* the choice's, released by its on_done */
        if ((st = eng_submit(m, &er, &id))) {
            atomic_fetch_sub(&j->base.refs, 1); /* never the last: the connection holds one */
            break;
        }
        pthread_mutex_lock(&j->base.mu);
        j->choices[i].eng_id = id;
        j->choices[i].submitted = 1;
        pthread_mutex_unlock(&j->base.mu);
        submitted++;
    }
    if (st) {
        /* Refused: answer with the reason now; choices already queued are cancelled and
         * their callbacks write nothing (refused). */
        srv_error_engine_refused(&e, st, eng_errmsg(m));
        pthread_mutex_lock(&j->base.mu);
        j->refused = 1;
        j->remaining -= req.n - submitted;
        int nothing_left = j->remaining == 0;
        pthread_mutex_unlock(&j->base.mu);
        if (nothing_left) srv_job_unlist(&j->base);
        job_cancel(&j->base);
        if (req.stream)
            srv_reply_error(c, &e);
        else
            srv_deliver_error(c, &e);
        goto out;
    }
    if (req.stream && srv_stream_start(c, j->base.out, "text/event-stream") != LODE_OK) {
        job_cancel(&j->base);
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
    }
out:
    lode_free(toks);
    srv_gen_request_clear(&req);
}

void srv_h_chat(srv_conn *c)
{
    generate(c, SRV_GEN_CHAT);
}

void srv_h_completions(srv_conn *c)
{
    generate(c, SRV_GEN_COMPLETION);
}

/* ---- /v1/embeddings ------------------------------------------------------------------ */

typedef struct embed_req {
    srv_server *srv;
    srv_conn *conn; /* NULL once the request ended (under mu) */
    pthread_mutex_t mu;
    atomic_int refs; /* the connection's and the queue's */
    srv_embed_request req;
    srv_embed_job job;
    float *vec; /* (n_texts, dim) */
    int dim;
    int64_t tokens;
    char model_id[128];
} embed_req;

static void embed_release(embed_req *r)
{
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1) return;
    srv_embed_request_clear(&r->req);
    lode_free(r->vec);
    pthread_mutex_destroy(&r->mu);
    lode_free(r);
}

static void embed_conn_done(void *arg, int client_gone)
{
    embed_req *r = arg;
    pthread_mutex_lock(&r->mu);
    r->conn = NULL;
    pthread_mutex_unlock(&r->mu);
    embed_release(r);
}

/* One embedding as the API encodes it: a float array, or base64 of little-endian float32. */
static json_t *embedding_value(const float *v, int dim, int base64)
{
    if (!base64) {
        json_t *a = json_array();
        for (int i = 0; a && i < dim; i++)
            if (json_array_append_new(a, json_real(v[i]))) {
                json_decref(a);
                return NULL;
            }
        return a;
    }
    size_t n = (size_t)dim * 4;
    unsigned char *raw = lode_malloc(n);
    char *b64 = lode_malloc(4 * ((n + 2) / 3) + 1);
    json_t *s = NULL;
    if (raw && b64) {
        for (int i = 0; i < dim; i++) { /* the wire format is little-endian */
            uint32_t u;
            memcpy(&u, &v[i], 4);
            for (int k = 0; k < 4; k++)
                raw[(size_t)i * 4 + (size_t)k] = (unsigned char)(u >> (8 * k));
        }
        int m = EVP_EncodeBlock((unsigned char *)b64, raw, (int)n);
        s = json_stringn(b64, (size_t)m);
    }
    lode_free(raw);
    lode_free(b64);
    return s;
}

static json_t *embed_answer(embed_req *r)
{
    json_t *data = json_array();
    for (size_t i = 0; data && i < r->req.n_texts; i++) {
        json_t *v = embedding_value(r->vec + i * (size_t)r->dim, r->dim, r->req.base64);
        json_t *o = v ? json_pack("{s:s, s:I, s:o}", "object", "embedding", "index", (json_int_t)i,
                                  "embedding", v)
                      : NULL;
        if (!o || json_array_append_new(data, o)) {
            json_decref(data);
            data = NULL;
        }
    }
    if (!data) return NULL;
    return json_pack("{s:s, s:o, s:s, s:{s:I, s:I}}", "object", "list", "data", data, "model",
                     r->model_id, "usage", "prompt_tokens", (json_int_t)r->tokens, "total_tokens",
                     (json_int_t)r->tokens);
}

/* The queue's worker finished the texts: answer (unless the client left) and let go. */
static void embed_done(srv_embed_job *jb)
{
    embed_req *r = jb->user;
    srv_error e;
    json_t *out = NULL;
    if (jb->st == LODE_OK) {
        out = embed_answer(r);
        if (!out)
            srv_error_set(&e, LODE_ERR_NOMEM, 500, "server_error", NULL, NULL, "out of memory");
    } else if (jb->st == LODE_ERR_CANCELLED) {
        srv_error_set(&e, jb->st, 503, "server_error", "shutting_down", NULL, "%s", jb->err);
    } else {
        srv_error_set(&e, jb->st, 500, "server_error", "embedding_failed", NULL,
                      "the embedding failed: %s", jb->err);
    }
    /* Under mu: the connection (suspended until this delivery) can end only if the server
     * is forced to stop, and then it first clears conn under mu. */
    pthread_mutex_lock(&r->mu);
    if (r->conn) {
        if (out)
            srv_deliver_json(r->conn, 200, out);
        else
            srv_deliver_error(r->conn, &e);
    }
    pthread_mutex_unlock(&r->mu);
    json_decref(out);
    embed_release(r);
}

void srv_h_embeddings(srv_conn *c)
{
    srv_server *s = c->srv;
    srv_error e;
    embed_req *r = lode_calloc(1, sizeof *r);
    if (!r) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    pthread_mutex_init(&r->mu, NULL);
    atomic_init(&r->refs, 1);
    r->srv = s;
    if (srv_embed_request_parse(c->body.data, c->body.len, &r->req, &e)) {
        srv_reply_error(c, &e);
        goto out;
    }
    if (!s->emb) {
        srv_reply_errorf(c, 503, "server_error", "no_embedding_model", NULL,
                         "no embedding model is loaded (start the server with --embed-model "
                         "PATH)");
        goto out;
    }
    if (strcmp(r->req.model, s->be->embed_model_id)) {
        srv_reply_errorf(c, 404, "invalid_request_error", "model_not_found", "model",
                         "the embedding model '%.100s' does not exist (this server embeds with "
                         "'%s')",
                         r->req.model, s->be->embed_model_id);
        goto out;
    }
    r->dim = srv_embedder_dim(s->emb);
    if (r->req.dimensions && r->req.dimensions != r->dim) {
        srv_reply_errorf(c, 400, "invalid_request_error", "unsupported_parameter", "dimensions",
                         "'dimensions' must be %d for '%s' (it cannot shorten its embeddings)",
                         r->dim, s->be->embed_model_id);
        goto out;
    }
    /* usage counts the tokens the encoder sees (texts over its window are truncated) */
    int max_ids = eng_bert_max_seq_len(s->be->embedder);
    int32_t *ids = lode_malloc((size_t)max_ids * sizeof *ids);
    for (size_t i = 0; ids && i < r->req.n_texts; i++) {
        int k = 0;
        if (eng_bert_tokenize(s->be->embedder, r->req.texts[i], r->req.lens[i], ids, max_ids, &k) ==
            LODE_OK)
            r->tokens += k;
    }
    lode_free(ids);
    r->vec = lode_malloc(r->req.n_texts * (size_t)r->dim * sizeof(float));
    if (!r->vec) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        goto out;
    }
    snprintf(r->model_id, sizeof r->model_id, "%s", s->be->embed_model_id);
    r->job.texts = r->req.texts;
    r->job.lens = r->req.lens;
    r->job.n = r->req.n_texts;
    r->job.out = r->vec;
    r->job.done = embed_done;
    r->job.user = r;
    r->conn = c;
    atomic_fetch_add(&r->refs, 1); /* the connection's */
    c->job = r;
    c->job_release = embed_conn_done;
    srv_defer(c);
    atomic_fetch_add(&r->refs, 1); /* the queue's */
    lode_status st = srv_embed_submit(s->emb, &r->job);
    if (st == LODE_ERR_BUSY) {
        atomic_fetch_sub(&r->refs, 1);
        srv_error_set(&e, st, 429, "rate_limit_error", "too_many_requests", NULL,
                      "too many texts are waiting for the embedding model; try again later");
        srv_deliver_error(c, &e);
    } else if (st == LODE_ERR_RANGE) {
        atomic_fetch_sub(&r->refs, 1);
        srv_error_set(&e, st, 400, "invalid_request_error", NULL, "input", "%s", r->job.err);
        srv_deliver_error(c, &e);
    } else if (st) {
        atomic_fetch_sub(&r->refs, 1);
        srv_error_set(&e, LODE_ERR_CANCELLED, 503, "server_error", "shutting_down", NULL,
                      "the server is shutting down");
        srv_deliver_error(c, &e);
    }
out:
    embed_release(r); /* the handler's */
}
