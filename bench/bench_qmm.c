/*
 * bench_qmm.c: the quantized matrix product for m = 1 .. a few hundred tokens on the GPU, each
 * way lode can do it, on the matrices of a model shape (random weights):
 *   qmm     kernels/cuda/qmm.cu, weights decoded on the fly (X to int8 per 32 first)
 *   deq     dequantized to bf16 into a scratch buffer, then cuBLAS (the path past
 *           krn_cuda_qmm_limit)
 *   gemv    the decode GEMV, batched (m <= KRN_CUDA_MAX_BATCH), f32 x
 * Each time is the median of 5 runs of 20 back-to-back calls between CUDA events, after a
 * warm-up; beside it the weight bytes over that time and their fraction of the card's device
 * copy bandwidth, measured first in the same run.
 *
 *   bench_qmm [--shape llama3-8b|llama3.2-1b|smollm2-135m] [--type q4_0|q4_1|q8_0|q4_K|q6_K]
 *             [--m 1,8,16,...] [--matrix qkv|o|gate+up|down|head]
 * Prints a Markdown table and a `RESULT` line per matrix and m.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/lode.h"
#include "kernels/quant.h"
#if LODE_CUDA
#include "kernels/cuda/cuda_kernels.h"

#define REPS  20
#define RUNS  5
#define MAX_M 16

typedef struct shape {
    const char *name;
    int64_t dim, ff, q_rows, kv_rows, vocab;
} shape;

static const shape shapes[] = {
    {"llama3-8b", 4096, 14336, 4096, 1024, 128256},
    {"llama3.2-1b", 2048, 8192, 2048, 512, 128256},
    {"smollm2-135m", 576, 1536, 576, 192, 49152},
};

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        lode_status st_ = (call);                                                                  \
        if (st_) {                                                                                 \
            fprintf(stderr, "bench_qmm: %s: %s\n", #call, krn_cuda_errmsg());                      \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

enum { P_QMM, P_DEQ, P_GEMV };

typedef struct ctx {
    krn_cuda_blas *blas;
    void *stream, *ev0, *ev1;
    void *x16, *scratch;
    float *x32, *y;
    size_t scratch_bytes;
} ctx;

static void call(ctx *c, int path, const krn_cuda_mat *w, int m)
{
    if (path == P_QMM) {
        CK(krn_cuda_qmm(w, c->x16, 0, m, c->y, LODE_F32, w->rows, 0, c->scratch, c->scratch_bytes,
                        c->stream));
    } else if (path == P_DEQ) {
        CK(krn_cuda_gemm(c->blas, w, c->x16, 0, m, c->y, w->rows, 0, c->scratch, c->stream));
    } else {
        krn_cuda_gemv_args a;
        memset(&a, 0, sizeof a);
        a.w = w;
        a.batch = m;
        a.xmode = KRN_X_PLAIN;
        a.x = c->x32;
        a.ldx = w->cols;
        a.ymode = KRN_Y_STORE;
        a.y = c->y;
        a.ldy = w->rows;
        CK(krn_cuda_gemv(&a, c->stream));
    }
}

/* Median microseconds a call. */
static double time_path(ctx *c, int path, const krn_cuda_mat *w, int m)
{
    const int lim = krn_cuda_qmm_limit(path == P_DEQ ? 0 : -1);
    for (int i = 0; i < 3; i++) call(c, path, w, m);
    float t[RUNS];
    for (int r = 0; r < RUNS; r++) {
        CK(krn_cuda_event_record(c->ev0, c->stream));
        for (int i = 0; i < REPS; i++) call(c, path, w, m);
        CK(krn_cuda_event_record(c->ev1, c->stream));
        CK(krn_cuda_stream_sync(c->stream));
        CK(krn_cuda_event_ms(c->ev0, c->ev1, &t[r]));
    }
    if (path == P_DEQ) krn_cuda_qmm_limit(lim);
    qsort(t, RUNS, sizeof t[0], cmp_f);
    return t[RUNS / 2] * 1000.0 / REPS;
}

