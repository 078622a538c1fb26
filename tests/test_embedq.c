/* test_embedq.c: embedding work through the scheduler. First the encoder queue and the
 * thread share (esched.h) on a simulated encoder and clock: batches merge jobs within
 * their budgets, a small job behind a bulk one joins the next batch, admission is
 * bounded; generation steps (the scheduler of sched.h on a simulated model) and encoder
 * batches share one thread by the configured share, neither starves, and each runs alone
 * at full speed when the other is idle. Then the real all-MiniLM-L6-v2 (and SmolLM2):
 * vectors through the embedder from many threads at once, on its own thread and on the
 * generation model's thread while it generates, are bitwise those of eng_bert_embed.
 * lode-test: engine */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/lode.h"
#include "engine/bert.h"
#include "engine/embedder.h"
#include "engine/engine.h"
#include "engine/esched.h"
#include "engine/sched.h"

/* ---- the encoder queue --------------------------------------------------------------- */
static int toks10[64], toks30[8], toks5[1], toks150[1];

static void job_init(eng_ejob *j, uint64_t id, int n, const int *n_tok)
{
    memset(j, 0, sizeof *j);
    j->id = id;
    j->n = n;
    j->n_tok = n_tok;
}

static void test_esched_batches(void **state)
{
    for (int i = 0; i < 64; i++) toks10[i] = 10;
    for (int i = 0; i < 8; i++) toks30[i] = 30;
    toks5[0] = 5;
    toks150[0] = 150;
    eng_esched_opts o = {100, 8, 50};
    eng_esched *s;
    eng_esched_opts bad = {0, 8, 50};
    assert_int_equal(eng_esched_create(&bad, &s), LODE_ERR_INVALID);
    assert_int_equal(eng_esched_create(&o, &s), LODE_OK);
    eng_ejob a, b, c, d, e;
    job_init(&a, 1, 20, toks10);
    job_init(&b, 2, 3, toks30);
    job_init(&c, 3, 1, toks5);
    assert_int_equal(eng_esched_add(s, &a), LODE_OK);
    assert_int_equal(eng_esched_add(s, &b), LODE_OK);
    assert_int_equal(eng_esched_add(s, &c), LODE_OK);
    assert_int_equal(eng_esched_pending(s), 24);
    /* admission: 24 + 27 > 50 is refused, 51 alone can never fit */
    job_init(&d, 4, 27, toks10);
    assert_int_equal(eng_esched_add(s, &d), LODE_ERR_BUSY);
    job_init(&d, 4, 51, toks10);
    assert_int_equal(eng_esched_add(s, &d), LODE_ERR_RANGE);
    eng_ebatch bt;
    eng_esched_next(s, &bt);
    /* quota 100 / 3 = 33 tokens each: A 3 texts, B 1, C 1; then A fills to 8 texts */
    assert_int_equal(bt.n_items, 3);
    assert_ptr_equal(bt.items[0].j, &a);
    assert_int_equal(bt.items[0].first, 0);
    assert_int_equal(bt.items[0].n, 6);
    assert_ptr_equal(bt.items[1].j, &b);
    assert_int_equal(bt.items[1].n, 1);
    assert_ptr_equal(bt.items[2].j, &c);
    assert_int_equal(bt.items[2].n, 1);
    assert_int_equal(bt.n_texts, 8);
    assert_int_equal(bt.n_tokens, 95);
    eng_esched_commit(s, &bt);
    assert_int_equal(c.done, 1); /* finished: out of the queue */
    assert_int_equal(eng_esched_n_jobs(s), 2);
    assert_int_equal(eng_esched_pending(s), 16);
    /* a text longer than the batch runs alone */
    job_init(&e, 5, 1, toks150);
    assert_int_equal(eng_esched_add(s, &e), LODE_OK);
    int seen_long = 0, batches = 0, texts = 8;
    for (;;) {
        eng_esched_next(s, &bt);
        if (!bt.n_items) break;
        batches++;
        assert_true(bt.n_texts <= 8);
        int tok = 0;
        for (int i = 0; i < bt.n_items; i++) {
            const eng_ebatch_item *it = &bt.items[i];
            assert_int_equal(it->first, it->j->done); /* contiguous, nothing skipped */
            for (int k = 0; k < it->n; k++) tok += it->j->n_tok[it->first + k];
            if (it->j == &e) {
                seen_long = 1;
                assert_int_equal(bt.n_items, 1);
            }
        }
        assert_int_equal(tok, bt.n_tokens);
        assert_true(bt.n_tokens <= 100 || bt.n_texts == 1);
        texts += bt.n_texts;
        eng_esched_commit(s, &bt);
    }
    assert_true(seen_long);
    assert_int_equal(texts, 25);
    assert_int_equal(a.done, 20);
    assert_int_equal(b.done, 3);
    assert_int_equal(eng_esched_pending(s), 0);
    assert_int_equal(eng_esched_n_jobs(s), 0);
    /* removal takes the rest of a job out of the count */
    job_init(&a, 6, 20, toks10);
    assert_int_equal(eng_esched_add(s, &a), LODE_OK);
    eng_esched_next(s, &bt);
    eng_esched_commit(s, &bt);
    assert_int_equal(eng_esched_pending(s), 20 - a.done);
    eng_esched_remove(s, &a);
    assert_int_equal(eng_esched_pending(s), 0);
    eng_esched_next(s, &bt);
    assert_int_equal(bt.n_items, 0);
    eng_esched_destroy(s);
}

