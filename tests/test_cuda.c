/* test_cuda.c: every CUDA kernel against a reference computed on the CPU in double precision
 * from the same inputs (fresh random inputs each run, outputs poisoned with NaN first, a
 * relative L2 error bound stated per type), and the whole CUDA decoder (prefill and graph
 * decode) against a CPU forward pass of the same random model. Skips, saying why, when the
 * build has no CUDA or the machine no GPU.
 * lode-test: engine */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/lode.h"
#include "engine/backend_cuda.h"
#include "kernels/quant.h"

#if LODE_CUDA
#include "kernels/cuda/cuda_kernels.h"

static uint64_t rng_state;

static uint64_t rnd64(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float frand(void) /* [-1, 1) */
{
    return (float)((double)(rnd64() >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}
static void fill(float *p, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) p[i] = scale * frand();
}

static double rel_l2(const float *got, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i])) return INFINITY;
        double d = got[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        lode_status st_ = (call);                                                                  \
        if (st_) printf("%s: %s\n", #call, krn_cuda_errmsg());                                     \
        assert_int_equal(st_, LODE_OK);                                                            \
    } while (0)

static void *dev_put(const void *h, size_t n)
{
    void *d = NULL;
    CK(krn_cuda_malloc(&d, n));
    if (h) CK(krn_cuda_h2d(d, h, n, NULL));
    return d;
}
static void *dev_poison(size_t n)
{
    void *d = dev_put(NULL, n);
    CK(krn_cuda_memset(d, 0xff, n, NULL)); /* NaN in f32 / f16 / bf16 */
    return d;
}
static void get(void *h, const void *d, size_t n)
{
    CK(krn_cuda_d2h(h, d, n, NULL));
    CK(krn_cuda_stream_sync(NULL));
}

static int setup(void **state)
{
    /* fresh inputs each run; LODE_TEST_SEED=n repeats a run's inputs */
    const char *e = getenv("LODE_TEST_SEED");
    rng_state = e && *e ? strtoull(e, NULL, 10) : (uint64_t)lode_now_ns();
    printf("test_cuda: LODE_TEST_SEED=%llu\n", (unsigned long long)rng_state);
    return 0;
}

static int gpu_ok(void)
{
    if (krn_cuda_device_count() > 0) return 1;
    printf("no CUDA GPU on this machine: CUDA tests skipped\n");
    return 0;
}

/* ---- GGML blocks: random generation and reference dequantization ---------------------- */

/* scales of random quantized blocks are multiplied by this (the model test keeps its
 * weights small, as trained models have them) */
static float qscale = 1.f;

static lode_half rhalf(float lo, float hi)
{
    return lode_float_to_half(qscale * (lo + (hi - lo) * (0.5f + 0.5f * frand())));
}

static void rand_bytes(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)rnd64();
}

/* Random GGML data of rows x cols (scales of typical magnitude) */
static void *ggml_random(int t, int64_t rows, int64_t cols, size_t *bytes)
{
    size_t nb = (size_t)rows * lode_dtype_row_bytes(t, (size_t)cols);
    uint8_t *p = malloc(nb);
    size_t n = (size_t)rows * cols;
    switch (t) {
    case LODE_F32:
        for (size_t i = 0; i < n; i++) ((float *)p)[i] = frand();
        break;
    case LODE_F16:
        for (size_t i = 0; i < n; i++) ((lode_half *)p)[i] = lode_float_to_half(frand());
        break;
    case LODE_BF16:
        for (size_t i = 0; i < n; i++) ((lode_bf16 *)p)[i] = lode_float_to_bf16(frand());
        break;
    case LODE_Q4_0:
        for (block_q4_0 *b = (block_q4_0 *)p; (uint8_t *)b < p + nb; b++) {
            b->d = rhalf(0.01f, 0.05f);
            rand_bytes(b->qs, sizeof b->qs);
        }
        break;
    case LODE_Q4_1:
        for (block_q4_1 *b = (block_q4_1 *)p; (uint8_t *)b < p + nb; b++) {
            b->d = rhalf(0.01f, 0.05f);
            b->m = rhalf(-0.3f, 0.1f);
            rand_bytes(b->qs, sizeof b->qs);
        }
        break;
    case LODE_Q8_0:
        for (block_q8_0 *b = (block_q8_0 *)p; (uint8_t *)b < p + nb; b++) {
            b->d = rhalf(0.001f, 0.005f);
            rand_bytes((uint8_t *)b->qs, sizeof b->qs);
        }
        break;
    case LODE_Q4_K:
        for (block_q4_K *b = (block_q4_K *)p; (uint8_t *)b < p + nb; b++) {
            b->d = rhalf(0.0005f, 0.002f);
            b->dmin = rhalf(0.0005f, 0.002f);
            rand_bytes(b->scales, sizeof b->scales);
            rand_bytes(b->qs, sizeof b->qs);
        }
        break;
    case LODE_Q6_K:
        for (block_q6_K *b = (block_q6_K *)p; (uint8_t *)b < p + nb; b++) {
            rand_bytes(b->ql, sizeof b->ql);
            rand_bytes(b->qh, sizeof b->qh);
            for (int i = 0; i < 16; i++) b->scales[i] = (int8_t)(rnd64() % 120) - 60;
            b->d = rhalf(0.0002f, 0.001f);
        }
        break;
    }
    *bytes = nb;
    return p;
}

