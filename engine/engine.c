/*
 * engine.c: the engine of engine.h. eng_model_load validates the GGUF, builds the
 * vocabulary, loads the llama-family model onto a backend and allocates one runtime
 * (activations, the paged KV pool, logits); a scheduler thread per model then serves
 * every request together: each step it asks the scheduler (sched.h) for the step's work
 * (decode tokens of all running sequences and chunks of prompts under one token budget,
 * prefix-cache reuse, preemption when KV blocks run out), runs it as one batch through
 * the model, and samples, streams and finishes the sequences whose rows came back.
 * Requests submitted meanwhile join at the next step; finished and cancelled ones leave
 * and free their blocks at once.
 */
#include "engine/engine.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/backend.h"
#include "engine/backend_cuda.h"
#include "engine/chat.h"
#include "engine/embedder.h"
#include "engine/esched.h"
#include "engine/gguf.h"
#include "engine/kvcache.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/sched.h"
#include "engine/tokenizer.h"

#define MAX_STOP     ENG_STOP_MAX_STRINGS
#define MAX_STOP_LEN ENG_STOP_MAX_LEN
#define LOGITS_ROWS  64 /* prompt rows per step beyond one per sequence (prompt logprobs) */

typedef struct req {
    uint64_t id;
    eng_request r;
    char *stop[MAX_STOP];
    atomic_int cancel;
    int64_t t_submit, t_start, t_first;
    eng_sseq seq; /* toks (n_ctx) and table are owned here */
    eng_sampler *smp;
    eng_textgen *tg;
    float *prompt_lp; /* (n_prompt) when want_prompt_logprobs */
    int lp_sent;      /* on_prompt_logprobs was called */
    eng_stats stats;
    struct req *next;                  /* incoming queue */
    struct req *live_prev, *live_next; /* every request not finished yet */
} req;

struct eng_model {
    eng_backend *be;
    eng_llama *llm; /* owns the gguf */
    eng_vocab *vocab;
    eng_runtime *rt;     /* the backend's op-by-op forward, or */
    eng_cuda_model *gpu; /* the fused CUDA forward (its own weights and KV pool) */
    eng_sched *sched;
    int n_ctx, n_step, n_blocks, max_seqs, max_queue, max_out;
    eng_policy policy;
    int prefix_cache;
    eng_preempt preempt;
    void *swap_pool;               /* (n_slots, slot bytes) host memory of swapped blocks */
    int n_slots;                   /* 0 without swap */
    int32_t *swap_blk, *swap_slot; /* (n_slots) one direction's copies of a step */
    /* per-step buffers (scheduler thread) */
    int32_t *batch_tokens, *batch_pos; /* (n_step) */
    int32_t *out_rows;                 /* (max_out) */
    eng_batch_seq *batch_seqs;         /* (max_seqs) */
    float *logits;                     /* (max_out, n_vocab) host */
    int32_t *gpu_tok;                  /* (max_out) argmax of each row, from the GPU */
    float *gpu_lp;                     /* (max_out) its logprob */
    uint8_t *host_rows;                /* (max_out) rows whose logits the host needs */
    size_t kv_bytes;                   /* of the KV pool */
    int32_t *item_row;                 /* (max_seqs) first logits row of each plan item */
    int32_t *item_tok;                 /* (max_seqs) its sampled token */
    float *item_lp;                    /* (max_seqs) and the token's logprob */
    req **done_tmp;                    /* (max_seqs + max_queue) */
    char *piece;                       /* (piece_cap) detokenizer output of one step */
    size_t piece_cap;
    char name[128];
    const char *arch;
    const char *tmpl;
    int n_threads;

