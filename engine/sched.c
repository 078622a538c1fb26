/*
 * sched.c: the scheduler of sched.h. Every step sorts the live sequences by the
 * policy's key, then walks them in that order handing out the step's token budget:
 * a running sequence gets its next token (decode) or the next chunk of its prompt
 * (chunked prefill), a waiting one is admitted (prefix cache lookup first) while running
 * slots and KV blocks allow. A sequence that needs a block when none is left takes one
 * from the lowest-priority running sequence not in this step (preemption); when there is
 * none it is preempted itself, unless it holds the only blocks in use, which means it
 * cannot fit the pool alone and is reported as failed.
 *
 * Preemption by recompute releases the victim's blocks; by swap (swap_slots > 0) every
 * block it holds is first copied to a slot of the host pool, so on resume its blocks are
 * copied back into fresh ones and nothing is recomputed. A block the victim shares (a
 * cached prefix) is copied too and the victim comes back with a private copy: the copy is
 * cheap, and the shared block may be evicted meanwhile. When the host pool cannot take a
 * victim's blocks it is preempted by recompute. Host slots freed while planning (by
 * swap-ins, or by removing a swapped sequence) become free only at the next plan, after
 * the caller has done this plan's copies, so a slot is never written before it is read.
 *
 * Keys: FCFS and decode-first order by arrival (decode-first puts running sequences
 * with one token to go first, then running prefills, then waiting ones); MLFQ orders by
 * (level, arrival), a sequence drops a level after running quantum << level tokens, and
 * every mlfq_boost steps all go back to level 0. Waiting sequences preempt running ones
 * only under MLFQ, and only ones of a lower level.
 *
 * Chunk size: a fixed token budget cannot bound the decode streams' inter-token latency,
 * since what a prompt token costs against a decode row changes with the backend, the
 * batch and the prompt's position (attention). So the scheduler fits a cost model of its
 * own steps (seconds against decode rows, prompt tokens and attended positions; least
 * squares over the last COST_WIN steps with prompt tokens and the last COST_WIN without,
 * coefficients kept non-negative) and, while sequences decode, gives prompt chunks only
 * the predicted time that keeps the step within prefill_slack times the decode-only step.
 * The first chunk of a step always gets prefill_min tokens, so prompts progress.
 */
#include "engine/sched.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define COST_WIN 32 /* steps of each kind (with and without prompt tokens) in the fit */
#define COST_NF  4  /* features: 1, decode rows, prompt tokens, attended positions/1024 */

typedef struct cost_obs {
    double x[COST_NF];
    double t; /* seconds */
} cost_obs;

struct eng_sched {
    eng_sched_opts o;
    eng_kvcache *kv;
    eng_sseq **live; /* (max_live) */
    int n_live;
    int n_running;
    uint64_t next_order;
    uint64_t steps;
    uint64_t preemptions;
    eng_sched_item *items; /* (max_seqs) */
    eng_sseq **failed;     /* (max_live) */
    eng_sseq **order;      /* (max_live) this step's candidates */
    /* the host pool's slots (swap_slots of them) */
    int32_t *slot_free; /* (swap_slots) stack of free slots */
    int n_slot_free;
    int32_t *slot_pending; /* (swap_slots) freed while planning, free at the next plan */
    int n_slot_pending;
    eng_sched_copy *swap_out, *swap_in; /* (swap_slots) each */
    eng_sched_swap_stats swap;
    /* the step cost model */
    cost_obs obs_dec[COST_WIN], obs_pre[COST_WIN]; /* rings: without / with prompt tokens */
    int n_dec, n_pre;
    uint64_t i_dec, i_pre;
    double cost[COST_NF];
};

lode_status eng_policy_parse(const char *name, eng_policy *out)
{
    if (!name || !strcmp(name, "fcfs"))
        *out = ENG_POLICY_FCFS;
    else if (!strcmp(name, "decode-first") || !strcmp(name, "decode-priority"))
        *out = ENG_POLICY_DECODE_FIRST;
    else if (!strcmp(name, "mlfq"))
        *out = ENG_POLICY_MLFQ;
    else
        return LODE_ERR_INVALID;
    return LODE_OK;
}