static void q4k_sm(int j, const uint8_t *q, int *sc, int *mn)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Reference dequantization of GGML data to double (GGML's definitions). */
static void ggml_deq(int t, const void *src, size_t n, double *out)
{
    const uint8_t *p = src;
    switch (t) {
    case LODE_F32:
        for (size_t i = 0; i < n; i++) out[i] = ((const float *)p)[i];
        return;
    case LODE_F16:
        for (size_t i = 0; i < n; i++) out[i] = lode_half_to_float(((const lode_half *)p)[i]);
        return;
    case LODE_BF16:
        for (size_t i = 0; i < n; i++) out[i] = lode_bf16_to_float(((const lode_bf16 *)p)[i]);
        return;
    case LODE_Q4_0:
        for (size_t b = 0; b < n / 32; b++) {
            const block_q4_0 *x = (const block_q4_0 *)p + b;
            double d = lode_half_to_float(x->d);
            for (int j = 0; j < 16; j++) {
                out[32 * b + j] = ((x->qs[j] & 15) - 8) * d;
                out[32 * b + j + 16] = ((x->qs[j] >> 4) - 8) * d;
            }
        }
        return;
    case LODE_Q4_1:
        for (size_t b = 0; b < n / 32; b++) {
            const block_q4_1 *x = (const block_q4_1 *)p + b;
            double d = lode_half_to_float(x->d), m = lode_half_to_float(x->m);
            for (int j = 0; j < 16; j++) {
                out[32 * b + j] = (x->qs[j] & 15) * d + m;
                out[32 * b + j + 16] = (x->qs[j] >> 4) * d + m;
            }
        }
        return;
    case LODE_Q8_0:
        for (size_t b = 0; b < n / 32; b++) {
            const block_q8_0 *x = (const block_q8_0 *)p + b;
            double d = lode_half_to_float(x->d);
            for (int j = 0; j < 32; j++) out[32 * b + j] = x->qs[j] * d;
        }
        return;
    case LODE_Q4_K:
        for (size_t b = 0; b < n / 256; b++) {
            const block_q4_K *x = (const block_q4_K *)p + b;
            double d = lode_half_to_float(x->d), dm = lode_half_to_float(x->dmin);
            double *y = out + 256 * b;
            for (int c = 0; c < 4; c++) {
                int sc, mn;
                q4k_sm(2 * c, x->scales, &sc, &mn);
                double d1 = d * sc, m1 = dm * mn;
                q4k_sm(2 * c + 1, x->scales, &sc, &mn);
                double d2 = d * sc, m2 = dm * mn;
                for (int l = 0; l < 32; l++) {
                    y[64 * c + l] = d1 * (x->qs[32 * c + l] & 15) - m1;
                    y[64 * c + 32 + l] = d2 * (x->qs[32 * c + l] >> 4) - m2;
                }
            }
        }
        return;
    case LODE_Q6_K:
        for (size_t b = 0; b < n / 256; b++) {
            const block_q6_K *x = (const block_q6_K *)p + b;
            double d = lode_half_to_float(x->d);
            double *y = out + 256 * b;
            const uint8_t *ql = x->ql, *qh = x->qh;
            const int8_t *sc = x->scales;
            for (int h = 0; h < 2; h++) {
                for (int l = 0; l < 32; l++) {
                    int is = l / 16;
                    int q1 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d * sc[is] * q1;
                    y[l + 32] = d * sc[is + 2] * q2;
                    y[l + 64] = d * sc[is + 4] * q3;
                    y[l + 96] = d * sc[is + 6] * q4;
                }
                y += 128;
                ql += 64;
                qh += 32;
                sc += 8;
            }
        }
        return;
    }
}

/* Bound on the relative L2 error of the decode GEMV with weights of type t: float weights
 * are f32 arithmetic; quantized weights meet activations quantized to int8 per 32 elements
 * (integer dot products, as GGML's q8 dot products), about 0.5% relative error. Layouts with
 * an offset per 32 (Q4_1, Q4_K) multiply it by the sum of x's quantized unit, an error shared
 * by the unit's 32 terms: up to 1.6% was seen (attention + o, one token, Q4_K). */
static double gemv_bound(int t)
{
    if (t == LODE_F32 || t == LODE_F16 || t == LODE_BF16) return 1e-4;
    return t == LODE_Q4_1 || t == LODE_Q4_K ? 2.5e-2 : 1.5e-2;
}

static const int all_types[] = {LODE_F32,  LODE_F16,  LODE_BF16, LODE_Q4_0,
                                LODE_Q4_1, LODE_Q8_0, LODE_Q4_K, LODE_Q6_K};

/* Uploads random GGML data as a krn_cuda_mat; *ref gets the dequantized weights. */
static void make_mat(krn_cuda_mat *m, int t, int64_t rows, int64_t cols, double **ref)
{
    size_t nb;
    void *h = ggml_random(t, rows, cols, &nb);
    *ref = malloc(sizeof(double) * rows * cols);
    ggml_deq(t, h, (size_t)rows * cols, *ref);
    CK(krn_cuda_mat_alloc(m, t, rows, cols));
    void *tmp = dev_put(NULL, nb);
    /* in two pieces, to exercise row offsets */
    int64_t half = rows / 2;
    size_t b1 = krn_cuda_ggml_bytes(t, half, cols);
    CK(krn_cuda_mat_upload(m, 0, half, h, tmp, NULL));
    CK(krn_cuda_stream_sync(NULL));
    CK(krn_cuda_mat_upload(m, half, rows - half, (uint8_t *)h + b1, tmp, NULL));
    CK(krn_cuda_stream_sync(NULL));
    krn_cuda_free(tmp);
    free(h);
}

static void test_gemv_types(void **state)
{
    if (!gpu_ok()) skip();
    const int64_t rows = 300, cols = 2048;
    const int batches[] = {1, 3, 16};
    for (size_t ti = 0; ti < LODE_ARRAY_LEN(all_types); ti++) {
        int t = all_types[ti];
        krn_cuda_mat m;
        double *w;
        make_mat(&m, t, rows, cols, &w);
        for (size_t bi = 0; bi < LODE_ARRAY_LEN(batches); bi++) {
            int B = batches[bi];
            float *x = malloc(sizeof(float) * B * cols), *y = malloc(sizeof(float) * B * rows);
            double *ref = malloc(sizeof(double) * B * rows);
            fill(x, (size_t)B * cols, 1.f);
            for (int b = 0; b < B; b++)
                for (int64_t r = 0; r < rows; r++) {
                    double s = 0;
                    for (int64_t k = 0; k < cols; k++) s += w[r * cols + k] * x[b * cols + k];
                    ref[b * rows + r] = s;
                }
            float *dx = dev_put(x, sizeof(float) * B * cols),
                  *dy = dev_poison(sizeof(float) * B * rows);
            krn_cuda_gemv_args a = {0};
            a.w = &m;
            a.batch = B;
            a.x = dx;
            a.ldx = cols;
            a.y = dy;
            a.ldy = rows;
            CK(krn_cuda_gemv(&a, NULL));
            get(y, dy, sizeof(float) * B * rows);
            double e = rel_l2(y, ref, (size_t)B * rows);
            printf("gemv %-5s batch %2d: rel L2 %.2e (bound %.0e)\n", lode_dtype_name(t), B, e,
                   gemv_bound(t));
            assert_true(e < gemv_bound(t));
            krn_cuda_free(dx);
            krn_cuda_free(dy);
            free(x);
            free(y);
            free(ref);
        }
        /* dequantization to bf16 (what the prefill GEMM reads) */
        uint16_t *dq = malloc(2 * rows * cols);
        void *ddq = dev_poison(2 * rows * cols);
        CK(krn_cuda_mat_dequant(&m, 0, rows, ddq, 0, NULL));
        get(dq, ddq, 2 * rows * cols);
        float *dqf = malloc(sizeof(float) * rows * cols);
        for (int64_t i = 0; i < rows * cols; i++) dqf[i] = lode_bf16_to_float(dq[i]);
        double e = rel_l2(dqf, w, (size_t)(rows * cols));
        printf("dequant %-5s -> bf16: rel L2 %.2e (bound 5e-3)\n", lode_dtype_name(t), e);
        assert_true(e < 5e-3);
        krn_cuda_free(ddq);
        free(dq);
        free(dqf);
        krn_cuda_mat_free(&m);
        free(w);
    }
}

static double silu_d(double g)
{
    return g / (1 + exp(-g));
}

static void gemv_fused(int wt, int B, int64_t rows, int64_t cols)
{
    krn_cuda_mat m;
    double *w;
    make_mat(&m, wt, rows, cols, &w);
    float *x = malloc(sizeof(float) * B * 2 * cols), *nw = malloc(sizeof(float) * cols);
    float *y0 = malloc(sizeof(float) * B * rows), *y = malloc(sizeof(float) * B * rows);
    double *ref = malloc(sizeof(double) * B * rows), *xin = malloc(sizeof(double) * cols);
    fill(x, (size_t)B * 2 * cols, 2.f);
    fill(nw, cols, 1.f);
    fill(y0, (size_t)B * rows, 1.f);
    float *dx = dev_put(x, sizeof(float) * B * 2 * cols), *dnw = dev_put(nw, sizeof(float) * cols);
    /* 0: RMSNORM + ADD, 1: SWIGLU + STORE, 2: RMSNORM + SWIGLU output (W's rows are
     * [gate | up]; y has rows / 2 values a batch row, poisoned past them to catch a stray
     * write) */
    for (int mode = 0; mode < 3; mode++) {
        const int64_t ny = mode == 2 ? rows / 2 : rows;
        for (int b = 0; b < B; b++) {
            const float *xr = x + (size_t)b * 2 * cols;
            double ss = 0;
            for (int64_t k = 0; k < cols; k++) ss += (double)xr[k] * xr[k];
            double inv = 1 / sqrt(ss / cols + 1e-5);
            for (int64_t k = 0; k < cols; k++)
                xin[k] = mode != 1 ? xr[k] * inv * nw[k] : silu_d(xr[k]) * xr[cols + k];
            for (int64_t r = 0; r < rows; r++) {
                double s = 0;
                for (int64_t k = 0; k < cols; k++) s += w[r * cols + k] * xin[k];
                ref[b * rows + r] = s + (mode == 0 ? y0[b * rows + r] : 0);
            }
            if (mode == 2) /* h_i = silu(gate_i) up_i, at b * ny + i (ref is written in order) */
                for (int64_t i = 0; i < ny; i++)
                    ref[b * ny + i] = silu_d(ref[b * rows + i]) * ref[b * rows + ny + i];
        }
        float *dy = mode == 0 ? dev_put(y0, sizeof(float) * B * rows)
                              : dev_poison(sizeof(float) * B * rows);
        krn_cuda_gemv_args a = {0};
        a.w = &m;
        a.batch = B;
        a.x = dx;
        a.ldx = 2 * cols;
        a.xmode = mode == 1 ? KRN_X_SWIGLU : KRN_X_RMSNORM;
        a.norm_w = dnw;
        a.eps = 1e-5f;
        a.ymode = mode == 0 ? KRN_Y_ADD : mode == 1 ? KRN_Y_STORE : KRN_Y_SWIGLU;
        a.y = dy;
        a.ldy = ny;
        if (mode == 1) {
            /* SWIGLU reads [gate | up] rows of 2*cols: W has cols inputs */
            a.ldx = 2 * cols;
        }
        CK(krn_cuda_gemv(&a, NULL));
        get(y, dy, sizeof(float) * B * rows);
        double e = rel_l2(y, ref, (size_t)B * ny);
        /* the SWIGLU output multiplies two sums: their errors add */
        const double bound = (mode == 2 ? 2 : 1) * gemv_bound(wt);
        printf("gemv %s %s batch %d, %lld x %lld: rel L2 %.2e (bound %.1e)\n", lode_dtype_name(wt),
               mode == 0   ? "rmsnorm+add"
               : mode == 1 ? "swiglu"
                           : "rmsnorm+swiglu-out",
               B, (long long)rows, (long long)cols, e, bound);
        assert_true(e < bound);
        if (mode == 2) /* nothing written past the B * rows / 2 outputs */
            for (size_t i = (size_t)B * ny; i < (size_t)B * rows; i++) assert_true(isnan(y[i]));
        krn_cuda_free(dy);
    }
    krn_cuda_free(dx);
    krn_cuda_free(dnw);
    krn_cuda_mat_free(&m);
    free(w);
    free(x);
    free(nw);
    free(y0);
    free(y);
    free(ref);
    free(xin);
}

/* A head of short rows (smollm2-135m: 49152 x 576), at most 32 units a row: batch 1 takes
 * eight rows a warp there. RMS-normalized input, stored output, rows not a whole number of
 * row groups; every type at its shortest whole-block row. */
static void test_gemv_short(void **state)
{
    if (!gpu_ok()) skip();
    const int64_t rows = 9001;
    for (size_t ti = 0; ti < LODE_ARRAY_LEN(all_types); ti++) {
        const int t = all_types[ti];
        const int64_t cols = t == LODE_F32                      ? 128
                             : t == LODE_F16 || t == LODE_BF16  ? 256
                             : t == LODE_Q4_K || t == LODE_Q6_K ? 512
                                                                : 576;
        krn_cuda_mat m;
        double *w;
        make_mat(&m, t, rows, cols, &w);
        float *x = malloc(sizeof(float) * cols), *nw = malloc(sizeof(float) * cols);
        float *y = malloc(sizeof(float) * rows);
        double *ref = malloc(sizeof(double) * rows), *xin = malloc(sizeof(double) * cols);
        fill(x, cols, 2.f);
        fill(nw, cols, 1.f);
        double ss = 0;
        for (int64_t k = 0; k < cols; k++) ss += (double)x[k] * x[k];
        const double inv = 1 / sqrt(ss / cols + 1e-5);
        for (int64_t k = 0; k < cols; k++) xin[k] = x[k] * inv * nw[k];
        for (int64_t r = 0; r < rows; r++) {
            double acc = 0;
            for (int64_t k = 0; k < cols; k++) acc += w[r * cols + k] * xin[k];
            ref[r] = acc;
        }
        float *dx = dev_put(x, sizeof(float) * cols), *dnw = dev_put(nw, sizeof(float) * cols);
        float *dy = dev_poison(sizeof(float) * rows);
        krn_cuda_gemv_args a = {0};
        a.w = &m;
        a.batch = 1;
        a.x = dx;
        a.ldx = cols;
        a.xmode = KRN_X_RMSNORM;
        a.norm_w = dnw;
        a.eps = 1e-5f;
        a.ymode = KRN_Y_STORE;
        a.y = dy;
        a.ldy = rows;
        CK(krn_cuda_gemv(&a, NULL));
        get(y, dy, sizeof(float) * rows);
        const double e = rel_l2(y, ref, (size_t)rows);
        printf("gemv %-5s short rows, %lld x %lld: rel L2 %.2e (bound %.0e)\n", lode_dtype_name(t),
               (long long)rows, (long long)cols, e, gemv_bound(t));
        assert_true(e < gemv_bound(t));
        krn_cuda_free(dx);
        krn_cuda_free(dnw);
        krn_cuda_free(dy);
        krn_cuda_mat_free(&m);
        free(w);
        free(x);
        free(nw);
        free(y);
        free(ref);
        free(xin);
    }
}

static void test_gemv_fused(void **state)
{
    if (!gpu_ok()) skip();
    /* batch 1 takes the folded RMS statistic (applied after the sums), batch 5 the pre-pass */
    const int types[] = {LODE_F16, LODE_BF16, LODE_Q4_0, LODE_Q4_1, LODE_Q6_K};
    for (size_t i = 0; i < LODE_ARRAY_LEN(types); i++) {
        gemv_fused(types[i], 1, 256, 1024);
        gemv_fused(types[i], 5, 256, 1024);
    }
    /* batch 1, shapes that take the other launch paths: many row groups a block (one wave of
     * blocks, each staging x once); llama3-8b's down projection, whose K range is split over
     * blocks by load rounds (4 x 112 units on 132 SMs), the last round of a row partial */
    gemv_fused(LODE_Q4_0, 1, 16384, 1024);
    gemv_fused(LODE_BF16, 1, 16384, 1024);
    gemv_fused(LODE_Q4_0, 1, 4096, 14336);
    gemv_fused(LODE_BF16, 1, 256, 14336);
}

/* ---- attention -------------------------------------------------------------------------- */

typedef struct kvfix {
    int H, KV, hd, nseq, maxb, nblocks;
    int32_t *bt;   /* host [nseq][maxb], a shuffled assignment of blocks */
    float *k, *v;  /* host logical [nseq][maxb*16][KV][hd] (f16-rounded) */
    void *dk, *dv; /* device paged caches */
    int32_t *dbt;
} kvfix;

static float f16r(float x)
{
    return lode_half_to_float(lode_float_to_half(x));
}

static void kv_make(kvfix *f, int H, int KV, int hd, int nseq, int maxb)
{
    f->H = H, f->KV = KV, f->hd = hd, f->nseq = nseq, f->maxb = maxb;
    f->nblocks = nseq * maxb;
    f->bt = malloc(sizeof(int32_t) * f->nblocks);
    for (int i = 0; i < f->nblocks; i++) f->bt[i] = i;
    for (int i = f->nblocks - 1; i > 0; i--) {
        int j = (int)(rnd64() % (uint64_t)(i + 1));
        int32_t t = f->bt[i];
        f->bt[i] = f->bt[j];
        f->bt[j] = t;
    }
    size_t n = (size_t)nseq * maxb * 16 * KV * hd;
    f->k = malloc(sizeof(float) * n);
    f->v = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) f->k[i] = f16r(frand()), f->v[i] = f16r(frand());
    lode_half *pk = malloc(2 * n), *pv = malloc(2 * n);
    for (int s = 0; s < nseq; s++)
        for (int t = 0; t < maxb * 16; t++)
            for (int h = 0; h < KV; h++)
                for (int d = 0; d < hd; d++) {
                    size_t li = (((size_t)s * maxb * 16 + t) * KV + h) * hd + d;
                    int blk = f->bt[s * maxb + t / 16];
                    size_t pi = (((size_t)blk * KV + h) * 16 + t % 16) * hd + d;
                    pk[pi] = lode_float_to_half(f->k[li]);
                    pv[pi] = lode_float_to_half(f->v[li]);
                }
    f->dk = dev_put(pk, 2 * n);
    f->dv = dev_put(pv, 2 * n);
    f->dbt = dev_put(f->bt, sizeof(int32_t) * f->nblocks);
    free(pk);
    free(pv);
}

