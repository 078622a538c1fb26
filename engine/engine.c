/*
 * engine.c: the engine of engine.h. eng_model_load validates the GGUF, builds the
 * vocabulary, loads the llama-family model onto a backend and allocates one runtime
 * (activations, paged KV pool, logits, sampler scratch); a worker thread then runs
 * queued requests: prefill in chunks of n_batch tokens, then one token per step, with
 * sampling, stop strings and streaming UTF-8 text. pick_next() is the single place that
 * chooses the next work, where the batching scheduler takes over.
 */
#include "engine/engine.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "engine/backend_cuda.h"
#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

#define MAX_STOP     ENG_STOP_MAX_STRINGS
#define MAX_STOP_LEN ENG_STOP_MAX_LEN
#define LOGITS_ROWS  64 /* prompt rows per step when prompt logprobs are wanted */

typedef struct req {
    uint64_t id;
    eng_request r;
    int32_t *prompt;
    char *stop[MAX_STOP];
    size_t stop_len[MAX_STOP];
    atomic_int cancel;
    int64_t t_submit;
    struct req *next;
} req;

struct eng_model {
    eng_backend *be;
    eng_llama *llm; /* owns the gguf */
    eng_vocab *vocab;
    eng_runtime *rt;
    eng_cuda_model *gpu; /* the fused CUDA decoder, which then runs every step instead of rt */
    int n_ctx, n_batch, n_blocks;
    int32_t *block_table; /* (n_blocks) identity: one sequence owns the pool */
    int32_t *batch_tokens, *batch_pos, *out_rows; /* (n_batch) */
    float *logits;                                /* (LOGITS_ROWS, n_vocab) host */
    float *prompt_lp;                             /* (n_ctx) */
    char *piece;                                  /* (piece_cap) detokenizer output of one step */
    size_t piece_cap;
    char name[128];
    const char *arch;
    const char *tmpl;
    int n_threads;

    pthread_t worker;
    int worker_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    req *queue_head, *queue_tail;
    req *current;
    uint64_t next_id;
    int stopping;
    char err[512];
};

const char *eng_default_model_path(void)
{
    const char *e = getenv("LODE_MODEL");
    return e && *e ? e : ENG_DEFAULT_MODEL;
}

void eng_sampling_default(eng_sampling *s)
{
    memset(s, 0, sizeof *s);
    s->temperature = 0.0f;
    s->top_p = 1.0f;
    s->repeat_penalty = 1.0f;
    s->repeat_last_n = 64;
}

const char *eng_finish_name(eng_finish f)
{
    static const char *const names[] = {"none", "length", "eog", "stop", "cancelled", "error"};
    return (unsigned)f < LODE_ARRAY_LEN(names) ? names[f] : "unknown";
}

const char *eng_errmsg(const eng_model *m)
{
    return m ? m->err : "engine: no model";
}

/* ---- requests on the worker --------------------------------------------------------- */
static void req_free(req *q)
{
    if (!q) return;
    lode_free(q->prompt);
    for (int i = 0; i < MAX_STOP; i++) lode_free(q->stop[i]);
    lode_free(q);
}

/* The next request to run, taken off the queue; NULL when there is none. Called with
 * mu held. This is the one place that chooses work. */
static req *pick_next(eng_model *m)
{
    req *q = m->queue_head;
    if (!q) return NULL;
    m->queue_head = q->next;
    if (!m->queue_head) m->queue_tail = NULL;
    q->next = NULL;
    return q;
}

static double ms_since(int64_t t0)
{
    return (double)(lode_now_ns() - t0) / 1e6;
}

typedef struct run_state {
    eng_finish finish;
    lode_status st;
    eng_stats stats;
} run_state;

