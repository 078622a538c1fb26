/* test_sched.c: the serving core. First the KV block manager and the scheduler driven by
 * a simulated model and clock: the simulated forward writes each token into the block
 * its sequence's table names and derives the next token from what it reads back through
 * the table, so a wrong table, a shared block written over or a lost block changes the
 * output; every step checks the block manager's invariants and that reference counts
 * equal the tables that hold each block. Then the real SmolLM2 through eng_submit: a
 * greedy sequence gives bitwise the same tokens and logprobs alone and batched with 31
 * others, with prefix-cache hits, and with preemption (by recompute and by swap to host
 * memory) in a pool too small for the batch.
 * lode-test: engine */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/lode.h"
#include "engine/engine.h"
#include "engine/kvcache.h"
#include "engine/sched.h"

/* ---- the block manager --------------------------------------------------------------- */
static void test_kvcache_blocks(void **state)
{
    eng_kvcache *c;
    assert_int_equal(eng_kvcache_create(0, &c), LODE_ERR_INVALID);
    assert_int_equal(eng_kvcache_create(8, &c), LODE_OK);
    int32_t b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = eng_kvcache_alloc(c);
        assert_true(b[i] >= 0 && b[i] < 8);
        for (int j = 0; j < i; j++) assert_int_not_equal(b[i], b[j]);
    }
    assert_int_equal(eng_kvcache_alloc(c), -1);
    assert_int_equal(eng_kvcache_available(c), 0);
    /* publish a chain of two blocks */
    int32_t toks[3 * ENG_KV_BLOCK];
    for (int i = 0; i < 3 * ENG_KV_BLOCK; i++) toks[i] = 100 + i;
    uint64_t h0 = eng_kvcache_hash(0, toks), h1 = eng_kvcache_hash(h0, toks + ENG_KV_BLOCK);
    assert_true(h0 != h1);
    assert_int_equal(eng_kvcache_publish(c, b[0], 0, h0, toks), 1);
    assert_int_equal(eng_kvcache_publish(c, b[1], h0, h1, toks + ENG_KV_BLOCK), 1);
    /* a second block with the same content is not published twice */
    assert_int_equal(eng_kvcache_publish(c, b[2], 0, h0, toks), 0);
    assert_int_equal(eng_kvcache_check(c), LODE_OK);
    /* a lookup shares the blocks */
    int32_t table[3];
    uint64_t last;
    assert_int_equal(eng_kvcache_lookup(c, toks, 3, 48, table, &last), 2);
    assert_int_equal(table[0], b[0]);
    assert_int_equal(table[1], b[1]);
    assert_true(last == h1);
    assert_int_equal(eng_kvcache_refcount(c, b[0]), 2);
    /* a different second block matches only the first */
    int32_t other[2 * ENG_KV_BLOCK];
    memcpy(other, toks, sizeof other);
    other[ENG_KV_BLOCK + 3] = 7;
    int32_t t2[2];
    assert_int_equal(eng_kvcache_lookup(c, other, 2, 32, t2, NULL), 1);
    assert_int_equal(eng_kvcache_refcount(c, b[0]), 3);
    eng_kvcache_release(c, t2[0]);
    eng_kvcache_release(c, table[0]);
    eng_kvcache_release(c, table[1]);
    eng_kvcache_stats st;
    eng_kvcache_stats_get(c, &st);
    assert_int_equal(st.blocks_used, 8);
    assert_int_equal(st.blocks_cached, 2);
    assert_true(st.hit_tokens == 48 && st.lookup_tokens == 80);
    /* released: cached blocks wait in release order, the rest go free */
    eng_kvcache_release(c, b[1]); /* cached, released first: evicted first */
    eng_kvcache_release(c, b[0]);
    for (int i = 2; i < 8; i++) eng_kvcache_release(c, b[i]);
    assert_int_equal(eng_kvcache_check(c), LODE_OK);
    eng_kvcache_stats_get(c, &st);
    assert_int_equal(st.blocks_used, 0);
    assert_int_equal(st.blocks_free, 6);
    assert_int_equal(st.blocks_cached, 2);
    assert_int_equal(eng_kvcache_available(c), 8);
    for (int i = 0; i < 6; i++) {
        int32_t x = eng_kvcache_alloc(c);
        assert_true(x != b[0] && x != b[1]);
    }
    /* now the cached ones are evicted, least recently released first */
    assert_int_equal(eng_kvcache_alloc(c), b[1]);
    assert_int_equal(eng_kvcache_lookup(c, toks, 2, 0, table, NULL), 1); /* b[0] still there */
    assert_int_equal(eng_kvcache_alloc(c), -1);
    eng_kvcache_stats_get(c, &st);
    assert_true(st.evictions == 1);
    assert_int_equal(eng_kvcache_check(c), LODE_OK);
    eng_kvcache_destroy(c);
}

/* Many chains published and evicted: the index stays consistent (backward-shift
 * deletion) and lookups find exactly what is cached. */
static void test_kvcache_churn(void **state)
{
    eng_kvcache *c;
    assert_int_equal(eng_kvcache_create(64, &c), LODE_OK);
    uint64_t rng = 12345;
    int32_t toks[ENG_KV_BLOCK];
    for (int round = 0; round < 2000; round++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        for (int i = 0; i < ENG_KV_BLOCK; i++) toks[i] = (int32_t)((rng >> 33) % 40) + i;
        uint64_t h = eng_kvcache_hash(0, toks);
        int32_t t;
        if (eng_kvcache_lookup(c, toks, 1, 0, &t, NULL) == 1) {
            eng_kvcache_release(c, t);
        } else {
            int32_t b = eng_kvcache_alloc(c);
            assert_true(b >= 0);
            assert_int_equal(eng_kvcache_publish(c, b, 0, h, toks), 1);
            eng_kvcache_release(c, b);
            assert_int_equal(eng_kvcache_lookup(c, toks, 1, 0, &t, NULL), 1);
            assert_int_equal(t, b);
            eng_kvcache_release(c, t);
        }
        if (round % 97 == 0) assert_int_equal(eng_kvcache_check(c), LODE_OK);
    }
    assert_int_equal(eng_kvcache_check(c), LODE_OK);
    eng_kvcache_destroy(c);
}

/* ---- the scheduler on a simulated model ------------------------------------------- */
#define SIM_CAP    512
#define SIM_VOCAB  997
#define SIM_BLOCKS 256
#define SIM_SLOTS  128 /* host pool slots at most */