static void kv_free(kvfix *f)
{
    krn_cuda_free(f->dk);
    krn_cuda_free(f->dv);
    krn_cuda_free(f->dbt);
    free(f->bt);
    free(f->k);
    free(f->v);
}

/* reference: out[H*hd] for query q[H*hd] of sequence s over keys 0..len-1 */
static void attn_ref(const kvfix *f, int s, const float *q, int len, double *out)
{
    int G = f->H / f->KV, hd = f->hd;
    double *p = malloc(sizeof(double) * len);
    for (int h = 0; h < f->H; h++) {
        int kh = h / G;
        double mx = -INFINITY, sum = 0;
        for (int t = 0; t < len; t++) {
            const float *k = f->k + (((size_t)s * f->maxb * 16 + t) * f->KV + kh) * hd;
            double d = 0;
            for (int i = 0; i < hd; i++) d += (double)q[h * hd + i] * k[i];
            p[t] = d / sqrt((double)hd);
            if (p[t] > mx) mx = p[t];
        }
        for (int t = 0; t < len; t++) sum += (p[t] = exp(p[t] - mx));
        for (int i = 0; i < hd; i++) {
            double a = 0;
            for (int t = 0; t < len; t++)
                a += p[t] * f->v[(((size_t)s * f->maxb * 16 + t) * f->KV + kh) * hd + i];
            out[h * hd + i] = a / sum;
        }
    }
    free(p);
}

static krn_cuda_attn_cfg attn_cfg(const kvfix *f, int seq)
{
    krn_cuda_attn_cfg c = {0};
    c.n_head = f->H;
    c.n_kv_head = f->KV;
    c.head_dim = f->hd;
    c.scale = 1.f / sqrtf((float)f->hd);
    c.k_cache = f->dk;
    c.v_cache = f->dv;
    c.block_table = f->dbt + (size_t)seq * f->maxb;
    c.max_blocks = f->maxb;
    return c;
}

static void test_attn_decode(void **state)
{
    if (!gpu_ok()) skip();
    for (int hd = 64; hd <= 128; hd *= 2) {
        kvfix f;
        const int H = 8, KV = 2, B = 3, maxb = 32; /* 512 tokens */
        kv_make(&f, H, KV, hd, B, maxb);
        int lens[3] = {1, 130, 509};
        int nsplit = 5; /* 509 tokens: 5 splits of 128; 130: 5 of 32 */
        float *q = malloc(sizeof(float) * B * H * hd), *out = malloc(sizeof(float) * B * H * hd);
        double *ref = malloc(sizeof(double) * B * H * hd);
        fill(q, (size_t)B * H * hd, 1.f);
        for (int b = 0; b < B; b++)
            attn_ref(&f, b, q + (size_t)b * H * hd, lens[b], ref + (size_t)b * H * hd);
        float *dq = dev_put(q, sizeof(float) * B * H * hd);
        int32_t *dl = dev_put(lens, sizeof lens);
        float *acc = dev_poison(sizeof(float) * B * H * nsplit * hd);
        float *ml = dev_poison(sizeof(float) * B * H * nsplit * 2);
        float *dout = dev_poison(sizeof(float) * B * H * hd);
        krn_cuda_attn_cfg c = attn_cfg(&f, 0);
        CK(krn_cuda_attn_decode(&c, dq, B, dl, nsplit, acc, ml, NULL));
        krn_cuda_attn_parts p = {acc, ml, dl, H, hd, nsplit};
        CK(krn_cuda_attn_combine(&p, B, dout, NULL));
        get(out, dout, sizeof(float) * B * H * hd);
        double e = rel_l2(out, ref, (size_t)B * H * hd);
        printf("attention decode hd %d (lens 1, 130, 509): rel L2 %.2e (bound 1e-4)\n", hd, e);
        assert_true(e < 1e-4);

        /* the same with the first tile requested before the wait for the previous kernel */
        krn_cuda_attn_cfg ce = c;
        ce.kv_early = 1;
        float *dout2 = dev_poison(sizeof(float) * B * H * hd);
        float *acc2 = dev_poison(sizeof(float) * B * H * nsplit * hd);
        float *ml2 = dev_poison(sizeof(float) * B * H * nsplit * 2);
        krn_cuda_attn_parts p2 = {acc2, ml2, dl, H, hd, nsplit};
        CK(krn_cuda_attn_decode(&ce, dq, B, dl, nsplit, acc2, ml2, NULL));
        CK(krn_cuda_attn_combine(&p2, B, dout2, NULL));
        get(out, dout2, sizeof(float) * B * H * hd);
        e = rel_l2(out, ref, (size_t)B * H * hd);
        printf("attention decode hd %d, keys requested before the wait: rel L2 %.2e (bound 1e-4)\n",
               hd, e);
        assert_true(e < 1e-4);
        krn_cuda_free(dout2);
        krn_cuda_free(acc2);
        krn_cuda_free(ml2);

        /* the same combine done by the o-projection's input stage: W = identity (f32) */
        krn_cuda_mat id;
        CK(krn_cuda_mat_alloc(&id, LODE_F32, H * hd, H * hd));
        float *eye = calloc((size_t)H * hd * H * hd, sizeof(float));
        for (int i = 0; i < H * hd; i++) eye[(size_t)i * H * hd + i] = 1.f;
        CK(krn_cuda_mat_upload(&id, 0, H * hd, eye, NULL, NULL));
        float *dy = dev_poison(sizeof(float) * B * H * hd);
        krn_cuda_gemv_args a = {0};
        a.w = &id;
        a.batch = B;
        a.xmode = KRN_X_ATTN;
        a.attn = &p;
        a.y = dy;
        a.ldy = H * hd;
        CK(krn_cuda_gemv(&a, NULL));
        get(out, dy, sizeof(float) * B * H * hd);
        e = rel_l2(out, ref, (size_t)B * H * hd);
        printf("gemv attention-combine input hd %d: rel L2 %.2e (bound 1e-4)\n", hd, e);
        assert_true(e < 1e-4);
        krn_cuda_mat_free(&id);
        free(eye);
        krn_cuda_free(dy);

        /* batch 1 over every weight type, the 509-token sequence in 16 splits (the input stage
         * loads the splits' sums a few at a time, with a remainder): W attn against W ref */
        {
            const int n16 = 16, rows = 64, K = H * hd;
            krn_cuda_attn_cfg c2 = attn_cfg(&f, 2);
            int32_t *dl1 = dev_put(&lens[2], sizeof(int32_t));
            float *acc16 = dev_poison(sizeof(float) * H * n16 * hd);
            float *ml16 = dev_poison(sizeof(float) * H * n16 * 2);
            CK(krn_cuda_attn_decode(&c2, dq + (size_t)2 * K, 1, dl1, n16, acc16, ml16, NULL));
            krn_cuda_attn_parts p16 = {acc16, ml16, dl1, H, hd, n16};
            float *y1 = malloc(sizeof(float) * rows);
            double *yref = malloc(sizeof(double) * rows);
            for (size_t ti = 0; ti < LODE_ARRAY_LEN(all_types); ti++) {
                const int t = all_types[ti];
                krn_cuda_mat m;
                double *w;
                make_mat(&m, t, rows, K, &w);
                for (int r = 0; r < rows; r++) {
                    double s = 0;
                    for (int k = 0; k < K; k++) s += w[(size_t)r * K + k] * ref[(size_t)2 * K + k];
                    yref[r] = s;
                }
                float *dy1 = dev_poison(sizeof(float) * rows);
                krn_cuda_gemv_args a1 = {0};
                a1.w = &m;
                a1.batch = 1;
                a1.xmode = KRN_X_ATTN;
                a1.attn = &p16;
                a1.y = dy1;
                a1.ldy = rows;
                CK(krn_cuda_gemv(&a1, NULL));
                get(y1, dy1, sizeof(float) * rows);
                e = rel_l2(y1, yref, rows);
                printf("gemv %-5s batch 1, attention input of 16 splits, hd %d: rel L2 %.2e "
                       "(bound %.0e)\n",
                       lode_dtype_name(t), hd, e, gemv_bound(t));
                assert_true(e < gemv_bound(t));
                krn_cuda_free(dy1);
                krn_cuda_mat_free(&m);
                free(w);
            }
            free(y1);
            free(yref);
            krn_cuda_free(acc16);
            krn_cuda_free(ml16);
            krn_cuda_free(dl1);
        }
        krn_cuda_free(dq);
        krn_cuda_free(dl);
        krn_cuda_free(acc);
        krn_cuda_free(ml);
        krn_cuda_free(dout);
        free(q);
        free(out);
        free(ref);
        kv_free(&f);
    }
}

