/*
 * bench_sched.c: the serving core on the CPU through the public API (eng_submit), three
 * measurements, each printed as a Markdown table for bench/RESULTS.md:
 *
 *  1. Throughput: S concurrent greedy streams (S = 1, 4, 16, 64), each a different
 *     32-token prompt and DECODE generated tokens; total output tokens/s from the first
 *     submit to the last token, beside the process CPU seconds of the phase. Continuous
 *     batching puts every stream's next token into one step, so each quantized weight
 *     matrix is read once per step for all of them.
 *  2. Prefix cache: R requests sharing a PREFIX-token head (a warm-up request puts it in
 *     the cache first, as a system prompt would be), each with its own 16-token tail and
 *     one output token; mean time to first token with the cache and without.
 *  3. Chunked prefill: STREAMS streams decode; the inter-token latency p50/p99 of those
 *     streams alone (DECODE tokens each), then while a LONG-token prompt arrives and is
 *     prefilled (the streams decode DECODE tokens or until its first token), twice: with the
 *     latency-aware chunk (step budget BUDGET, --prefill-slack SLACK) and with the fixed
 *     budget of STREAMS + 32 tokens (32-token prompt chunks) and no slack. Also the long
 *     prompt's time to first token, the price of holding the streams' latency.
 *
 *   bench_sched MODEL [THREADS=2] [DECODE=64] [PREFIX=512] [LONG=4000] [STREAMS=32]
 *               [SLACK=1.6] [BUDGET=256] [WHOLE=0]
 * (WHOLE=1: with the prompt, the streams decode until its first token however long that
 * takes, so that they run beside the whole prompt, its dearest positions included)
 * (PREFIX and LONG both 0: the throughput part alone; PREFIX < 0: the chunked-prefill part
 * alone)
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/lode.h"
#include "engine/engine.h"

static const char text[] =
    "The river wound through the valley, past farms and orchards, old stone bridges and "
    "the mills that once ground the grain of three villages. In spring the water rose with "
    "snow from the mountains; in late summer it slowed to a clear, shallow stream where "
    "children caught small fish and herons stood motionless in the reeds. Travellers who "
    "followed its banks would reach the market town by evening, where merchants sold wool, "
    "cheese, copper pots and books printed in the capital. ";

#define MAX_STREAMS 64
#define MAX_GAPS    4096

typedef struct stream {
    int64_t t_submit, t_first, t_last, t_done;
    int n;
    int done;
    int record_gaps;
    float *gaps; /* (MAX_GAPS) ms between tokens */
    int n_gaps;
} stream;

static atomic_int long_started;   /* the long prompt has its first token: streams stop */
static atomic_int long_submitted; /* streams with record_gaps 2 record from then on */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int32_t *corpus;
static size_t n_corpus;

static int on_token(void *user, int32_t tok, const char *piece, size_t len, float lp)
{
    stream *s = user;
    int64_t now = lode_now_ns();
    if (s->record_gaps == 2 && atomic_load(&long_started)) return 1;
    if (s->record_gaps == 0 && !s->t_first) atomic_store(&long_started, 1);
    if (!s->t_first)
        s->t_first = now;
    else if ((s->record_gaps == 1 || (s->record_gaps == 2 && atomic_load(&long_submitted))) &&
             s->n_gaps < MAX_GAPS)
        s->gaps[s->n_gaps++] = (float)((double)(now - s->t_last) / 1e6);
    s->t_last = now;
    s->n++;
    return 0;
}