typedef struct sim_seq {
    eng_sseq q;
    int32_t toks[SIM_CAP];
    int32_t table[SIM_CAP / ENG_KV_BLOCK];
    int max_gen, gen, done, failed;
    double t_arrive, t_first, t_done;
    int arrive_step;
} sim_seq;

typedef struct sim {
    eng_sched *s;
    int n_blocks;
    int32_t kv[SIM_BLOCKS * ENG_KV_BLOCK]; /* the token written at each slot */
    int32_t kv_pos[SIM_BLOCKS * ENG_KV_BLOCK];
    int32_t host[SIM_SLOTS * ENG_KV_BLOCK]; /* the host pool of swapped blocks */
    int32_t host_pos[SIM_SLOTS * ENG_KV_BLOCK];
    int n_slots;
    uint64_t tokens; /* tokens computed, recomputation included */
    double clock;    /* simulated seconds */
    int steps;
    int finish_order[128];
    int n_finished;
} sim;

/* The "model": the next token depends on every earlier token and its position. */
static int32_t next_of(const int32_t *toks, int n)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) h = (h ^ (uint64_t)(toks[i] * 31 + i)) * 1099511628211ull;
    return (int32_t)(h % SIM_VOCAB);
}

static void sim_init(sim *m, const eng_sched_opts *o, int n_blocks)
{
    memset(m, 0, sizeof *m);
    assert_true(n_blocks <= SIM_BLOCKS);
    m->n_blocks = n_blocks;
    assert_true(o->swap_slots <= SIM_SLOTS);
    m->n_slots = o->swap_slots;
    assert_int_equal(eng_sched_create(o, n_blocks, &m->s), LODE_OK);
}

static void sim_seq_init(sim_seq *x, uint64_t id, const int32_t *prompt, int n, int max_gen)
{
    memset(x, 0, sizeof *x);
    memcpy(x->toks, prompt, (size_t)n * sizeof *prompt);
    x->q.id = id;
    x->q.user = x;
    x->q.toks = x->toks;
    x->q.n_toks = x->q.n_prompt = n;
    x->q.cap = SIM_CAP;
    x->q.table = x->table;
    x->q.table_cap = SIM_CAP / ENG_KV_BLOCK;
    x->max_gen = max_gen;
}

static void sim_add(sim *m, sim_seq *x)
{
    x->t_arrive = m->clock;
    x->arrive_step = m->steps;
    assert_int_equal(eng_sched_add(m->s, &x->q), LODE_OK);
}

/* Every block's reference count equals the number of live tables holding it; every
 * host slot in use is held by exactly one swapped sequence. */
static void check_refs(sim *m, sim_seq *seqs, int n)
{
    eng_kvcache *kv = eng_sched_kvcache(m->s);
    assert_int_equal(eng_kvcache_check(kv), LODE_OK);
    int count[SIM_BLOCKS] = {0}, slots[SIM_SLOTS] = {0}, n_slots = 0;
    for (int i = 0; i < n; i++) {
        if (seqs[i].done) continue;
        const eng_sseq *q = &seqs[i].q;
        for (int b = 0; b < q->n_table; b++) {
            if (q->state != ENG_SEQ_SWAPPED) {
                count[q->table[b]]++;
                continue;
            }
            assert_true(q->table[b] >= 0 && q->table[b] < m->n_slots);
            assert_int_equal(slots[q->table[b]]++, 0);
            n_slots++;
        }
    }
    for (int b = 0; b < m->n_blocks; b++) assert_int_equal(eng_kvcache_refcount(kv, b), count[b]);
    eng_sched_swap_stats ss;
    eng_sched_swap_stats_get(m->s, &ss);
    assert_int_equal(ss.slots_used, n_slots);
}

/* The plan's copies between the pool and the host, outs first; a slot read back is
 * poisoned, so a slot handed out again before it is rewritten shows. */
static void sim_swap(sim *m, const eng_sched_plan *p)
{
    const size_t B = ENG_KV_BLOCK, bytes = B * sizeof(int32_t);
    for (int i = 0; i < p->n_swap_out; i++) {
        const eng_sched_copy *c = &p->swap_out[i];
        assert_int_equal(c->s->state, ENG_SEQ_SWAPPED);
        memcpy(m->host + c->slot * B, m->kv + c->block * B, bytes);
        memcpy(m->host_pos + c->slot * B, m->kv_pos + c->block * B, bytes);
    }
    for (int i = 0; i < p->n_swap_in; i++) {
        const eng_sched_copy *c = &p->swap_in[i];
        assert_int_equal(c->s->state, ENG_SEQ_RUNNING);
        assert_int_equal(eng_kvcache_refcount(eng_sched_kvcache(m->s), c->block), 1);
        memcpy(m->kv + c->block * B, m->host + c->slot * B, bytes);
        memcpy(m->kv_pos + c->block * B, m->host_pos + c->slot * B, bytes);
        for (size_t k = 0; k < B; k++) m->host_pos[c->slot * B + k] = -1;
    }
}

static void sim_finish(sim *m, sim_seq *x)
{
    eng_sched_remove(m->s, &x->q);
    x->done = 1;
    x->t_done = m->clock;
    m->finish_order[m->n_finished++] = (int)x->q.id;
}