/* Batch-1 attention and o projection in one kernel (krn_cuda_attn_o) against the float64
 * reference: y = r + W attn(q) for every layout it takes, lengths from 1 to its limit, query
 * heads 4 and 3 a KV head, clusters of 2, 4 and 8 KV heads, rows that fill no whole block.
 * x meets quantized weights as 8-bit values, as in the GEMV, so the bounds are the GEMV's. */
static void attn_o_case(int H, int KV, int hd, int rows)
{
    const int maxl = krn_cuda_attn_o_max_len(hd), maxb = maxl / 16, K = H * hd;
    kvfix f;
    kv_make(&f, H, KV, hd, 1, maxb);
    const int lens[] = {1, 2, 130, maxl};
    float *q = malloc(sizeof(float) * K), *r = malloc(sizeof(float) * rows);
    float *y = malloc(sizeof(float) * rows);
    double *ref = malloc(sizeof(double) * K), *yref = malloc(sizeof(double) * rows);
    fill(q, (size_t)K, 1.f);
    fill(r, (size_t)rows, 0.01f); /* small, so that y - r keeps the sums' precision */
    float *dq = dev_put(q, sizeof(float) * K);
    krn_cuda_attn_cfg c = attn_cfg(&f, 0);
    for (size_t ti = 0; ti < LODE_ARRAY_LEN(all_types); ti++) {
        const int t = all_types[ti];
        krn_cuda_mat m;
        double *w;
        make_mat(&m, t, rows, K, &w);
        const int ok = krn_cuda_attn_o_supported(&c, &m);
        assert_int_equal(ok, t != LODE_F32); /* every layout but f32 */
        for (size_t li = 0; ok && li < LODE_ARRAY_LEN(lens); li++) {
            const int len = lens[li];
            attn_ref(&f, 0, q, len, ref);
            for (int n = 0; n < rows; n++) {
                double s = 0;
                for (int k = 0; k < K; k++) s += w[(size_t)n * K + k] * ref[k];
                yref[n] = s;
            }
            int32_t *dl = dev_put(&len, sizeof len);
            float *dy = dev_put(r, sizeof(float) * rows);
            CK(krn_cuda_attn_o(&c, dq, dl, &m, dy, NULL));
            get(y, dy, sizeof(float) * rows);
            for (int n = 0; n < rows; n++) y[n] -= r[n];
            const double e = rel_l2(y, yref, (size_t)rows), bound = gemv_bound(t);
            if (e >= bound || li == LODE_ARRAY_LEN(lens) - 1)
                printf("attention + o %-5s H %d KV %d hd %d, %d rows, %d tokens: rel L2 %.2e "
                       "(bound %.0e)\n",
                       lode_dtype_name(t), H, KV, hd, rows, len, e, bound);
            assert_true(e < bound);
            krn_cuda_free(dl);
            krn_cuda_free(dy);
        }
        krn_cuda_mat_free(&m);
        free(w);
    }
    krn_cuda_free(dq);
    free(q);
    free(r);
    free(y);
    free(ref);
    free(yref);
    kv_free(&f);
}

static void test_attn_o(void **state)
{
    if (!gpu_ok()) skip();
    krn_cuda_devinfo di;
    CK(krn_cuda_device_info(0, &di));
    if (di.cc_major < 9) {
        printf("attention + o needs thread-block clusters (Hopper or later): skipped\n");
        skip();
    }
    attn_o_case(8, 2, 64, 100);
    attn_o_case(12, 4, 64, 200);
    attn_o_case(8, 2, 128, 100);
    attn_o_case(32, 8, 128, 264);
}

/* The many-sequence decode kernel: f16 queries, bf16/f16 output, lengths around its 16- and
 * 64-key tile edges, 3, 4 and 8 query heads a KV head. */
static void test_attn_decode_rows(void **state)
{
    if (!gpu_ok()) skip();
    const int heads[3][2] = {{8, 2}, {6, 2}, {8, 1}};
    for (int hd = 64; hd <= 128; hd *= 2)
        for (int hi = 0; hi < 3; hi++) {
            const int H = heads[hi][0], KV = heads[hi][1], B = 37, maxb = 20; /* 320 tokens */
            kvfix f;
            kv_make(&f, H, KV, hd, B, maxb);
            int lens[37];
            const int edge[] = {1, 2, 15, 16, 17, 63, 64, 65, 128, 129, 191, 320};
            for (int b = 0; b < B; b++)
                lens[b] = b < (int)LODE_ARRAY_LEN(edge) ? edge[b] : 1 + (int)(rnd64() % 320);
            const size_t nq = (size_t)B * H * hd;
            lode_half *qh = malloc(2 * nq);
            float *qf = malloc(sizeof(float) * nq), *of = malloc(sizeof(float) * nq);
            uint16_t *o = malloc(2 * nq);
            double *ref = malloc(sizeof(double) * nq);
            for (size_t i = 0; i < nq; i++) {
                qf[i] = f16r(2.f * frand());
                qh[i] = lode_float_to_half(qf[i]);
            }
            for (int b = 0; b < B; b++)
                attn_ref(&f, b, qf + (size_t)b * H * hd, lens[b], ref + (size_t)b * H * hd);
            void *dq = dev_put(qh, 2 * nq);
            int32_t *dl = dev_put(lens, sizeof lens);
            krn_cuda_attn_cfg c = attn_cfg(&f, 0);
            for (int of16 = 0; of16 < 2; of16++) {
                void *dout = dev_poison(2 * nq);
                CK(krn_cuda_attn_decode_rows(&c, dq, B, dl, dout, of16, NULL));
                get(o, dout, 2 * nq);
                for (size_t i = 0; i < nq; i++)
                    of[i] = of16 ? lode_half_to_float(o[i]) : lode_bf16_to_float(o[i]);
                double e = rel_l2(of, ref, nq);
                double bound = of16 ? 2e-3 : 8e-3; /* P in f16; bf16 output rounding */
                printf("attention decode rows hd %d, %d/%d heads, %d sequences of 1..320, out %s: "
                       "rel L2 %.2e (bound %.0e)\n",
                       hd, H, KV, B, of16 ? "f16" : "bf16", e, bound);
                assert_true(e < bound);
                krn_cuda_free(dout);
            }
            krn_cuda_free(dq);
            krn_cuda_free(dl);
            free(qh);
            free(qf);
            free(of);
            free(o);
            free(ref);
            kv_free(&f);
        }
}

static void test_attn_prefill(void **state)
{
    if (!gpu_ok()) skip();
    for (int hd = 64; hd <= 128; hd *= 2) {
        for (int cse = 0; cse < 2; cse++) {
            const int H = 8, KV = 2, maxb = 16; /* 256 tokens */
            int pos0 = cse ? 77 : 0, n = cse ? 150 : 200;
            kvfix f;
            kv_make(&f, H, KV, hd, 1, maxb);
            lode_half *qh = malloc(2 * (size_t)n * H * hd);
            float *qf = malloc(sizeof(float) * n * H * hd);
            for (size_t i = 0; i < (size_t)n * H * hd; i++) {
                qf[i] = f16r(frand());
                qh[i] = lode_float_to_half(qf[i]);
            }
            double *ref = malloc(sizeof(double) * n * H * hd);
            for (int i = 0; i < n; i++)
                attn_ref(&f, 0, qf + (size_t)i * H * hd, pos0 + i + 1, ref + (size_t)i * H * hd);
            void *dq = dev_put(qh, 2 * (size_t)n * H * hd),
                 *dout = dev_poison(2 * (size_t)n * H * hd);
            krn_cuda_attn_cfg c = attn_cfg(&f, 0);
            for (int of16 = 0; of16 < 2; of16++) {
                CK(krn_cuda_attn_prefill(&c, dq, n, pos0, dout, of16, NULL));
                uint16_t *o = malloc(2 * (size_t)n * H * hd);
                float *of = malloc(sizeof(float) * n * H * hd);
                get(o, dout, 2 * (size_t)n * H * hd);
                for (size_t i = 0; i < (size_t)n * H * hd; i++)
                    of[i] = of16 ? lode_half_to_float(o[i]) : lode_bf16_to_float(o[i]);
                double e = rel_l2(of, ref, (size_t)n * H * hd);
                double bound = of16 ? 2e-3 : 8e-3; /* P in f16; bf16 output rounding */
                printf("attention prefill hd %d pos0 %d n %d out %s: rel L2 %.2e (bound %.0e)\n",
                       hd, pos0, n, of16 ? "f16" : "bf16", e, bound);
                assert_true(e < bound);
                free(o);
                free(of);
            }
            krn_cuda_free(dq);
            krn_cuda_free(dout);
            free(qh);
            free(qf);
            free(ref);
            kv_free(&f);
        }
    }
}