const char *eng_policy_name(eng_policy p)
{
    switch (p) {
    case ENG_POLICY_FCFS:
        return "fcfs";
    case ENG_POLICY_DECODE_FIRST:
        return "decode-first";
    case ENG_POLICY_MLFQ:
        return "mlfq";
    }
    return "unknown";
}

lode_status eng_preempt_parse(const char *name, eng_preempt *out)
{
    if (!name || !strcmp(name, "recompute"))
        *out = ENG_PREEMPT_RECOMPUTE;
    else if (!strcmp(name, "swap"))
        *out = ENG_PREEMPT_SWAP;
    else
        return LODE_ERR_INVALID;
    return LODE_OK;
}

const char *eng_preempt_name(eng_preempt p)
{
    return p == ENG_PREEMPT_SWAP ? "swap" : "recompute";
}

void eng_sched_destroy(eng_sched *s)
{
    if (!s) return;
    eng_kvcache_destroy(s->kv);
    lode_free(s->live);
    lode_free(s->items);
    lode_free(s->failed);
    lode_free(s->order);
    lode_free(s->slot_free);
    lode_free(s->slot_pending);
    lode_free(s->swap_out);
    lode_free(s->swap_in);
    lode_free(s);
}

lode_status eng_sched_create(const eng_sched_opts *o, int n_blocks, eng_sched **out)
{
    *out = NULL;
    if (o->max_seqs <= 0 || o->step_tokens < o->max_seqs || o->max_live < o->max_seqs ||
        o->max_out < 2 || n_blocks <= 0 || o->swap_slots < 0 ||
        !(o->prefill_slack == 0 || o->prefill_slack >= 1))
        return LODE_ERR_INVALID;
    eng_sched *s = lode_calloc(1, sizeof *s);
    if (!s) return LODE_ERR_NOMEM;
    s->o = *o;
    if (s->o.mlfq_levels <= 0) s->o.mlfq_levels = 4;
    if (s->o.mlfq_quantum <= 0) s->o.mlfq_quantum = 32;
    if (s->o.mlfq_boost <= 0) s->o.mlfq_boost = 512;
    if (s->o.prefill_min <= 0) s->o.prefill_min = 4;
    lode_status st = eng_kvcache_create(n_blocks, &s->kv);
    if (st) {
        eng_sched_destroy(s);
        return st;
    }
    s->live = lode_calloc((size_t)o->max_live, sizeof *s->live);
    s->items = lode_calloc((size_t)o->max_seqs, sizeof *s->items);
    s->failed = lode_calloc((size_t)o->max_live, sizeof *s->failed);
    s->order = lode_calloc((size_t)o->max_live, sizeof *s->order);
    if (!s->live || !s->items || !s->failed || !s->order) {
        eng_sched_destroy(s);
        return LODE_ERR_NOMEM;
    }
    if (o->swap_slots > 0) {
        size_t n = (size_t)o->swap_slots;
        s->slot_free = lode_malloc(n * sizeof *s->slot_free);
        s->slot_pending = lode_malloc(n * sizeof *s->slot_pending);
        s->swap_out = lode_malloc(n * sizeof *s->swap_out);
        s->swap_in = lode_malloc(n * sizeof *s->swap_in);
        if (!s->slot_free || !s->slot_pending || !s->swap_out || !s->swap_in) {
            eng_sched_destroy(s);
            return LODE_ERR_NOMEM;
        }
        /* popped from the end: slot 0 first */
        for (int i = 0; i < o->swap_slots; i++) s->slot_free[i] = o->swap_slots - 1 - i;
        s->n_slot_free = o->swap_slots;
        s->swap.slots_total = o->swap_slots;
    }
    *out = s;
    return LODE_OK;
}

int eng_sched_n_live(const eng_sched *s)
{
    return s->n_live;
}
int eng_sched_n_running(const eng_sched *s)
{
    return s->n_running;
}
eng_kvcache *eng_sched_kvcache(eng_sched *s)
{
    return s->kv;
}
uint64_t eng_sched_preemptions(const eng_sched *s)
{
    return s->preemptions;
}
void eng_sched_swap_stats_get(const eng_sched *s, eng_sched_swap_stats *out)
{
    *out = s->swap;
    out->slots_used = s->o.swap_slots - s->n_slot_free - s->n_slot_pending;
}