/* One forward step over tokens[0..n) at positions pos0.., logits for out rows. */
static lode_status step(eng_model *m, const int32_t *tokens, int n, int pos0, int n_out,
                        int out_first, float *logits)
{
    for (int i = 0; i < n; i++) {
        m->batch_tokens[i] = tokens[i];
        m->batch_pos[i] = pos0 + i;
    }
    for (int i = 0; i < n_out; i++) m->out_rows[i] = out_first + i;
    eng_batch_seq seq = {0, n, pos0, m->block_table, m->n_blocks};
    eng_batch b = {n, m->batch_tokens, m->batch_pos, 1, &seq, n_out, m->out_rows};
    if (m->gpu) {
        lode_status st = eng_cuda_forward(m->gpu, 0, tokens, n, pos0, n_out, out_first, logits);
        if (st) lode_seterr(m->err, sizeof m->err, st, "engine: %s", eng_cuda_errmsg(m->gpu));
        return st;
    }
    return eng_runtime_forward(m->rt, &b, logits, m->err, sizeof m->err);
}

static void run_request(eng_model *m, req *q, run_state *rs)
{
    const eng_request *r = &q->r;
    int n_vocab = m->llm->hp.n_vocab;
    int64_t t0 = lode_now_ns();
    rs->stats.queue_ms = (double)(t0 - q->t_submit) / 1e6;
    rs->stats.prompt_tokens = r->n_prompt;
    if (atomic_load(&q->cancel)) {
        rs->finish = ENG_FINISH_CANCELLED;
        rs->st = LODE_ERR_CANCELLED;
        return;
    }
    /* prefill */
    int n = r->n_prompt;
    int chunk = r->want_prompt_logprobs ? LODE_MIN(m->n_batch, LOGITS_ROWS) : m->n_batch;
    lode_status st = LODE_OK;
    float *last = m->logits; /* logits row the first token is sampled from */
    for (int p0 = 0; p0 < n && st == LODE_OK; p0 += chunk) {
        int len = LODE_MIN(chunk, n - p0);
        int final = p0 + len == n;
        if (r->want_prompt_logprobs) {
            st = step(m, q->prompt + p0, len, p0, len, 0, m->logits);
            for (int i = 0; i < len && st == LODE_OK; i++)
                if (p0 + i + 1 < n)
                    m->prompt_lp[p0 + i] = eng_logprobs(m->logits + (size_t)i * n_vocab, n_vocab,
                                                        q->prompt[p0 + i + 1], NULL, 0);
            last = m->logits + (size_t)(len - 1) * n_vocab;
        } else {
            st = step(m, q->prompt + p0, len, p0, final ? 1 : 0, len - 1, m->logits);
            last = m->logits;
        }
        if (!final && atomic_load(&q->cancel)) {
            rs->finish = ENG_FINISH_CANCELLED;
            rs->st = LODE_ERR_CANCELLED;
            return;
        }
    }
    if (st) {
        rs->finish = ENG_FINISH_ERROR;
        rs->st = st;
        return;
    }
    rs->stats.prefill_ms = ms_since(t0);
    if (r->want_prompt_logprobs && r->on_prompt_logprobs)
        r->on_prompt_logprobs(r->user, m->prompt_lp, n - 1);

    /* decode */
    eng_sampler_params sp;
    eng_sampler_params_default(&sp);
    sp.temperature = r->sampling.temperature;
    sp.top_k = r->sampling.top_k;
    sp.top_p = r->sampling.top_p;
    sp.min_p = r->sampling.min_p;
    sp.repeat_penalty = r->sampling.repeat_penalty;
    sp.presence_penalty = r->sampling.presence_penalty;
    sp.frequency_penalty = r->sampling.frequency_penalty;
    sp.penalty_last_n = r->sampling.repeat_last_n > 0 ? r->sampling.repeat_last_n : 64;
    sp.seed = r->sampling.seed;
    eng_sampler *smp = NULL;
    eng_textgen *tg = NULL;
    int max = r->max_tokens > 0 ? r->max_tokens : m->n_ctx;
    if ((st = eng_sampler_create(&sp, n_vocab, &smp)) ||
        (st = eng_textgen_create(m->vocab, (const char *const *)q->stop, (size_t)r->n_stop, max, 0,
                                 &tg))) {
        lode_seterr(m->err, sizeof m->err, st, "engine: cannot set up sampling");
        rs->finish = ENG_FINISH_ERROR;
        rs->st = st;
        goto out;
    }
    for (int i = 0; i < n; i++) eng_sampler_accept(smp, q->prompt[i]);
    size_t cap = eng_textgen_bound(tg);
    if (cap > m->piece_cap) {
        st = lode_seterr(m->err, sizeof m->err, LODE_ERR_INTERNAL, "engine: text buffer too small");
        rs->finish = ENG_FINISH_ERROR;
        rs->st = st;
        goto out;
    }
    int pos = n;
    int64_t t_first = 0;
    for (;;) {
        eng_sample_result res;
        int32_t tok = eng_sampler_sample(smp, last, &res);
        if (!t_first) {
            t_first = lode_now_ns();
            rs->stats.ttft_ms = (double)(t_first - q->t_submit) / 1e6;
        }
        rs->stats.generated++;
        size_t k = 0;
        eng_stop_reason why = eng_textgen_push(tg, tok, m->piece, m->piece_cap, &k);
        int full = why == ENG_STOP_NONE && pos + 1 >= m->n_ctx;
        if (full) {
            size_t k2 = eng_textgen_finish(tg, m->piece + k, m->piece_cap - k);
            k += k2;
        }
        int stop_cb = 0;
        if (r->on_token)
            stop_cb = r->on_token(r->user, tok, m->piece, k, r->want_logprobs ? res.logprob : 0.0f);
        if (why != ENG_STOP_NONE || full) {
            rs->finish = why == ENG_STOP_EOG      ? ENG_FINISH_EOG
                         : why == ENG_STOP_STRING ? ENG_FINISH_STOP
                                                  : ENG_FINISH_LENGTH;
            break;
        }
        if (stop_cb || atomic_load(&q->cancel)) {
            rs->finish = ENG_FINISH_CANCELLED;
            rs->st = LODE_ERR_CANCELLED;
            break;
        }
        if ((st = step(m, &tok, 1, pos, 1, 0, m->logits))) {
            rs->finish = ENG_FINISH_ERROR;
            rs->st = st;
            break;
        }
        pos++;
        last = m->logits;
    }
    if (t_first) rs->stats.decode_ms = ms_since(t_first);
out:
    eng_textgen_destroy(tg);
    eng_sampler_destroy(smp);
}