/* One step; returns the plan's item count. */
static int sim_step(sim *m, sim_seq *seqs, int n, eng_sched_plan *p)
{
    eng_sched_next(m->s, p);
    sim_swap(m, p);
    for (int i = 0; i < p->n_failed; i++) {
        sim_seq *x = p->failed[i]->user;
        x->failed = 1;
        sim_finish(m, x);
    }
    eng_kvcache *kv = eng_sched_kvcache(m->s);
    assert_true(p->n_tokens <= 1 << 20);
    int tokens = 0;
    for (int i = 0; i < p->n_items; i++) {
        const eng_sched_item *it = &p->items[i];
        eng_sseq *q = it->s;
        assert_int_equal(q->state, ENG_SEQ_RUNNING);
        assert_int_equal(it->pos0, q->n_computed);
        assert_true(it->n >= 1 && it->pos0 + it->n <= q->n_toks);
        assert_true(q->n_table * ENG_KV_BLOCK >= it->pos0 + it->n);
        for (int t = it->pos0; t < it->pos0 + it->n; t++) {
            int32_t blk = q->table[t / ENG_KV_BLOCK];
            /* a block being written belongs to this sequence alone */
            assert_int_equal(eng_kvcache_refcount(kv, blk), 1);
            m->kv[blk * ENG_KV_BLOCK + t % ENG_KV_BLOCK] = q->toks[t];
            m->kv_pos[blk * ENG_KV_BLOCK + t % ENG_KV_BLOCK] = t;
        }
        tokens += it->n;
    }
    assert_int_equal(tokens, p->n_tokens);
    m->tokens += (uint64_t)tokens;
    m->clock += 0.010 + 0.001 * tokens; /* a step costs a fixed part plus its tokens */
    m->steps++;
    eng_sched_commit(m->s, p);
    for (int i = 0; i < p->n_items; i++) {
        const eng_sched_item *it = &p->items[i];
        if (!it->last) continue;
        eng_sseq *q = it->s;
        sim_seq *x = q->user;
        /* attention: read the whole sequence back through its table */
        int32_t seen[SIM_CAP];
        for (int t = 0; t < q->n_toks; t++) {
            int32_t blk = q->table[t / ENG_KV_BLOCK];
            assert_int_equal(m->kv_pos[blk * ENG_KV_BLOCK + t % ENG_KV_BLOCK], t);
            seen[t] = m->kv[blk * ENG_KV_BLOCK + t % ENG_KV_BLOCK];
        }
        int32_t tok = next_of(seen, q->n_toks);
        assert_int_equal(tok, next_of(q->toks, q->n_toks));
        if (!x->gen) x->t_first = m->clock;
        x->gen++;
        if (x->gen >= x->max_gen || q->n_toks + 1 >= q->cap)
            sim_finish(m, x);
        else
            q->toks[q->n_toks++] = tok;
    }
    check_refs(m, seqs, n);
    return p->n_items;
}

static void sim_run(sim *m, sim_seq *seqs, int n)
{
    eng_sched_plan p;
    for (int guard = 0; eng_sched_n_live(m->s) > 0; guard++) {
        assert_true(guard < 100000);
        int k = sim_step(m, seqs, n, &p);
        assert_true(k > 0 || p.n_failed > 0 || p.n_preempted > 0);
    }
}

/* The expected tokens of a sequence run alone. */
static void expect_output(const sim_seq *x)
{
    int32_t ref[SIM_CAP];
    memcpy(ref, x->toks, (size_t)x->q.n_prompt * sizeof *ref);
    int n = x->q.n_prompt;
    for (int g = 0; g < x->gen - 1; g++, n++) ref[n] = next_of(ref, n);
    assert_int_equal(x->q.n_toks, n);
    assert_memory_equal(ref, x->toks, (size_t)n * sizeof *ref);
}

static eng_sched_opts sim_opts(eng_policy pol, int step, int max_seqs)
{
    eng_sched_opts o = {pol, step, max_seqs, 128, LODE_MIN(step, max_seqs + 8), 1, 0, 0,
                        0,   0,    0,        0};
    return o;
}

static uint64_t rng_next(uint64_t *r)
{
    *r = *r * 6364136223846793005ull + 1442695040888963407ull;
    return *r >> 33;
}

/* Random workloads under every policy, pool sizes from roomy to tight, preemption by
 * recompute and by swap: every request finishes with the tokens it would have alone, no
 * block or host slot leaks. Shared prefixes make cache hits; the tight pool makes
 * preemptions, which with swap recompute nothing (fewer tokens computed in all). */
static void test_sched_random_workloads(void **state)
{
    static sim m;
    static sim_seq seqs[96];
    int pools[3] = {SIM_BLOCKS, 48, 14};
    for (int pol = 0; pol < 3; pol++)
        for (int pi = 0; pi < 3; pi++)
            for (int sw = 0; sw < 2; sw++) {
                eng_sched_opts o = sim_opts((eng_policy)pol, 32, 8);
                o.mlfq_quantum = 8;
                o.mlfq_boost = 50;
                o.swap_slots = sw ? 64 : 0;
                sim_init(&m, &o, pools[pi]);
                uint64_t r = 99 + (uint64_t)pol * 7 + (uint64_t)pi;
                int32_t common[64];
                for (int i = 0; i < 64; i++) common[i] = (int32_t)(rng_next(&r) % SIM_VOCAB);
                int n = 96, added = 0;
                for (int i = 0; i < n; i++) {
                    int32_t prompt[200];
                    int len = 1 + (int)(rng_next(&r) % 150);
                    int shared = rng_next(&r) % 2 ? (int)LODE_MIN(len, 64) : 0;
                    for (int k = 0; k < len; k++)
                        prompt[k] = k < shared ? common[k] : (int32_t)(rng_next(&r) % SIM_VOCAB);
                    sim_seq_init(&seqs[i], (uint64_t)i, prompt, len, 1 + (int)(rng_next(&r) % 40));
                }
                /* arrivals spread over the run */
                eng_sched_plan p;
                for (int guard = 0; added < n || eng_sched_n_live(m.s) > 0; guard++) {
                    assert_true(guard < 200000);
                    int k = (int)(rng_next(&r) % 4);
                    while (k-- > 0 && added < n) sim_add(&m, &seqs[added++]);
                    if (eng_sched_n_live(m.s) > 0) {
                        int k2 = sim_step(&m, seqs, added, &p);
                        assert_true(k2 > 0 || p.n_failed > 0 || p.n_preempted > 0);
                    }
                }
                int fails = 0;
                for (int i = 0; i < n; i++) {
                    assert_true(seqs[i].done);
                    if (seqs[i].failed) {
                        fails++;
                        continue;
                    }
                    assert_int_equal(seqs[i].gen, seqs[i].max_gen);
                    expect_output(&seqs[i]);
                }
                /* only a sequence longer than the whole pool may fail */
                assert_int_equal(fails, 0);
                eng_kvcache_stats ks;
                eng_kvcache_stats_get(eng_sched_kvcache(m.s), &ks);
                assert_int_equal(ks.blocks_used, 0);
                assert_true(ks.hit_tokens > 0);
                eng_sched_swap_stats ss;
                eng_sched_swap_stats_get(m.s, &ss);
                printf("%-12s pool %3d %-9s: %4d steps, %5llu tokens, %4llu preemptions (%4llu "
                       "swapped), prefix hit rate %.2f\n",
                       eng_policy_name((eng_policy)pol), pools[pi], sw ? "swap" : "recompute",
                       m.steps, (unsigned long long)m.tokens,
                       (unsigned long long)eng_sched_preemptions(m.s),
                       (unsigned long long)ss.swapped_out, ks.hit_rate);
                assert_int_equal(ss.slots_used, 0);
                assert_true(ss.swapped_in == ss.swapped_out);
                assert_true(ss.blocks_in == ss.blocks_out);
                if (!sw) assert_true(ss.swapped_out == 0);
                static uint64_t tokens_recompute;
                if (pi == 2) {
                    assert_true(eng_sched_preemptions(m.s) > 0);
                    if (sw) {
                        assert_true(ss.swapped_out > 0);
                        /* MLFQ's slot preemptions churn more with swap: no claim there */
                        if (pol != ENG_POLICY_MLFQ) assert_true(m.tokens < tokens_recompute);
                    } else {
                        tokens_recompute = m.tokens;
                    }
                }
                eng_sched_destroy(m.s);
            }
}