/* ---- the step cost model ----------------------------------------------------------- */
/* Solves a x = b for the features in `on` (others 0) by Gaussian elimination with
 * partial pivoting; a is COST_NF x COST_NF, row-major. */
static void solve(const double *a, const double *b, const int *on, double *x)
{
    double m[COST_NF][COST_NF + 1];
    int idx[COST_NF], n = 0;
    for (int i = 0; i < COST_NF; i++) {
        x[i] = 0;
        if (on[i]) idx[n++] = i;
    }
    for (int r = 0; r < n; r++) {
        for (int c = 0; c < n; c++) m[r][c] = a[idx[r] * COST_NF + idx[c]];
        m[r][n] = b[idx[r]];
    }
    for (int c = 0; c < n; c++) {
        int piv = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(m[r][c]) > fabs(m[piv][c])) piv = r;
        if (fabs(m[piv][c]) < 1e-300) continue; /* a feature that never varied: left at 0 */
        if (piv != c)
            for (int k = 0; k <= n; k++) {
                double t = m[c][k];
                m[c][k] = m[piv][k];
                m[piv][k] = t;
            }
        for (int r = 0; r < n; r++) {
            if (r == c) continue;
            double f = m[r][c] / m[c][c];
            for (int k = c; k <= n; k++) m[r][k] -= f * m[c][k];
        }
    }
    for (int r = 0; r < n; r++) x[idx[r]] = fabs(m[r][r]) < 1e-300 ? 0 : m[r][n] / m[r][r];
}

/* Non-negative least squares over both rings: a feature whose coefficient comes out
 * negative (noise, or a cost it does not have) is dropped and the rest refitted. */
static void cost_fit(eng_sched *s)
{
    double a[COST_NF * COST_NF] = {0}, b[COST_NF] = {0};
    for (int k = 0; k < 2; k++) {
        const cost_obs *o = k ? s->obs_pre : s->obs_dec;
        int n = k ? s->n_pre : s->n_dec;
        for (int j = 0; j < n; j++) {
            for (int r = 0; r < COST_NF; r++) {
                for (int c = 0; c < COST_NF; c++) a[r * COST_NF + c] += o[j].x[r] * o[j].x[c];
                b[r] += o[j].x[r] * o[j].t;
            }
        }
    }
    /* a little ridge: features that move together (every step with the same decode rows)
     * still give a stable fit */
    for (int r = 0; r < COST_NF; r++) a[r * COST_NF + r] *= 1 + 1e-6;
    int on[COST_NF] = {1, 1, 1, 1};
    for (int round = 0; round < COST_NF; round++) {
        solve(a, b, on, s->cost);
        int worst = -1;
        for (int i = 0; i < COST_NF; i++)
            if (on[i] && s->cost[i] < 0 && (worst < 0 || s->cost[i] < s->cost[worst])) worst = i;
        if (worst < 0) return;
        on[worst] = 0;
    }
    for (int i = 0; i < COST_NF; i++)
        if (s->cost[i] < 0) s->cost[i] = 0;
}

void eng_sched_observe(eng_sched *s, const eng_sched_plan *p, double secs)
{
    if (p->n_items == 0 || !(secs >= 0)) return;
    cost_obs o = {{1, 0, 0, 0}, secs};
    for (int i = 0; i < p->n_items; i++) {
        const eng_sched_item *it = &p->items[i];
        if (it->n == 1)
            o.x[1] += 1;
        else
            o.x[2] += it->n;
        o.x[3] += ((double)it->n * it->pos0 + (double)it->n * (it->n + 1) / 2) / 1024;
    }
    if (o.x[2] > 0) {
        s->obs_pre[s->i_pre++ % COST_WIN] = o;
        if (s->n_pre < COST_WIN) s->n_pre++;
    } else {
        s->obs_dec[s->i_dec++ % COST_WIN] = o;
        if (s->n_dec < COST_WIN) s->n_dec++;
    }
    cost_fit(s);
}

void eng_sched_cost_get(const eng_sched *s, eng_sched_cost *out)
{
    memcpy(out->c, s->cost, sizeof out->c);
    out->n_obs = s->n_dec + s->n_pre;
    out->n_prefill_obs = s->n_pre;
}