/* ---- RoPE, norms, embedding, GEMM ----------------------------------------------------- */

static void rope_ref(double *x, int pos, int hd, const float *inv)
{
    for (int i = 0; i < hd / 2; i++) {
        double a = pos * (double)inv[i], c = cos(a), s = sin(a);
        double x0 = x[2 * i], x1 = x[2 * i + 1];
        x[2 * i] = x0 * c - x1 * s;
        x[2 * i + 1] = x0 * s + x1 * c;
    }
}

static void test_rope_kv(void **state)
{
    if (!gpu_ok()) skip();
    const int H = 4, KV = 2, hd = 64, n = 7, W = (H + 2 * KV) * hd;
    kvfix f;
    kv_make(&f, H, KV, hd, 1, 4);
    float inv[32];
    for (int i = 0; i < hd / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / hd);
    int32_t pos[7], slot[7];
    for (int i = 0; i < n; i++) {
        pos[i] = 3 + 5 * i;
        slot[i] = f.bt[pos[i] / 16] * 16 + pos[i] % 16;
    }
    float *qkv = malloc(sizeof(float) * n * W);
    fill(qkv, (size_t)n * W, 1.f);
    float *dqkv = dev_put(qkv, sizeof(float) * n * W), *dinv = dev_put(inv, sizeof inv);
    int32_t *dpos = dev_put(pos, sizeof pos), *dslot = dev_put(slot, sizeof slot);
    void *dq = dev_poison(2 * (size_t)n * H * hd);
    krn_cuda_rope r = {H, KV, hd, dinv, dpos, dslot, f.dk, f.dv, 0};
    CK(krn_cuda_rope_kv(dqkv, n, &r, dq, NULL));
    lode_half *qo = malloc(2 * (size_t)n * H * hd);
    size_t cn = (size_t)f.nblocks * KV * 16 * hd;
    lode_half *kc = malloc(2 * cn), *vc = malloc(2 * cn);
    get(qo, dq, 2 * (size_t)n * H * hd);
    get(kc, f.dk, 2 * cn);
    get(vc, f.dv, 2 * cn);
    double *ref = malloc(sizeof(double) * W), maxe = 0;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < W; j++) ref[j] = qkv[(size_t)i * W + j];
        for (int h = 0; h < H + KV; h++) rope_ref(ref + h * hd, pos[i], hd, inv);
        for (int j = 0; j < H * hd; j++)
            maxe = fmax(maxe, fabs(lode_half_to_float(qo[(size_t)i * H * hd + j]) - ref[j]));
        for (int h = 0; h < KV; h++)
            for (int d = 0; d < hd; d++) {
                size_t pi = (((size_t)(slot[i] / 16) * KV + h) * 16 + slot[i] % 16) * hd + d;
                maxe = fmax(maxe, fabs(lode_half_to_float(kc[pi]) - ref[H * hd + h * hd + d]));
                maxe =
                    fmax(maxe, fabs(lode_half_to_float(vc[pi]) - ref[(H + KV) * hd + h * hd + d]));
            }
    }
    printf("rope_kv: max abs error %.2e (bound 2e-3, f16 outputs)\n", maxe);
    assert_true(maxe < 2e-3);

    /* the decode path: the same rotation fused into the QKV GEMV (W = identity) */
    krn_cuda_mat id;
    CK(krn_cuda_mat_alloc(&id, LODE_F32, W, W));
    float *eye = calloc((size_t)W * W, sizeof(float));
    for (int i = 0; i < W; i++) eye[(size_t)i * W + i] = 1.f;
    CK(krn_cuda_mat_upload(&id, 0, W, eye, NULL, NULL));
    float *dy = dev_poison(sizeof(float) * n * H * hd);
    float *yq = malloc(sizeof(float) * n * H * hd);
    CK(krn_cuda_memset(f.dk, 0xff, 2 * cn, NULL));
    krn_cuda_gemv_args a = {0};
    a.w = &id;
    a.batch = n;
    a.x = dqkv;
    a.ldx = W;
    a.ymode = KRN_Y_ROPE_KV;
    a.y = dy;
    a.ldy = H * hd;
    a.rope = &r;
    CK(krn_cuda_gemv(&a, NULL));
    get(yq, dy, sizeof(float) * n * H * hd);
    get(kc, f.dk, 2 * cn);
    maxe = 0;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < W; j++) ref[j] = qkv[(size_t)i * W + j];
        for (int h = 0; h < H + KV; h++) rope_ref(ref + h * hd, pos[i], hd, inv);
        for (int j = 0; j < H * hd; j++)
            maxe = fmax(maxe, fabs(yq[(size_t)i * H * hd + j] - ref[j]));
        for (int h = 0; h < KV; h++)
            for (int d = 0; d < hd; d++) {
                size_t pi = (((size_t)(slot[i] / 16) * KV + h) * 16 + slot[i] % 16) * hd + d;
                maxe = fmax(maxe, fabs(lode_half_to_float(kc[pi]) - ref[H * hd + h * hd + d]));
            }
    }
    printf("gemv rope-kv output: max abs error %.2e (bound 2e-3)\n", maxe);
    assert_true(maxe < 2e-3);
    krn_cuda_mat_free(&id);
    free(eye);
    krn_cuda_free(dy);
    free(yq);
    free(kc);
    free(vc);
    free(qo);
    free(qkv);
    free(ref);
    krn_cuda_free(dqkv);
    krn_cuda_free(dinv);
    krn_cuda_free(dpos);
    krn_cuda_free(dslot);
    krn_cuda_free(dq);
    kv_free(&f);
}

static void test_norm_swiglu_embed(void **state)
{
    if (!gpu_ok()) skip();
    const int rows = 9, dim = 576, ff = 1536;
    float *x = malloc(sizeof(float) * rows * 2 * ff), *w = malloc(sizeof(float) * dim);
    fill(x, (size_t)rows * 2 * ff, 3.f);
    fill(w, dim, 1.f);
    float *dx = dev_put(x, sizeof(float) * rows * 2 * ff), *dw = dev_put(w, sizeof(float) * dim);
    float *out = malloc(sizeof(float) * rows * 2 * ff);
    double *ref = malloc(sizeof(double) * rows * 2 * ff);
    float *dout = dev_poison(sizeof(float) * rows * 2 * ff);
    CK(krn_cuda_rmsnorm(dx, dw, 1e-5f, rows, dim, dout, LODE_F32, NULL));
    get(out, dout, sizeof(float) * rows * dim);
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
        for (int i = 0; i < dim; i++)
            ref[r * dim + i] = x[r * dim + i] / sqrt(ss / dim + 1e-5) * w[i];
    }
    double e = rel_l2(out, ref, (size_t)rows * dim);
    printf("rmsnorm: rel L2 %.2e (bound 1e-5)\n", e);
    assert_true(e < 1e-5);
    /* the register-resident kernel (dim a multiple of 1024), f32 and bf16 out */
    for (int dv = 1024; dv <= 4096; dv *= 4) {
        const int rv = 7;
        float *xv = malloc(sizeof(float) * rv * dv), *wv = malloc(sizeof(float) * dv);
        float *ov = malloc(sizeof(float) * rv * dv);
        uint16_t *o16 = malloc(2 * (size_t)rv * dv);
        double *rf = malloc(sizeof(double) * rv * dv);
        fill(xv, (size_t)rv * dv, 3.f);
        fill(wv, dv, 1.f);
        float *dxv = dev_put(xv, sizeof(float) * rv * dv), *dwv = dev_put(wv, sizeof(float) * dv);
        void *dov = dev_poison(sizeof(float) * rv * dv);
        for (int r = 0; r < rv; r++) {
            double ss = 0;
            for (int i = 0; i < dv; i++) ss += (double)xv[r * dv + i] * xv[r * dv + i];
            for (int i = 0; i < dv; i++)
                rf[(size_t)r * dv + i] = xv[r * dv + i] / sqrt(ss / dv + 1e-5) * wv[i];
        }
        for (int ot = 0; ot < 2; ot++) {
            CK(krn_cuda_memset(dov, 0xff, sizeof(float) * rv * dv, NULL));
            CK(krn_cuda_rmsnorm(dxv, dwv, 1e-5f, rv, dv, dov, ot ? LODE_BF16 : LODE_F32, NULL));
            if (ot) {
                get(o16, dov, 2 * (size_t)rv * dv);
                for (size_t i = 0; i < (size_t)rv * dv; i++) ov[i] = lode_bf16_to_float(o16[i]);
            } else {
                get(ov, dov, sizeof(float) * rv * dv);
            }
            double ev = rel_l2(ov, rf, (size_t)rv * dv), bv = ot ? 8e-3 : 1e-5;
            printf("rmsnorm dim %d out %s: rel L2 %.2e (bound %.0e)\n", dv, ot ? "bf16" : "f32", ev,
                   bv);
            assert_true(ev < bv);
        }
        krn_cuda_free(dxv);
        krn_cuda_free(dwv);
        krn_cuda_free(dov);
        free(xv);
        free(wv);
        free(ov);
        free(o16);
        free(rf);
    }
    /* from 16-bit gate/up rows, vectorized (ff % 8 == 0) and not (ff - 2), out bf16 and f32 */
    for (int ti = 0; ti < 2; ti++)
        for (int ffi = 0; ffi < 2; ffi++) {
            const int t16 = ti ? LODE_F16 : LODE_BF16, f = ffi ? ff - 2 : ff;
            const int ot = ffi ? LODE_F32 : LODE_BF16;
            uint16_t *h = malloc(2 * (size_t)rows * 2 * f), *o16 = malloc(2 * (size_t)rows * f);
            for (size_t i = 0; i < (size_t)rows * 2 * f; i++)
                h[i] = t16 == LODE_F16 ? lode_float_to_half(x[i]) : lode_float_to_bf16(x[i]);
            void *dh = dev_put(h, 2 * (size_t)rows * 2 * f);
            CK(krn_cuda_memset(dout, 0xff, sizeof(float) * rows * f, NULL));
            CK(krn_cuda_swiglu16(dh, t16, rows, f, dout, ot, NULL));
            if (ot == LODE_F32) {
                get(out, dout, sizeof(float) * rows * f);
            } else {
                get(o16, dout, 2 * (size_t)rows * f);
                for (size_t i = 0; i < (size_t)rows * f; i++) out[i] = lode_bf16_to_float(o16[i]);
            }
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < f; j++) {
                    size_t gi = (size_t)r * 2 * f + j;
                    double g =
                        t16 == LODE_F16 ? lode_half_to_float(h[gi]) : lode_bf16_to_float(h[gi]);
                    double u = t16 == LODE_F16 ? lode_half_to_float(h[gi + f])
                                               : lode_bf16_to_float(h[gi + f]);
                    ref[(size_t)r * f + j] = silu_d(g) * u;
                }
            e = rel_l2(out, ref, (size_t)rows * f);
            double bound = ot == LODE_F32 ? 1e-5 : 8e-3;
            printf("swiglu16 %s in, ff %d, out %s: rel L2 %.2e (bound %.0e)\n",
                   lode_dtype_name(t16), f, lode_dtype_name(ot), e, bound);
            assert_true(e < bound);
            krn_cuda_free(dh);
            free(h);
            free(o16);
        }

    krn_cuda_mat m;
    double *wm;
    make_mat(&m, LODE_Q6_K, 100, 512, &wm);
    int32_t tok[4] = {5, 99, 0, 150}; /* the last is out of range: a zero row */
    int32_t *dt = dev_put(tok, sizeof tok);
    CK(krn_cuda_embed(&m, dt, 4, dout, NULL));
    get(out, dout, sizeof(float) * 4 * 512);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 512; j++) ref[i * 512 + j] = tok[i] < 100 ? wm[tok[i] * 512 + j] : 0;
    e = rel_l2(out, ref, 4 * 512);
    printf("embed q6_K: rel L2 %.2e (bound 2e-3)\n", e);
    assert_true(e < 2e-3);
    krn_cuda_mat_free(&m);
    free(wm);
    krn_cuda_free(dt);
    krn_cuda_free(dx);
    krn_cuda_free(dw);
    krn_cuda_free(dout);
    free(x);
    free(w);
    free(out);
    free(ref);
}