/* Swap with a shared prefix: B shares A's two prompt blocks and is swapped out when the
 * pool runs short. The shared blocks stay with A (reference count 1), B's copies wait in
 * host slots; B comes back with private copies, computes nothing again, and both
 * produce what they would alone. */
static void test_sched_swap_shared_prefix(void **state)
{
    static sim m;
    static sim_seq seqs[2];
    eng_sched_opts o = sim_opts(ENG_POLICY_FCFS, 64, 2);
    o.swap_slots = 16;
    sim_init(&m, &o, 8); /* 128 tokens; A and B need 7 + 7 - 2 shared */
    int32_t pa[40], pb[40];
    for (int k = 0; k < 40; k++) {
        pa[k] = 5 * k + 3;
        pb[k] = k < 32 ? pa[k] : 700 + k;
    }
    sim_seq_init(&seqs[0], 0, pa, 40, 60);
    sim_seq_init(&seqs[1], 1, pb, 40, 70);
    sim_add(&m, &seqs[0]);
    eng_sched_plan p;
    sim_step(&m, seqs, 1, &p); /* A's prompt: two blocks published */
    sim_add(&m, &seqs[1]);
    eng_kvcache *kv = eng_sched_kvcache(m.s);
    int seen = 0;
    uint64_t b_tokens = 0;
    for (int guard = 0; eng_sched_n_live(m.s) > 0; guard++) {
        assert_true(guard < 1000);
        int was_running = seqs[1].q.state == ENG_SEQ_RUNNING;
        int computed = seqs[1].q.n_computed;
        sim_step(&m, seqs, 2, &p);
        for (int i = 0; i < p.n_items; i++)
            if (p.items[i].s == &seqs[1].q) b_tokens += (uint64_t)p.items[i].n;
        if (seqs[1].q.state == ENG_SEQ_SWAPPED && was_running) {
            seen++;
            assert_int_equal(seqs[1].q.cached_tokens, 32);
            assert_int_equal(seqs[1].q.n_computed, computed); /* kept */
            assert_true(p.n_swap_out == seqs[1].q.n_table);
            /* the shared blocks were copied out and B's reference dropped */
            assert_int_equal(p.swap_out[0].block, seqs[0].q.table[0]);
            assert_int_equal(p.swap_out[1].block, seqs[0].q.table[1]);
            assert_int_equal(eng_kvcache_refcount(kv, seqs[0].q.table[0]), 1);
            assert_int_equal(eng_kvcache_refcount(kv, seqs[0].q.table[1]), 1);
        }
    }
    assert_true(seen >= 1);
    assert_true(seqs[1].q.n_swapped >= 1);
    /* B computed each of its own tokens once: no recompute after the swaps */
    assert_true(b_tokens == (uint64_t)(seqs[1].q.n_toks - 32));
    expect_output(&seqs[0]);
    expect_output(&seqs[1]);
    eng_sched_swap_stats ss;
    eng_sched_swap_stats_get(m.s, &ss);
    assert_int_equal(ss.slots_used, 0);
    eng_kvcache_stats ks;
    eng_kvcache_stats_get(kv, &ks);
    assert_int_equal(ks.blocks_used, 0);
    eng_sched_destroy(m.s);
}

/* A host pool too small for the victim: preemption falls back to recompute. */
static void test_sched_swap_pool_full(void **state)
{
    static sim m;
    static sim_seq seqs[2];
    eng_sched_opts o = sim_opts(ENG_POLICY_FCFS, 64, 2);
    o.swap_slots = 1;
    sim_init(&m, &o, 8);
    int32_t pa[40];
    for (int k = 0; k < 40; k++) pa[k] = 11 * k + 1;
    sim_seq_init(&seqs[0], 0, pa, 30, 70);
    sim_seq_init(&seqs[1], 1, pa + 5, 30, 40);
    sim_add(&m, &seqs[0]);
    sim_add(&m, &seqs[1]);
    sim_run(&m, seqs, 2);
    expect_output(&seqs[0]);
    expect_output(&seqs[1]);
    eng_sched_swap_stats ss;
    eng_sched_swap_stats_get(m.s, &ss);
    assert_true(eng_sched_preemptions(m.s) > 0);
    assert_true(ss.swap_refused > 0);
    assert_true(ss.swapped_out == 0);
    eng_sched_destroy(m.s);
}

/* FCFS with one running slot: requests finish in arrival order. */
static void test_policy_fcfs_order(void **state)
{
    static sim m;
    static sim_seq seqs[6];
    eng_sched_opts o = sim_opts(ENG_POLICY_FCFS, 16, 1);
    sim_init(&m, &o, 64);
    for (int i = 0; i < 6; i++) {
        int32_t prompt[40];
        for (int k = 0; k < 40; k++) prompt[k] = (i * 40 + k) % SIM_VOCAB;
        /* later requests are shorter: order by length would differ */
        sim_seq_init(&seqs[i], (uint64_t)i, prompt, 40 - 5 * i, 10 - i);
        sim_add(&m, &seqs[i]);
    }
    sim_run(&m, seqs, 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(m.finish_order[i], i);
        expect_output(&seqs[i]);
    }
    eng_sched_destroy(m.s);
}

/* Decode-first puts running streams' tokens ahead of an earlier request's prompt work in
 * the step; FCFS keeps arrival order. The earlier request wants prompt logprobs, which
 * limits its chunks to the logits rows left, so the later one starts decoding while the
 * earlier one is still in its prompt. */
