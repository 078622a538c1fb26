/* test_encoder_kernels.c: the encoder's kernels against double-precision references on
 * random inputs: the packed GEMM in every variant the CPU has (odd shapes, bias, strided
 * rows, poisoned outputs), LayerNorm, GELU and full attention.
 * lode-test: engine */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/lode.h"
#include "common/threadpool.h"
#include "kernels/cpu/encoder.h"
#include "kernels/cpu/gemm.h"

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static float *rand_buf(size_t n)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

/* relative L2 error of y against the double reference r */
static double rel_err(const float *y, const double *r, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (y[i] - r[i]) * (y[i] - r[i]);
        den += r[i] * r[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static void test_gemm_variants(void **state)
{
    static const size_t shapes[][3] = {{1, 1, 1},       {7, 33, 5},      {13, 100, 384},
                                       {64, 1536, 384}, {70, 384, 1536}, {9, 17, 3}};
    lode_pool *pool = NULL;
    assert_int_equal(lode_pool_create(2, &pool), LODE_OK);
    int tested = 0;
    for (int isa = 0; isa <= 2; isa++) {
        krn_packed P;
        for (size_t s = 0; s < LODE_ARRAY_LEN(shapes); s++) {
            size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], ldx = K + 3, ldy = N + 5;
            float *W = rand_buf(N * K), *X = rand_buf(M * ldx), *b = rand_buf(N);
            float *Y = malloc(M * ldy * sizeof *Y);
            double *R = malloc(M * N * sizeof *R);
            lode_status st = krn_pack(W, N, K, isa, &P);
            if (st == LODE_ERR_UNSUPPORTED) {
                free(W), free(X), free(b), free(Y), free(R);
                break;
            }
            assert_int_equal(st, LODE_OK);
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                for (size_t i = 0; i < M * ldy; i++) Y[i] = NAN; /* poison */
                krn_gemm_packed(s % 2 ? pool : NULL, &P, X, ldx, M, Y, ldy, with_bias ? b : NULL);
                float *Yc = malloc(M * N * sizeof *Yc);
                for (size_t t = 0; t < M; t++)
                    for (size_t o = 0; o < N; o++) {
                        double acc = with_bias ? b[o] : 0;
                        for (size_t k = 0; k < K; k++) acc += (double)X[t * ldx + k] * W[o * K + k];
                        R[t * N + o] = acc;
                        Yc[t * N + o] = Y[t * ldy + o];
                    }
                double e = rel_err(Yc, R, M * N);
                if (!(e < 1e-5)) fail_msg("isa %d shape %zux%zux%zu: rel err %g", isa, M, N, K, e);
                /* the padding columns of each row are untouched */
                for (size_t t = 0; t < M; t++)
                    for (size_t o = N; o < ldy; o++) assert_true(isnan(Y[t * ldy + o]));
                free(Yc);
            }
            krn_packed_free(&P);
            free(W), free(X), free(b), free(Y), free(R);
            tested++;
        }
    }
    assert_true(tested >= (int)LODE_ARRAY_LEN(shapes)); /* the portable variant at least */
    lode_pool_destroy(pool);
}

/* The 16-bit VNNI GEMM against the double reference: odd shapes (a k not a multiple of
 * 2, of the 64-pair block, or of a tile; n_out not a multiple of 32), bias, strided rows,
 * a zero row, a row with one large outlier; relative error of a row within 5e-4 (the
 * rounding of two 13-bit values), 5e-3 for the outlier's row. The GELU variant against
 * gelu of the same reference, with the same bounds. */