static void test_gemm(void **state)
{
    if (!gpu_ok()) skip();
    krn_cuda_blas *h;
    CK(krn_cuda_blas_create(&h, NULL));
    const int types[] = {LODE_BF16, LODE_F16, LODE_Q4_0, LODE_Q6_K};
    const int64_t rows = 320, cols = 768, M = 37;
    for (size_t ti = 0; ti < LODE_ARRAY_LEN(types); ti++) {
        int t = types[ti], xf16 = t == LODE_F16;
        krn_cuda_mat m;
        double *w;
        make_mat(&m, t, rows, cols, &w);
        uint16_t *x = malloc(2 * M * cols);
        double *xd = malloc(sizeof(double) * M * cols), *ref = malloc(sizeof(double) * M * rows);
        float *y0 = malloc(sizeof(float) * M * rows), *y = malloc(sizeof(float) * M * rows);
        for (int64_t i = 0; i < M * cols; i++) {
            float v = frand();
            x[i] = xf16 ? lode_float_to_half(v) : lode_float_to_bf16(v);
            xd[i] = xf16 ? lode_half_to_float(x[i]) : lode_bf16_to_float(x[i]);
        }
        fill(y0, (size_t)M * rows, 1.f);
        for (int64_t i = 0; i < M; i++)
            for (int64_t r = 0; r < rows; r++) {
                double s = 0;
                for (int64_t k = 0; k < cols; k++) s += xd[i * cols + k] * w[r * cols + k];
                ref[i * rows + r] = s + y0[i * rows + r];
            }
        void *dx = dev_put(x, 2 * M * cols), *dy = dev_put(y0, sizeof(float) * M * rows);
        void *scratch = dev_put(NULL, krn_cuda_gemm_scratch_bytes(&m));
        const int quant = t != LODE_BF16 && t != LODE_F16;
        /* 16-bit weights: f32 sums of exact products. Quantized weights meet x as bf16 values
         * (about 2e-3): at M = 37 in qmm.cu, decoded in registers; past the qmm limit
         * dequantized into the scratch for cuBLAS (checked on the same data below). */
        double bound = quant ? 5e-3 : 1e-5;
        /* cuBLAS's default algorithm, then the one krn_cuda_gemm_prepare times and keeps */
        for (int prep = 0; prep < 2; prep++) {
            if (prep) { /* the tuning runs write y */
                CK(krn_cuda_gemm_prepare(h, &m, dx, xf16, M, dy, LODE_F32, rows, 1, scratch, NULL));
                CK(krn_cuda_h2d(dy, y0, sizeof(float) * M * rows, NULL));
            }
            CK(krn_cuda_gemm(h, &m, dx, xf16, M, dy, rows, 1, scratch, NULL));
            get(y, dy, sizeof(float) * M * rows);
            double e = rel_l2(y, ref, (size_t)(M * rows));
            printf("gemm %-5s m %d (accumulate%s): rel L2 %.2e (bound %.0e)\n", lode_dtype_name(t),
                   (int)M, prep ? ", tuned" : "", e, bound);
            assert_true(e < bound);
        }
        if (quant) { /* the dequantized cuBLAS path, as taken past krn_cuda_qmm_limit() rows */
            const int lim = krn_cuda_qmm_limit(0);
            CK(krn_cuda_h2d(dy, y0, sizeof(float) * M * rows, NULL));
            CK(krn_cuda_gemm(h, &m, dx, xf16, M, dy, rows, 1, scratch, NULL));
            krn_cuda_qmm_limit(lim);
            get(y, dy, sizeof(float) * M * rows);
            double e = rel_l2(y, ref, (size_t)(M * rows));
            printf("gemm %-5s m %d (accumulate, dequantized to bf16): rel L2 %.2e (bound 5e-3)\n",
                   lode_dtype_name(t), (int)M, e);
            assert_true(e < 5e-3);
        }
        /* 16-bit output in the activations' type, prepared, no accumulation */
        const int yt = xf16 ? LODE_F16 : LODE_BF16;
        void *dy16 = dev_poison(2 * M * rows);
        uint16_t *y16 = malloc(2 * M * rows);
        CK(krn_cuda_gemm_prepare(h, &m, dx, xf16, M, dy16, yt, rows, 0, scratch, NULL));
        CK(krn_cuda_memset(dy16, 0xff, 2 * M * rows, NULL));
        CK(krn_cuda_gemm_y(h, &m, dx, xf16, M, dy16, yt, rows, 0, scratch, NULL));
        get(y16, dy16, 2 * M * rows);
        for (int64_t i = 0; i < M * rows; i++) {
            y[i] = xf16 ? lode_half_to_float(y16[i]) : lode_bf16_to_float(y16[i]);
            ref[i] -= y0[i];
        }
        double e16 = rel_l2(y, ref, (size_t)(M * rows));
        double b16 = (xf16 ? 1e-3 : 8e-3) + bound; /* output rounding */
        printf("gemm %-5s m %d (%s out, tuned): rel L2 %.2e (bound %.0e)\n", lode_dtype_name(t),
               (int)M, lode_dtype_name(yt), e16, b16);
        assert_true(e16 < b16);
        krn_cuda_free(dy16);
        free(y16);
        krn_cuda_free(dx);
        krn_cuda_free(dy);
        krn_cuda_free(scratch);
        krn_cuda_mat_free(&m);
        free(w);
        free(x);
        free(xd);
        free(ref);
        free(y0);
        free(y);
    }
    krn_cuda_blas_destroy(h);
}

/* ---- sampling --------------------------------------------------------------------------- */

/* qmm.cu, quantized W times a few to a few dozen bf16 rows of X, against the double-precision
 * product: every quantized type; token counts that take each n-tile width and more than one
 * block of tokens; rows that leave part of a 128-row tile; K of one stage, of stages with a
 * short last one, and split over blocks (added by the reduce kernel); f32 output accumulated,
 * bf16 and f16 output written; and the same bits from a second run. The weights meet x as
 * bf16 values (scale and product rounded), as in the dequantizing path. */