static void test_policy_decode_first(void **state)
{
    for (int pol = 0; pol < 2; pol++) {
        static sim m;
        static sim_seq seqs[2];
        eng_sched_opts o = sim_opts(pol ? ENG_POLICY_DECODE_FIRST : ENG_POLICY_FCFS, 16, 4);
        o.max_out = 4;
        sim_init(&m, &o, 64);
        int32_t prompt[60];
        for (int k = 0; k < 60; k++) prompt[k] = k;
        sim_seq_init(&seqs[0], 0, prompt, 60, 3);
        seqs[0].q.want_prompt = 1;
        sim_seq_init(&seqs[1], 1, prompt + 10, 2, 30);
        sim_add(&m, &seqs[0]);
        sim_add(&m, &seqs[1]);
        eng_sched_plan p;
        int checked = 0;
        while (eng_sched_n_live(m.s) > 0) {
            /* a step where the later one decodes while the earlier one is in its prompt */
            int both = !seqs[1].done && seqs[1].q.n_toks > seqs[1].q.n_prompt && !seqs[0].done &&
                       seqs[0].q.n_computed < 59;
            sim_step(&m, seqs, 2, &p);
            if (both) {
                if (p.n_items != 2)
                    printf("pol %d: items %d seq0 computed %d toks %d seq1 computed %d toks %d\n",
                           pol, p.n_items, seqs[0].q.n_computed, seqs[0].q.n_toks,
                           seqs[1].q.n_computed, seqs[1].q.n_toks);
                assert_int_equal(p.n_items, 2);
                const eng_sched_item *first = &p.items[0];
                if (pol) {
                    assert_ptr_equal(first->s, &seqs[1].q);
                    assert_int_equal(first->n, 1);
                } else {
                    assert_ptr_equal(first->s, &seqs[0].q);
                }
                /* the logits rows of the step never exceed max_out */
                assert_true(p.n_out <= 4);
                checked++;
            }
        }
        assert_true(checked > 3);
        expect_output(&seqs[0]);
        expect_output(&seqs[1]);
        eng_sched_destroy(m.s);
    }
}

/* MLFQ with one running slot: a long request drops levels; a short one arriving later
 * preempts it, finishes first, and the long one resumes (recomputing its tokens) with
 * the same output. FCFS makes the short one wait. */
