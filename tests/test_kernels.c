/* test_kernels.c: the CPU kernels and the thread pool. Every kernel variant this CPU can
 * run is checked against the portable scalar variant and against a double-precision
 * reference on the dequantized weights, on fresh random inputs with outputs NaN-poisoned
 * first. Tolerances are relative L2 errors over a whole output, stated per type below.
 * lode-test: engine */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/lode.h"
#include "common/threadpool.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/kernels_int.h"

/* ---- helpers ----------------------------------------------------------------------- */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static float frand(void) /* uniform in [-1, 1) */
{
    return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float grand(void) /* roughly normal, unit variance */
{
    return (frand() + frand() + frand()) * 1.0f;
}

static void fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) x[i] = grand() * scale;
}

static void poison(float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = NAN;
}

/* ||a - b|| / ||b|| in double; a NaN anywhere gives +inf */
static double rel_l2(const float *a, const double *b, size_t n)
{
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i])) return INFINITY;
        e += (a[i] - b[i]) * (a[i] - b[i]);
        r += b[i] * b[i];
    }
    return r > 0 ? sqrt(e / r) : sqrt(e);
}

static double rel_l2f(const float *a, const float *b, size_t n)
{
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return r > 0 ? sqrt(e / r) : sqrt(e);
}

static const lode_dtype weight_types[] = {LODE_F32,  LODE_F16,  LODE_BF16, LODE_Q4_0,
                                          LODE_Q4_1, LODE_Q5_0, LODE_Q5_1, LODE_Q8_0,
                                          LODE_Q4_K, LODE_Q5_K, LODE_Q6_K};

/* Round-trip (quantize then dequantize) relative L2 error bound of a type on normal
 * data, with margin over what the reference quantizers reach. */
static double roundtrip_tol(lode_dtype t)
{
    switch (t) {
    case LODE_F32:
        return 0;
    case LODE_F16:
        return 1e-3;
    case LODE_BF16:
        return 5e-3;
    case LODE_Q8_0:
    case LODE_Q8_1:
    case LODE_Q8_K:
        return 0.01;
    case LODE_Q6_K:
        return 0.04;
    case LODE_Q5_0:
    case LODE_Q5_1:
    case LODE_Q5_K:
        return 0.07;
    default: /* 4-bit */
        return 0.14;
    }
}

/* Matmul error bound against double math on the dequantized weights and the f32
 * activations: the activations' own 8-bit quantization (~0.5%) dominates. */
static double matmul_tol(lode_dtype t)
{
    switch (t) {
    case LODE_F32:
    case LODE_F16:
    case LODE_BF16:
        return 1e-5;
    default:
        return 0.02;
    }
}

static int n_isas(krn_isa *out)
{
    int n = 0;
    for (int i = 0; i <= KRN_ISA_AVX512; i++)
        if (krn_isa_supported((krn_isa)i)) out[n++] = (krn_isa)i;
    return n;
}

/* ---- thread pool ------------------------------------------------------------------- */
typedef struct count_ctx {
    atomic_long sum;
    atomic_int hits[1000];
    int max_thread;
    lode_pool *pool;
    atomic_int nested_ok;
} count_ctx;

static void count_fn(void *ctx, size_t task, int thread)
{
    count_ctx *c = ctx;
    atomic_fetch_add(&c->sum, (long)task);
    atomic_fetch_add(&c->hits[task], 1);
    if (thread < 0 || thread > c->max_thread) atomic_store(&c->nested_ok, -1000);
}

static void test_pool_many_calls(void **state)
{
    lode_pool *p = NULL;
    assert_int_equal(lode_pool_create(3, &p), LODE_OK);
    assert_int_equal(lode_pool_size(p), 3);
    static count_ctx c;
    for (int it = 0; it < 20000; it++) {
        size_t n = (size_t)(it % 37) + 1;
        atomic_store(&c.sum, 0);
        c.max_thread = 2;
        for (size_t i = 0; i < n; i++) atomic_store(&c.hits[i], 0);
        lode_parallel_for(p, n, count_fn, &c);
        assert_int_equal(atomic_load(&c.sum), (long)(n * (n - 1) / 2));
        for (size_t i = 0; i < n; i++) assert_int_equal(atomic_load(&c.hits[i]), 1);
    }
    assert_int_equal(atomic_load(&c.nested_ok), 0);
    lode_pool_destroy(p);
}

static void nested_fn(void *ctx, size_t task, int thread)
{
    count_ctx *c = ctx;
    /* a nested region runs inline on this thread (thread id 0), done on return */
    count_ctx *inner = lode_calloc(1, sizeof *inner);
    if (!inner) return;
    inner->max_thread = 0;
    lode_parallel_for(c->pool, 10, count_fn, inner);
    if (atomic_load(&inner->sum) == 45 && atomic_load(&inner->nested_ok) == 0)
        atomic_fetch_add(&c->nested_ok, 1);
    lode_free(inner);
}

static void test_pool_nested(void **state)
{
    lode_pool *p = NULL;
    assert_int_equal(lode_pool_create(2, &p), LODE_OK);
    static count_ctx c;
    memset(&c, 0, sizeof c);
    c.pool = p;
    lode_parallel_for(p, 8, nested_fn, &c);
    assert_int_equal(atomic_load(&c.nested_ok), 8);
    lode_pool_destroy(p);
}

typedef struct race_arg {
    lode_pool *pool;
    int ok;
} race_arg;

static void *racer(void *arg)
{
    race_arg *a = arg;
    count_ctx *c = lode_calloc(1, sizeof *c);
    a->ok = c != NULL;
    for (int it = 0; c && it < 2000; it++) {
        atomic_store(&c->sum, 0);
        c->max_thread = 3;
        lode_parallel_for(a->pool, 20, count_fn, c);
        if (atomic_load(&c->sum) != 190 || atomic_load(&c->nested_ok) != 0) a->ok = 0;
    }
    lode_free(c);
    return NULL;
}

