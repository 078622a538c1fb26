/*
 * bench_gpu_serve.c: the serving core on the GPU (the scheduler's batches on the fused CUDA
 * forward, eng_cuda_step) through the public API (eng_submit), on a GGUF such as
 * `lode synth --shape llama3-8b --type bf16`. For C concurrent requests (C = 1, 4, 16,
 * 64, 256 by default), each a distinct PROMPT-token prompt (no prefix sharing) and OUT
 * greedy output tokens, all submitted at once: total output tokens/s from the first submit
 * to the last token, time to first token p50/p99 over the requests and inter-token
 * latency p50/p99 over every gap of every stream.
 *
 * The floor beside each row: a decode step must read the weights once and each running
 * sequence's K/V, so its time is at least (weight bytes + C x mean context x K/V bytes a
 * token) / the card's device copy bandwidth, measured first in the same run; "floor tok/s"
 * is C over that time (decode only: prefill is compute-bound and comes on top).
 *
 *   bench_gpu_serve MODEL [PROMPT=128] [OUT=128] [C,C,...] [N_BATCH=2048]
 * Prints a Markdown table and a line `RESULT ...` per row.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/lode.h"
#include "engine/engine.h"
#include "engine/gguf.h"
#if LODE_CUDA
#include "kernels/cuda/cuda_kernels.h"
#endif

#define MAX_C    1024
#define MAX_GAPS 1024

typedef struct stream {
    int64_t t_submit, t_first, t_last;
    int n, done;
    lode_status st;
    float *gaps;
    int n_gaps;
} stream;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static int on_token(void *user, int32_t tok, const char *piece, size_t len, float lp)
{
    stream *s = user;
    int64_t now = lode_now_ns();
    if (!s->t_first)
        s->t_first = now;
    else if (s->n_gaps < MAX_GAPS)
        s->gaps[s->n_gaps++] = (float)((double)(now - s->t_last) / 1e6);
    s->t_last = now;
    s->n++;
    return 0;
}

static void on_done(void *user, lode_status st, eng_finish f, const eng_stats *stats)
{
    stream *s = user;
    pthread_mutex_lock(&mu);
    s->st = st;
    s->done = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
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

/* Device copy bandwidth (read + write bytes per second) of 1 GiB buffers, median of 7. */
static double copy_bandwidth(void)
{
#if LODE_CUDA
    const size_t n = (size_t)1 << 30;
    void *a = NULL, *b = NULL, *e0 = NULL, *e1 = NULL;
    double bw = 0;
    float ms[7];
    if (krn_cuda_malloc(&a, n) || krn_cuda_malloc(&b, n) || krn_cuda_event_create(&e0) ||
        krn_cuda_event_create(&e1))
        goto out;
    krn_cuda_memset(a, 1, n, NULL);
    for (int i = 0; i < 3; i++) krn_cuda_d2d(b, a, n, NULL);
    for (int r = 0; r < 7; r++) {
        krn_cuda_event_record(e0, NULL);
        for (int i = 0; i < 10; i++) krn_cuda_d2d(b, a, n, NULL);
        krn_cuda_event_record(e1, NULL);
        if (krn_cuda_event_ms(e0, e1, &ms[r])) goto out;
    }
    qsort(ms, 7, sizeof *ms, cmp_f);
    bw = 2.0 * n * 10 / (ms[3] * 1e-3);
out:
    krn_cuda_free(a);
    krn_cuda_free(b);
    krn_cuda_event_destroy(e0);
    krn_cuda_event_destroy(e1);
    return bw;
#else
    return 0;
#endif
}

/* Bytes of weights a decode step reads (every matrix but the embedding table, unless it is
 * also the head) and K/V bytes of one cached token, from the file. */