static void test_policy_mlfq_preempts(void **state)
{
    for (int pol = 0; pol < 2; pol++) {
        static sim m;
        static sim_seq seqs[2];
        eng_sched_opts o = sim_opts(pol ? ENG_POLICY_MLFQ : ENG_POLICY_FCFS, 16, 1);
        o.mlfq_quantum = 4;
        o.mlfq_boost = 100000;
        sim_init(&m, &o, 64);
        int32_t prompt[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        sim_seq_init(&seqs[0], 0, prompt, 8, 120);
        sim_seq_init(&seqs[1], 1, prompt + 4, 4, 5);
        sim_add(&m, &seqs[0]);
        eng_sched_plan p;
        for (int i = 0; i < 30; i++) sim_step(&m, seqs, 2, &p);
        assert_int_equal(seqs[0].q.state, ENG_SEQ_RUNNING);
        sim_add(&m, &seqs[1]);
        sim_run(&m, seqs, 2);
        expect_output(&seqs[0]);
        expect_output(&seqs[1]);
        if (pol) {
            assert_int_equal(m.finish_order[0], 1);
            assert_true(seqs[0].q.n_preempt >= 1);
            assert_true(seqs[1].t_done - seqs[1].t_arrive < 0.2);
        } else {
            assert_int_equal(m.finish_order[0], 0);
            assert_int_equal(seqs[0].q.n_preempt, 0);
        }
        eng_sched_destroy(m.s);
    }
}

/* A sequence longer than the whole pool fails with a report; the others finish. */
static void test_sched_cannot_fit_alone(void **state)
{
    static sim m;
    static sim_seq seqs[3];
    eng_sched_opts o = sim_opts(ENG_POLICY_FCFS, 32, 4);
    sim_init(&m, &o, 4); /* 64 tokens */
    int32_t prompt[100];
    for (int k = 0; k < 100; k++) prompt[k] = k;
    sim_seq_init(&seqs[0], 0, prompt, 10, 5);
    sim_seq_init(&seqs[1], 1, prompt, 80, 5);      /* never fits */
    sim_seq_init(&seqs[2], 2, prompt + 1, 20, 50); /* 70 tokens at its end: fails late */
    for (int i = 0; i < 3; i++) sim_add(&m, &seqs[i]);
    sim_run(&m, seqs, 3);
    assert_false(seqs[0].failed);
    expect_output(&seqs[0]);
    assert_true(seqs[1].failed);
    assert_true(seqs[2].failed);
    assert_true(seqs[2].gen >= 64 - 20 - 1);
    eng_kvcache_stats ks;
    eng_kvcache_stats_get(eng_sched_kvcache(m.s), &ks);
    assert_int_equal(ks.blocks_used, 0);
    eng_sched_destroy(m.s);
}

/* A prompt sharing 40 tokens with an earlier one reuses its two full blocks; the last
 * token of a fully cached prompt is still computed. */
static void test_sched_prefix_reuse(void **state)
{
    static sim m;
    static sim_seq seqs[3];
    eng_sched_opts o = sim_opts(ENG_POLICY_FCFS, 64, 4);
    sim_init(&m, &o, 64);
    int32_t prompt[48];
    for (int k = 0; k < 48; k++) prompt[k] = 3 * k + 1;
    sim_seq_init(&seqs[0], 0, prompt, 48, 4);
    sim_add(&m, &seqs[0]);
    sim_run(&m, seqs, 1);
    int32_t p2[45];
    memcpy(p2, prompt, 40 * sizeof *p2);
    for (int k = 40; k < 45; k++) p2[k] = 900 + k;
    sim_seq_init(&seqs[1], 1, p2, 45, 4);
    sim_seq_init(&seqs[2], 2, prompt, 48, 4); /* all of it cached: 2 blocks (47 tokens max) */
    sim_add(&m, &seqs[1]);
    sim_add(&m, &seqs[2]);
    sim_run(&m, seqs, 3);
    assert_int_equal(seqs[1].q.cached_tokens, 32);
    assert_int_equal(seqs[2].q.cached_tokens, 32);
    expect_output(&seqs[1]);
    expect_output(&seqs[2]);
    /* seqs[2] reproduced seqs[0] exactly */
    assert_memory_equal(seqs[0].toks, seqs[2].toks, (size_t)seqs[0].q.n_toks * sizeof(int32_t));
    eng_kvcache_stats ks;
    eng_kvcache_stats_get(eng_sched_kvcache(m.s), &ks);
    assert_true(ks.hit_tokens == 64);
    eng_sched_destroy(m.s);
}

/* The bounded set of live sequences refuses one more with BUSY. */
static void test_sched_admission_bound(void **state)
{
    eng_sched_opts o = sim_opts(ENG_POLICY_FCFS, 16, 2);
    o.max_live = 3;
    eng_sched *s;
    assert_int_equal(eng_sched_create(&o, 8, &s), LODE_OK);
    static sim_seq x[4];
    int32_t p[2] = {1, 2};
    for (int i = 0; i < 4; i++) sim_seq_init(&x[i], (uint64_t)i, p, 2, 1);
    for (int i = 0; i < 3; i++) assert_int_equal(eng_sched_add(s, &x[i].q), LODE_OK);
    assert_int_equal(eng_sched_add(s, &x[3].q), LODE_ERR_BUSY);
    eng_sched_remove(s, &x[0].q);
    assert_int_equal(eng_sched_add(s, &x[3].q), LODE_OK);
    for (int i = 1; i < 4; i++) eng_sched_remove(s, &x[i].q);
    assert_int_equal(eng_sched_n_live(s), 0);
    eng_sched_destroy(s);
}

/* ---- latency-aware chunked prefill ------------------------------------------------- */
/* Simulated step costs: a fixed part, each decode row, each prompt token, and attention
 * per attended position (a row at position p attends p+1). */
#define C_FIX  0.004
#define C_ROW  0.0005
#define C_TOK  0.0001
#define C_ATTN 2e-7
#define SLACK  1.5
#define P_MIN  8
#define N_DEC  8
#define N_LONG 2

typedef struct slack_run {
    int over;        /* steps with decode rows and prompt chunks above SLACK */
    int checked;     /* steps with both, after the warm-up */
    int full_alone;  /* prompt-only steps given the whole budget (or all pending) */
    int alone;       /* prompt-only steps after the decode streams left */
    int chunk_early; /* the first long prompt's chunk below position 100 */
    int chunk_late;  /* and above 300, while streams decode */
    int cap_checked; /* eng_sched_prefill_cap compared with the true optimum */
} slack_run;

static double attn_of(int pos0, int n)
{
    return (double)n * pos0 + (double)n * (n + 1) / 2;
}

static void slack_workload(double slack, slack_run *r)
{
    static sim m;
    static sim_seq seqs[N_DEC + N_LONG];
    memset(r, 0, sizeof *r);
    eng_sched_opts o = sim_opts(ENG_POLICY_FCFS, 128, 16);
    o.prefill_slack = slack;
    o.prefill_min = P_MIN;
    sim_init(&m, &o, 200);
    int32_t prompt[400];
    for (int i = 0; i < N_DEC; i++) {
        for (int k = 0; k < 16; k++) prompt[k] = 1 + i * 16 + k;
        sim_seq_init(&seqs[i], (uint64_t)i, prompt, 16, 60);
        sim_add(&m, &seqs[i]);
    }
    eng_sched_plan p;
    int pre_obs = 0;
    for (int guard = 0; eng_sched_n_live(m.s) > 0 || guard < 60; guard++) {
        assert_true(guard < 5000);
        if (guard == 10 || guard == 55) {
            /* the long prompts arrive while the streams decode */
            int j = N_DEC + (guard == 55);
            for (int k = 0; k < 400; k++) prompt[k] = 500 + j * 400 + k;
            sim_seq_init(&seqs[j], (uint64_t)j, prompt, 400, 2);
            sim_add(&m, &seqs[j]);
        }
        if (eng_sched_n_live(m.s) == 0) continue;
        /* the cap the scheduler would give the first long prompt now, against the true
         * optimum of the simulated costs, once the model has seen enough steps */
        eng_sseq *lq = &seqs[N_DEC].q;
        int n_dec = 0;
        double dattn = 0;
        for (int i = 0; i < N_DEC; i++)
            if (!seqs[i].done && seqs[i].q.state == ENG_SEQ_RUNNING &&
                seqs[i].q.n_toks - seqs[i].q.n_computed == 1) {
                n_dec++;
                dattn += seqs[i].q.n_toks;
            }
        if (slack > 0 && pre_obs >= 6 && n_dec > 0 && !seqs[N_DEC].done &&
            lq->state == ENG_SEQ_RUNNING) {
            double allow = (slack - 1) * (C_FIX + C_ROW * n_dec + C_ATTN * dattn);
            int best = 0;
            while (C_TOK * (best + 1) + C_ATTN * attn_of(lq->n_computed, best + 1) <= allow) best++;
            int cap = eng_sched_prefill_cap(m.s, n_dec, dattn / 1024, lq->n_computed);
            assert_true(abs(cap - best) <= 1 + best / 20);
            r->cap_checked++;
        }
        sim_step(&m, seqs, N_DEC + N_LONG, &p);
        int D = 0, P = 0;
        double a_dec = 0, a_pre = 0;
        for (int i = 0; i < p.n_items; i++) {
            const eng_sched_item *it = &p.items[i];
            if (it->n == 1) {
                D++;
                a_dec += attn_of(it->pos0, 1);
            } else {
                P += it->n;
                a_pre += attn_of(it->pos0, it->n);
            }
            if (it->s == lq && it->n > 1 && D + (p.n_items - i - 1) > 0) {
                if (it->pos0 < 100) r->chunk_early = LODE_MAX(r->chunk_early, it->n);
                if (it->pos0 > 300) r->chunk_late = LODE_MAX(r->chunk_late, it->n);
            }
        }
        double t_dec = C_FIX + C_ROW * D + C_ATTN * a_dec;
        double t = t_dec + C_TOK * P + C_ATTN * a_pre;
        if (p.n_items) eng_sched_observe(m.s, &p, t);
        if (P > 0 && D > 0) {
            pre_obs++;
            /* a single chunk of prefill_min tokens is the floor, not an overrun */
            int floor_only = p.n_items == D + 1 && P <= P_MIN;
            if (pre_obs > 6 && !floor_only) {
                r->checked++;
                if (t > SLACK * t_dec * 1.001) r->over++;
            }
        } else if (P > 0) {
            pre_obs++;
            int all_done = 1;
            for (int i = 0; i < N_DEC; i++) all_done &= seqs[i].done;
            if (all_done) {
                r->alone++;
                int pending_all = 1;
                for (int i = 0; i < p.n_items; i++) pending_all &= p.items[i].last;
                if (p.n_tokens == 128 || pending_all) r->full_alone++;
            }
        }
    }
    /* every request finished with its own output; no block is held */
    for (int i = 0; i < N_DEC + N_LONG; i++) {
        assert_true(seqs[i].done && !seqs[i].failed);
        expect_output(&seqs[i]);
    }
    eng_kvcache_stats ks;
    eng_kvcache_stats_get(eng_sched_kvcache(m.s), &ks);
    assert_int_equal(ks.blocks_used, 0);
    assert_int_equal(eng_kvcache_check(eng_sched_kvcache(m.s)), LODE_OK);
    if (slack > 0) {
        /* the fitted model is the simulated one */
        eng_sched_cost c;
        eng_sched_cost_get(m.s, &c);
        assert_true(c.n_prefill_obs > 6);
        assert_true(fabs(c.c[2] - C_TOK) < 0.05 * C_TOK);
        assert_true(fabs(c.c[3] - C_ATTN * 1024) < 0.05 * C_ATTN * 1024);
    }
    eng_sched_destroy(m.s);
}

/* With a cost model the scheduler keeps each step that mixes decode rows and a prompt
 * chunk within the slack of the decode-only step, cuts the chunk as attention makes
 * later positions dearer, and gives a prompt the whole budget once nobody decodes; the
 * fixed budget alone breaks the bound on the same workload. */
static void test_sched_prefill_slack(void **state)
{
    slack_run on, off;
    slack_workload(SLACK, &on);
    assert_true(on.checked > 10);
    assert_int_equal(on.over, 0);
    assert_true(on.cap_checked > 10);
    assert_true(on.chunk_early > P_MIN && on.chunk_late > 0);
    assert_true(on.chunk_late < on.chunk_early);
    assert_true(on.alone > 0);
    assert_int_equal(on.full_alone, on.alone);
    slack_workload(0, &off);
    assert_true(off.over > 0);
    /* the option is checked */
    eng_sched_opts o = sim_opts(ENG_POLICY_FCFS, 16, 2);
    eng_sched *s;
    o.prefill_slack = 0.5;
    assert_int_equal(eng_sched_create(&o, 8, &s), LODE_ERR_INVALID);
}

/* ---- the real model: batched output is bitwise the output alone -------------------- */
/* The sanitizer build (GCC's __SANITIZE_ADDRESS__, clang's address_sanitizer feature)
 * runs the same code paths with 8 sequences and 2 references instead of 32 and 4: the
 * 32-sequence check is the normal build's. */
#if defined(__SANITIZE_ADDRESS__)
#define LODE_TEST_SAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LODE_TEST_SAN 1
#endif
#endif
#ifdef LODE_TEST_SAN
#define N_REAL  8
#define N_PROBE 2
#else
#define N_REAL  32
#define N_PROBE 4
#endif
#define GEN    4
#define MAXTOK (GEN + 1)

typedef struct real_out {
    int32_t toks[MAXTOK];
    float lp[MAXTOK];
    int n;
    lode_status st;
    int done;
} real_out;

static pthread_mutex_t real_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t real_cv = PTHREAD_COND_INITIALIZER;

static int real_token(void *user, int32_t tok, const char *piece, size_t len, float lp)
{
    real_out *o = user;
    if (o->n < MAXTOK) {
        o->toks[o->n] = tok;
        o->lp[o->n] = lp;
        o->n++;
    }
    return 0;
}

static void real_done(void *user, lode_status st, eng_finish f, const eng_stats *s)
{
    real_out *o = user;
    pthread_mutex_lock(&real_mu);
    o->st = st;
    o->done = 1;
    pthread_cond_broadcast(&real_cv);
    pthread_mutex_unlock(&real_mu);
}

/* Prompts: a shared 16-token head (one block), then 1..16 tokens of their own. */
static int real_prompt(int i, int32_t *out)
{
    int n = 16 + 1 + (i * 7) % 16;
    for (int k = 0; k < n; k++)
        out[k] = k < 16 ? 100 + k * 7 : 1000 + ((i + 1) * 37 + k * 11) % 5000;
    return n;
}

static void submit_all(eng_model *m, const int *which, int n, real_out *outs)
{
    for (int j = 0; j < n; j++) {
        int32_t prompt[64];
        int len = real_prompt(which[j], prompt);
        eng_request r = {0};
        r.prompt = prompt;
        r.n_prompt = len;
        eng_sampling_default(&r.sampling);
        r.max_tokens = GEN + (which[j] % 3); /* different lengths of output too */
        r.want_logprobs = 1;
        r.on_token = real_token;
        r.on_done = real_done;
        r.user = &outs[j];
        memset(&outs[j], 0, sizeof outs[j]);
        assert_int_equal(eng_submit(m, &r, NULL), LODE_OK);
    }
    pthread_mutex_lock(&real_mu);
    for (int j = 0; j < n; j++)
        while (!outs[j].done) pthread_cond_wait(&real_cv, &real_mu);
    pthread_mutex_unlock(&real_mu);
    for (int j = 0; j < n; j++) assert_int_equal(outs[j].st, LODE_OK);
}

static void same_output(const real_out *a, const real_out *b)
{
    assert_int_equal(a->n, b->n);
    assert_memory_equal(a->toks, b->toks, (size_t)a->n * sizeof *a->toks);
    /* logprobs come from the whole logits row: bitwise equal rows */
    assert_memory_equal(a->lp, b->lp, (size_t)a->n * sizeof *a->lp);
}

static void test_real_batched_equals_alone(void **state)
{
    const char *path = eng_default_model_path();
    if (access(path, R_OK) != 0) {
        printf("model %s not present (make model): skipped\n", path);
        skip();
    }
    char err[512];
    /* A: roomy pool with the prefix cache; B: a pool of one context (5 blocks) for
     * N_REAL sequences, no prefix cache: preemption by recompute all along; C: the same
     * pool with the prefix cache (shared blocks) and preemption by swap. A cuts prompt
     * chunks by the measured step times (the default --prefill-slack); B and C use the
     * token budget alone, so that the preemptions they assert do not depend on timing
     * (a sanitizer build's steps cost differently) */
    eng_model_opts oa = {.n_threads = 2, .n_ctx = 64, .n_batch = 128};
    eng_model_opts ob = oa;
    ob.kv_mb = 1;
    ob.no_prefix_cache = 1;
    ob.prefill_slack = -1;
    eng_model_opts oc = oa;
    oc.kv_mb = 1;
    oc.preempt = ENG_PREEMPT_SWAP;
    oc.prefill_slack = -1;
    eng_model *ma = NULL, *mb = NULL, *mc = NULL;
    assert_int_equal(eng_model_load(path, &oa, &ma, err, sizeof err), LODE_OK);
    assert_int_equal(eng_model_load(path, &ob, &mb, err, sizeof err), LODE_OK);
    assert_int_equal(eng_model_load(path, &oc, &mc, err, sizeof err), LODE_OK);
    static real_out alone[N_PROBE], batch_a[N_REAL], batch_b[N_REAL], batch_c[N_REAL];
    /* the references, one at a time: 0 first, before anything is cached */
    int probe[4] = {0, 5, 17, 31};
    for (int j = 0; j < N_PROBE; j++) submit_all(ma, &probe[j], 1, &alone[j]);
    eng_serving_stats sa0;
    eng_serving_stats_get(ma, &sa0);
    int all[N_REAL];
    for (int j = 0; j < N_REAL; j++) all[j] = j;
    submit_all(ma, all, N_REAL, batch_a);
    submit_all(mb, all, N_REAL, batch_b);
    submit_all(mc, all, N_REAL, batch_c);
    for (int j = 0; j < N_PROBE; j++) {
        same_output(&alone[j], &batch_a[probe[j]]);
        same_output(&alone[j], &batch_b[probe[j]]);
        same_output(&alone[j], &batch_c[probe[j]]);
    }
    /* every other sequence agrees between the batched runs */
    for (int j = 0; j < N_REAL; j++) {
        same_output(&batch_a[j], &batch_b[j]);
        same_output(&batch_a[j], &batch_c[j]);
    }
    eng_serving_stats sa, sb, sc;
    eng_serving_stats_get(ma, &sa);
    eng_serving_stats_get(mb, &sb);
    eng_serving_stats_get(mc, &sc);
    printf("batched C: %llu steps, %llu preemptions, %llu by swap (%llu blocks copied), %d "
           "host slots\n",
           (unsigned long long)sc.steps, (unsigned long long)sc.preemptions,
           (unsigned long long)sc.swapped_out, (unsigned long long)sc.swap_blocks,
           sc.swap_slots_total);
    assert_true(sc.swapped_out > 0);
    assert_true(sc.swapped_in == sc.swapped_out);
    assert_int_equal(sc.swap_slots_used, 0);
    assert_int_equal(sc.kv_blocks_used, 0);
    printf("batched A: %llu steps, prefix hits %llu of %llu tokens, %llu preemptions\n",
           (unsigned long long)sa.steps, (unsigned long long)sa.prefix_hit_tokens,
           (unsigned long long)sa.prefix_lookup_tokens, (unsigned long long)sa.preemptions);
    printf("batched B: %llu steps, %d blocks, %llu preemptions\n", (unsigned long long)sb.steps,
           sb.kv_blocks_total, (unsigned long long)sb.preemptions);
    assert_true(sa.prefix_hit_tokens > sa0.prefix_hit_tokens);
    assert_true(sa.steps - sa0.steps < (uint64_t)N_REAL * GEN); /* they ran together */
    assert_true(sb.preemptions > 0);
    assert_int_equal(sa.kv_blocks_used, 0);
    assert_int_equal(sb.kv_blocks_used, 0);
    eng_model_free(ma);
    eng_model_free(mb);
    eng_model_free(mc);
}

/* eng_submit refuses beyond max_seqs + max_queue with LODE_ERR_BUSY. */
static void test_real_busy(void **state)
{
    const char *path = eng_default_model_path();
    if (access(path, R_OK) != 0) {
        printf("model %s not present (make model): skipped\n", path);
        skip();
    }
    char err[512];
    eng_model_opts o = {.n_threads = 1, .n_ctx = 64, .n_batch = 8, .max_seqs = 1, .max_queue = 2};
    eng_model *m = NULL;
    assert_int_equal(eng_model_load(path, &o, &m, err, sizeof err), LODE_OK);
    static real_out outs[4];
    int32_t prompt[4] = {100, 200, 300, 400};
    lode_status st[4];
    for (int j = 0; j < 4; j++) {
        eng_request r = {0};
        r.prompt = prompt;
        r.n_prompt = 4;
        eng_sampling_default(&r.sampling);
        r.max_tokens = 40;
        r.on_token = real_token;
        r.on_done = real_done;
        r.user = &outs[j];
        st[j] = eng_submit(m, &r, NULL);
    }
    /* three fit (one running, two queued); the fourth is refused unless one finished */
    assert_int_equal(st[0], LODE_OK);
    assert_int_equal(st[1], LODE_OK);
    assert_int_equal(st[2], LODE_OK);
    assert_int_equal(st[3], LODE_ERR_BUSY);
    eng_serving_stats s;
    eng_serving_stats_get(m, &s);
    assert_true(s.rejected_busy == 1);
    eng_model_free(m); /* cancels the rest */
    for (int j = 0; j < 3; j++) assert_true(outs[j].done);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kvcache_blocks),
        cmocka_unit_test(test_kvcache_churn),
        cmocka_unit_test(test_sched_random_workloads),
        cmocka_unit_test(test_sched_swap_shared_prefix),
        cmocka_unit_test(test_sched_swap_pool_full),
        cmocka_unit_test(test_policy_fcfs_order),
        cmocka_unit_test(test_policy_decode_first),
        cmocka_unit_test(test_policy_mlfq_preempts),
        cmocka_unit_test(test_sched_cannot_fit_alone),
        cmocka_unit_test(test_sched_prefix_reuse),
        cmocka_unit_test(test_sched_admission_bound),
        cmocka_unit_test(test_sched_prefill_slack),
        cmocka_unit_test(test_real_batched_equals_alone),
        cmocka_unit_test(test_real_busy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