int main(int argc, char **argv)
{
    const char *sname = "llama3-8b", *tname = "q4_0", *mlist = "1,2,4,8,16,32,64,128,256";
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--shape") && i + 1 < argc)
            sname = argv[++i];
        else if (!strcmp(argv[i], "--type") && i + 1 < argc)
            tname = argv[++i];
        else if (!strcmp(argv[i], "--m") && i + 1 < argc)
            mlist = argv[++i];
        else if (!strcmp(argv[i], "--matrix") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_qmm [--shape llama3-8b|llama3.2-1b|smollm2-135m] "
                            "[--type q4_0|q4_1|q8_0|q4_K|q6_K] [--m 1,8,16,...] "
                            "[--matrix qkv|o|gate+up|down|head]\n");
            return 2;
        }
    }
    const shape *sh = NULL;
    for (size_t i = 0; i < LODE_ARRAY_LEN(shapes); i++)
        if (!strcmp(shapes[i].name, sname)) sh = &shapes[i];
    int dtype = -1;
    static const struct {
        const char *n;
        int t;
    } types[] = {{"q4_0", LODE_Q4_0},
                 {"q4_1", LODE_Q4_1},
                 {"q8_0", LODE_Q8_0},
                 {"q4_K", LODE_Q4_K},
                 {"q6_K", LODE_Q6_K}};
    for (size_t i = 0; i < LODE_ARRAY_LEN(types); i++)
        if (!strcmp(types[i].n, tname)) dtype = types[i].t;
    if (!sh || dtype < 0) {
        fprintf(stderr, "bench_qmm: unknown shape or type\n");
        return 2;
    }
    int ms[32], nm = 0, mmax = 1;
    for (const char *p = mlist; *p && nm < 32;) {
        ms[nm] = atoi(p);
        if (ms[nm] < 1) return 2;
        mmax = ms[nm] > mmax ? ms[nm] : mmax;
        nm++;
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    if (krn_cuda_device_count() < 1) {
        printf("bench_qmm: no CUDA device, nothing measured\n");
        return 0;
    }
    krn_cuda_devinfo di;
    CK(krn_cuda_device_info(0, &di));
    ctx c;
    memset(&c, 0, sizeof c);
    CK(krn_cuda_stream_create(&c.stream));
    CK(krn_cuda_blas_create(&c.blas, c.stream));
    CK(krn_cuda_event_create(&c.ev0));
    CK(krn_cuda_event_create(&c.ev1));

    /* device copy bandwidth: 1 GiB each way, median of 5 */
    const size_t cb = (size_t)1 << 30;
    void *ca, *cbuf;
    CK(krn_cuda_malloc(&ca, cb));
    CK(krn_cuda_malloc(&cbuf, cb));
    CK(krn_cuda_memset(ca, 1, cb, c.stream));
    float ct[RUNS];
    for (int r = 0; r < RUNS; r++) {
        CK(krn_cuda_event_record(c.ev0, c.stream));
        CK(krn_cuda_d2d(cbuf, ca, cb, c.stream));
        CK(krn_cuda_event_record(c.ev1, c.stream));
        CK(krn_cuda_stream_sync(c.stream));
        CK(krn_cuda_event_ms(c.ev0, c.ev1, &ct[r]));
    }
    qsort(ct, RUNS, sizeof ct[0], cmp_f);
    const double copy_gbs = 2.0 * cb / (ct[RUNS / 2] * 1e-3) / 1e9;
    krn_cuda_free(ca);
    krn_cuda_free(cbuf);

    struct {
        const char *n;
        int64_t rows, cols;
    } mats[] = {{"qkv", sh->q_rows + 2 * sh->kv_rows, sh->dim},
                {"o", sh->dim, sh->q_rows},
                {"gate+up", 2 * sh->ff, sh->dim},
                {"down", sh->dim, sh->ff},
                {"head", sh->vocab, sh->dim}};
    int64_t maxr = 0, maxc = 0;
    size_t maxs = 0;
    for (size_t i = 0; i < LODE_ARRAY_LEN(mats); i++) {
        maxr = mats[i].rows > maxr ? mats[i].rows : maxr;
        maxc = mats[i].cols > maxc ? mats[i].cols : maxc;
        const size_t s = (size_t)mats[i].rows * mats[i].cols * 2;
        maxs = s > maxs ? s : maxs;
    }
    c.scratch_bytes = maxs;
    CK(krn_cuda_malloc(&c.scratch, maxs));
    CK(krn_cuda_malloc(&c.x16, (size_t)mmax * maxc * 2));
    CK(krn_cuda_malloc((void **)&c.x32, (size_t)MAX_M * maxc * 4));
    CK(krn_cuda_malloc((void **)&c.y, (size_t)mmax * maxr * 4));
    CK(krn_cuda_memset(c.x16, 0x3c, (size_t)mmax * maxc * 2, c.stream)); /* bf16 0.0115 */
    CK(krn_cuda_memset(c.x32, 0x3c, (size_t)MAX_M * maxc * 4, c.stream));

    printf("bench_qmm: %s %s on %s (%d SMs), device copy %.0f GB/s\n\n", sh->name, tname, di.name,
           di.sm_count, copy_gbs);
    printf("| matrix | rows x cols | MB | m | qmm us | qmm %% of copy | deq+cuBLAS us | gemv us | "
           "best |\n|---|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < LODE_ARRAY_LEN(mats); i++) {
        if (only && strcmp(only, mats[i].n)) continue;
        krn_cuda_mat w;
        CK(krn_cuda_mat_alloc(&w, dtype, mats[i].rows, mats[i].cols));
        CK(krn_cuda_mat_random(&w, 7 + i, 0.02f, c.stream));
        const double mb = (double)krn_cuda_mat_bytes(&w) / 1e6;
        const double floor_us = mb * 1e3 / copy_gbs; /* MB / (GB/s) in us */
        for (int k = 0; k < nm; k++) {
            const int m = ms[k];
            double tq = -1, td = -1, tg = -1;
            if (krn_cuda_qmm_fits(&w, 0, m, c.scratch_bytes)) tq = time_path(&c, P_QMM, &w, m);
            td = time_path(&c, P_DEQ, &w, m);
            if (m <= MAX_M) tg = time_path(&c, P_GEMV, &w, m);
            const char *best = "qmm";
            double bt = tq < 0 ? 1e30 : tq;
            if (td < bt) best = "deq", bt = td;
            if (tg >= 0 && tg < bt) best = "gemv", bt = tg;
            char gs[32] = "-";
            if (tg >= 0) snprintf(gs, sizeof gs, "%.1f", tg);
            printf("| %s | %lld x %lld | %.1f | %d | %.1f | %.1f%% | %.1f | %s | %s |\n", mats[i].n,
                   (long long)mats[i].rows, (long long)mats[i].cols, mb, m, tq,
                   tq > 0 ? 100.0 * floor_us / tq : 0.0, td, gs, best);
            printf("RESULT qmm %s %s %s m %d qmm_us %.2f deq_us %.2f gemv_us %.2f floor_us %.2f\n",
                   sh->name, tname, mats[i].n, m, tq, td, tg, floor_us);
            fflush(stdout);
        }
        krn_cuda_mat_free(&w);
    }
    krn_cuda_free(c.scratch);
    krn_cuda_free(c.x16);
    krn_cuda_free(c.x32);
    krn_cuda_free(c.y);
    krn_cuda_blas_destroy(c.blas);
    krn_cuda_event_destroy(c.ev0);
    krn_cuda_event_destroy(c.ev1);
    krn_cuda_stream_destroy(c.stream);
    return 0;
}
#else
int main(void)
{
    printf("bench_qmm: built without CUDA (make CUDA=1), nothing measured\n");
    return 0;
}
#endif