static int model_bytes(const char *path, double *wbytes, double *kv_tok)
{
    char err[256];
    eng_gguf *g = NULL;
    if (eng_gguf_open(path, &g, err, sizeof err)) {
        fprintf(stderr, "bench_gpu_serve: %s\n", err);
        return -1;
    }
    int tied = eng_gguf_find_tensor(g, "output.weight") == NULL;
    double w = 0;
    for (int64_t i = 0; i < eng_gguf_n_tensors(g); i++) {
        const eng_gguf_tensor *t = eng_gguf_tensor_at(g, i);
        if (!tied && !strcmp(t->name, "token_embd.weight")) continue;
        w += (double)t->nbytes;
    }
    uint32_t L = 0, D = 0, H = 0, KV = 0;
    eng_gguf_get_u32(g, "llama.block_count", &L);
    eng_gguf_get_u32(g, "llama.embedding_length", &D);
    eng_gguf_get_u32(g, "llama.attention.head_count", &H);
    if (eng_gguf_get_u32(g, "llama.attention.head_count_kv", &KV)) KV = H;
    *wbytes = w;
    *kv_tok = H ? (double)L * KV * (D / H) * 2 /* f16 */ * 2 /* K and V */ : 0;
    eng_gguf_close(g);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_gpu_serve MODEL [PROMPT=128] [OUT=128] [C,C,...] "
                        "[N_BATCH=2048] [PREFILL_SLACK]\n"
                        "  PREFILL_SLACK: the engine's latency-aware prompt chunking (0: off, "
                        "the step budget alone; F >= 1: a step within F times a decode-only "
                        "step; absent: the engine's default)\n");
        return 2;
    }
    const char *path = argv[1];
    int n_prompt = argc > 2 ? atoi(argv[2]) : 128;
    int n_out = argc > 3 ? atoi(argv[3]) : 128;
    const char *list = argc > 4 ? argv[4] : "1,4,16,64,256";
    int n_batch = argc > 5 ? atoi(argv[5]) : 2048;
    double slack = argc > 6 ? atof(argv[6]) : -2; /* -2: the engine's default */
    if (slack != -2 && !(slack == 0 || slack >= 1)) {
        fprintf(stderr, "bench_gpu_serve: PREFILL_SLACK must be 0 or >= 1\n");
        return 2;
    }
    int cs[16], n_cs = 0, max_c = 1;
    for (const char *p = list; *p && n_cs < 16;) {
        cs[n_cs] = atoi(p);
        if (cs[n_cs] <= 0 || cs[n_cs] > MAX_C) {
            fprintf(stderr, "bench_gpu_serve: concurrency 1..%d\n", MAX_C);
            return 2;
        }
        max_c = LODE_MAX(max_c, cs[n_cs]);
        n_cs++;
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    if (n_prompt <= 0 || n_out <= 0) return 2;
    double bw = copy_bandwidth(), wbytes = 0, kv_tok = 0;
    if (model_bytes(path, &wbytes, &kv_tok)) return 1;

    eng_model_opts o = {0};
    o.backend = "cuda";
    o.n_ctx = LODE_MAX(512, n_prompt + n_out + 16);
    o.n_batch = n_batch;
    o.max_seqs = max_c;
    o.max_queue = max_c;
    o.tune_at_load = 1; /* as lode serve */
    if (slack != -2) o.prefill_slack = slack == 0 ? -1 : slack;
    char err[512];
    eng_model *m = NULL;
    int64_t tl = lode_now_ns();
    if (eng_model_load(path, &o, &m, err, sizeof err)) {
        fprintf(stderr, "bench_gpu_serve: %s\n", err);
        return 1;
    }
    double load_s = (double)(lode_now_ns() - tl) / 1e9;
    char slack_s[64];
    if (slack == -2)
        snprintf(slack_s, sizeof slack_s, "the engine's default (off on a GPU)");
    else if (slack == 0)
        snprintf(slack_s, sizeof slack_s, "off");
    else
        snprintf(slack_s, sizeof slack_s, "%.2f", slack);
    eng_model_info info;
    eng_model_info_get(m, &info);
    eng_serving_stats ss;
    eng_serving_stats_get(m, &ss);
    printf("model %s (%s backend), load %.1f s; KV pool %d blocks of %d tokens = %.2f GiB (free "
           "GPU memory after the weights); step budget %d tokens, %d sequences; prefill slack %s; "
           "device copy "
           "bandwidth %.0f GB/s; weights read a decode step %.2f GB, K/V %.0f KiB a token\n",
           info.name, info.backend, load_s, ss.kv_blocks_total, ss.kv_block_tokens,
           (double)ss.kv_bytes / (1 << 30), n_batch, max_c, slack_s, bw / 1e9, wbytes / 1e9,
           kv_tok / 1024);
    if (strcmp(info.backend, "cuda")) {
        fprintf(stderr, "bench_gpu_serve: the model did not load on the fused CUDA path\n");
        return 1;
    }
    stream *st = calloc(MAX_C, sizeof *st);
    float *gapbuf = malloc(sizeof(float) * MAX_C * MAX_GAPS);
    float *all_gaps = malloc(sizeof(float) * MAX_C * MAX_GAPS);
    float *ttft = malloc(sizeof(float) * MAX_C);
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)n_prompt * MAX_C);
    if (!st || !gapbuf || !all_gaps || !ttft || !prompt) return 1;
    for (int i = 0; i < MAX_C; i++) st[i].gaps = gapbuf + (size_t)i * MAX_GAPS;

    printf("\n| concurrent | output tokens | wall s | output tok/s | TTFT p50 ms | TTFT p99 ms "
           "| inter-token p50 ms | inter-token p99 ms | decode floor ms/step | floor tok/s |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    uint32_t seed = 12345;
    /* the first round warms up (graph capture, cuBLAS heuristics) and is not reported */
    for (int ci = -1; ci < n_cs; ci++) {
        int C = ci < 0 ? 4 : cs[ci];
        for (int i = 0; i < C; i++) {
            stream *s = &st[i];
            s->t_submit = s->t_first = s->t_last = 0;
            s->n = s->done = s->n_gaps = 0;
            s->st = LODE_OK;
            for (int k = 0; k < n_prompt; k++) {
                seed = seed * 1664525u + 1013904223u;
                prompt[(size_t)i * n_prompt + k] =
                    (int32_t)(1 + (seed >> 8) % (uint32_t)(info.n_vocab - 2));
            }
        }
        int64_t t0 = lode_now_ns();
        for (int i = 0; i < C; i++) {
            eng_request r = {0};
            r.prompt = prompt + (size_t)i * n_prompt;
            r.n_prompt = n_prompt;
            eng_sampling_default(&r.sampling);
            r.max_tokens = ci < 0 ? 8 : n_out;
            r.on_token = on_token;
            r.on_done = on_done;
            r.user = &st[i];
            st[i].t_submit = lode_now_ns();
            if (eng_submit(m, &r, NULL)) {
                fprintf(stderr, "bench_gpu_serve: submit: %s\n", eng_errmsg(m));
                return 1;
            }
        }
        pthread_mutex_lock(&mu);
        for (int i = 0; i < C; i++)
            while (!st[i].done) pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        int64_t t1 = t0;
        long total = 0;
        int ng = 0;
        for (int i = 0; i < C; i++) {
            if (st[i].st) {
                fprintf(stderr, "bench_gpu_serve: request failed: %s\n", lode_strerror(st[i].st));
                return 1;
            }
            t1 = st[i].t_last > t1 ? st[i].t_last : t1;
            total += st[i].n;
            ttft[i] = (float)((double)(st[i].t_first - st[i].t_submit) / 1e6);
            memcpy(all_gaps + ng, st[i].gaps, sizeof(float) * (size_t)st[i].n_gaps);
            ng += st[i].n_gaps;
        }
        if (ci < 0) continue;
        double wall = (double)(t1 - t0) / 1e9;
        double mean_ctx = n_prompt + n_out / 2.0;
        double floor_ms = bw > 0 ? (wbytes + C * mean_ctx * kv_tok) / bw * 1e3 : 0;
        float t50 = pct(ttft, C, 0.5), t99 = pct(ttft, C, 0.99);
        float g50 = pct(all_gaps, ng, 0.5), g99 = pct(all_gaps, ng, 0.99);
        printf("| %d | %ld | %.2f | %.0f | %.1f | %.1f | %.2f | %.2f | %.2f | %.0f |\n", C, total,
               wall, total / wall, t50, t99, g50, g99, floor_ms,
               floor_ms > 0 ? C / (floor_ms / 1e3) : 0);
        printf("RESULT serve concurrent=%d prompt=%d out=%d output_tok_s=%.0f ttft_p50_ms=%.1f "
               "ttft_p99_ms=%.1f itl_p50_ms=%.2f itl_p99_ms=%.2f floor_ms_step=%.2f "
               "floor_tok_s=%.0f\n",
               C, n_prompt, n_out, total / wall, t50, t99, g50, g99, floor_ms,
               floor_ms > 0 ? C / (floor_ms / 1e3) : 0);
        fflush(stdout);
    }
    eng_serving_stats_get(m, &ss);
    printf("\nsteps %llu, tokens computed %llu, preemptions %llu\n", (unsigned long long)ss.steps,
           (unsigned long long)ss.step_tokens, (unsigned long long)ss.preemptions);
    eng_model_free(m);
    free(st);
    free(gapbuf);
    free(all_gaps);
    free(ttft);
    free(prompt);
    return 0;
}