static void *worker_main(void *arg)
{
    eng_model *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stopping || m->queue_head) {
        req *q = pick_next(m);
        if (!q) {
            pthread_cond_wait(&m->cv, &m->mu);
            continue;
        }
        m->current = q;
        if (m->stopping) atomic_store(&q->cancel, 1);
        pthread_mutex_unlock(&m->mu);
        run_state rs = {ENG_FINISH_NONE, LODE_OK, {0}};
        run_request(m, q, &rs);
        /* no longer cancellable once on_done runs */
        pthread_mutex_lock(&m->mu);
        m->current = NULL;
        pthread_mutex_unlock(&m->mu);
        if (q->r.on_done) q->r.on_done(q->r.user, rs.st, rs.finish, &rs.stats);
        req_free(q);
        pthread_mutex_lock(&m->mu);
        pthread_cond_broadcast(&m->cv);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

lode_status eng_submit(eng_model *m, const eng_request *r, uint64_t *id)
{
    if (id) *id = 0;
    if (!r->prompt || r->n_prompt <= 0)
        return lode_seterr(m->err, sizeof m->err, LODE_ERR_INVALID, "engine: empty prompt");
    if (r->n_prompt >= m->n_ctx)
        return lode_seterr(m->err, sizeof m->err, LODE_ERR_RANGE,
                           "engine: prompt of %d tokens does not fit the context of %d",
                           r->n_prompt, m->n_ctx);
    if (r->n_stop < 0 || r->n_stop > MAX_STOP || (r->n_stop && !r->stop))
        return lode_seterr(m->err, sizeof m->err, LODE_ERR_INVALID,
                           "engine: %d stop strings (at most %d)", r->n_stop, MAX_STOP);
    int n_vocab = m->llm->hp.n_vocab;
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= n_vocab)
            return lode_seterr(m->err, sizeof m->err, LODE_ERR_INVALID,
                               "engine: prompt token %d is %d, outside the vocabulary", i,
                               r->prompt[i]);
    for (int i = 0; i < r->n_stop; i++) {
        size_t l = r->stop[i] ? strlen(r->stop[i]) : 0;
        if (l == 0 || l > MAX_STOP_LEN)
            return lode_seterr(m->err, sizeof m->err, LODE_ERR_INVALID,
                               "engine: stop string %d is empty or longer than %d bytes", i,
                               MAX_STOP_LEN);
    }
    const eng_sampling *sg = &r->sampling;
    if (!(sg->temperature == sg->temperature) || !(sg->top_p >= 0) || !(sg->min_p <= 1) ||
        !(sg->repeat_penalty > 0) || sg->repeat_last_n < 0 || sg->repeat_last_n > (1 << 20) ||
        !isfinite(sg->presence_penalty) || !isfinite(sg->frequency_penalty))
        return lode_seterr(m->err, sizeof m->err, LODE_ERR_INVALID,
                           "engine: sampling parameters out of range");
    req *q = lode_calloc(1, sizeof *q);
    if (!q) return lode_seterr(m->err, sizeof m->err, LODE_ERR_NOMEM, "engine: out of memory");
    q->r = *r;
    q->prompt = lode_malloc((size_t)r->n_prompt * sizeof *q->prompt);
    if (!q->prompt) goto nomem;
    memcpy(q->prompt, r->prompt, (size_t)r->n_prompt * sizeof *q->prompt);
    q->r.prompt = q->prompt;
    for (int i = 0; i < r->n_stop; i++) {
        if (!(q->stop[i] = lode_strdup(r->stop[i]))) goto nomem;
        q->stop_len[i] = strlen(q->stop[i]);
    }
    q->r.stop = (const char *const *)q->stop;
    q->t_submit = lode_now_ns();
    pthread_mutex_lock(&m->mu);
    if (m->stopping) {
        pthread_mutex_unlock(&m->mu);
        req_free(q);
        return lode_seterr(m->err, sizeof m->err, LODE_ERR_BUSY, "engine: shutting down");
    }
    q->id = ++m->next_id;
    if (m->queue_tail)
        m->queue_tail->next = q;
    else
        m->queue_head = q;
    m->queue_tail = q;
    if (id) *id = q->id;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return LODE_OK;
nomem:
    req_free(q);
    return lode_seterr(m->err, sizeof m->err, LODE_ERR_NOMEM, "engine: out of memory");
}

