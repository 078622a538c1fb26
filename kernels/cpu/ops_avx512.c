/*
 * ops_avx512.c: AVX-512 versions of the f32 row primitives that gain from 16 lanes or
 * must follow GGML's AVX-512 build (exp for SiLU and softmax, half conversion, dot), and the
 * constructor of the AVX-512 table, which starts from the AVX2 one.
 */
#include <immintrin.h>
#include <math.h>

#include "kernels/cpu/kernels_int.h"

static inline __m512 load_h16(const lode_half *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

static inline __mmask16 tail_mask(size_t left)
{
    return (__mmask16)((1u << left) - 1u);
}

static inline __m512 load_h16_tail(const lode_half *p, size_t left)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail_mask(left), p));
}

static float z_dot_f16_f32(const lode_half *x, const float *y, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(load_h16(x + i), _mm512_loadu_ps(y + i), s0);
        s1 = _mm512_fmadd_ps(load_h16(x + i + 16), _mm512_loadu_ps(y + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(load_h16(x + i), _mm512_loadu_ps(y + i), s0);
    if (i < n)
        s1 = _mm512_fmadd_ps(load_h16_tail(x + i, n - i),
                             _mm512_maskz_loadu_ps(tail_mask(n - i), y + i), s1);
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static void z_axpy_f16(float *acc, float a, const lode_half *v, size_t n);
#define z_axpy_f16_fwd z_axpy_f16

static float z_dot_f16_ordered(const lode_half *x, const float *y, size_t n, int several)
{
    if (several) {
        __m512 acc = _mm512_setzero_ps();
        for (size_t i = 0; i < n; i += 16)
            acc = _mm512_fmadd_ps(load_h16(x + i), _mm512_loadu_ps(y + i), acc);
        return _mm512_reduce_add_ps(acc);
    }
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t np = n & ~(size_t)63;
    for (size_t i = 0; i < np; i += 64) {
        s0 = _mm512_fmadd_ps(load_h16(x + i), _mm512_loadu_ps(y + i), s0);
        s1 = _mm512_fmadd_ps(load_h16(x + i + 16), _mm512_loadu_ps(y + i + 16), s1);
        s2 = _mm512_fmadd_ps(load_h16(x + i + 32), _mm512_loadu_ps(y + i + 32), s2);
        s3 = _mm512_fmadd_ps(load_h16(x + i + 48), _mm512_loadu_ps(y + i + 48), s3);
    }
    double s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s1, s3)));
    for (size_t i = np; i < n; i++) s += (double)(lode_half_to_float(x[i]) * y[i]);
    return (float)s;
}

/* _mm512_reduce_add_ps of 16 vectors at once, out[s] = reduce(a[s]): the same tree
 * (lanes i + i+8, then + i+4, then (0 + 2) and (1 + 3), then those two) done on the
 * lanes of shuffled pairs, so every sum is the one the reduction makes (a is clobbered) */