/* A search query's text arriving behind a bulk ingest joins the very next batch. */
static void test_esched_query_behind_bulk(void **state)
{
    static int bulk_tok[2000];
    for (int i = 0; i < 2000; i++) bulk_tok[i] = 20 + i % 30;
    int q_tok = 12;
    eng_esched_opts o = {512, 64, 4096};
    eng_esched *s;
    assert_int_equal(eng_esched_create(&o, &s), LODE_OK);
    eng_ejob bulk, q;
    job_init(&bulk, 1, 2000, bulk_tok);
    assert_int_equal(eng_esched_add(s, &bulk), LODE_OK);
    eng_ebatch bt;
    for (int i = 0; i < 3; i++) {
        eng_esched_next(s, &bt);
        assert_int_equal(bt.n_items, 1);
        eng_esched_commit(s, &bt);
    }
    job_init(&q, 2, 1, &q_tok);
    assert_int_equal(eng_esched_add(s, &q), LODE_OK);
    eng_esched_next(s, &bt);
    assert_int_equal(bt.n_items, 2);
    assert_ptr_equal(bt.items[1].j, &q);
    assert_true(bt.n_tokens <= 512);
    eng_esched_commit(s, &bt);
    assert_int_equal(q.done, 1);
    eng_esched_remove(s, &bulk);
    eng_esched_destroy(s);
}

/* ---- generation and encoder batches on one simulated thread --------------------------- */
#define G_SEQS 8
#define G_CAP  512

typedef struct gseq {
    eng_sseq q;
    int32_t toks[G_CAP];
    int32_t table[G_CAP / ENG_KV_BLOCK];
    int gen, max_gen;
} gseq;

typedef struct share_run {
    double t_gen, t_enc;      /* thread time per kind while both had work */
    double max_gen_gap;       /* longest wait of running streams between steps */
    double max_query_latency; /* submit to done of a one-text query */
    double end_gen, end_enc;  /* when each kind's work was done */
    int queries;
} share_run;

/* 8 streams of 20 prompt and 300 generated tokens against a bulk of 3000 texts and a
 * query every 0.25 s. A step costs 5 ms + 0.5 ms per token; a batch 1 ms + 50 us per
 * token. enc_only / gen_only leave the other kind out. */
