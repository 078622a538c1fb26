/*
 * bench_kernels.c: throughput of the CPU kernels beside this machine's measured memory
 * bandwidth. Matvec (decode, n_tok = 1) is reported as weight GB/s: "cold" cycles over
 * enough copies of the matrix to defeat the caches, as a model larger than the L3 sees
 * them; "hot" repeats one copy. Prefill (n_tok = 512) is reported in GFLOP/s. Also the
 * cost of an empty parallel region. Output is a Markdown table; `make bench-kernels`
 * appends it to bench/RESULTS.md.
 *
 *   bench_kernels [--quick]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/lode.h"
#include "common/threadpool.h"
#include "kernels/cpu/kernels.h"

#define COLD_BYTES ((size_t)192 << 20)

static int quick;

static double now(void)
{
    return lode_now_s();
}

/* ---- memory bandwidth -------------------------------------------------------------- */
typedef struct bw_job {
    const float *src;
    float *dst;
    size_t n; /* floats */
    int nth;
    double sums[64];
} bw_job;

static void read_task(void *ctx, size_t task, int thread)
{
    bw_job *j = ctx;
    size_t per = j->n / (size_t)j->nth / 2 * 2; /* in floats; read as 64-bit words */
    const uint64_t *p = (const uint64_t *)(j->src + task * per);
    uint64_t s[8] = {0};
    for (size_t i = 0; i + 8 <= per / 2; i += 8)
        for (int k = 0; k < 8; k++) s[k] ^= p[i + k];
    j->sums[task] = (double)(s[0] ^ s[1] ^ s[2] ^ s[3] ^ s[4] ^ s[5] ^ s[6] ^ s[7]);
}

static void copy_task(void *ctx, size_t task, int thread)
{
    bw_job *j = ctx;
    size_t per = j->n / (size_t)j->nth;
    memcpy(j->dst + task * per, j->src + task * per, per * sizeof(float));
}

/* GB/s of the best of several runs: read-only (bytes read) and memcpy (read + write). */
static void mem_bandwidth(lode_pool *pool, double *read_gbs, double *copy_gbs)
{
    size_t bytes = (size_t)256 << 20;
    bw_job j = {0};
    j.n = bytes / sizeof(float);
    j.nth = lode_pool_size(pool);
    float *src = lode_aligned_alloc(64, bytes), *dst = lode_aligned_alloc(64, bytes);
    if (!src || !dst) {
        *read_gbs = *copy_gbs = 0;
        goto out;
    }
    for (size_t i = 0; i < j.n; i++) src[i] = (float)(i & 255);
    memset(dst, 1, bytes);
    j.src = src;
    j.dst = dst;
    double best_r = 1e9, best_c = 1e9;
    for (int it = 0; it < (quick ? 2 : 5); it++) {
        double t0 = now();
        lode_parallel_for(pool, (size_t)j.nth, read_task, &j);
        double t1 = now();
        lode_parallel_for(pool, (size_t)j.nth, copy_task, &j);
        double t2 = now();
        if (t1 - t0 < best_r) best_r = t1 - t0;
        if (t2 - t1 < best_c) best_c = t2 - t1;
    }
    *read_gbs = (double)bytes / best_r / 1e9;
    *copy_gbs = 2.0 * (double)bytes / best_c / 1e9;
out:
    lode_aligned_free(src);
    lode_aligned_free(dst);
}

/* ---- matvec and prefill ------------------------------------------------------------ */
typedef struct shape {
    size_t n_out, n_in;
    const char *what;
} shape;

static const shape shapes[] = {
    {576, 576, "attn q/o 576x576"},    {1536, 576, "ffn gate/up 576->1536"},
    {576, 1536, "ffn down 1536->576"}, {49152, 576, "output 576->49152"},
    {4096, 4096, "llama 4096x4096"},
};