static inline __m512 reduce16(__m512 *a)
{
    for (int u = 0; u < 8; u++) /* key 2u in the low half, 2u+1 in the high */
        a[u] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * u], a[2 * u + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(a[2 * u], a[2 * u + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int v = 0; v < 4; v++) /* quarter q: key 4v + q */
        a[v] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * v], a[2 * v + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(a[2 * v], a[2 * v + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int w = 0; w < 2; w++) /* quarter q: two halves of key 8w + q, two of 8w + 4 + q */
        a[w] = _mm512_add_ps(_mm512_shuffle_ps(a[2 * w], a[2 * w + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(a[2 * w], a[2 * w + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* lane 4q + k: key q + 4k */
    __m512 e = _mm512_add_ps(_mm512_shuffle_ps(a[0], a[1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(a[0], a[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, e);
}

static void z_kq_block(const lode_half *k, const float *q, size_t hd, int ns, int several,
                       float *out)
{
    if (hd != 64) {
        for (int s = 0; s < ns; s++) out[s] = z_dot_f16_ordered(k + (size_t)s * hd, q, hd, several);
        return;
    }
    const __m512 q0 = _mm512_loadu_ps(q), q1 = _mm512_loadu_ps(q + 16);
    const __m512 q2 = _mm512_loadu_ps(q + 32), q3 = _mm512_loadu_ps(q + 48);
    __m512 a[16];
    for (int s = 0; s < 16; s++) {
        if (s >= ns) { /* past the block's rows: a lane nobody reads */
            a[s] = _mm512_setzero_ps();
            continue;
        }
        const lode_half *r = k + (size_t)s * 64;
        __m512 p0 = _mm512_mul_ps(load_h16(r), q0);
        if (several) { /* one accumulator, chunks in order */
            __m512 v = _mm512_fmadd_ps(load_h16(r + 16), q1, p0);
            v = _mm512_fmadd_ps(load_h16(r + 32), q2, v);
            a[s] = _mm512_fmadd_ps(load_h16(r + 48), q3, v);
        } else { /* four accumulators of one product each */
            __m512 p1 = _mm512_mul_ps(load_h16(r + 16), q1);
            __m512 p2 = _mm512_mul_ps(load_h16(r + 32), q2);
            __m512 p3 = _mm512_mul_ps(load_h16(r + 48), q3);
            a[s] = _mm512_add_ps(_mm512_add_ps(p0, p2), _mm512_add_ps(p1, p3));
        }
    }
    _mm512_mask_storeu_ps(out, tail_mask((size_t)ns), reduce16(a));
}

static void z_pv_block(float *part, const float *p, const lode_half *v, size_t hd, int ns)
{
    if (hd % 16) {
        for (int s = 0; s < ns; s++)
            z_axpy_f16_fwd(part + (size_t)s * hd, p[s], v + (size_t)s * hd, hd);
        return;
    }
    for (int s = 0; s < ns; s++) {
        const __m512 ps = _mm512_set1_ps(p[s]);
        float *o = part + (size_t)s * hd;
        const lode_half *r = v + (size_t)s * hd;
        for (size_t d = 0; d < hd; d += 16)
            _mm512_storeu_ps(o + d, _mm512_fmadd_ps(ps, load_h16(r + d), _mm512_loadu_ps(o + d)));
    }
}

/* The sums by class c of 64 dims (d..d+63, four vectors; fewer at the end of a head):
 * +0, then fma(p_j, v_j, .) for j = c, c + ncls, ... < m */
#define PV_ROW(j) (vblk[(j) / KRN_KV_BLOCK] + ((j) % KRN_KV_BLOCK) * hd)
static inline void pv_class(__m512 *acc, const float *p, const lode_half *const *vblk, size_t hd,
                            size_t c, size_t m, size_t ncls, size_t d, int nv)
{
    for (int k = 0; k < nv; k++) acc[k] = _mm512_setzero_ps();
    for (size_t j = c; j < m; j += ncls) {
        __m512 pj = _mm512_set1_ps(p[j]);
        const lode_half *v = PV_ROW(j) + d;
        for (int k = 0; k < nv; k++)
            acc[k] = _mm512_fmadd_ps(pj, load_h16(v + 16 * (size_t)k), acc[k]);
    }
}

static void z_pv_ordered(float *out, const float *p, const lode_half *const *vblk, size_t n,
                         size_t m, size_t ncls, size_t hd)
{
    for (size_t d = 0; d < hd; d += 64) {
        const int nv = (int)LODE_MIN((size_t)4, (hd - d) / 16);
        _Alignas(64) float f[16][64];
        for (size_t i = 0; i < 16; i++) {
            __m512 a[4], b[4], c[4], e[4];
            pv_class(a, p, vblk, hd, i, m, ncls, d, nv);
            if (ncls == 16) {
                for (int k = 0; k < nv; k++) _mm512_store_ps(f[i] + 16 * k, a[k]);
                continue;
            }
            /* GGML's fold of 64 sums to 16: (s[i] + s[32 + i]) + (s[16 + i] + s[48 + i]) */
            pv_class(b, p, vblk, hd, 32 + i, m, 64, d, nv);
            pv_class(c, p, vblk, hd, 16 + i, m, 64, d, nv);
            pv_class(e, p, vblk, hd, 48 + i, m, 64, d, nv);
            for (int k = 0; k < nv; k++)
                _mm512_store_ps(f[i] + 16 * k, _mm512_add_ps(_mm512_add_ps(a[k], b[k]),
                                                             _mm512_add_ps(c[k], e[k])));
        }
        for (int k = 0; k < nv; k++) {
            /* the tree of _mm512_reduce_add_ps over the 16 sums, lane by lane */
            __m512 t[8];
            for (size_t i = 0; i < 8; i++)
                t[i] =
                    _mm512_add_ps(_mm512_load_ps(f[i] + 16 * k), _mm512_load_ps(f[i + 8] + 16 * k));
            for (size_t i = 0; i < 4; i++) t[i] = _mm512_add_ps(t[i], t[i + 4]);
            t[0] = _mm512_add_ps(t[0], t[2]);
            t[1] = _mm512_add_ps(t[1], t[3]);
            __m512 r = _mm512_add_ps(t[0], t[1]);
            size_t dk = d + 16 * (size_t)k;
            if (m >= n) {
                _mm512_storeu_ps(out + dk, r);
                continue;
            }
            /* the rest in double, in order of j: each exact float product widened and added */
            __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(r));
            __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(r, 1));
            for (size_t j = m; j < n; j++) {
                __m512 t2 = _mm512_mul_ps(_mm512_set1_ps(p[j]), load_h16(PV_ROW(j) + dk));
                lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(t2)));
                hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(t2, 1)));
            }
            _mm256_storeu_ps(out + dk, _mm512_cvtpd_ps(lo));
            _mm256_storeu_ps(out + dk + 8, _mm512_cvtpd_ps(hi));
        }
    }
}

static void z_axpy_f16(float *acc, float a, const lode_half *v, size_t n)
{
    __m512 va = _mm512_set1_ps(a);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(acc + i, _mm512_fmadd_ps(va, load_h16(v + i), _mm512_loadu_ps(acc + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(
            acc + i, m,
            _mm512_fmadd_ps(va, load_h16_tail(v + i, n - i), _mm512_maskz_loadu_ps(m, acc + i)));
    }
}

static float z_dot_f32(const float *x, const float *y, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* Squares rounded to float, summed in double (see the AVX2 version). */
static double z_sumsq(const float *x, size_t n)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 sq = _mm512_mul_ps(v, v);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(sq)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(sq, 1)));
    }
    double s = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    for (; i < n; i++) s += (double)(x[i] * x[i]);
    return s;
}

static void z_f16_to_f32(const lode_half *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, load_h16(x + i));
    if (i < n) _mm512_mask_storeu_ps(y + i, tail_mask(n - i), load_h16_tail(x + i, n - i));
}

static void z_f32_to_f16(const float *x, lode_half *y, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(y + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_mask_storeu_epi16(y + i, m, h);
    }
}

/* exp(x) on 16 lanes, the approximation GGML's AVX-512 build uses (so that SiLU and
 * softmax round as in llama.cpp): x = n ln2 + b, n = round(x log2 e) (by adding
 * 1.5 * 2^23), b reduced in two steps, exp(b) by a degree-5 polynomial, times 2^n by
 * vscalefps; |n| > 192 saturates to 0 or infinity. */
static inline __m512 exp16(__m512 x)
{
    const __m512 shift = _mm512_set1_ps(0x1.8p23f);
    const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), shift);
    const __m512 n = _mm512_sub_ps(z, shift);
    const __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f),
                                      _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
    const __mmask16 huge = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192), _CMP_GT_OQ);
    const __m512 u = _mm512_mul_ps(b, b);
    const __m512 hi =
        _mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f));
    const __m512 lo =
        _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f));
    const __m512 j =
        _mm512_fmadd_ps(_mm512_fmadd_ps(hi, u, lo), u,
                        _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f)));
    const __m512 r = _mm512_scalef_ps(j, n);
    if (!huge) return r;
    const __mmask16 neg = _mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_LE_OQ);
    const __m512 sat = _mm512_mask_blend_ps(neg, _mm512_set1_ps(INFINITY), _mm512_setzero_ps());
    return _mm512_mask_blend_ps(huge, r, sat);
}