    pthread_t worker;
    int worker_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    req *queue_head, *queue_tail; /* submitted, not yet handed to the scheduler */
    req *live;                    /* every request in the engine */
    int n_live;
    uint64_t next_id;
    int stopping;
    eng_serving_stats stats; /* snapshot under mu */
    eng_embedder *emb;       /* hosted embedder (embedder.h), under mu */
    int emb_busy;            /* the worker is in one of its batches */
    eng_share share;         /* the worker's time between generation and emb */
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

/* ---- requests ---------------------------------------------------------------------- */
static void req_free(req *q)
{
    if (!q) return;
    for (int i = 0; i < MAX_STOP; i++) lode_free(q->stop[i]);
    lode_free(q->seq.toks);
    lode_free(q->seq.table);
    lode_free(q->prompt_lp);
    eng_textgen_destroy(q->tg);
    eng_sampler_destroy(q->smp);
    lode_free(q);
}

static double ms_between(int64_t t0, int64_t t1)
{
    return (double)(t1 - t0) / 1e6;
}

static void snapshot_stats(eng_model *m)
{
    eng_kvcache_stats ks;
    eng_kvcache_stats_get(eng_sched_kvcache(m->sched), &ks);
    eng_serving_stats *o = &m->stats;
    o->running = eng_sched_n_running(m->sched);
    o->waiting = m->n_live - o->running;
    o->kv_blocks_total = ks.blocks_total;
    o->kv_blocks_used = ks.blocks_used;
    o->kv_blocks_cached = ks.blocks_cached;
    o->kv_block_tokens = ENG_KV_BLOCK;
    o->kv_bytes = m->kv_bytes;
    o->prefix_lookup_tokens = ks.lookup_tokens;
    o->prefix_hit_tokens = ks.hit_tokens;
    o->prefix_hit_rate = ks.hit_rate;
    o->preemptions = eng_sched_preemptions(m->sched);
    eng_sched_swap_stats ss;
    eng_sched_swap_stats_get(m->sched, &ss);
    o->preempt = m->preempt;
    o->swap_slots_total = ss.slots_total;
    o->swap_slots_used = ss.slots_used;
    o->swapped_out = ss.swapped_out;
    o->swapped_in = ss.swapped_in;
    o->swap_blocks = ss.blocks_out + ss.blocks_in;
}

/* Takes q out of the engine (scheduler, live list) and reports it; runs on the worker
 * without mu. q is freed. */
static void finish(eng_model *m, req *q, lode_status st, eng_finish f)
{
    eng_sched_remove(m->sched, &q->seq);
    pthread_mutex_lock(&m->mu);
    if (q->live_prev)
        q->live_prev->live_next = q->live_next;
    else
        m->live = q->live_next;
    if (q->live_next) q->live_next->live_prev = q->live_prev;
    m->n_live--;
    snapshot_stats(m); /* a caller woken by on_done sees the blocks released */
    pthread_mutex_unlock(&m->mu);
    int64_t now = lode_now_ns();
    if (!q->t_start) q->t_start = now;
    q->stats.queue_ms = ms_between(q->t_submit, q->t_start);
    if (q->t_first) {
        q->stats.prefill_ms = ms_between(q->t_start, q->t_first);
        q->stats.decode_ms = ms_between(q->t_first, now);
    }
    if (q->r.on_done) q->r.on_done(q->r.user, st, f, &q->stats);
    req_free(q);
}

/* 1 when the request's next token is the argmax of the raw logits (greedy, no penalties),
 * which the GPU picks itself so that the logits stay there. */
static int plain_greedy(const req *q)
{
    const eng_sampling *g = &q->r.sampling;
    return g->temperature <= 0 && g->repeat_penalty == 1.0f && g->presence_penalty == 0 &&
           g->frequency_penalty == 0;
}

/* The host's work on the logits rows of one batch item, which start at lg (gt/gl: the
 * GPU's argmax and logprob of the same rows, NULL without): the prompt logprobs and the
 * sampled token with its logprob (*tok, *lp). It touches only the item's own request, so
 * the items of a step run it in parallel. */
static void sample_item(eng_model *m, const eng_sched_item *it, const float *lg, const int32_t *gt,
                        const float *gl, int32_t *tok, float *lp)
{
    req *q = it->s->user;
    const eng_request *r = &q->r;
    int n_vocab = m->llm->hp.n_vocab;
    eng_sseq *s = &q->seq;
    if (r->want_prompt_logprobs)
        for (int p = it->out_lo; p < it->out_hi && p < s->n_prompt - 1; p++)
            q->prompt_lp[p] = eng_logprobs(lg + (size_t)(p - it->out_lo) * n_vocab, n_vocab,
                                           s->toks[p + 1], NULL, 0);
    if (!it->last) return;
    int last = it->out_hi - 1 - it->out_lo;
    eng_sample_result res;
    if (gt && plain_greedy(q)) {
        *tok = gt[last];
        *lp = gl[last];
        eng_sampler_accept(q->smp, *tok);
    } else {
        /* the logprob (a pass over the vocabulary) only for those who asked */
        *tok =
            eng_sampler_sample(q->smp, lg + (size_t)last * n_vocab, r->want_logprobs ? &res : NULL);
        *lp = r->want_logprobs ? res.logprob : 0.0f;
    }
}

/* Hands out what sample_item computed for one item: the prompt logprobs callback, the
 * token to the stream, and the end of the request. Returns 1 when the request finished
 * (and is freed). */
static int take_outputs(eng_model *m, const eng_sched_item *it, int32_t tok, float lp)
{
    req *q = it->s->user;
    const eng_request *r = &q->r;
    eng_sseq *s = &q->seq;
    if (r->want_prompt_logprobs && !q->lp_sent && s->lp_next >= s->n_prompt - 1) {
        q->lp_sent = 1;
        if (r->on_prompt_logprobs) r->on_prompt_logprobs(r->user, q->prompt_lp, s->n_prompt - 1);
    }
    if (!it->last) return 0;
    if (!q->t_first) {
        q->t_first = lode_now_ns();
        q->stats.ttft_ms = ms_between(q->t_submit, q->t_first);
    }
    q->stats.generated++;
    size_t k = 0;
    eng_stop_reason why = eng_textgen_push(q->tg, tok, m->piece, m->piece_cap, &k);
    int full = why == ENG_STOP_NONE && s->n_toks + 1 >= m->n_ctx;
    if (full) k += eng_textgen_finish(q->tg, m->piece + k, m->piece_cap - k);
    int stop_cb = 0;
    if (r->on_token) stop_cb = r->on_token(r->user, tok, m->piece, k, r->want_logprobs ? lp : 0.0f);
    if (why != ENG_STOP_NONE || full) {
        finish(m, q, LODE_OK,
               why == ENG_STOP_EOG      ? ENG_FINISH_EOG
               : why == ENG_STOP_STRING ? ENG_FINISH_STOP
                                        : ENG_FINISH_LENGTH);
        return 1;
    }
    if (stop_cb || atomic_load(&q->cancel)) {
        finish(m, q, LODE_ERR_CANCELLED, ENG_FINISH_CANCELLED);
        return 1;
    }
    s->toks[s->n_toks++] = tok;
    return 0;
}

typedef struct sample_ctx {
    eng_model *m;
    const eng_sched_plan *p;
} sample_ctx;

static void sample_task(void *ctx, size_t i, int thread)
{
    const sample_ctx *c = ctx;
    eng_model *m = c->m;
    int o = m->item_row[i];
    sample_item(m, &c->p->items[i], m->logits + (size_t)o * m->llm->hp.n_vocab,
                m->gpu ? m->gpu_tok + o : NULL, m->gpu ? m->gpu_lp + o : NULL, &m->item_tok[i],
                &m->item_lp[i]);
}

/* Hands submitted requests to the scheduler and takes out cancelled ones (into
 * m->done_tmp, returning how many). Called with mu held. */
static int intake(eng_model *m)
{
    while (m->queue_head) {
        req *q = m->queue_head;
        m->queue_head = q->next;
        if (!m->queue_head) m->queue_tail = NULL;
        q->next = NULL;
        /* eng_submit keeps n_live within max_live, so this does not fail */
        if (eng_sched_add(m->sched, &q->seq) != LODE_OK) atomic_store(&q->cancel, 1);
    }
    int n = 0;
    for (req *q = m->live; q; q = q->live_next)
        if (m->stopping || atomic_load(&q->cancel)) m->done_tmp[n++] = q;
    return n;
}

/* Queues one direction of the plan's swap copies on the backend, in plan order. */
static void swap_copies(eng_model *m, int to_host, const eng_sched_copy *c, int n)
{
    if (n == 0) return; /* always so on the fused CUDA path, which has no runtime */
    for (int i = 0; i < n; i++) {
        m->swap_blk[i] = c[i].block;
        m->swap_slot[i] = c[i].slot;
    }
    /* supported: eng_model_load refused swap otherwise */
    eng_runtime_kv_swap(m->rt, to_host, m->swap_blk, m->swap_slot, n, m->swap_pool);
}

/* One step: plan, swap, run the batch, hand out the rows. */
static void run_step(eng_model *m)
{
    eng_sched_plan p;
    eng_sched_next(m->sched, &p);
    /* before anything else: the plan's blocks and slots are reused from the next plan on */
    swap_copies(m, 1, p.swap_out, p.n_swap_out);
    swap_copies(m, 0, p.swap_in, p.n_swap_in);
    for (int i = 0; i < p.n_failed; i++) {
        req *q = p.failed[i]->user;
        lode_seterr(m->err, sizeof m->err, LODE_ERR_NOMEM,
                    "engine: a sequence of %d tokens does not fit the KV pool of %d blocks",
                    q->seq.n_toks, m->n_blocks);
        finish(m, q, LODE_ERR_NOMEM, ENG_FINISH_ERROR);
    }
    if (p.n_items == 0) return;
    int nt = 0, no = 0;
    int64_t now = lode_now_ns(); /* the step's time, sampling and streaming included, feeds
                                    the scheduler's cost model */
    for (int i = 0; i < p.n_items; i++) {
        const eng_sched_item *it = &p.items[i];
        eng_sseq *s = it->s;
        req *q = s->user;
        if (!q->t_start) {
            q->t_start = now;
            q->stats.prompt_tokens = s->n_prompt;
        }
        m->batch_seqs[i] = (eng_batch_seq){nt, it->n, it->pos0, s->table, s->n_table, s->n_prompt};
        for (int t = 0; t < it->n; t++) {
            m->batch_tokens[nt + t] = s->toks[it->pos0 + t];
            m->batch_pos[nt + t] = it->pos0 + t;
        }
        for (int r = it->out_lo; r < it->out_hi; r++) m->out_rows[no++] = nt + (r - it->pos0);
        nt += it->n;
    }
    eng_batch b = {nt, m->batch_tokens, m->batch_pos, p.n_items, m->batch_seqs, no, m->out_rows};
    lode_status st;
    if (m->gpu) {
        /* the host needs the logits of prompt rows and of rows it samples itself */
        for (int i = 0, o = 0; i < p.n_items; i++) {
            const eng_sched_item *it = &p.items[i];
            int gpu_last = it->last && plain_greedy(it->s->user);
            for (int r = it->out_lo; r < it->out_hi; r++, o++)
                m->host_rows[o] = !(gpu_last && r == it->out_hi - 1);
        }
        st = eng_cuda_step(m->gpu, &b, m->host_rows, m->gpu_tok, m->gpu_lp, m->logits);
        if (st) lode_seterr(m->err, sizeof m->err, st, "forward: %s", eng_cuda_errmsg(m->gpu));
    } else {
        st = eng_runtime_forward(m->rt, &b, m->logits, m->err, sizeof m->err);
    }
    if (st) {
        for (int i = 0; i < p.n_items; i++) finish(m, p.items[i].s->user, st, ENG_FINISH_ERROR);
        return;
    }
    eng_sched_commit(m->sched, &p);
    pthread_mutex_lock(&m->mu);
    m->stats.steps++;
    m->stats.step_tokens += (uint64_t)nt;
    pthread_mutex_unlock(&m->mu);
    /* sampling (a few passes over each row's vocabulary) on the backend's threads, then
     * the streams in plan order on this one */
    for (int i = 0, o = 0; i < p.n_items; i++) {
        m->item_row[i] = o;
        o += p.items[i].out_hi - p.items[i].out_lo;
    }
    sample_ctx sc = {m, &p};
    lode_parallel_for(p.n_items > 1 ? eng_backend_cpu_pool(m->be) : NULL, (size_t)p.n_items,
                      sample_task, &sc);
    for (int i = 0; i < p.n_items; i++) take_outputs(m, &p.items[i], m->item_tok[i], m->item_lp[i]);
    eng_sched_observe(m->sched, &p, (double)(lode_now_ns() - now) / 1e9);
}

/* The scheduler thread: generation steps and, with a hosted embedder, its encoder
 * batches, each kind picked by the time share while both have work. */
static void *worker_main(void *arg)
{
    eng_model *m = arg;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        int n_done = intake(m);
        if (n_done) {
            pthread_mutex_unlock(&m->mu);
            for (int i = 0; i < n_done; i++)
                finish(m, m->done_tmp[i], LODE_ERR_CANCELLED, ENG_FINISH_CANCELLED);
            pthread_mutex_lock(&m->mu);
            continue;
        }
        eng_embedder *e = m->emb;
        int kind =
            eng_share_pick(&m->share, eng_sched_n_live(m->sched) > 0, e && eng_embedder_ready(e));
        if (kind < 0) {
            snapshot_stats(m);
            if (m->stopping) break;
            pthread_cond_wait(&m->cv, &m->mu);
            continue;
        }
        m->emb_busy = kind == ENG_SHARE_ENC;
        pthread_mutex_unlock(&m->mu);
        int64_t t0 = lode_now_ns();
        if (kind == ENG_SHARE_ENC)
            eng_embedder_step(e);
        else
            run_step(m);
        double secs = (double)(lode_now_ns() - t0) / 1e9;
        pthread_mutex_lock(&m->mu);
        eng_share_charge(&m->share, kind, secs);
        if (kind == ENG_SHARE_ENC) {
            m->emb_busy = 0;
            m->stats.enc_seconds += secs;
            m->stats.enc_batches++;
            pthread_cond_broadcast(&m->cv); /* a detach may wait for this batch */
        } else {
            m->stats.gen_seconds += secs;
        }
        snapshot_stats(m);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

static void sampler_params(const eng_sampling *g, eng_sampler_params *sp)
{
    eng_sampler_params_default(sp);
    sp->temperature = g->temperature;
    sp->top_k = g->top_k;
    sp->top_p = g->top_p;
    sp->min_p = g->min_p;
    sp->repeat_penalty = g->repeat_penalty;
    sp->presence_penalty = g->presence_penalty;
    sp->frequency_penalty = g->frequency_penalty;
    sp->penalty_last_n = g->repeat_last_n > 0 ? g->repeat_last_n : 64;
    sp->seed = g->seed;
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
    /* cheap refusal before allocating; checked again below */
    pthread_mutex_lock(&m->mu);
    int full = m->n_live >= m->max_seqs + m->max_queue;
    if (full) m->stats.rejected_busy++;
    pthread_mutex_unlock(&m->mu);
    if (full)
        return lode_seterr(m->err, sizeof m->err, LODE_ERR_BUSY,
                           "engine: %d requests are in the engine already (limit %d)",
                           m->max_seqs + m->max_queue, m->max_seqs + m->max_queue);
    lode_status st = LODE_ERR_NOMEM;
    req *q = lode_calloc(1, sizeof *q);
    if (!q) return lode_seterr(m->err, sizeof m->err, LODE_ERR_NOMEM, "engine: out of memory");
    q->r = *r;
    eng_sseq *s = &q->seq;
    s->user = q;
    s->cap = m->n_ctx;
    s->table_cap = (m->n_ctx + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK;
    s->toks = lode_malloc((size_t)s->cap * sizeof *s->toks);
    s->table = lode_malloc((size_t)s->table_cap * sizeof *s->table);
    if (!s->toks || !s->table) goto fail;
    memcpy(s->toks, r->prompt, (size_t)r->n_prompt * sizeof *s->toks);
    s->n_toks = s->n_prompt = r->n_prompt;
    s->want_prompt = r->want_prompt_logprobs;
    q->r.prompt = s->toks;
    if (r->want_prompt_logprobs &&
        !(q->prompt_lp = lode_calloc((size_t)r->n_prompt, sizeof *q->prompt_lp)))
        goto fail;
    for (int i = 0; i < r->n_stop; i++)
        if (!(q->stop[i] = lode_strdup(r->stop[i]))) goto fail;
    q->r.stop = (const char *const *)q->stop;
    eng_sampler_params sp;
    sampler_params(&r->sampling, &sp);
    int max = r->max_tokens > 0 ? r->max_tokens : m->n_ctx;
    if ((st = eng_sampler_create(&sp, n_vocab, &q->smp)) ||
        (st = eng_textgen_create(m->vocab, (const char *const *)q->stop, (size_t)r->n_stop, max, 0,
                                 &q->tg)))
        goto fail;
    if (eng_textgen_bound(q->tg) > m->piece_cap) {
        st = LODE_ERR_INTERNAL;
        goto fail;
    }
    for (int i = 0; i < r->n_prompt; i++) eng_sampler_accept(q->smp, r->prompt[i]);
    q->t_submit = lode_now_ns();
    pthread_mutex_lock(&m->mu);
    if (m->stopping || m->n_live >= m->max_seqs + m->max_queue) {
        int stopping = m->stopping;
        if (!stopping) m->stats.rejected_busy++;
        pthread_mutex_unlock(&m->mu);
        req_free(q);
        if (stopping)
            return lode_seterr(m->err, sizeof m->err, LODE_ERR_CANCELLED, "engine: shutting down");
        return lode_seterr(m->err, sizeof m->err, LODE_ERR_BUSY,
                           "engine: %d requests are in the engine already",
                           m->max_seqs + m->max_queue);
    }
    q->id = ++m->next_id;
    s->id = q->id;
    if (m->queue_tail)
        m->queue_tail->next = q;
    else
        m->queue_head = q;
    m->queue_tail = q;
    q->live_next = m->live;
    if (m->live) m->live->live_prev = q;
    m->live = q;
    m->n_live++;
    if (id) *id = q->id;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return LODE_OK;
fail:
    req_free(q);
    return lode_seterr(m->err, sizeof m->err, st, "engine: cannot set up the request: %s",
                       lode_strerror(st));
}

lode_status eng_cancel(eng_model *m, uint64_t id)
{
    lode_status st = LODE_ERR_NOTFOUND;
    pthread_mutex_lock(&m->mu);
    for (req *q = m->live; q; q = q->live_next)
        if (q->id == id) {
            atomic_store(&q->cancel, 1);
            st = LODE_OK;
            pthread_cond_broadcast(&m->cv);
            break;
        }
    pthread_mutex_unlock(&m->mu);
    return st;
}

lode_status eng_model_host_embedder(eng_model *m, eng_embedder *e, int share)
{
    pthread_mutex_lock(&m->mu);
    if (e && m->emb && m->emb != e) {
        pthread_mutex_unlock(&m->mu);
        return LODE_ERR_BUSY;
    }
    if (e) {
        m->emb = e;
        eng_share_init(&m->share, share);
        pthread_cond_broadcast(&m->cv);
    } else {
        while (m->emb_busy) pthread_cond_wait(&m->cv, &m->mu);
        m->emb = NULL;
    }
    pthread_mutex_unlock(&m->mu);
    return LODE_OK;
}

void eng_model_wake(eng_model *m)
{
    pthread_mutex_lock(&m->mu);
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

void eng_serving_stats_get(eng_model *m, eng_serving_stats *out)
{
    pthread_mutex_lock(&m->mu);
    *out = m->stats;
    pthread_mutex_unlock(&m->mu);
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
        for (req *q = m->live; q; q = q->live_next) atomic_store(&q->cancel, 1);
        pthread_cond_broadcast(&m->cv);
        pthread_mutex_unlock(&m->mu);
        pthread_join(m->worker, NULL);
    }
    if (m->emb) eng_embedder_host_gone(m->emb); /* its destroy must not find us */
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    eng_sched_destroy(m->sched);
    eng_runtime_destroy(m->rt);
    eng_cuda_model_destroy(m->gpu);
    eng_vocab_destroy(m->vocab);
    eng_llama_free(m->llm);
    eng_backend_destroy(m->be);
    lode_free(m->batch_tokens);
    lode_free(m->batch_pos);
    lode_free(m->batch_seqs);
    lode_free(m->out_rows);
    lode_free(m->logits);
    lode_free(m->gpu_tok);
    lode_free(m->gpu_lp);
    lode_free(m->host_rows);
    lode_free(m->done_tmp);
    lode_free(m->item_row);
    lode_free(m->item_tok);
    lode_free(m->item_lp);
    lode_free(m->piece);
    lode_aligned_free(m->swap_pool);
    lode_free(m->swap_blk);
    lode_free(m->swap_slot);
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
    eng_share_init(&m->share, 50);
    /* A llama file the fused CUDA decoder runs exactly (backend_cuda.h) goes there whenever
     * cuda is asked for or chosen; the model code then only reads the file's hyperparameters
     * and vocabulary on a CPU backend, whose weights stay in the mapping. */
    const char *bn = opts->backend;
    int gpu =
        (!bn || !*bn || !strcmp(bn, "auto") || !strcmp(bn, "cuda")) && eng_cuda_gguf_supported(g);
    eng_backend_opts bo = {gpu ? 1 : opts->n_threads, opts->device};
    if ((st = eng_backend_create(gpu ? "cpu" : bn, &bo, &m->be, err, errlen))) goto fail;
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
    /* the step budget, running slots and logits rows of the scheduler */
    m->n_step = opts->n_batch > 0 ? LODE_MIN(LODE_MAX(opts->n_batch, 2), 8192) : gpu ? 2048 : 256;
    m->max_seqs = LODE_MIN(opts->max_seqs > 0 ? LODE_MIN(opts->max_seqs, 4096)
                           : gpu              ? 256
                                              : 64,
                           m->n_step);
    m->max_queue = opts->max_queue > 0 ? LODE_MIN(opts->max_queue, 1 << 20) : 256;
    m->max_out = LODE_MIN(m->max_seqs + LOGITS_ROWS, m->n_step);
    m->policy = opts->policy;
    m->prefix_cache = !opts->no_prefix_cache;
    m->preempt = opts->preempt;
    /* the KV pool: the budget in blocks, at least one whole context */
    size_t block_bytes =
        (size_t)hp->n_layer * hp->n_head_kv * hp->head_dim * ENG_KV_BLOCK * sizeof(lode_half) * 2;
    size_t budget = (size_t)(opts->kv_mb > 0 ? opts->kv_mb : 256) << 20;
    size_t nb = budget / block_bytes;
    size_t min_nb = (size_t)(m->n_ctx + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK + 1;
    if (nb < min_nb) nb = min_nb;
    if (nb > (1u << 24)) nb = 1u << 24;
    m->n_blocks = (int)nb;
    m->kv_bytes = nb * block_bytes;
    if (gpu) {
        /* the pool fills the GPU's free memory unless a budget is given */
        eng_cuda_config z;
        memset(&z, 0, sizeof z);
        z.max_ctx = m->n_ctx;
        z.max_seqs = 1;
        z.max_prefill = 16;
        z.step_tokens = m->n_step;
        z.step_seqs = m->max_seqs;
        z.step_out = m->max_out;
        z.kv_blocks = opts->kv_mb > 0 ? m->n_blocks : -1;
        if ((st = eng_cuda_model_open(path, &z, opts->device, &m->gpu, err, errlen))) goto fail;
        if (opts->tune_at_load && (st = eng_cuda_model_tune(m->gpu))) {
            lode_seterr(err, errlen, st, "engine: %s", eng_cuda_errmsg(m->gpu));
            goto fail;
        }
        m->n_blocks = eng_cuda_kv_blocks(m->gpu);
        m->kv_bytes = eng_cuda_kv_bytes(m->gpu);
    } else if ((st = eng_runtime_create(m->llm, m->n_step, m->max_out, m->n_blocks, &m->rt, err,
                                        errlen))) {
        goto fail;
    }
    if (m->preempt == ENG_PREEMPT_SWAP) {
        /* the host pool: the budget in slots of one block each, untouched (not resident)
         * until blocks are swapped out */
        if (m->gpu) {
            st = lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED,
                             "engine: the fused CUDA path cannot swap KV blocks to the host "
                             "(preempt by recompute)");
            goto fail;
        }
        if (eng_runtime_kv_swap(m->rt, 1, NULL, NULL, 0, NULL) == LODE_ERR_UNSUPPORTED) {
            st = lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED,
                             "engine: the %s backend cannot swap KV blocks to the host "
                             "(preempt by recompute)",
                             m->be->ops->name);
            goto fail;
        }
        size_t slot = eng_runtime_kv_slot_bytes(m->rt);
        size_t sbudget = opts->swap_mb > 0 ? (size_t)opts->swap_mb << 20 : nb * block_bytes;
        size_t ns = LODE_MAX(sbudget / slot, 1);
        if (ns > (1u << 24)) ns = 1u << 24;
        m->n_slots = (int)ns;
        m->swap_pool = lode_aligned_alloc(64, ns * slot);
        m->swap_blk = lode_malloc(ns * sizeof *m->swap_blk);
        m->swap_slot = lode_malloc(ns * sizeof *m->swap_slot);
        if (!m->swap_pool || !m->swap_blk || !m->swap_slot) {
            st = lode_seterr(err, errlen, LODE_ERR_NOMEM,
                             "engine: no memory for a swap pool of %zu blocks", ns);
            goto fail;
        }
    }
    /* On a GPU a full prompt step costs several decode steps (2048 tokens: about 43 ms
     * against 5-10 ms for llama3-8b on an H200), and capping it behind a burst of
     * arrivals cost a third of the output rate at 256 concurrent (bench/RESULTS.md), so
     * latency-aware chunking is there only on request; on the CPU it is the default. */
    int on_gpu = m->gpu || strcmp(m->be->ops->name, "cpu") != 0;
    eng_sched_opts so = {
        .policy = m->policy,
        .step_tokens = m->n_step,
        .max_seqs = m->max_seqs,
        .max_live = m->max_seqs + m->max_queue,
        .max_out = m->max_out,
        .prefix_cache = m->prefix_cache,
        .swap_slots = m->n_slots,
        .prefill_slack = opts->prefill_slack < 0    ? 0
                         : opts->prefill_slack == 0 ? (on_gpu ? 0 : ENG_PREFILL_SLACK)
                                                    : LODE_MAX(opts->prefill_slack, 1.0),
    };
    if ((st = eng_sched_create(&so, m->n_blocks, &m->sched))) {
        lode_seterr(err, errlen, st, "engine: cannot create the scheduler");
        goto fail;
    }
    m->piece_cap = (size_t)ENG_STOP_MAX_LEN * 2 + 64 + eng_detok_bound(m->vocab) * 4;
    m->batch_tokens = lode_malloc((size_t)m->n_step * sizeof(int32_t));
    m->batch_pos = lode_malloc((size_t)m->n_step * sizeof(int32_t));
    m->batch_seqs = lode_malloc((size_t)m->max_seqs * sizeof *m->batch_seqs);
    m->out_rows = lode_malloc((size_t)m->max_out * sizeof(int32_t));
    m->logits = lode_malloc((size_t)m->max_out * hp->n_vocab * sizeof(float));
    m->done_tmp = lode_malloc((size_t)(m->max_seqs + m->max_queue) * sizeof *m->done_tmp);
    m->gpu_tok = lode_malloc((size_t)m->max_out * sizeof *m->gpu_tok);
    m->gpu_lp = lode_malloc((size_t)m->max_out * sizeof *m->gpu_lp);
    m->host_rows = lode_malloc((size_t)m->max_out);
    m->piece = lode_malloc(m->piece_cap);
    m->item_row = lode_malloc((size_t)m->max_seqs * sizeof *m->item_row);
    m->item_tok = lode_malloc((size_t)m->max_seqs * sizeof *m->item_tok);
    m->item_lp = lode_malloc((size_t)m->max_seqs * sizeof *m->item_lp);
    if (!m->batch_tokens || !m->batch_pos || !m->batch_seqs || !m->out_rows || !m->logits ||
        !m->done_tmp || !m->piece || !m->gpu_tok || !m->gpu_lp || !m->host_rows || !m->item_row ||
        !m->item_tok || !m->item_lp) {
        st = lode_seterr(err, errlen, LODE_ERR_NOMEM, "engine: out of memory");
        goto fail;
    }
    snapshot_stats(m);
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
