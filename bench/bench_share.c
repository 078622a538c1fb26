/*
 * bench_share.c: two measurements of the serving core on the CPU, printed as Markdown
 * tables for bench/RESULTS.md.
 *
 *  1. Preemption by recompute against preemption by swap: 32 greedy streams (32-token
 *     prompts, DECODE output tokens) in a KV pool of 1 MiB, far too small for all of
 *     them; output tokens/s, tokens the steps computed (recomputation included),
 *     preemptions and blocks copied to and from the host.
 *  2. Embeddings beside generation: 8 streams decode DECODE tokens while a bulk of
 *     EMB texts is embedded (a document upload). Generation alone, embedding alone, then
 *     both with the encoder batches on the model's scheduler thread (the embedder hosted,
 *     50% share) and both with the embedder on a thread of its own (two thread pools on
 *     the same cores, as before the embedder was scheduled): output tokens/s, the
 *     streams' inter-token latency p50/p99 and texts/s.
 *
 *   bench_share MODEL EMBED_MODEL [THREADS=2] [DECODE=64] [EMB=512]
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/lode.h"
#include "engine/bert.h"
#include "engine/embedder.h"
#include "engine/engine.h"

#define MAX_STREAMS 32
#define MAX_GAPS    8192

typedef struct run {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, tokens, n_gaps;
    int64_t last[MAX_STREAMS];
    double gaps[MAX_GAPS];
    int64_t t_end;
} run;

typedef struct stream {
    run *r;
    int idx;
} stream;

static int on_token(void *user, int32_t tok, const char *piece, size_t len, float lp)
{
    stream *s = user;
    run *r = s->r;
    int64_t now = lode_now_ns();
    pthread_mutex_lock(&r->mu);
    if (r->last[s->idx] && r->n_gaps < MAX_GAPS)
        r->gaps[r->n_gaps++] = (double)(now - r->last[s->idx]) / 1e6;
    r->last[s->idx] = now;
    r->tokens++;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static void on_done(void *user, lode_status st, eng_finish f, const eng_stats *stats)
{
    stream *s = user;
    pthread_mutex_lock(&s->r->mu);
    s->r->done++;
    s->r->t_end = lode_now_ns();
    pthread_cond_broadcast(&s->r->cv);
    pthread_mutex_unlock(&s->r->mu);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
    if (n == 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[(int)fmin(n - 1, floor(p * n))];
}

/* Submits n streams and returns at once; wait with wait_streams. */
static void start_streams(eng_model *m, run *r, stream *ss, int n, int decode)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    for (int i = 0; i < n; i++) {
        int32_t prompt[32];
        for (int k = 0; k < 32; k++) prompt[k] = 1000 + (i * 131 + k * 17) % 20000;
        ss[i] = (stream){r, i};
        eng_request q = {0};
        q.prompt = prompt;
        q.n_prompt = 32;
        eng_sampling_default(&q.sampling);
        q.max_tokens = decode;
        q.on_token = on_token;
        q.on_done = on_done;
        q.user = &ss[i];
        if (eng_submit(m, &q, NULL) != LODE_OK) {
            fprintf(stderr, "submit: %s\n", eng_errmsg(m));
            exit(1);
        }
    }
}