static void test_pool_concurrent_callers(void **state)
{
    lode_pool *p = NULL;
    assert_int_equal(lode_pool_create(4, &p), LODE_OK);
    pthread_t th[2];
    race_arg a[2] = {{p, 0}, {p, 0}};
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, racer, &a[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    assert_true(a[0].ok);
    assert_true(a[1].ok);
    lode_pool_destroy(p);
}

static void test_pool_idle_destroy(void **state)
{
    for (int i = 0; i < 20; i++) {
        lode_pool *p = NULL;
        assert_int_equal(lode_pool_create(i % 4, &p), LODE_OK);
        assert_true(lode_pool_size(p) >= 1);
        if (i % 2) {
            count_ctx *c = lode_calloc(1, sizeof *c);
            assert_non_null(c);
            c->max_thread = lode_pool_size(p) - 1;
            lode_parallel_for(p, 5, count_fn, c);
            assert_int_equal(atomic_load(&c->sum), 10);
            lode_free(c);
        }
        lode_pool_destroy(p);
    }
    lode_pool_destroy(NULL);
    /* a NULL pool runs inline */
    count_ctx *c = lode_calloc(1, sizeof *c);
    assert_non_null(c);
    lode_parallel_for(NULL, 7, count_fn, c);
    assert_int_equal(atomic_load(&c->sum), 21);
    lode_free(c);
    /* a pool that slept (past the spin window) still wakes for work */
    lode_pool *p = NULL;
    assert_int_equal(lode_pool_create(2, &p), LODE_OK);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    c = lode_calloc(1, sizeof *c);
    assert_non_null(c);
    c->max_thread = 1;
    lode_parallel_for(p, 100, count_fn, c);
    assert_int_equal(atomic_load(&c->sum), 4950);
    lode_free(c);
    lode_pool_destroy(p);
}

/* ---- dispatch ---------------------------------------------------------------------- */
static void test_dispatch(void **state)
{
    assert_true(krn_isa_supported(KRN_ISA_SCALAR));
    krn_isa act = krn_isa_active();
    assert_true(krn_isa_supported(act));
    assert_int_equal(krn_isa_set(KRN_ISA_SCALAR), LODE_OK);
    assert_int_equal(krn_isa_active(), KRN_ISA_SCALAR);
    assert_int_equal(krn_isa_set((krn_isa)7), LODE_ERR_UNSUPPORTED);
    assert_int_equal(krn_isa_set(act), LODE_OK);
    print_message("kernel variants on this CPU:%s%s%s (active %s)\n",
                  krn_isa_supported(KRN_ISA_SCALAR) ? " scalar" : "",
                  krn_isa_supported(KRN_ISA_AVX2) ? " avx2" : "",
                  krn_isa_supported(KRN_ISA_AVX512) ? " avx512" : "", krn_isa_name(act));
}

/* ---- rows -------------------------------------------------------------------------- */
static void test_roundtrip(void **state)
{
    const size_t n = 1024;
    float *x = lode_malloc(n * 4), *y = lode_malloc(n * 4), *y2 = lode_malloc(n * 4);
    uint8_t *q = lode_malloc(n * 4);
    double *ref = lode_malloc(n * 8);
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(y2);
    assert_non_null(q);
    assert_non_null(ref);
    krn_isa isas[3];
    int ni = n_isas(isas);
    lode_dtype types[LODE_ARRAY_LEN(weight_types) + 2];
    memcpy(types, weight_types, sizeof weight_types);
    types[LODE_ARRAY_LEN(weight_types)] = LODE_Q8_1;
    types[LODE_ARRAY_LEN(weight_types) + 1] = LODE_Q8_K;
    for (size_t k = 0; k < LODE_ARRAY_LEN(types); k++) {
        lode_dtype t = types[k];
        fill(x, n, 0.5f);
        for (size_t i = 0; i < n; i++) ref[i] = x[i];
        assert_int_equal(krn_isa_set(KRN_ISA_SCALAR), LODE_OK);
        assert_int_equal(krn_quantize_row(t, x, q, n), LODE_OK);
        poison(y, n);
        assert_int_equal(krn_dequantize_row(t, q, y, n), LODE_OK);
        double e = rel_l2(y, ref, n);
        print_message("round trip %-5s rel L2 %.5f (tol %.3f)\n", lode_dtype_name(t), e,
                      roundtrip_tol(t));
        assert_true(e <= roundtrip_tol(t));
        /* every variant dequantizes bit-identically and quantizes within the tolerance */
        for (int v = 0; v < ni; v++) {
            assert_int_equal(krn_isa_set(isas[v]), LODE_OK);
            poison(y2, n);
            assert_int_equal(krn_dequantize_row(t, q, y2, n), LODE_OK);
            assert_memory_equal(y, y2, n * 4);
            uint8_t *q2 = lode_malloc(n * 4);
            assert_non_null(q2);
            assert_int_equal(krn_quantize_row(t, x, q2, n), LODE_OK);
            poison(y2, n);
            assert_int_equal(krn_dequantize_row(t, q2, y2, n), LODE_OK);
            assert_true(rel_l2(y2, ref, n) <= roundtrip_tol(t));
            lode_free(q2);
        }
    }
    /* bad shapes and types are refused */
    assert_int_equal(krn_quantize_row(LODE_Q4_K, x, q, 100), LODE_ERR_INVALID);
    assert_int_equal(krn_dequantize_row(LODE_Q4_0, q, y, 33), LODE_ERR_INVALID);
    assert_int_equal(krn_dequantize_row((lode_dtype)4, q, y, 32), LODE_ERR_INVALID);
    assert_int_equal(krn_dequantize_row((lode_dtype)99, q, y, 32), LODE_ERR_INVALID);
    krn_isa_set(isas[ni - 1]);
    lode_free(x);
    lode_free(y);
    lode_free(y2);
    lode_free(q);
    lode_free(ref);
}

/* Random bytes make blocks with every bit pattern the quantizers may not produce (e.g.
 * Q8 values of -128, any 6-bit scale); the half scales are set to sane values. */
static void random_blocks(lode_dtype t, uint8_t *q, size_t n)
{
    size_t bytes = lode_dtype_row_bytes(t, n);
    for (size_t i = 0; i < bytes; i++) q[i] = (uint8_t)rnd();
    size_t nb = n / lode_dtype_block_elems(t), bb = lode_dtype_block_bytes(t);
    for (size_t b = 0; b < nb; b++) {
        uint8_t *p = q + b * bb;
        lode_half d = lode_float_to_half(0.01f + 0.01f * fabsf(frand()));
        lode_half m = lode_float_to_half(-0.05f * fabsf(frand()));
        switch (t) {
        case LODE_Q4_0:
        case LODE_Q5_0:
        case LODE_Q8_0:
            memcpy(p, &d, 2);
            break;
        case LODE_Q4_1:
        case LODE_Q5_1:
        case LODE_Q4_K:
        case LODE_Q5_K:
            memcpy(p, &d, 2);
            memcpy(p + 2, &m, 2);
            if (t == LODE_Q4_K || t == LODE_Q5_K) {
                lode_half dm = lode_float_to_half(0.002f);
                memcpy(p + 2, &dm, 2);
            }
            break;
        case LODE_Q6_K:
            memcpy(p + offsetof(block_q6_K, d), &d, 2);
            break;
        default:
            break;
        }
    }
    if (t == LODE_Q8_0) {
        /* Q8_0 weights never hold -128 (GGML quantizes to +-127) */
        for (size_t b = 0; b < nb; b++) {
            block_q8_0 *blk = (block_q8_0 *)(q + b * bb);
            for (int j = 0; j < 32; j++)
                if (blk->qs[j] == -128) blk->qs[j] = -127;
        }
    }
    if (t == LODE_F16 || t == LODE_BF16 || t == LODE_F32) {
        float *f = lode_malloc(n * 4);
        assert_non_null(f);
        fill(f, n, 0.3f);
        krn_quantize_row(t, f, q, n);
        lode_free(f);
    }
}

/* One weight matrix and activations through every variant's matmul, against the
 * scalar variant (<= 1e-5 relative L2) and the double reference (matmul_tol). */
static void check_matmul(lode_dtype t, size_t n_out, size_t n_in, size_t n_tok, int threads,
                         int random_bits)
{
    size_t ldy = n_out + 3, ldx = n_in + 5;
    size_t wbytes = lode_dtype_row_bytes(t, n_in) * n_out;
    uint8_t *W = lode_malloc(wbytes);
    float *X = lode_malloc(ldx * n_tok * 4), *Y = lode_malloc(ldy * n_tok * 4),
          *Ys = lode_malloc(ldy * n_tok * 4), *Wf = lode_malloc(n_in * n_out * 4);
    double *ref = lode_malloc(ldy * n_tok * 8);
    size_t wsz = krn_matmul_wsize(t, n_tok, n_in);
    void *ws = lode_malloc(wsz + 1);
    assert_non_null(W);
    assert_non_null(X);
    assert_non_null(Y);
    assert_non_null(Ys);
    assert_non_null(Wf);
    assert_non_null(ref);
    assert_non_null(ws);
    lode_pool *pool = NULL;
    assert_int_equal(lode_pool_create(threads, &pool), LODE_OK);
    assert_int_equal(krn_isa_set(KRN_ISA_SCALAR), LODE_OK);
    if (random_bits) {
        for (size_t o = 0; o < n_out; o++)
            random_blocks(t, W + o * lode_dtype_row_bytes(t, n_in), n_in);
    } else {
        float *row = lode_malloc(n_in * 4);
        assert_non_null(row);
        for (size_t o = 0; o < n_out; o++) {
            fill(row, n_in, 0.2f);
            assert_int_equal(krn_quantize_row(t, row, W + o * lode_dtype_row_bytes(t, n_in), n_in),
                             LODE_OK);
        }
        lode_free(row);
    }
    for (size_t o = 0; o < n_out; o++)
        assert_int_equal(
            krn_dequantize_row(t, W + o * lode_dtype_row_bytes(t, n_in), Wf + o * n_in, n_in),
            LODE_OK);
    fill(X, ldx * n_tok, 1.0f);
    for (size_t tk = 0; tk < n_tok; tk++)
        for (size_t o = 0; o < n_out; o++) {
            double s = 0;
            for (size_t i = 0; i < n_in; i++) s += (double)Wf[o * n_in + i] * X[tk * ldx + i];
            ref[tk * n_out + o] = s;
        }
    /* the scalar variant first */
    poison(Ys, ldy * n_tok);
    assert_int_equal(krn_matmul(pool, t, W, n_out, n_in, X, ldx, n_tok, Ys, ldy, ws, wsz), LODE_OK);
    float *packed = lode_malloc(n_out * n_tok * 4);
    assert_non_null(packed);
    for (size_t tk = 0; tk < n_tok; tk++) memcpy(packed + tk * n_out, Ys + tk * ldy, n_out * 4);
    double e = rel_l2(packed, ref, n_out * n_tok);
    if (e > matmul_tol(t))
        print_message("%s %zux%zu tok %zu scalar vs double: %.6f\n", lode_dtype_name(t), n_out,
                      n_in, n_tok, e);
    assert_true(e <= matmul_tol(t));
    krn_isa isas[3];
    int ni = n_isas(isas);
    for (int v = 1; v < ni; v++) {
        assert_int_equal(krn_isa_set(isas[v]), LODE_OK);
        poison(Y, ldy * n_tok);
        assert_int_equal(krn_matmul(pool, t, W, n_out, n_in, X, ldx, n_tok, Y, ldy, ws, wsz),
                         LODE_OK);
        float *pv = lode_malloc(n_out * n_tok * 4);
        assert_non_null(pv);
        for (size_t tk = 0; tk < n_tok; tk++) {
            memcpy(pv + tk * n_out, Y + tk * ldy, n_out * 4);
            /* the padding between rows is not written */
            for (size_t o = n_out; o < ldy; o++) assert_true(isnan(Y[tk * ldy + o]));
        }
        double ev = rel_l2f(pv, packed, n_out * n_tok);
        double ed = rel_l2(pv, ref, n_out * n_tok);
        if (ev > 1e-5 || ed > matmul_tol(t))
            print_message("%s %s %zux%zu tok %zu: vs scalar %.2e vs double %.2e\n",
                          krn_isa_name(isas[v]), lode_dtype_name(t), n_out, n_in, n_tok, ev, ed);
        assert_true(ev <= 1e-5);
        assert_true(ed <= matmul_tol(t));
        /* single-row dot entry points agree with the matmul */
        float d1 = krn_vec_dot_f32(t, n_in, W, X);
        assert_true(fabs(d1 - ref[0]) <= 1e-4 * (1 + fabs(ref[0])));
        lode_free(pv);
    }
    /* a short workspace is refused */
    if (wsz > 0)
        assert_int_equal(krn_matmul(pool, t, W, n_out, n_in, X, ldx, n_tok, Y, ldy, ws, wsz - 1),
                         LODE_ERR_INVALID);
    krn_isa_set(isas[ni - 1]);
    lode_pool_destroy(pool);
    lode_free(packed);
    lode_free(W);
    lode_free(X);
    lode_free(Y);
    lode_free(Ys);
    lode_free(Wf);
    lode_free(ref);
    lode_free(ws);
}

static void test_matmul_types(void **state)
{
    for (size_t k = 0; k < LODE_ARRAY_LEN(weight_types); k++) {
        lode_dtype t = weight_types[k];
        check_matmul(t, 37, 512, 1, 2, 0);
        check_matmul(t, 37, 512, 3, 2, 0);
        check_matmul(t, 37, 512, 17, 3, 0);
        check_matmul(t, 9, 256, 5, 2, 1); /* arbitrary bit patterns */
    }
}

static void test_matmul_shapes(void **state)
{
    /* decode and prefill paths, n_out not a multiple of threads or tiles, many tokens */
    check_matmul(LODE_Q4_1, 577, 576, 1, 2, 0);
    check_matmul(LODE_Q4_1, 130, 576, 70, 2, 0);
    check_matmul(LODE_Q8_0, 1001, 576, 1, 3, 0);
    check_matmul(LODE_Q4_K, 66, 1536, 67, 2, 0);
    check_matmul(LODE_Q6_K, 3, 256, 2, 1, 0);
    check_matmul(LODE_F16, 130, 96, 9, 2, 0);
}

/* several matmuls in one region equal the same matmuls one by one */
static void test_matmul_multi(void **state)
{
    const size_t n_in = 576, n_tok = 3;
    const lode_dtype wt[3] = {LODE_Q4_1, LODE_Q5_1, LODE_Q4_1};
    const size_t n_out[3] = {37, 12, 5};
    lode_pool *pool = NULL;
    assert_int_equal(lode_pool_create(2, &pool), LODE_OK);
    float *X = lode_malloc(n_in * n_tok * 4), *row = lode_malloc(n_in * 4);
    size_t wsz = krn_matmul_wsize(LODE_Q4_1, n_tok, n_in);
    void *ws = lode_malloc(wsz), *ws2 = lode_malloc(wsz);
    assert_true(X && row && ws && ws2);
    fill(X, n_in * n_tok, 1.f);
    uint8_t *W[3];
    float *Y[3], *Yr[3];
    krn_mm mm[3];
    for (int k = 0; k < 3; k++) {
        size_t rb = lode_dtype_row_bytes(wt[k], n_in);
        W[k] = lode_malloc(rb * n_out[k]);
        Y[k] = lode_malloc(n_out[k] * n_tok * 4);
        Yr[k] = lode_malloc(n_out[k] * n_tok * 4);
        assert_true(W[k] && Y[k] && Yr[k]);
        for (size_t o = 0; o < n_out[k]; o++) {
            fill(row, n_in, 0.3f);
            krn_quantize_row(wt[k], row, W[k] + o * rb, n_in);
        }
        poison(Y[k], n_out[k] * n_tok);
        assert_int_equal(krn_matmul(pool, wt[k], W[k], n_out[k], n_in, X, n_in, n_tok, Yr[k],
                                    n_out[k], ws2, wsz),
                         LODE_OK);
        mm[k] = (krn_mm){wt[k], W[k], n_out[k], Y[k], n_out[k]};
    }
    assert_int_equal(krn_quantize_acts(pool, LODE_Q4_1, X, n_in, n_tok, n_in, ws, wsz), LODE_OK);
    assert_int_equal(krn_matmul_q_multi(pool, mm, 3, n_in, ws, 0, n_tok), LODE_OK);
    for (int k = 0; k < 3; k++) assert_memory_equal(Y[k], Yr[k], n_out[k] * n_tok * 4);
    /* activations of another type cannot be shared */
    krn_mm bad[2] = {mm[0], {LODE_Q8_0, W[0], 1, Y[0], 1}};
    assert_int_equal(krn_matmul_q_multi(pool, bad, 2, n_in, ws, 0, n_tok), LODE_ERR_INVALID);
    for (int k = 0; k < 3; k++) {
        lode_free(W[k]);
        lode_free(Y[k]);
        lode_free(Yr[k]);
    }
    lode_free(X);
    lode_free(row);
    lode_free(ws);
    lode_free(ws2);
    lode_pool_destroy(pool);
}

/* vec_dot on quantized activations equals dequantize-both-then-dot within rounding */
static void test_vec_dot_pairs(void **state)
{
    const size_t n = 768;
    uint8_t *w = lode_malloc(n * 4), *xq = lode_malloc(n * 4);
    float *x = lode_malloc(n * 4), *wf = lode_malloc(n * 4), *xf = lode_malloc(n * 4);
    assert_non_null(w);
    assert_non_null(xq);
    assert_non_null(x);
    assert_non_null(wf);
    assert_non_null(xf);
    krn_isa isas[3];
    int ni = n_isas(isas);
    for (size_t k = 0; k < LODE_ARRAY_LEN(weight_types); k++) {
        lode_dtype t = weight_types[k], vt = krn_vec_dot_type(t);
        random_blocks(t, w, n);
        fill(x, n, 1.f);
        krn_isa_set(KRN_ISA_SCALAR);
        assert_int_equal(krn_quantize_row(vt, x, xq, n), LODE_OK);
        assert_int_equal(krn_dequantize_row(t, w, wf, n), LODE_OK);
        assert_int_equal(krn_dequantize_row(vt, xq, xf, n), LODE_OK);
        double ref = 0, mag = 0;
        for (size_t i = 0; i < n; i++) {
            ref += (double)wf[i] * xf[i];
            mag += fabs((double)wf[i] * xf[i]);
        }
        for (int v = 0; v < ni; v++) {
            krn_isa_set(isas[v]);
            float d = krn_vec_dot(t, n, w, xq);
            /* Q8_1's s and the halves round to ~1e-3 of the block sums */
            double tol = 2e-3 * mag + 1e-6;
            if (fabs(d - ref) > tol)
                print_message("%s %s: %g vs %g\n", krn_isa_name(isas[v]), lode_dtype_name(t), d,
                              ref);
            assert_true(fabs(d - ref) <= tol);
        }
    }
    krn_isa_set(isas[ni - 1]);
    lode_free(w);
    lode_free(xq);
    lode_free(x);
    lode_free(wf);
    lode_free(xf);
}

/* The 32-element block types round as GGML's x86 dot products do on every ISA (so that
 * llama.cpp's results are reproduced): the activation quantization and every element of
 * a matmul (tiles and panels of several rows and tokens included) are bit for bit the same
 * on every variant the CPU has. */
static void same_bits_on_every_isa(size_t n_in, size_t n_out, size_t n_tok)
{
    const lode_dtype types[] = {LODE_Q4_0, LODE_Q4_1, LODE_Q5_0, LODE_Q5_1, LODE_Q8_0};
    uint8_t *w = lode_malloc(n_out * n_in * 2), *ws = lode_malloc(n_tok * n_in * 2);
    uint8_t *xq0 = lode_malloc(n_tok * n_in * 2);
    float *x = lode_malloc(n_tok * n_in * 4), *y = lode_malloc(n_tok * n_out * 4);
    float *y0 = lode_malloc(n_tok * n_out * 4);
    assert_true(w && ws && xq0 && x && y && y0);
    krn_isa isas[3];
    int ni = n_isas(isas);
    for (size_t k = 0; k < LODE_ARRAY_LEN(types); k++) {
        lode_dtype t = types[k], vt = krn_vec_dot_type(t);
        size_t rb = lode_dtype_row_bytes(t, n_in), xb = lode_dtype_row_bytes(vt, n_in);
        for (size_t r = 0; r < n_out; r++) random_blocks(t, w + r * rb, n_in);
        fill(x, n_tok * n_in, 3.f);
        for (int v = 0; v < ni; v++) {
            krn_isa_set(isas[v]);
            poison(y, n_tok * n_out);
            assert_int_equal(
                krn_matmul(NULL, t, w, n_out, n_in, x, n_in, n_tok, y, n_out, ws, n_tok * xb),
                LODE_OK);
            if (v == 0) {
                memcpy(xq0, ws, n_tok * xb);
                memcpy(y0, y, n_tok * n_out * 4);
                /* and the tiles agree with one dot product at a time */
                for (size_t tk = 0; tk < n_tok; tk++)
                    for (size_t r = 0; r < n_out; r++) {
                        float d = krn_vec_dot(t, n_in, w + r * rb, ws + tk * xb);
                        assert_memory_equal(&d, &y0[tk * n_out + r], sizeof d);
                    }
                continue;
            }
            if (memcmp(ws, xq0, n_tok * xb) || memcmp(y, y0, n_tok * n_out * 4))
                print_message("%s %s differs from %s\n", lode_dtype_name(t), krn_isa_name(isas[v]),
                              krn_isa_name(isas[0]));
            assert_memory_equal(ws, xq0, n_tok * xb);
            assert_memory_equal(y, y0, n_tok * n_out * 4);
        }
    }
    krn_isa_set(isas[ni - 1]);
    lode_free(w);
    lode_free(ws);
    lode_free(xq0);
    lode_free(x);
    lode_free(y);
    lode_free(y0);
}

static void test_block_types_same_bits_on_every_isa(void **state)
{
    same_bits_on_every_isa(576, 7, 5);
    /* panels of 16 tokens and a remainder of 3, rows not a multiple of 4 */
    same_bits_on_every_isa(1536, 13, 19);
    /* rows longer than the panels' activation buffer (the tiles take them) */
    same_bits_on_every_isa(4160, 5, 6);
}

/* ---- f32 row ops ------------------------------------------------------------------- */
static void test_row_ops(void **state)
{
    enum { N = 1000 };
    static float x[N], w[N], y[N], r[N], g[N], u[N];
    static double ref[N];
    krn_isa isas[3];
    int ni = n_isas(isas);
    for (int v = 0; v < ni; v++) {
        krn_isa_set(isas[v]);
        for (size_t n = 1; n <= N; n = n * 3 + 1) {
            fill(x, n, 2.f);
            fill(w, n, 1.f);
            fill(r, n, 1.f);
            /* rmsnorm */
            double ss = 0;
            for (size_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
            double s = 1.0 / sqrt(ss / (double)n + 1e-5);
            for (size_t i = 0; i < n; i++) ref[i] = x[i] * s * w[i];
            poison(y, n);
            krn_rmsnorm(y, x, w, n, 1e-5f);
            assert_true(rel_l2(y, ref, n) < 1e-5);
            /* fused residual */
            memcpy(g, x, n * 4);
            ss = 0;
            for (size_t i = 0; i < n; i++) {
                double a = (double)x[i] + r[i];
                ss += a * a;
            }
            s = 1.0 / sqrt(ss / (double)n + 1e-5);
            for (size_t i = 0; i < n; i++) ref[i] = ((double)x[i] + r[i]) * s * w[i];
            poison(y, n);
            krn_add_rmsnorm(y, g, r, w, n, 1e-5f);
            assert_true(rel_l2(y, ref, n) < 1e-5);
            for (size_t i = 0; i < n; i++) assert_true(fabsf(g[i] - (x[i] + r[i])) < 1e-6f);
            /* silu * mul */
            fill(g, n, 4.f);
            fill(u, n, 1.f);
            for (size_t i = 0; i < n; i++) ref[i] = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
            poison(y, n);
            krn_silu_mul(y, g, u, n);
            assert_true(rel_l2(y, ref, n) < 1e-5);
            /* extreme inputs stay finite and right */
            if (n > 1) {
                g[0] = -100.f;
                g[n - 1] = 100.f;
                krn_silu_mul(y, g, u, n);
                assert_true(fabsf(y[0]) < 1e-30f);
                assert_true(fabsf(y[n - 1] - 100.f * u[n - 1]) <= 1e-4f * fabsf(100.f * u[n - 1]));
            }
            /* add, scale */
            for (size_t i = 0; i < n; i++) ref[i] = ((double)x[i] + r[i]) * 0.5;
            poison(y, n);
            krn_add(y, x, r, n);
            krn_scale(y, 0.5f, n);
            assert_true(rel_l2(y, ref, n) < 1e-6);
            /* softmax */
            memcpy(y, x, n * 4);
            y[0] = 80.f; /* large values must not overflow */
            double mx = -1e30, sum = 0;
            for (size_t i = 0; i < n; i++) mx = fmax(mx, i ? x[i] : 80.0);
            for (size_t i = 0; i < n; i++) sum += exp((i ? x[i] : 80.0) - mx);
            for (size_t i = 0; i < n; i++) ref[i] = exp((i ? x[i] : 80.0) - mx) / sum;
            krn_softmax(y, n);
            assert_true(rel_l2(y, ref, n) < 1e-5);
            /* half conversion and the f16 dot */
            lode_half h[N];
            float back[N];
            krn_f32_to_f16(x, h, n);
            for (size_t i = 0; i < n; i++) assert_int_equal(h[i], lode_float_to_half(x[i]));
            poison(back, n);
            krn_f16_to_f32(h, back, n);
            for (size_t i = 0; i < n; i++) assert_true(back[i] == lode_half_to_float(h[i]));
            double dd = 0, mag = 0;
            for (size_t i = 0; i < n; i++) {
                dd += (double)back[i] * w[i];
                mag += fabs((double)back[i] * w[i]);
            }
            assert_true(fabs(krn_dot_f16_f32(h, w, n) - dd) <= 1e-5 * mag + 1e-6);
        }
    }
    /* argmax: first of ties, NaN skipped */
    float a[6] = {1, NAN, 3, 3, -1, 2};
    assert_int_equal(krn_argmax(a, 6), 2);
    float b[2] = {NAN, -5};
    assert_int_equal(krn_argmax(b, 2), 1);
    assert_int_equal(krn_argmax(b, 0), 0);
    krn_isa_set(isas[ni - 1]);
}

/* The angles as llama.cpp forms them (pos times a float theta_scale multiplied in
 * repeatedly, so they drift from pos * base^(-2i/n_rot) by a few float roundings per
 * pair), the rotation in double. */
static void rope_ref(double *y, const float *x, size_t n_head, size_t hd, int64_t pos,
                     const krn_rope_params *p)
{
    size_t nr = p->n_rot;
    float ts = powf(p->base, -2.0f / (float)nr);
    for (size_t h = 0; h < n_head; h++) {
        for (size_t d = 0; d < hd; d++) y[h * hd + d] = x[h * hd + d];
        float theta = (float)pos;
        for (size_t i = 0; i < nr / 2; i++, theta *= ts) {
            float ff = p->freq_factors ? p->freq_factors[i] : 1.f;
            double th = (double)(p->freq_scale * (theta / ff));
            /* the float recurrence stays within a few roundings of the exact angle */
            double exact =
                (double)pos * p->freq_scale * pow(p->base, -2.0 * (double)i / (double)nr) / ff;
            assert_true(fabs(th - exact) <= 1e-6 * fabs(exact) * (double)(i + 2));
            size_t a = p->neox ? i : 2 * i, b = p->neox ? i + nr / 2 : 2 * i + 1;
            double x0 = x[h * hd + a], x1 = x[h * hd + b];
            y[h * hd + a] = x0 * cos(th) - x1 * sin(th);
            y[h * hd + b] = x0 * sin(th) + x1 * cos(th);
        }
    }
}

static void test_rope(void **state)
{
    enum { NH = 3, HD = 64 };
    float x[NH * HD], y[NH * HD], ff[HD / 2];
    double ref[NH * HD];
    for (int i = 0; i < HD / 2; i++) ff[i] = 1.f + (float)i * 0.25f;
    krn_rope_params cases[4] = {
        {100000.f, 1.f, NULL, HD, 0},
        {10000.f, 1.f, NULL, HD, 1},
        {500000.f, 1.f, ff, HD, 0},
        {10000.f, 0.25f, NULL, 32, 1}, /* partial rotation, linear scaling */
    };
    int64_t positions[] = {0, 1, 17, 4095};
    for (int c = 0; c < 4; c++)
        for (int pi = 0; pi < 4; pi++) {
            fill(x, NH * HD, 1.f);
            memcpy(y, x, sizeof x);
            krn_rope(y, NH, HD, positions[pi], &cases[c]);
            rope_ref(ref, x, NH, HD, positions[pi], &cases[c]);
            assert_true(rel_l2(y, ref, NH * HD) < 1e-5);
        }
    /* every ISA's rotation has the scalar one's bits, and so has the split form (angles
     * once, then the rotations) that a step uses for all its layers; head size 40 and a
     * rotation of 24 dims leave tails past the vector width */
    krn_isa isas[3];
    int ni = n_isas(isas);
    krn_rope_params bits[6] = {cases[0],
                               cases[1],
                               cases[2],
                               cases[3],
                               {10000.f, 1.f, NULL, 40, 0},
                               {10000.f, 1.f, NULL, 24, 1}};
    size_t hds[6] = {HD, HD, HD, HD, 40, 40};
    for (int c = 0; c < 6; c++)
        for (int pi = 0; pi < 4; pi++) {
            float want[NH * HD], cs[256], sn[256];
            fill(x, NH * HD, 1.f);
            krn_isa_set(KRN_ISA_SCALAR);
            memcpy(want, x, sizeof x);
            krn_rope(want, NH, hds[c], positions[pi], &bits[c]);
            for (int v = 0; v < ni; v++) {
                krn_isa_set(isas[v]);
                memcpy(y, x, sizeof x);
                krn_rope(y, NH, hds[c], positions[pi], &bits[c]);
                assert_memory_equal(y, want, sizeof y);
                memcpy(y, x, sizeof x);
                assert_true(krn_rope_half(hds[c], &bits[c]) == bits[c].n_rot / 2);
                krn_rope_angles(cs, sn, hds[c], positions[pi], &bits[c]);
                krn_rope_apply(y, NH, hds[c], cs, sn, &bits[c]);
                assert_memory_equal(y, want, sizeof y);
            }
        }
    krn_isa_set(isas[ni - 1]);
    /* position 0 is the identity; GGUF llama rotates adjacent pairs */
    fill(x, NH * HD, 1.f);
    memcpy(y, x, sizeof x);
    krn_rope(y, NH, HD, 0, &cases[0]);
    assert_memory_equal(x, y, sizeof x);
    memcpy(y, x, sizeof x);
    krn_rope(y, 1, HD, 1, &cases[0]); /* pair 0 turns by exactly 1 radian */
    assert_true(fabsf(y[0] - (x[0] * cosf(1) - x[1] * sinf(1))) < 1e-5f);
    assert_true(fabsf(y[1] - (x[0] * sinf(1) + x[1] * cosf(1))) < 1e-5f);
}

/* ---- attention --------------------------------------------------------------------- */
static void check_attention(size_t n_head, size_t n_kv, size_t hd, size_t n_ctx, size_t n_q,
                            int threads)
{
    size_t n_blocks = (n_ctx + KRN_KV_BLOCK - 1) / KRN_KV_BLOCK;
    size_t n_phys = n_blocks + 3;
    size_t cache_elems = n_phys * n_kv * KRN_KV_BLOCK * hd;
    lode_half *kc = lode_malloc(cache_elems * 2), *vc = lode_malloc(cache_elems * 2);
    int32_t *table = lode_malloc(n_blocks * 4);
    float *K = lode_malloc(n_ctx * n_kv * hd * 4), *V = lode_malloc(n_ctx * n_kv * hd * 4);
    float *Q = lode_malloc(n_q * n_head * hd * 4), *O = lode_malloc(n_q * n_head * hd * 4);
    double *ref = lode_malloc(n_q * n_head * hd * 8), *sc = lode_malloc(n_ctx * 8);
    assert_true(kc && vc && table && K && V && Q && O && ref && sc);
    for (size_t i = 0; i < cache_elems; i++) kc[i] = vc[i] = 0x7E00; /* NaN: unused slots */
    /* a shuffled block table: logical b -> physical */
    for (size_t b = 0; b < n_blocks; b++) table[b] = (int32_t)(b + 3);
    for (size_t b = n_blocks; b > 1; b--) {
        size_t j = rnd() % b;
        int32_t t = table[b - 1];
        table[b - 1] = table[j];
        table[j] = t;
    }
    fill(K, n_ctx * n_kv * hd, 1.f);
    fill(V, n_ctx * n_kv * hd, 1.f);
    fill(Q, n_q * n_head * hd, 1.f);
    for (size_t p = 0; p < n_ctx; p++)
        krn_kv_store(kc, vc, table, n_kv, hd, (int64_t)p, K + p * n_kv * hd, V + p * n_kv * hd);
    size_t pos0 = n_ctx - n_q;
    float scale = 1.f / sqrtf((float)hd);
    for (size_t qi = 0; qi < n_q; qi++)
        for (size_t h = 0; h < n_head; h++) {
            size_t kvh = h / (n_head / n_kv), last = pos0 + qi;
            double mx = -1e300, sum = 0;
            for (size_t p = 0; p <= last; p++) {
                double s = 0;
                for (size_t d = 0; d < hd; d++)
                    s += (double)lode_half_to_float(
                             lode_float_to_half(Q[(qi * n_head + h) * hd + d])) *
                         lode_half_to_float(lode_float_to_half(K[(p * n_kv + kvh) * hd + d]));
                sc[p] = s * scale;
                mx = fmax(mx, sc[p]);
            }
            for (size_t p = 0; p <= last; p++) sum += (sc[p] = exp(sc[p] - mx));
            /* the probabilities are rounded to half before the product with V */
            for (size_t p = 0; p <= last; p++)
                sc[p] = lode_half_to_float(lode_float_to_half((float)(sc[p] / sum)));
            for (size_t d = 0; d < hd; d++) {
                double o = 0;
                for (size_t p = 0; p <= last; p++)
                    o += sc[p] *
                         lode_half_to_float(lode_float_to_half(V[(p * n_kv + kvh) * hd + d]));
                ref[(qi * n_head + h) * hd + d] = o;
            }
        }
    lode_pool *pool = NULL;
    assert_int_equal(lode_pool_create(threads, &pool), LODE_OK);
    krn_isa isas[3];
    int ni = n_isas(isas);
    for (int v = 0; v < ni; v++) {
        krn_isa_set(isas[v]);
        poison(O, n_q * n_head * hd);
        krn_attn_args a = {.q = Q,
                           .k_cache = kc,
                           .v_cache = vc,
                           .block_table = table,
                           .n_q = n_q,
                           .pos0 = (int64_t)pos0,
                           .n_head = n_head,
                           .n_kv_head = n_kv,
                           .head_dim = hd,
                           .scale = scale,
                           .several_end = n_q >= 2 ? INT64_MAX : 0,
                           .out = O};
        assert_int_equal(krn_attention(pool, &a), LODE_OK);
        /* 1e-4: a probability within a float rounding of a half-rounding boundary may round
         * the other way than in the double reference (2^-11 of that term) */
        double e = rel_l2(O, ref, n_q * n_head * hd);
        if (e > 1e-5)
            print_message("attention %s h%zu kv%zu d%zu ctx%zu q%zu: %.2e\n", krn_isa_name(isas[v]),
                          n_head, n_kv, hd, n_ctx, n_q, e);
        assert_true(e <= 1e-4);
        /* one query per attention, all in one region: the same bits */
        krn_attn_args *many = lode_malloc(n_q * sizeof *many);
        float *O2 = lode_malloc(n_q * n_head * hd * sizeof *O2);
        assert_true(many && O2);
        poison(O2, n_q * n_head * hd);
        for (size_t qi = 0; qi < n_q; qi++) {
            many[qi] = a;
            many[qi].q = Q + qi * n_head * hd;
            many[qi].n_q = 1;
            many[qi].pos0 = (int64_t)(pos0 + qi);
            many[qi].out = O2 + qi * n_head * hd;
        }
        assert_int_equal(krn_attention_many(pool, many, n_q), LODE_OK);
        assert_memory_equal(O2, O, n_q * n_head * hd * sizeof *O);
        lode_free(many);
        lode_free(O2);
    }
    krn_attn_args bad = {.q = Q,
                         .k_cache = kc,
                         .v_cache = vc,
                         .block_table = table,
                         .n_q = 1,
                         .n_head = 5,
                         .n_kv_head = 2,
                         .head_dim = hd,
                         .out = O};
    assert_int_equal(krn_attention(pool, &bad), LODE_ERR_INVALID);
    assert_int_equal(krn_attention_many(pool, &bad, 1), LODE_ERR_INVALID);
    krn_isa_set(isas[ni - 1]);
    lode_pool_destroy(pool);
    lode_free(kc);
    lode_free(vc);
    lode_free(table);
    lode_free(K);
    lode_free(V);
    lode_free(Q);
    lode_free(O);
    lode_free(ref);
    lode_free(sc);
}

/* The probability x V product in the order attn_one's generic path sums it (classes
 * j % ncls from +0, the fold of 64 classes to 16, the tree of _mm512_reduce_add_ps, the
 * rest in double), written out in scalar C */
static void pv_ordered_ref(float *out, const float *p, const lode_half *const *vblk, size_t n,
                           size_t m, size_t ncls, size_t hd)
{
    static float part[64][128];
    memset(part, 0, sizeof part);
    for (size_t j = 0; j < m; j++)
        for (size_t d = 0; d < hd; d++)
            part[j % ncls][d] += p[j] * lode_half_to_float(vblk[j / 16][(j % 16) * hd + d]);
    for (size_t d = 0; d < hd; d++) {
        float f[16];
        for (size_t i = 0; i < 16; i++)
            f[i] = ncls == 16
                       ? part[i][d]
                       : (part[i][d] + part[32 + i][d]) + (part[16 + i][d] + part[48 + i][d]);
        float t3[8], t6[4];
        for (int i = 0; i < 8; i++) t3[i] = f[i + 8] + f[i];
        for (int i = 0; i < 4; i++) t6[i] = t3[i + 4] + t3[i];
        double s = (t6[0] + t6[2]) + (t6[1] + t6[3]);
        for (size_t j = m; j < n; j++)
            s += (double)(p[j] * lode_half_to_float(vblk[j / 16][(j % 16) * hd + d]));
        out[d] = (float)s;
    }
}

/* An ISA's fused probability x V product has the bits of the generic path's order, in
 * both of GGML's orders, for lengths around the class and padding boundaries and head
 * sizes that are and are not multiples of its 64-dim groups */
static void test_attention_pv_order(void **state)
{
    enum { MAXN = 200, HD = 128 };
    static lode_half v[MAXN / 16 + 1][16 * HD];
    float p[MAXN], out[HD], want[HD];
    const lode_half *vblk[MAXN / 16 + 1];
    for (size_t b = 0; b <= MAXN / 16; b++) {
        for (size_t i = 0; i < 16 * HD; i++) v[b][i] = lode_float_to_half(grand());
        vblk[(b * 7) % (MAXN / 16 + 1)] = v[b]; /* blocks out of order, as a table has them */
    }
    krn_isa isas[3];
    int ni = n_isas(isas), tested = 0;
    size_t lens[] = {1, 5, 16, 31, 32, 33, 64, 65, 70, 96, 127, 128, 129, 200};
    for (int vi = 0; vi < ni; vi++) {
        krn_isa_set(isas[vi]);
        const krn_ops *o = krn_ops_get();
        if (!o->pv_ordered) continue;
        tested++;
        for (size_t li = 0; li < LODE_ARRAY_LEN(lens); li++)
            for (int gemm = 0; gemm < 2; gemm++)
                for (size_t hd = 48; hd <= HD; hd += 16) {
                    size_t n = lens[li];
                    for (size_t j = 0; j < n; j++)
                        p[j] = lode_half_to_float(lode_float_to_half((frand() + 1) / 2));
                    size_t n_kv = n < 32 ? 32 : (n + 31) & ~(size_t)31;
                    size_t m = gemm ? n : LODE_MIN(n, n_kv & ~(size_t)63), ncls = gemm ? 16 : 64;
                    poison(out, HD);
                    o->pv_ordered(out, p, vblk, n, m, ncls, hd);
                    pv_ordered_ref(want, p, vblk, n, m, ncls, hd);
                    assert_memory_equal(out, want, hd * sizeof *out);
                }
    }
    krn_isa_set(isas[ni - 1]);
    if (!tested) skip(); /* no ISA of this CPU has the fused product */
}

/* An ISA's block of q.k scores has the bits of its one-row ordered dot product, in both
 * of GGML's orders, for full and partial blocks */
static void test_attention_kq_order(void **state)
{
    enum { HD = 128 };
    static lode_half k[16 * HD];
    float q[HD], out[16];
    for (size_t i = 0; i < 16 * HD; i++) k[i] = lode_float_to_half(grand());
    for (size_t i = 0; i < HD; i++) q[i] = lode_half_to_float(lode_float_to_half(grand()));
    krn_isa isas[3];
    int ni = n_isas(isas), tested = 0;
    for (int vi = 0; vi < ni; vi++) {
        krn_isa_set(isas[vi]);
        const krn_ops *o = krn_ops_get();
        if (!o->kq_block) continue;
        tested++;
        for (size_t hd = 64; hd <= HD; hd += 64)
            for (int several = 0; several < 2; several++)
                for (int ns = 1; ns <= 16; ns++) {
                    poison(out, 16);
                    o->kq_block(k, q, hd, ns, several, out);
                    for (int s = 0; s < ns; s++) {
                        float want = o->dot_f16_ordered(k + (size_t)s * hd, q, hd, several);
                        assert_memory_equal(&out[s], &want, sizeof want);
                    }
                    for (int s = ns; s < 16; s++) assert_true(isnan(out[s])); /* untouched */
                }
    }
    krn_isa_set(isas[ni - 1]);
    if (!tested) skip(); /* no ISA of this CPU has the block form */
}

static void test_attention(void **state)
{
    check_attention(9, 3, 64, 1, 1, 2);   /* first token */
    check_attention(9, 3, 64, 50, 1, 2);  /* decode, partial last block */
    check_attention(9, 3, 64, 75, 13, 3); /* prefill chunk after a prefix */
    check_attention(4, 4, 40, 33, 33, 2); /* MHA, head_dim not a multiple of 16 */
    check_attention(8, 1, 128, 64, 4, 1); /* MQA */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_many_calls),
        cmocka_unit_test(test_pool_nested),
        cmocka_unit_test(test_pool_concurrent_callers),
        cmocka_unit_test(test_pool_idle_destroy),
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_vec_dot_pairs),
        cmocka_unit_test(test_block_types_same_bits_on_every_isa),
        cmocka_unit_test(test_matmul_types),
        cmocka_unit_test(test_matmul_shapes),
        cmocka_unit_test(test_matmul_multi),
        cmocka_unit_test(test_row_ops),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_pv_order),
        cmocka_unit_test(test_attention_kq_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