static void test_qmm(void **state)
{
    if (!gpu_ok()) skip();
    static const int qtypes[] = {LODE_Q4_0, LODE_Q4_1, LODE_Q8_0, LODE_Q4_K, LODE_Q6_K};
    static const struct {
        int64_t rows, cols;
    } shapes[] = {{300, 2048}, {200, 576}, {136, 512}};
    static const int64_t ms[] = {1, 9, 20, 37, 70};
    for (size_t ti = 0; ti < LODE_ARRAY_LEN(qtypes); ti++)
        for (size_t si = 0; si < LODE_ARRAY_LEN(shapes); si++) {
            const int t = qtypes[ti];
            const int64_t rows = shapes[si].rows, cols = shapes[si].cols;
            if (cols % 256 && (t == LODE_Q4_K || t == LODE_Q6_K)) continue;
            krn_cuda_mat m;
            double *w;
            make_mat(&m, t, rows, cols, &w);
            const size_t sb = krn_cuda_gemm_scratch_bytes(&m);
            void *scratch = dev_put(NULL, sb);
            for (size_t mi = 0; mi < LODE_ARRAY_LEN(ms); mi++) {
                const int64_t M = ms[mi];
                const int xf16 = 0;
                uint16_t *x = malloc(2 * M * cols);
                double *xd = malloc(sizeof(double) * M * cols),
                       *ref = malloc(sizeof(double) * M * rows);
                float *y0 = malloc(sizeof(float) * M * rows), *y = malloc(sizeof(float) * M * rows),
                      *y2 = malloc(sizeof(float) * M * rows);
                for (int64_t i = 0; i < M * cols; i++) {
                    float v = frand();
                    x[i] = xf16 ? lode_float_to_half(v) : lode_float_to_bf16(v);
                    xd[i] = xf16 ? lode_half_to_float(x[i]) : lode_bf16_to_float(x[i]);
                }
                fill(y0, (size_t)M * rows, 1.f);
                for (int64_t i = 0; i < M; i++)
                    for (int64_t r = 0; r < rows; r++) {
                        double acc = 0;
                        for (int64_t k = 0; k < cols; k++)
                            acc += xd[i * cols + k] * w[r * cols + k];
                        ref[i * rows + r] = acc;
                    }
                assert_true(krn_cuda_qmm_fits(&m, 0, M, sb));
                void *dx = dev_put(x, 2 * M * cols);
                /* f32, accumulated into y0 */
                float *dy = dev_put(y0, sizeof(float) * M * rows);
                CK(krn_cuda_qmm(&m, dx, xf16, M, dy, LODE_F32, rows, 1, scratch, sb, NULL));
                get(y, dy, sizeof(float) * M * rows);
                for (int64_t i = 0; i < M * rows; i++) y[i] -= y0[i];
                double e = rel_l2(y, ref, (size_t)(M * rows));
                /* again: the same bits */
                CK(krn_cuda_h2d(dy, y0, sizeof(float) * M * rows, NULL));
                CK(krn_cuda_qmm(&m, dx, xf16, M, dy, LODE_F32, rows, 1, scratch, sb, NULL));
                get(y2, dy, sizeof(float) * M * rows);
                for (int64_t i = 0; i < M * rows; i++) y2[i] -= y0[i];
                assert_memory_equal(y, y2, sizeof(float) * M * rows);
                /* 16-bit, written over poison, row stride wider than the rows */
                const int yt = mi & 1 ? LODE_F16 : LODE_BF16;
                const int64_t ld = rows + 8;
                uint16_t *y16 = malloc(2 * M * ld);
                void *dy16 = dev_poison(2 * M * ld);
                CK(krn_cuda_qmm(&m, dx, xf16, M, dy16, yt, ld, 0, scratch, sb, NULL));
                get(y16, dy16, 2 * M * ld);
                for (int64_t i = 0; i < M; i++)
                    for (int64_t r = 0; r < rows; r++) {
                        const uint16_t v = y16[i * ld + r];
                        y2[i * rows + r] =
                            yt == LODE_F16 ? lode_half_to_float(v) : lode_bf16_to_float(v);
                    }
                double e16 = rel_l2(y2, ref, (size_t)(M * rows));
                const double bound = 5e-3, b16 = bound + (yt == LODE_F16 ? 1e-3 : 8e-3);
                printf("qmm %-5s %4lld x %4lld, m %2lld: rel L2 %.2e (bound %.0e), %s out %.2e "
                       "(bound %.0e)\n",
                       lode_dtype_name(t), (long long)rows, (long long)cols, (long long)M, e, bound,
                       lode_dtype_name(yt), e16, b16);
                assert_true(e < bound);
                assert_true(e16 < b16);
                krn_cuda_free(dy16);
                krn_cuda_free(dy);
                krn_cuda_free(dx);
                free(y16);
                free(x);
                free(xd);
                free(ref);
                free(y0);
                free(y);
                free(y2);
            }
            krn_cuda_free(scratch);
            krn_cuda_mat_free(&m);
            free(w);
        }
}

static void test_sampling(void **state)
{
    if (!gpu_ok()) skip();
    const int B = 4, V = 50000;
    float *l = malloc(sizeof(float) * B * V);
    fill(l, (size_t)B * V, 5.f);
    l[1 * V + 777] = 9.f; /* a clear maximum in row 1 */
    float *dl = dev_put(l, sizeof(float) * B * V);
    int32_t tok[4], *dt = dev_poison(sizeof tok);
    float lp[4], *dlp = dev_poison(sizeof lp);
    CK(krn_cuda_argmax(dl, B, V, dt, NULL));
    get(tok, dt, sizeof tok);
    for (int b = 0; b < B; b++) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (l[b * V + i] > l[b * V + best]) best = i;
        assert_int_equal(tok[b], best);
    }
    assert_int_equal(tok[1], 777);
    /* top_k = 1 and a tiny top_p both reduce to the argmax, with any temperature */
    krn_cuda_sample_cfg c = {1.5f, 1, 1.f, 42, NULL};
    int32_t tok2[4];
    CK(krn_cuda_sample(dl, B, V, &c, dt, dlp, NULL));
    get(tok2, dt, sizeof tok2);
    get(lp, dlp, sizeof lp);
    assert_memory_equal(tok, tok2, sizeof tok);
    for (int b = 0; b < B; b++) {
        double m = -INFINITY, s = 0;
        for (int i = 0; i < V; i++) m = fmax(m, l[b * V + i]);
        for (int i = 0; i < V; i++) s += exp(l[b * V + i] - m);
        double want = l[b * V + tok[b]] - m - log(s);
        assert_true(fabs(lp[b] - want) < 1e-4);
    }
    c.top_k = 0;
    c.top_p = 1e-6f;
    CK(krn_cuda_sample(dl, B, V, &c, dt, NULL, NULL));
    get(tok2, dt, sizeof tok2);
    assert_memory_equal(tok, tok2, sizeof tok);
    /* frequencies over 4 tokens of probabilities .1 .2 .3 .4 (temperature 1), top_k 3 drops .1 */
    float small[4] = {logf(.1f), logf(.2f), logf(.3f), logf(.4f)};
    float *ds = dev_put(small, sizeof small);
    int cnt[2][4] = {{0}};
    const int N = 3000;
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < N; i++) {
            krn_cuda_sample_cfg c2 = {1.f, k ? 3 : 0, 1.f, (uint64_t)i * 7919 + 1, NULL};
            int32_t t;
            CK(krn_cuda_sample(ds, 1, 4, &c2, dt, NULL, NULL));
            get(&t, dt, 4);
            assert_true(t >= 0 && t < 4);
            cnt[k][t]++;
        }
    printf("sampling counts of 3000 (p .1 .2 .3 .4): %d %d %d %d; top_k 3: %d %d %d %d\n",
           cnt[0][0], cnt[0][1], cnt[0][2], cnt[0][3], cnt[1][0], cnt[1][1], cnt[1][2], cnt[1][3]);
    for (int i = 0; i < 4; i++) {
        double p = 0.1 * (i + 1), sd = sqrt(N * p * (1 - p));
        assert_true(fabs(cnt[0][i] - N * p) < 5 * sd);
    }
    assert_int_equal(cnt[1][0], 0);
    for (int i = 1; i < 4; i++) {
        double p = 0.1 * (i + 1) / 0.9, sd = sqrt(N * p * (1 - p));
        assert_true(fabs(cnt[1][i] - N * p) < 5 * sd);
    }
    krn_cuda_free(ds);
    krn_cuda_free(dl);
    krn_cuda_free(dt);
    krn_cuda_free(dlp);
    free(l);
}

/* ---- the whole decoder against a CPU forward pass ------------------------------------------ */

typedef struct refm {
    eng_cuda_config c;
    double *emb, *out, *onorm; /* dequantized */
    double **q, **k, **v, **o, **g, **u, **dn, **an, **fn;
    double *kc, *vc; /* [ctx][KV*hd] */
} refm;

static double *deq_copy(int t, const void *h, size_t n)
{
    double *d = malloc(sizeof(double) * n);
    ggml_deq(t, h, n, d);
    return d;
}

static void matvec(const double *w, const double *x, int rows, int cols, double *y)
{
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int k = 0; k < cols; k++) s += w[(size_t)r * cols + k] * x[k];
        y[r] = s;
    }
}

static void rms(const double *x, const double *w, int n, double eps, double *y)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double s = 1 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = x[i] * s * w[i];
}

/* logits of token tok at position pos (its K/V appended to the reference cache) */
static void ref_step(refm *r, int tok, int pos, double *logits)
{
    const eng_cuda_config *c = &r->c;
    int D = c->dim, H = c->n_head, KV = c->n_kv_head, hd = c->head_dim, F = c->ff, G = H / KV;
    double *x = malloc(sizeof(double) * D), *h = malloc(sizeof(double) * D);
    double *q = malloc(sizeof(double) * H * hd), *att = malloc(sizeof(double) * H * hd);
    double *t = malloc(sizeof(double) * (D > F ? D : F) * 2), *g = malloc(sizeof(double) * F),
           *u = malloc(sizeof(double) * F), *p = malloc(sizeof(double) * (pos + 1));
    float inv[64];
    for (int i = 0; i < hd / 2; i++) inv[i] = (float)pow((double)c->rope_theta, -2.0 * i / hd);
    memcpy(x, r->emb + (size_t)tok * D, sizeof(double) * D);
    for (int l = 0; l < c->n_layer; l++) {
        double *kc = r->kc + (size_t)l * c->max_ctx * KV * hd,
               *vc = r->vc + (size_t)l * c->max_ctx * KV * hd;
        rms(x, r->an[l], D, c->eps, h);
        matvec(r->q[l], h, H * hd, D, q);
        matvec(r->k[l], h, KV * hd, D, kc + (size_t)pos * KV * hd);
        matvec(r->v[l], h, KV * hd, D, vc + (size_t)pos * KV * hd);
        for (int i = 0; i < H; i++) rope_ref(q + i * hd, pos, hd, inv);
        for (int i = 0; i < KV; i++) rope_ref(kc + (size_t)pos * KV * hd + i * hd, pos, hd, inv);
        for (int hh = 0; hh < H; hh++) {
            int kh = hh / G;
            double mx = -INFINITY, s = 0;
            for (int j = 0; j <= pos; j++) {
                double d = 0;
                for (int e = 0; e < hd; e++)
                    d += q[hh * hd + e] * kc[((size_t)j * KV + kh) * hd + e];
                p[j] = d / sqrt((double)hd);
                mx = fmax(mx, p[j]);
            }
            for (int j = 0; j <= pos; j++) s += (p[j] = exp(p[j] - mx));
            for (int e = 0; e < hd; e++) {
                double a = 0;
                for (int j = 0; j <= pos; j++) a += p[j] * vc[((size_t)j * KV + kh) * hd + e];
                att[hh * hd + e] = a / s;
            }
        }
        matvec(r->o[l], att, D, H * hd, t);
        for (int i = 0; i < D; i++) x[i] += t[i];
        rms(x, r->fn[l], D, c->eps, h);
        matvec(r->g[l], h, F, D, g);
        matvec(r->u[l], h, F, D, u);
        for (int i = 0; i < F; i++) g[i] = silu_d(g[i]) * u[i];
        matvec(r->dn[l], g, D, F, t);
        for (int i = 0; i < D; i++) x[i] += t[i];
    }
    rms(x, r->onorm, D, c->eps, h);
    matvec(c->tied ? r->emb : r->out, h, c->vocab, D, logits);
    free(x);
    free(h);
    free(q);
    free(att);
    free(t);
    free(g);
    free(u);
    free(p);
}