static void on_done(void *user, lode_status st, eng_finish f, const eng_stats *stats)
{
    stream *s = user;
    pthread_mutex_lock(&mu);
    s->t_done = lode_now_ns();
    s->done = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void submit(eng_model *m, stream *s, const int32_t *prompt, int n, int max_tokens)
{
    eng_request r = {0};
    r.prompt = prompt;
    r.n_prompt = n;
    eng_sampling_default(&r.sampling);
    r.max_tokens = max_tokens;
    r.on_token = on_token;
    r.on_done = on_done;
    r.user = s;
    s->t_submit = lode_now_ns();
    lode_status st = eng_submit(m, &r, NULL);
    if (st) {
        fprintf(stderr, "bench_sched: submit: %s\n", eng_errmsg(m));
        exit(1);
    }
}

static void wait_all(stream *s, int n)
{
    pthread_mutex_lock(&mu);
    for (int i = 0; i < n; i++)
        while (!s[i].done) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static double load1(void)
{
    double l = 0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = 0;
        fclose(f);
    }
    return l;
}

/* A prompt of n tokens from the corpus at offset off (distinct offsets, distinct first
 * blocks: no prefix sharing between streams). */
static void prompt_at(int32_t *out, int n, size_t off)
{
    for (int i = 0; i < n; i++) out[i] = corpus[(off + (size_t)i) % n_corpus];
}

static eng_model *load(const char *path, int threads, int n_batch, int no_cache, int n_ctx,
                       double slack)
{
    eng_model_opts o = {0};
    o.n_threads = threads;
    o.n_ctx = n_ctx;
    o.n_batch = n_batch;
    o.kv_mb = 768;
    o.prefill_slack = slack;
    o.max_seqs = MAX_STREAMS;
    o.no_prefix_cache = no_cache;
    char err[512];
    eng_model *m = NULL;
    if (eng_model_load(path, &o, &m, err, sizeof err)) {
        fprintf(stderr, "bench_sched: %s\n", err);
        exit(1);
    }
    return m;
}

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static float pct(float *v, int n, double p)
{
    if (n == 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_f);
    int i = (int)ceil(p * n) - 1;
    return v[i < 0 ? 0 : i];
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_sched MODEL [THREADS=2] [DECODE=64] [PREFIX=512] [LONG=4000] "
                        "[STREAMS=32] [SLACK=1.6] [BUDGET=256] [WHOLE=0]\n");
        return 2;
    }
    const char *path = argv[1];
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    int decode = argc > 3 ? atoi(argv[3]) : 64;
    int prefix = argc > 4 ? atoi(argv[4]) : 512;
    int long_n = argc > 5 ? atoi(argv[5]) : 4000;
    int n_str = argc > 6 ? atoi(argv[6]) : 32;
    double slack = argc > 7 ? atof(argv[7]) : 1.6;
    int budget = argc > 8 ? atoi(argv[8]) : 256;
    int whole = argc > 9 ? atoi(argv[9]) : 0;
    if (long_n < 0 || long_n > 8000 || n_str < 1 || n_str > MAX_STREAMS || budget < n_str + 1 ||
        !(slack == 0 || slack >= 1)) {
        fprintf(stderr,
                "bench_sched: LONG 0..8000, STREAMS 1..%d, BUDGET > STREAMS, SLACK 0 "
                "or >= 1\n",
                MAX_STREAMS);
        return 2;
    }
    static stream st[MAX_STREAMS + 1];
    static float gaps[MAX_STREAMS][MAX_GAPS];
    static int32_t prompt[8192];

    eng_model *m = load(path, threads, 256, 0, 2048, 0);
    lode_buf b = LODE_BUF_INIT;
    for (int i = 0; i < 40; i++) lode_buf_puts(&b, text);
    size_t n_ids = 0;
    if (eng_tokenize(m, b.data, b.len, 0, 0, &corpus, &n_ids)) return 1;
    n_corpus = n_ids;
    lode_buf_free(&b);
    if (prefix < 0) goto chunked;

    /* 1. throughput */
    printf("| streams | output tokens | wall s | output tok/s | CPU s | speed-up vs 1 | load (1 "
           "min) |\n");
    printf("|---|---|---|---|---|---|---|\n");
    int counts[4] = {1, 4, 16, 64};
    double base = 0;
    for (int c = 0; c < 4; c++) {
        int S = counts[c];
        memset(st, 0, sizeof st);
        double cpu0 = cpu_seconds(), l0 = load1();
        int64_t t0 = lode_now_ns();
        for (int i = 0; i < S; i++) {
            prompt_at(prompt, 32, (size_t)(i * 53 + c * 7));
            submit(m, &st[i], prompt, 32, decode);
        }
        wait_all(st, S);
        int64_t t1 = lode_now_ns();
        long tok = 0;
        for (int i = 0; i < S; i++) tok += st[i].n;
        double wall = (double)(t1 - t0) / 1e9, rate = (double)tok / wall;
        if (c == 0) base = rate;
        printf("| %d | %ld | %.2f | %.1f | %.2f | %.2fx | %.1f-%.1f |\n", S, tok, wall, rate,
               cpu_seconds() - cpu0, rate / base, l0, load1());
        fflush(stdout);
    }
    if (prefix <= 0 && long_n <= 0) { /* PREFIX=0 LONG=0: throughput only */
        eng_model_free(m);
        lode_free(corpus);
        return 0;
    }

    /* 2. prefix cache */
    int R = 8;
    double ttft[2] = {0, 0};
    double cpu_pc[2] = {0, 0};
    eng_model_free(m);
    for (int nc = 0; nc < 2; nc++) {
        m = load(path, threads, 256, nc, 2048, 0);
        memset(st, 0, sizeof st);
        prompt_at(prompt, prefix + 16, 11);
        submit(m, &st[R], prompt, prefix + 16, 1); /* warm-up: the head is computed once */
        wait_all(&st[R], 1);
        double cpu0 = cpu_seconds();
        for (int i = 0; i < R; i++) {
            prompt_at(prompt + prefix, 16, (size_t)(1000 + 97 * i));
            submit(m, &st[i], prompt, prefix + 16, 1);
        }
        wait_all(st, R);
        cpu_pc[nc] = cpu_seconds() - cpu0;
        for (int i = 0; i < R; i++) ttft[nc] += (double)(st[i].t_first - st[i].t_submit) / 1e6 / R;
        eng_model_free(m);
    }
    printf(
        "\n| prefix cache | %d requests, %d-token shared head + 16 own | mean TTFT ms | CPU s |\n",
        R, prefix);
    printf("|---|---|---|---|\n");
    printf("| on | | %.1f | %.2f |\n| off | | %.1f | %.2f |\n", ttft[0], cpu_pc[0], ttft[1],
           cpu_pc[1]);
    printf("\nTTFT without the cache / with it: %.1fx (load %.1f)\n", ttft[1] / ttft[0], load1());
    fflush(stdout);

    m = NULL;