static void test_gemm_q16(void **state)
{
    if (!krn_gemm_q16_supported()) {
        print_message("no AVX-512 VNNI on this CPU: the 16-bit GEMM is not used here\n");
        skip();
    }
    static const size_t shapes[][3] = {{1, 1, 1},       {7, 33, 5},      {13, 100, 385},
                                       {64, 1536, 384}, {70, 384, 1536}, {9, 17, 129}};
    lode_pool *pool = NULL;
    assert_int_equal(lode_pool_create(2, &pool), LODE_OK);
    for (size_t s = 0; s < LODE_ARRAY_LEN(shapes); s++) {
        size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], ldx = K + 3, ldy = N + 5;
        float *W = rand_buf(N * K), *X = rand_buf(M * ldx), *b = rand_buf(N);
        float *Y = malloc(M * ldy * sizeof *Y);
        double *R = malloc(M * N * sizeof *R);
        if (M > 2) memset(X + ldx, 0, K * sizeof *X); /* an all-zero row */
        if (M > 3) X[2 * ldx + K / 2] = 300.0f;       /* an outlier */
        krn_packed_q16 P;
        assert_int_equal(krn_pack_q16(W, N, K, &P), LODE_OK);
        void *scratch = lode_aligned_alloc(64, krn_gemm_q16_scratch(M, K));
        for (int pass = 0; pass < 3; pass++) {
            int with_bias = pass > 0, gelu = pass == 2;
            for (size_t i = 0; i < M * ldy; i++) Y[i] = NAN;
            if (gelu)
                krn_gemm_q16_ex(s % 2 ? pool : NULL, &P, X, ldx, NULL, M, Y, ldy, b, 1, NULL,
                                scratch);
            else
                krn_gemm_q16(s % 2 ? pool : NULL, &P, X, ldx, M, Y, ldy, with_bias ? b : NULL,
                             scratch);
            for (size_t t = 0; t < M; t++)
                for (size_t o = 0; o < N; o++) {
                    double acc = with_bias ? b[o] : 0;
                    for (size_t k = 0; k < K; k++) acc += (double)X[t * ldx + k] * W[o * K + k];
                    R[t * N + o] = gelu ? 0.5 * acc * (1.0 + erf(acc / sqrt(2.0))) : acc;
                }
            for (size_t t = 0; t < M; t++) {
                float row[1536];
                for (size_t o = 0; o < N; o++) row[o] = Y[t * ldy + o];
                /* the outlier row's other values get a step 300x coarser */
                double e = rel_err(row, R + t * N, N), tol = t == 2 && M > 3 ? 5e-3 : 5e-4;
                if (e >= tol) print_message("shape %zu row %zu: rel err %g\n", s, t, e);
                assert_true(e < tol);
                assert_true(isnan(Y[t * ldy + N])); /* past the row untouched */
            }
        }
        lode_aligned_free(scratch);
        krn_packed_q16_free(&P);
        free(W);
        free(X);
        free(b);
        free(Y);
        free(R);
    }
    lode_pool_destroy(pool);
}

/* Quantized rows handed from one 16-bit GEMM to the next (krn_gemm_q16_ex's yq and xq):
 * the second GEMM's output is bit for bit the one it computes from the first's f32
 * output, whether the first quantized its rows inside its tasks (many rows) or after
 * them (few rows, tasks split over columns), on one thread and on two; and rows set
 * with krn_q16_rows_set give the same. */
static void test_gemm_q16_chain(void **state)
{
    if (!krn_gemm_q16_supported()) {
        print_message("no AVX-512 VNNI on this CPU: the 16-bit GEMM is not used here\n");
        skip();
    }
    static const size_t shapes[][3] = {{300, 384, 1536}, {5, 384, 1536}, {77, 33, 65}};
    lode_pool *pool = NULL;
    assert_int_equal(lode_pool_create(2, &pool), LODE_OK);
    for (size_t s = 0; s < LODE_ARRAY_LEN(shapes); s++) {
        size_t M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        float *W1 = rand_buf(N * K), *W2 = rand_buf(K * N), *X = rand_buf(M * K);
        float *b = rand_buf(N), *H = malloc(M * N * sizeof *H), *Y = malloc(M * K * sizeof *Y);
        float *Y2 = malloc(M * K * sizeof *Y2), *H2 = malloc(M * N * sizeof *H2);
        krn_packed_q16 P1, P2;
        assert_int_equal(krn_pack_q16(W1, N, K, &P1), LODE_OK);
        assert_int_equal(krn_pack_q16(W2, K, N, &P2), LODE_OK);
        size_t big = krn_gemm_q16_scratch(M, N > K ? N : K);
        void *scratch = lode_aligned_alloc(64, big), *hq = lode_aligned_alloc(64, big);
        void *xq = lode_aligned_alloc(64, big);
        for (int th = 0; th < 2; th++) {
            lode_pool *p = th ? pool : NULL;
            krn_gemm_q16_ex(p, &P1, X, K, NULL, M, H, N, b, 1, hq, scratch);
            krn_gemm_q16(p, &P2, H, N, M, Y, K, NULL, scratch);
            for (size_t i = 0; i < M * K; i++) Y2[i] = NAN;
            krn_gemm_q16_ex(p, &P2, NULL, N, hq, M, Y2, K, NULL, 0, NULL, scratch);
            assert_memory_equal(Y, Y2, M * K * sizeof *Y);
            /* X's rows quantized by the caller */
            for (size_t r = 0; r < M; r++) krn_q16_rows_set(xq, M, K, r, X + r * K);
            krn_gemm_q16_ex(p, &P1, NULL, K, xq, M, H2, N, b, 1, NULL, scratch);
            assert_memory_equal(H, H2, M * N * sizeof *H);
        }
        lode_aligned_free(scratch);
        lode_aligned_free(hq);
        lode_aligned_free(xq);
        krn_packed_q16_free(&P1);
        krn_packed_q16_free(&P2);
        free(W1), free(W2), free(X), free(b), free(H), free(H2), free(Y), free(Y2);
    }
    lode_pool_destroy(pool);
}

