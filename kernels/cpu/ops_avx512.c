/*
 * ops_avx512.c: AVX-512 versions of the f32 row primitives that gain from 16 lanes (the
 * f16 dot and axpy of attention, half conversion, dot, add, scale), and the constructor
 * of the AVX-512 table, which starts from the AVX2 one.
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

static float z_sumsq(const float *x, size_t n)
{
    return z_dot_f32(x, x, n);
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

/* exp(x) on 16 lanes, x clamped to [-87, 88]: 2^(x log2 e) as an integer power of two
 * times a degree-6 polynomial of the fraction (relative error ~2e-7). */
static inline __m512 exp16(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
    x = _mm512_min_ps(x, _mm512_set1_ps(88.f));
    __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    __m512 fi = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(t, fi);
    __m512 p = _mm512_set1_ps(1.5353362e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3398874e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6184197e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5503324e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022652e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, fi);
}

static void z_attn_block(const float *q, const lode_half *k, const lode_half *v, size_t hd, int ns,
                         float scale, float *m, float *l, float *acc)
{
    float sc[KRN_KV_BLOCK];
    for (int s = 0; s < ns; s++) {
        const lode_half *ks = k + (size_t)s * hd;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        size_t d = 0;
        for (; d + 32 <= hd; d += 32) {
            a0 = _mm512_fmadd_ps(load_h16(ks + d), _mm512_loadu_ps(q + d), a0);
            a1 = _mm512_fmadd_ps(load_h16(ks + d + 16), _mm512_loadu_ps(q + d + 16), a1);
        }
        if (d < hd) a0 = _mm512_fmadd_ps(load_h16(ks + d), _mm512_loadu_ps(q + d), a0);
        sc[s] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    }
    __mmask16 live = (__mmask16)((1u << ns) - 1u);
    __m512 s16 = _mm512_mul_ps(_mm512_maskz_loadu_ps(live, sc), _mm512_set1_ps(scale));
    float bm = _mm512_mask_reduce_max_ps(live, s16);
    if (bm > *m) {
        float c = expf(*m - bm); /* 0 on the first block */
        if (*l > 0) {
            __m512 vc = _mm512_set1_ps(c);
            for (size_t d = 0; d < hd; d += 16)
                _mm512_storeu_ps(acc + d, _mm512_mul_ps(_mm512_loadu_ps(acc + d), vc));
        }
        *l *= c;
        *m = bm;
    }
    __m512 p = _mm512_maskz_mov_ps(live, exp16(_mm512_sub_ps(s16, _mm512_set1_ps(*m))));
    *l += _mm512_reduce_add_ps(p);
    _mm512_storeu_ps(sc, p);
    for (size_t d = 0; d < hd; d += 16) {
        __m512 a = _mm512_loadu_ps(acc + d);
        for (int s = 0; s < ns; s++)
            a = _mm512_fmadd_ps(_mm512_set1_ps(sc[s]), load_h16(v + (size_t)s * hd + d), a);
        _mm512_storeu_ps(acc + d, a);
    }
}

void krn_quant_avx512_init(krn_ops *o);

void krn_ops_init_avx512(krn_ops *o)
{
    o->dot_f16_f32 = z_dot_f16_f32;
    o->axpy_f16 = z_axpy_f16;
    o->dot_f32 = z_dot_f32;
    o->sumsq = z_sumsq;
    o->f16_to_f32 = z_f16_to_f32;
    o->f32_to_f16 = z_f32_to_f16;
    o->attn_block = z_attn_block;
    krn_quant_avx512_init(o);
}