lode_status eng_cancel(eng_model *m, uint64_t id)
{
    lode_status st = LODE_ERR_NOTFOUND;
    pthread_mutex_lock(&m->mu);
    if (m->current && m->current->id == id) {
        atomic_store(&m->current->cancel, 1);
        st = LODE_OK;
    }
    for (req *q = m->queue_head; q && st; q = q->next)
        if (q->id == id) {
            atomic_store(&q->cancel, 1);
            st = LODE_OK;
        }
    pthread_mutex_unlock(&m->mu);
    return st;
}

/* ---- synchronous wrapper ----------------------------------------------------------- */
typedef struct collect {
    const eng_request *orig;
    eng_output *out;
    int cap;
    lode_buf text;
    lode_status st;
    int done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} collect;

static int collect_token(void *user, int32_t tok, const char *piece, size_t len, float lp)
{
    collect *c = user;
    if (c->out->n_tokens < c->cap) {
        c->out->tokens[c->out->n_tokens] = tok;
        if (c->out->logprobs) c->out->logprobs[c->out->n_tokens] = lp;
        c->out->n_tokens++;
    }
    if (len && lode_buf_append(&c->text, piece, len) != LODE_OK) c->st = LODE_ERR_NOMEM;
    if (c->orig->on_token) return c->orig->on_token(c->orig->user, tok, piece, len, lp);
    return 0;
}