/* Predicted seconds of k prompt tokens at positions pos0.. */
static double chunk_cost(const eng_sched *s, int pos0, int k)
{
    return s->cost[2] * k + s->cost[3] * ((double)k * pos0 + (double)k * (k + 1) / 2) / 1024;
}

/* The most prompt tokens at pos0 that fit `allow` predicted seconds; INT32_MAX when the
 * model gives prompt tokens no cost (nothing observed yet). */
static int chunk_fit(const eng_sched *s, double allow, int pos0)
{
    double qa = s->cost[3] / 2048, qb = s->cost[2] + s->cost[3] * (pos0 + 0.5) / 1024;
    if (allow <= 0) return 0;
    if (qb <= 0) return INT32_MAX;
    double k = qa > 0 ? (-qb + sqrt(qb * qb + 4 * qa * allow)) / (2 * qa) : allow / qb;
    if (k >= INT32_MAX) return INT32_MAX;
    int n = (int)k;
    /* rounding at the edge: the prediction, not the formula, decides */
    while (n > 0 && chunk_cost(s, pos0, n) > allow) n--;
    return n;
}

/* Predicted seconds that prompt chunks may add to a step of n_decode rows attending
 * decode_attn positions/1024 in all; < 0 when uncapped. */
static double prefill_allowance(const eng_sched *s, int n_decode, double decode_attn)
{
    if (s->o.prefill_slack <= 0 || n_decode == 0 || s->n_pre == 0) return -1;
    double t = s->cost[0] + s->cost[1] * n_decode + s->cost[3] * decode_attn;
    return (s->o.prefill_slack - 1) * t;
}

int eng_sched_prefill_cap(const eng_sched *s, int n_decode, double decode_attn, int pos0)
{
    double allow = prefill_allowance(s, n_decode, decode_attn);
    return allow < 0 ? INT32_MAX : chunk_fit(s, allow, pos0);
}