static void run_share(int share, int with_gen, int with_enc, share_run *r)
{
    memset(r, 0, sizeof *r);
    eng_sched_opts so = {ENG_POLICY_FCFS, 64, G_SEQS, 64, G_SEQS + 8, 0, 0, 0, 0, 0, 0, 0};
    eng_sched *gs;
    assert_int_equal(eng_sched_create(&so, 512, &gs), LODE_OK);
    static gseq seqs[G_SEQS];
    for (int i = 0; with_gen && i < G_SEQS; i++) {
        gseq *x = &seqs[i];
        memset(x, 0, sizeof *x);
        for (int k = 0; k < 20; k++) x->toks[k] = i * 20 + k;
        x->q.toks = x->toks;
        x->q.n_toks = x->q.n_prompt = 20;
        x->q.cap = G_CAP;
        x->q.table = x->table;
        x->q.table_cap = G_CAP / ENG_KV_BLOCK;
        x->q.user = x;
        x->max_gen = 300;
        assert_int_equal(eng_sched_add(gs, &x->q), LODE_OK);
    }
    eng_esched_opts eo = {1024, 256, 8192};
    eng_esched *es;
    assert_int_equal(eng_esched_create(&eo, &es), LODE_OK);
    static int bulk_tok[3000];
    for (int i = 0; i < 3000; i++) bulk_tok[i] = 16 + (i * 7) % 40;
    eng_ejob bulk;
    job_init(&bulk, 1, 3000, bulk_tok);
    if (with_enc) assert_int_equal(eng_esched_add(es, &bulk), LODE_OK);
    static eng_ejob queries[400];
    static int q_tok = 14;
    double q_submit[400];
    int n_q = 0;
    eng_share sh;
    eng_share_init(&sh, share);
    double clock = 0, last_gen = 0, next_query = 0.25;
    for (int guard = 0;; guard++) {
        assert_true(guard < 200000);
        if (with_enc && clock >= next_query && n_q < 400 && eng_esched_pending(es) > 0) {
            job_init(&queries[n_q], 100 + (uint64_t)n_q, 1, &q_tok);
            assert_int_equal(eng_esched_add(es, &queries[n_q]), LODE_OK);
            q_submit[n_q++] = clock;
            next_query += 0.25;
        }
        int gen = eng_sched_n_live(gs) > 0, enc = eng_esched_pending(es) > 0;
        int kind = eng_share_pick(&sh, gen, enc);
        if (kind < 0) break;
        double cost;
        if (kind == ENG_SHARE_GEN) {
            eng_sched_plan p;
            eng_sched_next(gs, &p);
            assert_true(p.n_items > 0);
            cost = 0.005 + 0.0005 * p.n_tokens;
            if (clock - last_gen > r->max_gen_gap && last_gen > 0)
                r->max_gen_gap = clock - last_gen;
            clock += cost;
            last_gen = clock;
            eng_sched_commit(gs, &p);
            for (int i = 0; i < p.n_items; i++) {
                if (!p.items[i].last) continue;
                gseq *x = p.items[i].s->user;
                if (++x->gen >= x->max_gen) {
                    eng_sched_remove(gs, &x->q);
                    if (eng_sched_n_live(gs) == 0) r->end_gen = clock;
                } else {
                    x->toks[x->q.n_toks] = (x->toks[x->q.n_toks - 1] * 31 + 7) % 1000;
                    x->q.n_toks++;
                }
            }
        } else {
            eng_ebatch b;
            eng_esched_next(es, &b);
            assert_true(b.n_items > 0);
            cost = 0.001 + 0.00005 * b.n_tokens;
            clock += cost;
            eng_esched_commit(es, &b);
            for (int i = 0; i < b.n_items; i++) {
                eng_ejob *j = b.items[i].j;
                if (j != &bulk && j->done == j->n) {
                    double lat = clock - q_submit[j->id - 100];
                    if (lat > r->max_query_latency) r->max_query_latency = lat;
                    r->queries++;
                }
            }
            if (eng_esched_pending(es) == 0) r->end_enc = clock;
        }
        eng_share_charge(&sh, kind, cost);
        if (gen && enc) {
            if (kind == ENG_SHARE_GEN)
                r->t_gen += cost;
            else
                r->t_enc += cost;
        }
    }
    for (int i = 0; with_gen && i < G_SEQS; i++) assert_int_equal(seqs[i].gen, 300);
    if (with_enc) assert_int_equal(bulk.done, 3000);
    eng_sched_destroy(gs);
    eng_esched_destroy(es);
}