static void test_layernorm_gelu(void **state)
{
    const size_t n = 384;
    float *x = rand_buf(n), *w = rand_buf(n), *b = rand_buf(n), *r = rand_buf(n);
    float y[384];
    double ref[384];
    for (size_t i = 0; i < n; i++) x[i] = x[i] * 50 + 1000; /* large offset: two-pass variance */
    double mean = 0, var = 0;
    for (size_t i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (size_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= n;
    for (size_t i = 0; i < n; i++) ref[i] = (x[i] - mean) / sqrt(var + 1e-12) * w[i] + b[i];
    krn_layernorm(y, x, w, b, n, 1e-12f);
    assert_true(rel_err(y, ref, n) < 1e-5);
    /* lengths that are not a multiple of the vector width */
    for (size_t m = 2; m < 40; m += 7) {
        double mm = 0, vv = 0, rr[40];
        for (size_t i = 0; i < m; i++) mm += x[i];
        mm /= m;
        for (size_t i = 0; i < m; i++) vv += (x[i] - mm) * (x[i] - mm);
        vv /= m;
        for (size_t i = 0; i < m; i++) rr[i] = (x[i] - mm) / sqrt(vv + 1e-12) * w[i] + b[i];
        y[m] = 12345.0f;
        krn_layernorm(y, x, w, b, m, 1e-12f);
        assert_true(rel_err(y, rr, m) < 1e-5);
        assert_true(y[m] == 12345.0f);
    }
    /* residual + bias + LayerNorm */
    float xr[384];
    memcpy(xr, x, sizeof xr);
    for (size_t i = 0; i < n; i++) xr[i] = x[i] - r[i] - b[i];
    krn_add_bias_layernorm(xr, r, b, w, b, n, 1e-12f);
    assert_true(rel_err(xr, ref, n) < 1e-4);
    /* GELU with erf, over a wide range */
    float g[2001];
    double gr[2001];
    for (int i = 0; i <= 2000; i++) {
        double u = (i - 1000) / 100.0;
        g[i] = (float)u;
        gr[i] = 0.5 * u * (1 + erf(u / sqrt(2.0)));
    }
    krn_bias_gelu(g, NULL, 2001);
    for (int i = 0; i <= 2000; i++)
        if (fabs(g[i] - gr[i]) > 2e-6 * (1 + fabs(gr[i])))
            fail_msg("gelu(%g) = %g, want %g", (i - 1000) / 100.0, g[i], gr[i]);
    free(x), free(w), free(b), free(r);
}

static void test_attention(void **state)
{
    const size_t hd = 32, stride = 3 * 384;
    size_t lens[] = {1, 2, 17, 256};
    for (size_t c = 0; c < LODE_ARRAY_LEN(lens); c++) {
        size_t n = lens[c];
        float *qkv = rand_buf(n * stride);
        for (size_t i = 0; i < n * stride; i++) qkv[i] *= 4;
        float *out = malloc(n * 384 * sizeof *out);
        float *scratch = lode_aligned_alloc(64, krn_attention_scratch(n, hd) * sizeof(float));
        for (size_t i = 0; i < n * 384; i++) out[i] = NAN;
        float scale = 1.0f / sqrtf((float)hd);
        krn_attention_full(qkv, qkv + 384, qkv + 768, stride, n, hd, scale, out, 384, scratch);
        double *ref = malloc(n * hd * sizeof *ref), *p = malloc(n * sizeof *p);
        float *got = malloc(n * hd * sizeof *got);
        for (size_t i = 0; i < n; i++) {
            double mx = -1e300, sum = 0;
            for (size_t j = 0; j < n; j++) {
                double s = 0;
                for (size_t d = 0; d < hd; d++)
                    s += (double)qkv[i * stride + d] * qkv[j * stride + 384 + d];
                p[j] = s * scale;
                if (p[j] > mx) mx = p[j];
            }
            for (size_t j = 0; j < n; j++) sum += p[j] = exp(p[j] - mx);
            for (size_t d = 0; d < hd; d++) {
                double o = 0;
                for (size_t j = 0; j < n; j++) o += p[j] / sum * qkv[j * stride + 768 + d];
                ref[i * hd + d] = o;
                got[i * hd + d] = out[i * 384 + d];
            }
            assert_true(isnan(out[i * 384 + hd])); /* other heads' columns untouched */
        }
        double e = rel_err(got, ref, n * hd);
        if (!(e < 1e-5)) fail_msg("attention over %zu tokens: rel err %g", n, e);
        free(qkv), free(out), free(ref), free(p), free(got);
        lode_aligned_free(scratch);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_variants),  cmocka_unit_test(test_gemm_q16),
        cmocka_unit_test(test_layernorm_gelu), cmocka_unit_test(test_attention),
        cmocka_unit_test(test_gemm_q16_chain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