static void collect_prompt_lp(void *user, const float *lp, int n)
{
    collect *c = user;
    if (c->out->prompt_logprobs && n >= 0) {
        memcpy(c->out->prompt_logprobs, lp, (size_t)n * sizeof *lp);
        c->out->n_prompt_logprobs = n;
    }
    if (c->orig->on_prompt_logprobs) c->orig->on_prompt_logprobs(c->orig->user, lp, n);
}

static void collect_done(void *user, lode_status st, eng_finish f, const eng_stats *stats)
{
    collect *c = user;
    if (c->orig->on_done) c->orig->on_done(c->orig->user, st, f, stats);
    pthread_mutex_lock(&c->mu);
    c->out->finish = f;
    c->out->stats = *stats;
    if (c->st == LODE_OK) c->st = st;
    c->done = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void eng_output_free(eng_output *o)
{
    if (!o) return;
    lode_free(o->tokens);
    lode_free(o->logprobs);
    lode_free(o->text);
    lode_free(o->prompt_logprobs);
    memset(o, 0, sizeof *o);
}

lode_status eng_generate(eng_model *m, const eng_request *r, eng_output *out)
{
    eng_output local;
    if (!out) out = &local;
    memset(out, 0, sizeof *out);
    collect c = {.orig = r, .out = out, .text = LODE_BUF_INIT};
    c.cap = r->max_tokens > 0 ? LODE_MIN(r->max_tokens, m->n_ctx) : m->n_ctx;
    out->tokens = lode_malloc((size_t)c.cap * sizeof *out->tokens);
    if (r->want_logprobs) out->logprobs = lode_malloc((size_t)c.cap * sizeof *out->logprobs);
    if (r->want_prompt_logprobs && r->n_prompt > 0)
        out->prompt_logprobs = lode_malloc((size_t)r->n_prompt * sizeof *out->prompt_logprobs);
    if (!out->tokens || (r->want_logprobs && !out->logprobs) ||
        (r->want_prompt_logprobs && r->n_prompt > 0 && !out->prompt_logprobs) ||
        lode_buf_reserve(&c.text, 4096) != LODE_OK) {
        eng_output_free(out);
        lode_buf_free(&c.text);
        return lode_seterr(m->err, sizeof m->err, LODE_ERR_NOMEM, "engine: out of memory");
    }
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    eng_request rr = *r;
    rr.on_token = collect_token;
    rr.on_prompt_logprobs = collect_prompt_lp;
    rr.on_done = collect_done;
    rr.user = &c;
    lode_status st = eng_submit(m, &rr, NULL);
    if (st == LODE_OK) {
        pthread_mutex_lock(&c.mu);
        while (!c.done) pthread_cond_wait(&c.cv, &c.mu);
        pthread_mutex_unlock(&c.mu);
        st = c.st;
    }
    pthread_mutex_destroy(&c.mu);
    pthread_cond_destroy(&c.cv);
    out->text_len = c.text.len;
    out->text = lode_buf_take(&c.text);
    if (out == &local) eng_output_free(out);
    return st;
}

/* ---- tokens ------------------------------------------------------------------------ */
lode_status eng_tokenize(const eng_model *m, const char *text, size_t len, int add_special,
                         int parse_special, int32_t **out, size_t *n)
{
    unsigned flags =
        (add_special ? ENG_TOK_ADD_SPECIAL : 0) | (parse_special ? ENG_TOK_PARSE_SPECIAL : 0);
    return eng_tok_encode_alloc(m->vocab, text, len, flags, out, n);
}

lode_status eng_detokenize(const eng_model *m, const int32_t *toks, size_t n, int render_special,
                           lode_buf *out)
{
    return eng_tok_decode(m->vocab, toks, n, render_special ? ENG_TOK_RENDER_SPECIAL : 0, out);
}

lode_status eng_chat_apply(const eng_model *m, const char *const *roles,
                           const char *const *contents, size_t n, int add_generation_prompt,
                           lode_buf *out)
{
    eng_chat_template t;
    char err[256];
    lode_status st = eng_chat_template_init(&t, m->tmpl, false, err, sizeof err);
    if (st) return st;
    if (n == 0) return eng_chat_render(&t, NULL, 0, add_generation_prompt != 0, out);
    eng_chat_msg *msgs = lode_malloc(n * sizeof *msgs);
    if (!msgs) return LODE_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        msgs[i].role = roles[i];
        msgs[i].content = contents[i];
    }
    st = eng_chat_render(&t, msgs, n, add_generation_prompt != 0, out);
    lode_free(msgs);
    return st;
}