static void test_share_simulated(void **state)
{
    share_run alone_gen, alone_enc, r50, r25;
    run_share(50, 1, 0, &alone_gen);
    run_share(50, 0, 1, &alone_enc);
    run_share(50, 1, 1, &r50);
    run_share(25, 1, 1, &r25);
    double f50 = r50.t_enc / (r50.t_enc + r50.t_gen), f25 = r25.t_enc / (r25.t_enc + r25.t_gen);
    printf("alone: generation %.2f s, embedding %.2f s\n", alone_gen.end_gen, alone_enc.end_enc);
    printf("share 50: encoder %.3f of the contended time, generation done %.2f s, embedding "
           "%.2f s, longest stream wait %.0f ms, worst query %.0f ms (%d queries)\n",
           f50, r50.end_gen, r50.end_enc, r50.max_gen_gap * 1e3, r50.max_query_latency * 1e3,
           r50.queries);
    printf("share 25: encoder %.3f, generation done %.2f s, embedding %.2f s, longest stream "
           "wait %.0f ms, worst query %.0f ms\n",
           f25, r25.end_gen, r25.end_enc, r25.max_gen_gap * 1e3, r25.max_query_latency * 1e3);
    /* the configured share while both wait, within a batch's worth */
    assert_true(f50 > 0.45 && f50 < 0.55);
    assert_true(f25 > 0.20 && f25 < 0.30);
    /* nobody starves: the embedding bulk outlasts the streams, which at half the thread
     * take about twice their time alone (not until the bulk is done) */
    assert_true(r50.end_gen > 1.8 * alone_gen.end_gen && r50.end_gen < 2.2 * alone_gen.end_gen);
    /* the work is conserved: the thread never idles while something waits (the only
     * extra work is the queries of the longer run, a few ms) */
    double total = LODE_MAX(r50.end_gen, r50.end_enc);
    assert_true(total > alone_gen.end_gen + alone_enc.end_enc - 1e-6);
    assert_true(total < alone_gen.end_gen + alone_enc.end_enc + 0.05);
    /* a stream waits at most about one encoder batch (1 ms + 1024 * 50 us) between
     * steps, a query at most about one batch and a step */
    assert_true(r50.max_gen_gap < 0.06);
    assert_true(r50.max_query_latency < 0.12);
    assert_true(r50.queries > 0);
    /* a smaller share means the streams finish sooner */
    assert_true(r25.end_gen < r50.end_gen);
}

/* ---- the real encoder ------------------------------------------------------------------ */
#define EMBED_PATH "models/all-MiniLM-L6-v2"
/* The sanitizer build runs the same paths with fewer clients (the encoder is slow there). */
#if defined(__SANITIZE_ADDRESS__)
#define EMBEDQ_SAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMBEDQ_SAN 1
#endif
#endif
#ifdef EMBEDQ_SAN
#define N_CLIENT   4
#define PER_CLIENT 3
#else
#define N_CLIENT   8
#define PER_CLIENT 6
#endif

static char texts[N_CLIENT * PER_CLIENT][400];
static const char *tptr[N_CLIENT * PER_CLIENT];

static void make_texts(void)
{
    static const char *words[] = {"the",      "database", "stores",  "pages",   "in",
                                  "a",        "b-tree",   "while",   "queries", "read",
                                  "indexes",  "quickly",  "SQLite",  "writes",  "journal",
                                  "recovery", "after",    "crashes", "never",   "loses"};
    uint64_t r = 42;
    for (int i = 0; i < N_CLIENT * PER_CLIENT; i++) {
        int n = 3 + (i * 13) % 60, len = 0;
        for (int w = 0; w < n; w++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            len += snprintf(texts[i] + len, sizeof texts[i] - (size_t)len, "%s%s", w ? " " : "",
                            words[(r >> 33) % 20]);
        }
        tptr[i] = texts[i];
    }
}

typedef struct client {
    eng_embedder *e;
    int idx;
    float out[PER_CLIENT * 384];
    lode_status st;
} client;

static void *client_main(void *arg)
{
    client *c = arg;
    char err[256];
    c->st =
        eng_embed_run(c->e, tptr + c->idx * PER_CLIENT, NULL, PER_CLIENT, c->out, err, sizeof err);
    return NULL;
}

/* N_CLIENT threads at once; each one's vectors bitwise equal to ref. */
static void run_clients(eng_embedder *e, const float *ref)
{
    static client cl[N_CLIENT];
    pthread_t th[N_CLIENT];
    for (int i = 0; i < N_CLIENT; i++) {
        memset(&cl[i], 0, sizeof cl[i]);
        cl[i].e = e;
        cl[i].idx = i;
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
    }
    for (int i = 0; i < N_CLIENT; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N_CLIENT; i++) {
        assert_int_equal(cl[i].st, LODE_OK);
        assert_memory_equal(cl[i].out, ref + (size_t)i * PER_CLIENT * 384,
                            sizeof(float) * PER_CLIENT * 384);
    }
}