static void wait_streams(run *r, int n)
{
    pthread_mutex_lock(&r->mu);
    while (r->done < n) pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

static eng_model *load(const char *path, const eng_model_opts *o)
{
    char err[512];
    eng_model *m = NULL;
    if (eng_model_load(path, o, &m, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    return m;
}

static void preempt_table(const char *path, int threads, int decode)
{
    printf("| preemption | output tok/s | tokens computed | preemptions | blocks copied |\n");
    printf("| --- | ---: | ---: | ---: | ---: |\n");
    for (int mode = 0; mode < 2; mode++) {
        eng_model_opts o = {.n_threads = threads,
                            .n_ctx = 128,
                            .kv_mb = 1,
                            .preempt = mode ? ENG_PREEMPT_SWAP : ENG_PREEMPT_RECOMPUTE};
        eng_model *m = load(path, &o);
        static run r;
        static stream ss[MAX_STREAMS];
        int64_t t0 = lode_now_ns();
        start_streams(m, &r, ss, MAX_STREAMS, decode);
        wait_streams(&r, MAX_STREAMS);
        double secs = (double)(r.t_end - t0) / 1e9;
        eng_serving_stats st;
        eng_serving_stats_get(m, &st);
        printf("| %s | %.1f | %llu | %llu | %llu |\n", eng_preempt_name(o.preempt), r.tokens / secs,
               (unsigned long long)st.step_tokens, (unsigned long long)st.preemptions,
               (unsigned long long)st.swap_blocks);
        eng_model_free(m);
    }
}

typedef struct bulk {
    eng_embedder *e;
    const char **texts;
    int n;
    float *out;
    double secs;
} bulk;

static void *bulk_main(void *arg)
{
    bulk *b = arg;
    char err[256];
    int64_t t0 = lode_now_ns();
    /* a document upload: chunks of 32 texts, one request after the other */
    for (int i = 0; i < b->n; i += 32) {
        int k = LODE_MIN(32, b->n - i);
        if (eng_embed_run(b->e, b->texts + i, NULL, (size_t)k, b->out + (size_t)i * 384, err,
                          sizeof err)) {
            fprintf(stderr, "embed: %s\n", err);
            exit(1);
        }
    }
    b->secs = (double)(lode_now_ns() - t0) / 1e9;
    return NULL;
}

static void share_table(const char *path, const char *epath, int threads, int decode, int n_emb)
{
    char err[512];
    eng_bert_opts bo = {threads, 0, 0};
    eng_bert *bert = NULL;
    if (eng_bert_load(epath, &bo, &bert, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    const char **texts = malloc(sizeof *texts * (size_t)n_emb);
    char(*buf)[320] = malloc(sizeof *buf * (size_t)n_emb);
    float *out = malloc(sizeof(float) * 384 * (size_t)n_emb);
    static const char *w[] = {"pages", "journal", "index", "query", "the",   "a",  "table",
                              "rows",  "commit",  "write", "reads", "cache", "of", "and"};
    for (int i = 0; i < n_emb; i++) {
        int len = 0;
        for (int k = 0; k < 30 + i % 20; k++)
            len +=
                snprintf(buf[i] + len, sizeof buf[i] - (size_t)len, "%s ", w[(i * 7 + k * 3) % 14]);
        texts[i] = buf[i];
    }
    printf("\n| setting | output tok/s | inter-token p50 ms | p99 ms | texts/s |\n");
    printf("| --- | ---: | ---: | ---: | ---: |\n");
    const int S = 8;
    for (int mode = 0; mode < 5; mode++) {
        /* 0 generation alone, 1 embedding alone, 2 hosted, 3 own thread, 4 hosted with
         * 256-token encoder batches */
        eng_model_opts o = {.n_threads = threads, .n_ctx = 256};
        eng_model *m = mode == 1 ? NULL : load(path, &o);
        eng_embedder *e = NULL;
        if (mode != 0) {
            eng_embedder_opts eo = {.batch_tokens = mode == 4 ? 256 : 0};
            if (eng_embedder_create(bert, &eo, mode == 2 || mode == 4 ? m : NULL, &e)) {
                fprintf(stderr, "embedder\n");
                exit(1);
            }
        }
        static run r;
        static stream ss[MAX_STREAMS];
        bulk b = {e, texts, n_emb, out, 0};
        pthread_t th;
        int64_t t0 = lode_now_ns();
        if (m) start_streams(m, &r, ss, S, decode);
        if (e) pthread_create(&th, NULL, bulk_main, &b);
        if (m) wait_streams(&r, S);
        if (e) pthread_join(th, NULL);
        double gsecs = m ? (double)(r.t_end - t0) / 1e9 : 0;
        static const char *names[] = {"generation alone", "embedding alone",
                                      "both, encoder on the model's scheduler thread (50%)",
                                      "both, encoder on its own thread",
                                      "both, on the model's thread, 256-token encoder batches"};
        if (m)
            printf("| %s | %.1f | %.1f | %.1f | ", names[mode], r.tokens / gsecs,
                   pct(r.gaps, r.n_gaps, 0.5), pct(r.gaps, r.n_gaps, 0.99));
        else
            printf("| %s | - | - | - | ", names[mode]);
        if (e)
            printf("%.1f |\n", n_emb / b.secs);
        else
            printf("- |\n");
        eng_embedder_destroy(e);
        eng_model_free(m);
    }
    eng_bert_destroy(bert);
    free(texts);
    free(buf);
    free(out);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_share MODEL EMBED_MODEL [THREADS] [DECODE] [EMB]\n");
        return 2;
    }
    int threads = argc > 3 ? atoi(argv[3]) : 2;
    int decode = argc > 4 ? atoi(argv[4]) : 64;
    int n_emb = argc > 5 ? atoi(argv[5]) : 512;
    if (!getenv("BENCH_NO_PREEMPT")) preempt_table(argv[1], threads, decode);
    share_table(argv[1], argv[2], threads, decode, n_emb);
    return 0;
}