int eng_token_is_eog(const eng_model *m, int32_t tok)
{
    return eng_vocab_is_eog(m->vocab, tok);
}

void eng_model_info_get(const eng_model *m, eng_model_info *o)
{
    const eng_hparams *hp = &m->llm->hp;
    memset(o, 0, sizeof *o);
    o->name = m->name;
    o->arch = hp->arch;
    o->backend = m->gpu ? "cuda" : m->be->ops->name;
    o->chat_template = m->tmpl;
    o->n_vocab = hp->n_vocab;
    o->n_ctx = m->n_ctx;
    o->n_ctx_train = hp->n_ctx_train;
    o->n_layer = hp->n_layer;
    o->dim = hp->dim;
    o->n_head = hp->n_head;
    o->n_head_kv = hp->n_head_kv;
    o->n_threads = m->n_threads;
    o->bos = eng_vocab_bos(m->vocab);
    o->eos = eng_vocab_eos(m->vocab);
    o->eot = eng_vocab_eot(m->vocab);
}

/* ---- load / free ------------------------------------------------------------------- */
void eng_model_free(eng_model *m)
{
    if (!m) return;
    if (m->worker_started) {
        pthread_mutex_lock(&m->mu);
        m->stopping = 1;
        for (req *q = m->queue_head; q; q = q->next) atomic_store(&q->cancel, 1);
        if (m->current) atomic_store(&m->current->cancel, 1);
        pthread_cond_broadcast(&m->cv);
        pthread_mutex_unlock(&m->mu);
        pthread_join(m->worker, NULL);
    }
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    eng_runtime_destroy(m->rt);
    eng_cuda_model_destroy(m->gpu);
    eng_vocab_destroy(m->vocab);
    eng_llama_free(m->llm);
    eng_backend_destroy(m->be);
    lode_free(m->block_table);
    lode_free(m->batch_tokens);
    lode_free(m->batch_pos);
    lode_free(m->out_rows);
    lode_free(m->logits);
    lode_free(m->prompt_lp);
    lode_free(m->piece);
    lode_free(m);
}