static void test_real_embedder_bitexact(void **state)
{
    if (access(EMBED_PATH "/model.safetensors", R_OK) != 0) {
        printf("%s not present (make model): skipped\n", EMBED_PATH);
        skip();
    }
    make_texts();
    char err[256];
    eng_bert_opts bo = {2, 0, 0};
    eng_bert *bert = NULL;
    assert_int_equal(eng_bert_load(EMBED_PATH, &bo, &bert, err, sizeof err), LODE_OK);
    assert_int_equal(eng_bert_dim(bert), 384);
    /* the direct path, one client's texts per call */
    static float ref[N_CLIENT * PER_CLIENT * 384];
    for (int i = 0; i < N_CLIENT; i++)
        assert_int_equal(eng_bert_embed(bert, tptr + i * PER_CLIENT, NULL, PER_CLIENT,
                                        ref + (size_t)i * PER_CLIENT * 384),
                         LODE_OK);
    /* small batches so that clients' texts are mixed and split */
    eng_embedder_opts eo = {.batch_tokens = 96, .batch_texts = 16, .max_queue = 64};
    eng_embedder *e = NULL;
    assert_int_equal(eng_embedder_create(bert, &eo, NULL, &e), LODE_OK);
    run_clients(e, ref);
    eng_embedder_stats st;
    eng_embedder_stats_get(e, &st);
    printf("own thread: %llu batches for %llu texts of %d clients\n",
           (unsigned long long)st.batches, (unsigned long long)st.texts, N_CLIENT);
    assert_true(st.texts == N_CLIENT * PER_CLIENT);
    assert_true(st.jobs == N_CLIENT);
    assert_true(st.batches > 1);
    /* more texts than the queue can ever hold */
    static float big[65 * 384];
    const char *many[65];
    for (int i = 0; i < 65; i++) many[i] = "x";
    assert_int_equal(eng_embed_run(e, many, NULL, 65, big, err, sizeof err), LODE_ERR_RANGE);
    eng_embedder_destroy(e);

    /* on the generation model's thread, while it generates */
    const char *path = eng_default_model_path();
    if (access(path, R_OK) != 0) {
        printf("model %s not present: the hosted half skipped\n", path);
        eng_bert_destroy(bert);
        return;
    }
    eng_model_opts mo = {.n_threads = 2, .n_ctx = 256};
    eng_model *m = NULL;
    assert_int_equal(eng_model_load(path, &mo, &m, err, sizeof err), LODE_OK);
    assert_int_equal(eng_embedder_create(bert, &eo, m, &e), LODE_OK);
    eng_embedder *e2 = NULL;
    assert_int_equal(eng_embedder_create(bert, &eo, m, &e2), LODE_ERR_BUSY);
    int32_t prompt[8] = {1, 504, 3326, 314, 253, 1345, 282, 260};
    eng_request r = {0};
    r.prompt = prompt;
    r.n_prompt = 8;
    eng_sampling_default(&r.sampling);
    r.max_tokens = 120;
    uint64_t ids[4];
    for (int i = 0; i < 4; i++) assert_int_equal(eng_submit(m, &r, &ids[i]), LODE_OK);
    eng_serving_stats s0, s1, s2;
    eng_serving_stats_get(m, &s0);
    run_clients(e, ref);
    eng_serving_stats_get(m, &s1);
    eng_embedder_stats_get(e, &st);
    assert_int_equal(st.hosted, 1);
    assert_true(st.texts == N_CLIENT * PER_CLIENT);
    /* generation kept going while the clients were served, and they were served before
     * it finished */
    printf("hosted: %llu encoder batches (%.3f s) and %llu steps (%.3f s) meanwhile, %d "
           "sequences still running after\n",
           (unsigned long long)(s1.enc_batches - s0.enc_batches), s1.enc_seconds - s0.enc_seconds,
           (unsigned long long)(s1.steps - s0.steps), s1.gen_seconds - s0.gen_seconds,
           s1.running + s1.waiting);
    assert_true(s1.enc_batches > s0.enc_batches);
    assert_true(s1.steps > s0.steps);
    assert_true(s1.running + s1.waiting > 0);
    for (int i = 0; i < 4; i++) eng_cancel(m, ids[i]);
    eng_embedder_destroy(e);
    eng_model_free(m);
    (void)s2;
    eng_bert_destroy(bert);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_esched_batches),
        cmocka_unit_test(test_esched_query_behind_bulk),
        cmocka_unit_test(test_share_simulated),
        cmocka_unit_test(test_real_embedder_bitexact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