chunked:
    /* 3. chunked prefill: inter-token latency of S streams alone and while a long prompt is
     * prefilled, with the latency-aware chunk and with the fixed 32-token chunk */
    if (m) eng_model_free(m);
    if (long_n <= 0) {
        lode_free(corpus);
        return 0;
    }
    int S = n_str, n_ctx = LODE_MAX(2048, long_n + 64);
    float p50[3], p99[3];
    double tt_long[3] = {0, 0, 0};
    int n_gaps[3];
    const int fixed = S + 32;
    for (int run = 0; run < 3; run++) {
        /* 0: alone; 1: with the long prompt, slack; 2: with it, fixed budget */
        m = run < 2 ? load(path, threads, budget, 0, n_ctx, slack > 0 ? slack : -1)
                    : load(path, threads, fixed, 0, n_ctx, -1);
        memset(st, 0, sizeof st);
        atomic_store(&long_started, 0);
        atomic_store(&long_submitted, 0);
        for (int i = 0; i < S; i++) {
            st[i].gaps = gaps[i];
            st[i].record_gaps = run ? 2 : 1;
            prompt_at(prompt, 16, (size_t)(i * 31 + 5));
            submit(m, &st[i], prompt, 16, run && whole ? n_ctx - 32 : decode);
        }
        if (run) {
            /* arrives once the streams decode */
            for (;;) {
                pthread_mutex_lock(&mu);
                int going = st[S - 1].n >= 4;
                pthread_mutex_unlock(&mu);
                if (going) break;
                struct timespec ts = {0, 2000000};
                nanosleep(&ts, NULL);
            }
            prompt_at(prompt, long_n, 3);
            atomic_store(&long_submitted, 1);
            submit(m, &st[S], prompt, long_n, 1);
        }
        wait_all(st, S + (run > 0));
        static float all[MAX_STREAMS * MAX_GAPS];
        int n = 0;
        for (int i = 0; i < S; i++)
            for (int k = 0; k < st[i].n_gaps; k++) all[n++] = st[i].gaps[k];
        n_gaps[run] = n;
        p50[run] = pct(all, n, 0.5);
        p99[run] = pct(all, n, 0.99);
        if (run) tt_long[run] = (double)(st[S].t_first - st[S].t_submit) / 1e6;
        eng_model_free(m);
    }
    printf("\n| %d streams decoding, %d-token prompt | step budget | inter-token p50 ms | p99 ms "
           "| p99 / alone | gaps | long prompt TTFT ms |\n|---|---|---|---|---|---|---|\n",
           S, long_n);
    printf("| alone | %d | %.1f | %.1f | 1.00x | %d | |\n", budget, p50[0], p99[0], n_gaps[0]);
    if (slack > 0)
        printf("| with the prompt, --prefill-slack %.2g | %d | %.1f | %.1f | %.2fx | %d | %.0f |\n",
               slack, budget, p50[1], p99[1], p99[1] / p99[0], n_gaps[1], tt_long[1]);
    else
        printf("| with the prompt, no slack | %d | %.1f | %.1f | %.2fx | %d | %.0f |\n", budget,
               p50[1], p99[1], p99[1] / p99[0], n_gaps[1], tt_long[1]);
    printf("| with the prompt, fixed 32-token chunks | %d | %.1f | %.1f | %.2fx | %d | %.0f |\n",
           fixed, p50[2], p99[2], p99[2] / p99[0], n_gaps[2], tt_long[2]);
    printf("\np99 with the long prompt / without: %.2fx with the slack, %.2fx with fixed chunks "
           "(load %.1f)\n",
           p99[1] / p99[0], p99[2] / p99[0], load1());
    lode_free(corpus);
    return 0;
}