static int blocks_for(int n_tok)
{
    return (n_tok + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK;
}

lode_status eng_sched_add(eng_sched *s, eng_sseq *q)
{
    if (!q->toks || q->n_toks <= 0 || q->n_toks > q->cap || q->n_prompt <= 0 ||
        q->n_prompt > q->n_toks || !q->table || q->table_cap < blocks_for(q->cap))
        return LODE_ERR_INVALID;
    if (s->n_live >= s->o.max_live) return LODE_ERR_BUSY;
    q->state = ENG_SEQ_WAITING;
    q->n_computed = q->n_table = q->n_published = 0;
    q->chain = 0;
    q->lp_next = 0;
    q->level = q->used = 0;
    q->order = s->next_order++;
    q->n_preempt = q->n_swapped = q->admitted = q->in_step = 0;
    q->cached_tokens = -1;
    s->live[s->n_live++] = q;
    return LODE_OK;
}

static void release_blocks(eng_sched *s, eng_sseq *q)
{
    if (q->state == ENG_SEQ_SWAPPED) {
        /* host slots: free once this plan's copies are done */
        for (int i = 0; i < q->n_table; i++) s->slot_pending[s->n_slot_pending++] = q->table[i];
        q->state = ENG_SEQ_WAITING;
    } else {
        for (int i = 0; i < q->n_table; i++) eng_kvcache_release(s->kv, q->table[i]);
    }
    q->n_table = 0;
    q->n_computed = 0;
    q->n_published = 0;
    q->chain = 0;
}

void eng_sched_remove(eng_sched *s, eng_sseq *q)
{
    for (int i = 0; i < s->n_live; i++)
        if (s->live[i] == q) {
            if (q->state == ENG_SEQ_RUNNING) s->n_running--;
            release_blocks(s, q);
            q->state = ENG_SEQ_WAITING;
            s->live[i] = s->live[--s->n_live];
            return;
        }
}

/* Copies q's blocks to host slots and releases them; 0 (nothing done) when the host
 * pool cannot take them all. */
static int swap_out(eng_sched *s, eng_sseq *q, eng_sched_plan *p)
{
    if (s->o.swap_slots == 0 || q->n_table == 0) return 0;
    if (q->n_table > s->n_slot_free) {
        s->swap.swap_refused++;
        return 0;
    }
    for (int i = 0; i < q->n_table; i++) {
        int32_t slot = s->slot_free[--s->n_slot_free];
        p->swap_out[p->n_swap_out++] = (eng_sched_copy){q, q->table[i], slot};
        eng_kvcache_release(s->kv, q->table[i]);
        q->table[i] = slot;
    }
    s->swap.swapped_out++;
    s->swap.blocks_out += (uint64_t)q->n_table;
    q->n_swapped++;
    return 1;
}

/* Takes q's running slot; with drop_kv also its blocks: swapped to the host when the
 * scheduler swaps and the host pool has room, else released (recompute later). */
static void preempt(eng_sched *s, eng_sseq *q, eng_sched_plan *p, int drop_kv)
{
    int swapped = drop_kv && swap_out(s, q, p);
    if (drop_kv && !swapped) release_blocks(s, q);
    if (q->state == ENG_SEQ_RUNNING) s->n_running--;
    q->state = swapped ? ENG_SEQ_SWAPPED : ENG_SEQ_WAITING;
    if (drop_kv) q->in_step = 1; /* not admitted again while planning this step */
    q->n_preempt++;
    s->preemptions++;
    p->n_preempted++;
}

/* ---- ordering ---------------------------------------------------------------------- */
static int klass(const eng_sched *s, const eng_sseq *q)
{
    switch (s->o.policy) {
    case ENG_POLICY_DECODE_FIRST:
        if (q->state != ENG_SEQ_RUNNING) return 2;
        return q->n_toks - q->n_computed == 1 && q->n_toks > q->n_prompt ? 0 : 1;
    case ENG_POLICY_MLFQ:
        return q->level;
    default:
        return 0;
    }
}

/* qsort has no context argument; the step's scheduler is kept here (one thread). */
static _Thread_local const eng_sched *sort_ctx;

static int cmp_seq(const void *a, const void *b)
{
    const eng_sseq *x = *(eng_sseq *const *)a, *y = *(eng_sseq *const *)b;
    int kx = klass(sort_ctx, x), ky = klass(sort_ctx, y);
    if (kx != ky) return kx < ky ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* The victim when q needs KV blocks: of the sequences holding blocks and not in this
 * step, the latest to arrive after q; NULL when none. Arrival order, not the policy's
 * order, decides whose blocks go, so the oldest sequence always makes progress and
 * preemption cannot livelock when MLFQ levels change. */
static eng_sseq *pick_kv_victim(eng_sched *s, const eng_sseq *q)
{
    eng_sseq *best = NULL;
    for (int i = 0; i < s->n_live; i++) {
        eng_sseq *v = s->live[i];
        if (v == q || v->in_step || v->n_table == 0 || v->state == ENG_SEQ_SWAPPED ||
            v->order < q->order)
            continue;
        if (!best || v->order > best->order) best = v;
    }
    return best;
}

/* MLFQ: the running sequence not in this step of the lowest level below q's (latest
 * arrival among equals), whose slot q may take; NULL when none. */
static eng_sseq *pick_slot_victim(eng_sched *s, const eng_sseq *q)
{
    eng_sseq *best = NULL;
    for (int i = 0; i < s->n_live; i++) {
        eng_sseq *v = s->live[i];
        if (v->state != ENG_SEQ_RUNNING || v->in_step || v->level <= q->level) continue;
        if (!best || v->level > best->level || (v->level == best->level && v->order > best->order))
            best = v;
    }
    return best;
}

/* ---- planning ---------------------------------------------------------------------- */
void eng_sched_next(eng_sched *s, eng_sched_plan *p)
{
    memset(p, 0, sizeof *p);
    p->items = s->items;
    p->failed = s->failed;
    p->swap_out = s->swap_out;
    p->swap_in = s->swap_in;
    /* the last plan's copies are done: its freed host slots can be reused */
    while (s->n_slot_pending > 0)
        s->slot_free[s->n_slot_free++] = s->slot_pending[--s->n_slot_pending];
    int n = s->n_live;
    memcpy(s->order, s->live, (size_t)n * sizeof *s->order);
    for (int i = 0; i < n; i++) s->order[i]->in_step = 0;
    sort_ctx = s;
    qsort(s->order, (size_t)n, sizeof *s->order, cmp_seq);
    int budget = s->o.step_tokens, out_left = s->o.max_out;
    int hold_line = 0; /* FCFS-like: a waiting sequence that cannot start blocks later ones */
    /* the prompt chunks' share of the step's predicted time while sequences decode */
    int n_decode = 0, n_chunks = 0;
    double decode_attn = 0;
    for (int i = 0; i < n; i++) {
        const eng_sseq *q = s->order[i];
        if (q->state == ENG_SEQ_RUNNING && q->n_toks - q->n_computed == 1) {
            n_decode++;
            decode_attn += (double)q->n_toks / 1024;
        }
    }
    double allow = prefill_allowance(s, n_decode, decode_attn);
    for (int i = 0; i < n && budget > 0 && out_left > 0; i++) {
        eng_sseq *q = s->order[i];
        int waiting = q->state != ENG_SEQ_RUNNING;
        int swapped = q->state == ENG_SEQ_SWAPPED;
        if (waiting) {
            if (hold_line || q->in_step) continue;
            if (s->n_running >= s->o.max_seqs) {
                /* MLFQ suspends a lower level's sequence (its blocks stay) */
                eng_sseq *v = s->o.policy == ENG_POLICY_MLFQ ? pick_slot_victim(s, q) : NULL;
                if (!v) {
                    if (s->o.policy != ENG_POLICY_MLFQ) hold_line = 1;
                    continue;
                }
                preempt(s, v, p, 0);
            }
            if (q->n_table == 0 && s->o.prefix_cache && !q->want_prompt) {
                /* keep at least the last token to compute: its logits are needed; and
                 * reuse only blocks of the prompt (see eng_sched_commit) */
                int max_b = LODE_MIN((q->n_toks - 1) / ENG_KV_BLOCK, q->n_prompt / ENG_KV_BLOCK);
                int first = q->cached_tokens < 0;
                int got = eng_kvcache_lookup(s->kv, q->toks, max_b, first ? q->n_prompt : 0,
                                             q->table, &q->chain);
                q->n_table = q->n_published = got;
                q->n_computed = got * ENG_KV_BLOCK;
                if (first) q->cached_tokens = q->n_computed;
            }
        }
        int pending = q->n_toks - q->n_computed;
        int take = LODE_MIN(pending, budget);
        if (pending > 1 && allow >= 0) {
            int cap = chunk_fit(s, allow, q->n_computed);
            if (n_chunks == 0) cap = LODE_MAX(cap, s->o.prefill_min);
            if (cap <= 0) goto skip; /* the step's prompt share is spent */
            take = LODE_MIN(take, cap);
        }
        int lp_end = q->want_prompt ? q->n_prompt - 1 : 0; /* prompt rows owed: lp_next.. */
        if (q->lp_next < lp_end && q->n_computed + take > q->lp_next) {
            /* every owed prompt row of the chunk needs a logits row */
            int lo = LODE_MAX(q->n_computed, q->lp_next);
            int room = out_left - 1; /* one kept for the final row */
            if (lo + room < q->n_computed + take) take = lo + room - q->n_computed;
            if (take <= 0) goto skip;
        }
        /* KV blocks: a swapped sequence needs its whole table back besides the chunk's */
        int held = swapped ? 0 : q->n_table;
        int need = LODE_MAX(q->n_table, blocks_for(q->n_computed + take)) - held;
        while (need > eng_kvcache_available(s->kv)) {
            eng_sseq *v = pick_kv_victim(s, q);
            if (!v) break;
            preempt(s, v, p, 1);
        }
        if (need > eng_kvcache_available(s->kv)) {
            /* a prompt chunk shrinks to the blocks there are */
            int fit = (held + eng_kvcache_available(s->kv)) * ENG_KV_BLOCK - q->n_computed;
            if (fit >= 1 && fit < take) {
                take = fit;
                need = LODE_MAX(q->n_table, blocks_for(q->n_computed + take)) - held;
            }
        }
        if (need > eng_kvcache_available(s->kv)) {
            eng_kvcache_stats ks;
            eng_kvcache_stats_get(s->kv, &ks);
            if (ks.blocks_used == held) {
                /* nobody else holds a block: it cannot fit the pool alone */
                if (q->state == ENG_SEQ_RUNNING) s->n_running--;
                release_blocks(s, q);
                q->state = ENG_SEQ_WAITING;
                q->in_step = 1; /* not a victim any more */
                p->failed[p->n_failed++] = q;
                continue;
            }
            if (!waiting) {
                preempt(s, q, p, 1);
            } else if (!swapped && q->n_table > 0 &&
                       q->n_computed == q->n_published * ENG_KV_BLOCK) {
                /* give back what it holds (looked-up prefix blocks); it retries later */
                release_blocks(s, q);
            }
            if (waiting && s->o.policy != ENG_POLICY_MLFQ) hold_line = 1;
            continue;
        }
        if (swapped) {
            /* back from the host pool into fresh blocks */
            for (int b = 0; b < q->n_table; b++) {
                int32_t blk = eng_kvcache_alloc(s->kv);
                p->swap_in[p->n_swap_in++] = (eng_sched_copy){q, blk, q->table[b]};
                s->slot_pending[s->n_slot_pending++] = q->table[b];
                q->table[b] = blk;
            }
            s->swap.swapped_in++;
            s->swap.blocks_in += (uint64_t)q->n_table;
            need -= q->n_table;
            q->state = ENG_SEQ_WAITING;
        }
        for (int k = 0; k < need; k++) q->table[q->n_table++] = eng_kvcache_alloc(s->kv);
        if (waiting) {
            q->state = ENG_SEQ_RUNNING;
            q->admitted = 1;
            s->n_running++;
        }
        eng_sched_item *it = &p->items[p->n_items++];
        it->s = q;
        it->pos0 = q->n_computed;
        it->n = take;
        it->last = q->n_computed + take == q->n_toks;
        it->out_lo = it->out_hi = q->n_computed + take;
        if (q->lp_next < lp_end) {
            int lo = LODE_MAX(q->n_computed, q->lp_next);
            int hi = LODE_MIN(q->n_computed + take, lp_end);
            if (lo < hi) {
                it->out_lo = lo;
                it->out_hi = hi;
            }
        }
        if (it->last) {
            /* the final row is adjacent to owed prompt rows or alone */
            if (it->out_lo == it->out_hi) it->out_lo = q->n_computed + take - 1;
            it->out_hi = q->n_computed + take;
        }
        q->in_step = 1;
        if (pending > 1) {
            n_chunks++;
            if (allow >= 0) allow = LODE_MAX(allow - chunk_cost(s, it->pos0, take), 0);
        }
        budget -= take;
        out_left -= it->out_hi - it->out_lo;
        p->n_tokens += take;
        p->n_out += it->out_hi - it->out_lo;
        continue;
    skip:;
    }
}

void eng_sched_commit(eng_sched *s, const eng_sched_plan *p)
{
    s->steps++;
    for (int i = 0; i < p->n_items; i++) {
        const eng_sched_item *it = &p->items[i];
        eng_sseq *q = it->s;
        q->n_computed = it->pos0 + it->n;
        if (q->want_prompt)
            q->lp_next = LODE_MAX(q->lp_next, LODE_MIN(q->n_computed, q->n_prompt - 1));
        /* Only blocks inside the prompt are published: the CPU backend sums attention in
         * one order for prompt positions and in another for generated ones (as llama.cpp
         * does, see backend.h n_prompt), so K/V of a generated position could differ
         * from the same tokens computed as a prompt, and a reuse would not be exact. */
        if (s->o.prefix_cache)
            while ((q->n_published + 1) * ENG_KV_BLOCK <= LODE_MIN(q->n_computed, q->n_prompt)) {
                const int32_t *t = q->toks + (size_t)q->n_published * ENG_KV_BLOCK;
                uint64_t h = eng_kvcache_hash(q->chain, t);
                eng_kvcache_publish(s->kv, q->table[q->n_published], q->chain, h, t);
                q->chain = h;
                q->n_published++;
            }
        if (s->o.policy == ENG_POLICY_MLFQ) {
            q->used += it->n;
            if (q->level + 1 < s->o.mlfq_levels && q->used >= s->o.mlfq_quantum << q->level) {
                q->level++;
                q->used = 0;
            }
        }
    }
    if (s->o.policy == ENG_POLICY_MLFQ && s->steps % (uint64_t)s->o.mlfq_boost == 0)
        for (int i = 0; i < s->n_live; i++) s->live[i]->level = s->live[i]->used = 0;
}