lode_status eng_model_load(const char *path, const eng_model_opts *opts, eng_model **out, char *err,
                           size_t errlen)
{
    *out = NULL;
    eng_model_opts def = {0};
    if (!opts) opts = &def;
    eng_gguf *g = NULL;
    lode_status st = eng_gguf_open(path, &g, err, errlen);
    if (st) return st;
    eng_model *m = lode_calloc(1, sizeof *m);
    if (!m) {
        eng_gguf_close(g);
        return lode_seterr(err, errlen, LODE_ERR_NOMEM, "engine: out of memory");
    }
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    eng_backend_opts bo = {opts->n_threads, opts->device};
    /* a llama file on the cuda backend runs on the fused decoder of backend_cuda.h; the host
     * side (shapes, vocabulary) then sits on a one-thread CPU backend, which keeps the weights
     * in the mapping. LODE_CUDA_OPS=1 keeps the op-by-op cuda backend. */
    const char *ops = getenv("LODE_CUDA_OPS");
    int want_gpu = opts->backend && !strcmp(opts->backend, "cuda");
    if (!opts->backend || !strcmp(opts->backend, "auto")) want_gpu = eng_cuda_available();
    int fused = want_gpu && !(ops && !strcmp(ops, "1")) && eng_cuda_gguf_supported(g);
    if (fused) bo.n_threads = 1;
    if ((st = eng_backend_create(fused ? "cpu" : opts->backend, &bo, &m->be, err, errlen)))
        goto fail;
    if ((st = eng_vocab_from_gguf(g, &m->vocab, err, errlen))) goto fail;
    if ((st = eng_llama_load(g, m->be, &m->llm, err, errlen))) goto fail;
    eng_gguf *gg = g;
    g = NULL; /* owned by the model now */
    const eng_hparams *hp = &m->llm->hp;
    const char *s;
    if (eng_gguf_get_str(gg, "general.name", &s, NULL) == LODE_OK && *s)
        snprintf(m->name, sizeof m->name, "%s", s);
    else {
        const char *b = strrchr(path, '/');
        snprintf(m->name, sizeof m->name, "%s", b ? b + 1 : path);
    }
    if (eng_gguf_get_str(gg, "tokenizer.chat_template", &s, NULL) == LODE_OK) m->tmpl = s;
    if (eng_vocab_n_tokens(m->vocab) != hp->n_vocab) {
        st = lode_seterr(err, errlen, LODE_ERR_FORMAT,
                         "engine: vocabulary has %d tokens, the model %d",
                         eng_vocab_n_tokens(m->vocab), hp->n_vocab);
        goto fail;
    }
    m->n_ctx = opts->n_ctx > 0 ? opts->n_ctx : LODE_MIN(hp->n_ctx_train, 4096);
    if (m->n_ctx > (1 << 20)) {
        st = lode_seterr(err, errlen, LODE_ERR_RANGE, "engine: context %d is too large", m->n_ctx);
        goto fail;
    }
    m->n_batch = opts->n_batch > 0 ? LODE_MIN(opts->n_batch, 4096) : 512;
    m->n_blocks = (m->n_ctx + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK;
    if (fused) {
        if ((st = eng_cuda_model_from_gguf(path, m->n_ctx + 1, 1, m->n_batch, opts->device, &m->gpu,
                                           err, errlen)))
            goto fail;
    } else if ((st = eng_runtime_create(m->llm, m->n_batch, LODE_MIN(m->n_batch, LOGITS_ROWS),
                                        m->n_blocks, &m->rt, err, errlen)))
        goto fail;
    m->piece_cap = (size_t)ENG_STOP_MAX_LEN * 2 + 64 + eng_detok_bound(m->vocab) * 4;
    m->block_table = lode_malloc((size_t)m->n_blocks * sizeof *m->block_table);
    m->batch_tokens = lode_malloc((size_t)m->n_batch * sizeof(int32_t));
    m->batch_pos = lode_malloc((size_t)m->n_batch * sizeof(int32_t));
    m->out_rows = lode_malloc((size_t)m->n_batch * sizeof(int32_t));
    m->logits = lode_malloc((size_t)LOGITS_ROWS * hp->n_vocab * sizeof(float));
    m->prompt_lp = lode_malloc((size_t)m->n_ctx * sizeof(float));
    m->piece = lode_malloc(m->piece_cap);
    if (!m->block_table || !m->batch_tokens || !m->batch_pos || !m->out_rows || !m->logits ||
        !m->prompt_lp || !m->piece) {
        st = lode_seterr(err, errlen, LODE_ERR_NOMEM, "engine: out of memory");
        goto fail;
    }
    for (int i = 0; i < m->n_blocks; i++) m->block_table[i] = i;
    m->n_threads = eng_backend_cpu_threads(m->be);
    if (pthread_create(&m->worker, NULL, worker_main, m) != 0) {
        st = lode_seterr(err, errlen, LODE_ERR_INTERNAL, "engine: cannot start the worker thread");
        goto fail;
    }
    m->worker_started = 1;
    *out = m;
    return LODE_OK;
fail:
    eng_gguf_close(g);
    eng_model_free(m);
    return st;
}