static void z_silu_mul(float *y, const float *g, const float *u, size_t n)
{
    const __m512 one = _mm512_set1_ps(1.f);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(g + i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), v));
        __m512 s = _mm512_div_ps(v, _mm512_add_ps(one, e));
        _mm512_storeu_ps(y + i, _mm512_mul_ps(s, _mm512_loadu_ps(u + i)));
    }
    for (; i < n; i++) {
        float v = g[i];
        y[i] = v / (1.f + expf(-v)) * u[i];
    }
}

static double z_exp_sum(float *y, const float *x, float max, size_t n)
{
    double s = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), _mm512_set1_ps(max)));
        _mm512_storeu_ps(y + i, e);
        s += (double)_mm512_reduce_add_ps(e);
    }
    for (; i < n; i++) {
        y[i] = expf(x[i] - max);
        s += (double)y[i];
    }
    return s;
}

/* r_rope's roundings, 8 pairs per vector: the pairs of (2i, 2i+1) are lanes (2j, 2j+1),
 * each lane computing both of its pair's formulas and keeping its own */
static void z_rope(float *x, size_t n_head, size_t head_dim, size_t half, int neox, const float *cs,
                   const float *sn)
{
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i swap = _mm512_setr_epi32(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    const __mmask16 odd = 0xAAAA;
    for (size_t h = 0; h < n_head; h++) {
        float *v = x + h * head_dim;
        size_t i = 0;
        if (neox)
            for (; i + 16 <= half; i += 16) {
                __m512 c = _mm512_loadu_ps(cs + i), s = _mm512_loadu_ps(sn + i);
                __m512 x0 = _mm512_loadu_ps(v + i), x1 = _mm512_loadu_ps(v + i + half);
                _mm512_storeu_ps(v + i, _mm512_fmsub_ps(x0, c, _mm512_mul_ps(x1, s)));
                _mm512_storeu_ps(v + i + half, _mm512_fmadd_ps(x0, s, _mm512_mul_ps(x1, c)));
            }
        else
            for (; i + 8 <= half; i += 8) {
                __m512 c =
                    _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(cs + i)));
                __m512 s =
                    _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(sn + i)));
                __m512 a = _mm512_loadu_ps(v + 2 * i), b = _mm512_permutexvar_ps(swap, a);
                /* even lane: a = x0, b = x1; odd lane: a = x1, b = x0 */
                __m512 ev = _mm512_fmsub_ps(a, c, _mm512_mul_ps(b, s));
                __m512 od = _mm512_fmadd_ps(b, s, _mm512_mul_ps(a, c));
                _mm512_storeu_ps(v + 2 * i, _mm512_mask_blend_ps(odd, ev, od));
            }
        for (; i < half; i++) {
            size_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b];
            v[a] = fmaf(x0, cs[i], -(x1 * sn[i]));
            v[b] = fmaf(x0, sn[i], x1 * cs[i]);
        }
    }
}

void krn_quant_avx512_init(krn_ops *o);

void krn_ops_init_avx512(krn_ops *o)
{
    o->dot_f16_f32 = z_dot_f16_f32;
    o->axpy_f16 = z_axpy_f16;
    o->dot_f16_ordered = z_dot_f16_ordered;
    o->kq_block = z_kq_block;
    o->pv_block = z_pv_block;
    o->pv_ordered = z_pv_ordered;
    o->dot_f32 = z_dot_f32;
    o->sumsq = z_sumsq;
    o->f16_to_f32 = z_f16_to_f32;
    o->f32_to_f16 = z_f32_to_f16;
    o->silu_mul = z_silu_mul;
    o->exp_sum = z_exp_sum;
    o->rope = z_rope;
    krn_quant_avx512_init(o);
}