static const lode_dtype types[] = {LODE_Q4_0, LODE_Q4_1, LODE_Q5_0, LODE_Q5_1, LODE_Q8_0, LODE_Q4_K,
                                   LODE_Q5_K, LODE_Q6_K, LODE_F16,  LODE_BF16, LODE_F32};

static void fill_random(float *x, size_t n, uint64_t *s)
{
    for (size_t i = 0; i < n; i++) {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        x[i] = (float)((double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
}

/* Returns seconds per matvec; cold cycles through `copies` matrices. */
static double time_matvec(lode_pool *pool, lode_dtype t, const uint8_t *W, size_t wbytes,
                          int copies, size_t n_out, size_t n_in, const float *x, float *y, void *ws,
                          size_t wsz)
{
    int reps = 0;
    double t0 = now(), min_time = quick ? 0.05 : 0.25;
    do {
        for (int c = 0; c < copies; c++)
            krn_matmul(pool, t, W + (size_t)c * wbytes, n_out, n_in, x, n_in, 1, y, n_out, ws, wsz);
        reps += copies;
    } while (now() - t0 < min_time);
    return (now() - t0) / reps;
}

static void bench_type_shape(lode_pool *pools[2], lode_dtype t, const shape *s, FILE *out)
{
    size_t wbytes = lode_dtype_row_bytes(t, s->n_in) * s->n_out;
    if (!wbytes) return; /* n_in not a multiple of the block (K types at 576) */
    int copies = (int)((COLD_BYTES + wbytes - 1) / wbytes);
    if (copies < 2) copies = 2;
    uint8_t *W = lode_aligned_alloc(64, wbytes * (size_t)copies);
    float *row = lode_malloc(s->n_in * sizeof(float));
    float *x = lode_malloc(s->n_in * sizeof(float)), *y = lode_malloc(s->n_out * sizeof(float));
    size_t wsz = krn_matmul_wsize(t, 1, s->n_in);
    void *ws = lode_aligned_alloc(64, wsz + 64);
    if (!W || !row || !x || !y || !ws) goto out;
    uint64_t seed = 42;
    size_t rb = lode_dtype_row_bytes(t, s->n_in);
    for (size_t o = 0; o < s->n_out; o++) {
        fill_random(row, s->n_in, &seed);
        krn_quantize_row(t, row, W + o * rb, s->n_in);
    }
    for (int c = 1; c < copies; c++) memcpy(W + (size_t)c * wbytes, W, wbytes);
    fill_random(x, s->n_in, &seed);
    fprintf(out, "| %s | %s |", lode_dtype_name(t), s->what);
    for (int p = 0; p < 2; p++) {
        double cold = time_matvec(pools[p], t, W, wbytes, copies, s->n_out, s->n_in, x, y, ws, wsz);
        double hot = time_matvec(pools[p], t, W, wbytes, 1, s->n_out, s->n_in, x, y, ws, wsz);
        fprintf(out, " %.1f | %.1f | %.1f |", (double)wbytes / cold / 1e9,
                (double)wbytes / hot / 1e9, cold * 1e6);
    }
    fprintf(out, "\n");
    fflush(out);
out:
    lode_aligned_free(W);
    lode_free(row);
    lode_free(x);
    lode_free(y);
    lode_aligned_free(ws);
}

static void bench_prefill(lode_pool *pools[2], lode_dtype t, const shape *s, FILE *out)
{
    const size_t n_tok = 512;
    size_t rb = lode_dtype_row_bytes(t, s->n_in);
    if (!rb) return;
    uint8_t *W = lode_aligned_alloc(64, rb * s->n_out);
    float *X = lode_malloc(n_tok * s->n_in * sizeof(float));
    float *Y = lode_malloc(n_tok * s->n_out * sizeof(float));
    size_t wsz = krn_matmul_wsize(t, n_tok, s->n_in);
    void *ws = lode_aligned_alloc(64, wsz + 64);
    float *row = lode_malloc(s->n_in * sizeof(float));
    if (!W || !X || !Y || !ws || !row) goto out;
    uint64_t seed = 7;
    for (size_t o = 0; o < s->n_out; o++) {
        fill_random(row, s->n_in, &seed);
        krn_quantize_row(t, row, W + o * rb, s->n_in);
    }
    fill_random(X, n_tok * s->n_in, &seed);
    fprintf(out, "| %s | %s |", lode_dtype_name(t), s->what);
    for (int p = 0; p < 2; p++) {
        int reps = 0;
        double t0 = now();
        do {
            krn_matmul(pools[p], t, W, s->n_out, s->n_in, X, s->n_in, n_tok, Y, s->n_out, ws, wsz);
            reps++;
        } while (now() - t0 < (quick ? 0.1 : 0.5));
        double sec = (now() - t0) / reps;
        fprintf(out, " %.1f |",
                2.0 * (double)n_tok * (double)s->n_in * (double)s->n_out / sec / 1e9);
    }
    fprintf(out, "\n");
    fflush(out);
out:
    lode_aligned_free(W);
    lode_free(X);
    lode_free(Y);
    lode_aligned_free(ws);
    lode_free(row);
}

static void nop_task(void *ctx, size_t task, int thread)
{
    (void)ctx;
    (void)task;
    (void)thread;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--quick")) quick = 1;
    lode_pool *pools[2] = {NULL, NULL};
    if (lode_pool_create(1, &pools[0]) != LODE_OK || lode_pool_create(2, &pools[1]) != LODE_OK) {
        fprintf(stderr, "bench_kernels: cannot create thread pools\n");
        return 1;
    }
    FILE *out = stdout;
    double r1, c1, r2, c2;
    mem_bandwidth(pools[0], &r1, &c1);
    mem_bandwidth(pools[1], &r2, &c2);
    fprintf(out,
            "Kernel variant: %s. Memory bandwidth measured in this run: read %.1f GB/s "
            "(1 thread), %.1f GB/s (2 threads); memcpy (read+write) %.1f / %.1f GB/s.\n\n",
            krn_isa_name(krn_isa_active()), r1, r2, c1, c2);

    int n_regions = 200000;
    double t0 = now();
    for (int i = 0; i < n_regions; i++) lode_parallel_for(pools[1], 2, nop_task, NULL);
    fprintf(out, "Empty parallel region on 2 threads: %.2f us.\n\n",
            (now() - t0) / n_regions * 1e6);

    fprintf(out, "Matvec (decode, n_tok = 1), weight GB/s; cold = matrices cycled beyond the "
                 "L3, hot = one matrix repeated; us = cold time per call.\n\n");
    fprintf(out, "| type | shape (n_in->n_out) | 1 thr cold GB/s | 1 thr hot GB/s | 1 thr us "
                 "| 2 thr cold GB/s | 2 thr hot GB/s | 2 thr us |\n");
    fprintf(out, "|---|---|---|---|---|---|---|---|\n");
    for (size_t k = 0; k < LODE_ARRAY_LEN(types); k++)
        for (size_t s = 0; s < LODE_ARRAY_LEN(shapes); s++) {
            if (quick && s == 4 && types[k] != LODE_Q4_1) continue;
            bench_type_shape(pools, types[k], &shapes[s], out);
        }

    fprintf(out, "\nPrefill matmul, n_tok = 512, GFLOP/s (including quantizing the "
                 "activations).\n\n| type | shape | 1 thread | 2 threads |\n|---|---|---|---|\n");
    static const lode_dtype pf_types[] = {LODE_Q4_1, LODE_Q8_0, LODE_Q4_0,
                                          LODE_Q4_K, LODE_Q6_K, LODE_F16};
    for (size_t k = 0; k < LODE_ARRAY_LEN(pf_types); k++) {
        bench_prefill(pools, pf_types[k], &shapes[1], out);
        bench_prefill(pools, pf_types[k], &shapes[2], out);
    }
    lode_pool_destroy(pools[0]);
    lode_pool_destroy(pools[1]);
    return 0;
}