static void test_model(void **state)
{
    if (!gpu_ok()) skip();
    const int mtypes[] = {LODE_BF16, LODE_Q4_0, LODE_Q6_K};
    for (size_t mi = 0; mi < LODE_ARRAY_LEN(mtypes); mi++) {
        int wt = mtypes[mi];
        eng_cuda_config c = {2, 256, 4, 2,  64, 512, 1000, 1e-5f, 10000.f, NULL,
                             0, 96,  3, 32, 0,  0,   0,    0,     0};
        c.tied = mi == 1;
        eng_cuda_model *m = NULL;
        lode_status st = eng_cuda_model_create(&c, 0, &m);
        if (st) printf("create: %s\n", eng_cuda_errmsg(NULL));
        assert_int_equal(st, LODE_OK);
        refm r = {0};
        r.c = c;
        qscale = 0.25f;
        int L = c.n_layer;
        r.q = calloc(L, sizeof(double *)), r.k = calloc(L, sizeof(double *)),
        r.v = calloc(L, sizeof(double *)), r.o = calloc(L, sizeof(double *)),
        r.g = calloc(L, sizeof(double *)), r.u = calloc(L, sizeof(double *)),
        r.dn = calloc(L, sizeof(double *)), r.an = calloc(L, sizeof(double *)),
        r.fn = calloc(L, sizeof(double *));
        r.kc = calloc((size_t)L * c.max_ctx * c.n_kv_head * c.head_dim, sizeof(double));
        r.vc = calloc((size_t)L * c.max_ctx * c.n_kv_head * c.head_dim, sizeof(double));
#define PUT(kind, layer, t, rows, cols, dst, scale)                                                \
    do {                                                                                           \
        size_t nb_;                                                                                \
        void *h_ = ggml_random((t), (rows), (cols), &nb_);                                         \
        if ((t) == LODE_F32)                                                                       \
            for (int i_ = 0; i_ < (rows) * (cols); i_++) ((float *)h_)[i_] = 1.f + 0.2f * frand(); \
        else if ((t) == LODE_BF16)                                                                 \
            for (int i_ = 0; i_ < (rows) * (cols); i_++)                                           \
                ((uint16_t *)h_)[i_] = lode_float_to_bf16((scale)*frand());                        \
        else if ((t) == LODE_F16)                                                                  \
            for (int i_ = 0; i_ < (rows) * (cols); i_++)                                           \
                ((lode_half *)h_)[i_] = lode_float_to_half((scale)*frand());                       \
        st = eng_cuda_model_set_weight(m, (kind), (layer), (t), h_, nb_);                          \
        if (st) printf("set_weight: %s\n", eng_cuda_errmsg(m));                                    \
        assert_int_equal(st, LODE_OK);                                                             \
        (dst) = deq_copy((t), h_, (size_t)(rows) * (cols));                                        \
        free(h_);                                                                                  \
    } while (0)
        int D = c.dim, QR = c.n_head * c.head_dim, KR = c.n_kv_head * c.head_dim;
        PUT(ENG_CW_TOK_EMBD, 0, wt, c.vocab, D, r.emb, 1.f);
        if (!c.tied) PUT(ENG_CW_OUTPUT, 0, wt, c.vocab, D, r.out, 0.1f);
        PUT(ENG_CW_OUTPUT_NORM, 0, LODE_F32, 1, D, r.onorm, 1.f);
        for (int l = 0; l < L; l++) {
            /* K is F16 in one model: a split, unfused QKV */
            PUT(ENG_CW_ATTN_NORM, l, LODE_F32, 1, D, r.an[l], 1.f);
            PUT(ENG_CW_Q, l, wt, QR, D, r.q[l], 0.1f);
            PUT(ENG_CW_K, l, mi == 2 ? LODE_F16 : wt, KR, D, r.k[l], 0.1f);
            PUT(ENG_CW_V, l, wt, KR, D, r.v[l], 0.1f);
            PUT(ENG_CW_O, l, wt, D, QR, r.o[l], 0.1f);
            PUT(ENG_CW_FFN_NORM, l, LODE_F32, 1, D, r.fn[l], 1.f);
            PUT(ENG_CW_GATE, l, wt, c.ff, D, r.g[l], 0.1f);
            PUT(ENG_CW_UP, l, mi == 2 ? LODE_Q8_0 : wt, c.ff, D, r.u[l], 0.1f);
            PUT(ENG_CW_DOWN, l, wt, D, c.ff, r.dn[l], 0.1f);
        }
#undef PUT
        st = eng_cuda_model_ready(m);
        if (st) printf("ready: %s\n", eng_cuda_errmsg(m));
        assert_int_equal(st, LODE_OK);
        /* prompt of 45 tokens: prefill in two chunks (max_prefill 32) */
        int32_t prompt[45];
        for (int i = 0; i < 45; i++) prompt[i] = (int32_t)(rnd64() % (uint64_t)c.vocab);
        float *lg = malloc(sizeof(float) * c.vocab * 3); /* up to 3 rows of logits */
        double *ref = malloc(sizeof(double) * c.vocab);
        int32_t next;
        st = eng_cuda_prefill(m, 0, prompt, 45, NULL, &next, lg);
        if (st) printf("prefill: %s\n", eng_cuda_errmsg(m));
        assert_int_equal(st, LODE_OK);
        for (int i = 0; i < 45; i++) ref_step(&r, prompt[i], i, ref);
        double e = rel_l2(lg, ref, (size_t)c.vocab);
        int best = 0;
        for (int i = 1; i < c.vocab; i++)
            if (ref[i] > ref[best]) best = i;
        /* prefill GEMMs read bf16 activations and, for quantized models, weights dequantized
         * to bf16: 8-bit mantissas, amplified by the random 2-layer model */
        double pbound = wt == LODE_BF16 ? 3e-2 : 1e-1;
        printf("model %s prefill logits vs CPU reference: rel L2 %.2e (bound %.0e, bf16 "
               "activations); next %d, reference argmax %d\n",
               lode_dtype_name(wt), e, pbound, next, best);
        assert_true(e < pbound);
        /* two more sequences with short prompts, then 20 graph decode steps of the three: past
         * the GEMV limit (1 token for 16-bit weights, 2 quantized), so the decoder takes the
         * GEMM layers of the serving steps (cuBLAS; qmm.cu for quantized weights) */
        int32_t p2[3] = {1, 2, 3}, p3[2] = {7, 8}, n2;
        assert_int_equal(eng_cuda_prefill(m, 1, p2, 3, NULL, &n2, NULL), LODE_OK);
        assert_int_equal(eng_cuda_prefill(m, 2, p3, 2, NULL, &n2, NULL), LODE_OK);
        int32_t toks[20][3];
        for (int s = 0; s < 20; s++) {
            st = eng_cuda_decode(m, 3, NULL);
            if (st) printf("decode: %s\n", eng_cuda_errmsg(m));
            assert_int_equal(st, LODE_OK);
        }
        assert_int_equal(eng_cuda_read_tokens(m, 20, &toks[0][0], lg), LODE_OK);
        /* follow sequence 0 on the reference: feed the CUDA choices, compare the last logits */
        int32_t fed = next;
        double worst = 0;
        int agree = 0;
        for (int s = 0; s < 20; s++) {
            ref_step(&r, fed, 45 + s, ref);
            int rb = 0;
            for (int i = 1; i < c.vocab; i++)
                if (ref[i] > ref[rb]) rb = i;
            agree += rb == toks[s][0];
            fed = toks[s][0];
        }
        e = rel_l2(lg, ref, (size_t)c.vocab); /* logits of the last step, sequence 0 */
        worst = e;
        /* bf16 activations into the GEMMs, as in the prefill */
        double dbound = wt == LODE_BF16 ? 3e-2 : 5e-2;
        printf("model %s decode (20 graph steps, batch 3): last logits rel L2 %.2e (bound %.0e); "
               "greedy choices matching the reference argmax: %d/20\n",
               lode_dtype_name(wt), worst, dbound, agree);
        assert_true(worst < dbound);
        /* random models have close logits: 8-bit mantissas may flip near ties */
        assert_true(agree >= 15);
        assert_int_equal(eng_cuda_seq_len(m, 0), 65);
        free(lg);
        free(ref);
        for (int l = 0; l < L; l++) {
            free(r.q[l]), free(r.k[l]), free(r.v[l]), free(r.o[l]), free(r.g[l]), free(r.u[l]);
            free(r.dn[l]), free(r.an[l]), free(r.fn[l]);
        }
        free(r.q), free(r.k), free(r.v), free(r.o), free(r.g), free(r.u), free(r.dn), free(r.an),
            free(r.fn);
        free(r.emb), free(r.out), free(r.onorm), free(r.kc), free(r.vc);
        eng_cuda_model_destroy(m);
    }
    qscale = 1.f;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemv_types),
        cmocka_unit_test(test_gemv_short),
        cmocka_unit_test(test_gemv_fused),
        cmocka_unit_test(test_attn_decode),
        cmocka_unit_test(test_attn_decode_rows),
        cmocka_unit_test(test_attn_o),
        cmocka_unit_test(test_attn_prefill),
        cmocka_unit_test(test_rope_kv),
        cmocka_unit_test(test_norm_swiglu_embed),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_qmm),
        cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_model),
    };
    /* LODE_TEST_FILTER=test_qmm runs one test (e.g. under compute-sanitizer) */
    if (getenv("LODE_TEST_FILTER")) cmocka_set_test_filter(getenv("LODE_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, NULL);
}

#else

static void test_no_cuda(void **state)
{
    printf("this build has no CUDA (make CUDA=1): CUDA tests skipped\n");
    assert_int_equal(eng_cuda_available(), 0);
    skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_no_cuda)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
