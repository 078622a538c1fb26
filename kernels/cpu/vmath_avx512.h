/*
 * vmath_avx512.h: 16-lane exp and erf-GELU shared by the AVX-512 files (include it only
 * from *_avx512.c, which are compiled with -mavx512f): the encoder's softmax and GELU rows
 * use them, and the 16-bit GEMM applies GELU to its tiles while they are in registers.
 * exp: Cephes' range reduction and degree-6 polynomial (about 2 ulp); erf: Abramowitz and
 * Stegun 7.1.26 (absolute error below 1.5e-7), with 1 + erf formed without cancellation
 * for z < 0.
 */
#ifndef LODE_KERNELS_CPU_VMATH_AVX512_H
#define LODE_KERNELS_CPU_VMATH_AVX512_H

#include <immintrin.h>

static inline __m512 krn_exp_ps(__m512 x)
{
    x = _mm512_min_ps(x, _mm512_set1_ps(88.0f));
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 y = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

/* gelu(u) = u/2 * (1 + erf(u / sqrt 2)) */
static inline __m512 krn_gelu_ps(__m512 u)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 z = _mm512_mul_ps(u, _mm512_set1_ps(0.70710678118654752f));
    __m512 az = _mm512_abs_ps(z);
    __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), az, one));
    __m512 poly = _mm512_fmadd_ps(_mm512_set1_ps(1.061405429f), t, _mm512_set1_ps(-1.453152027f));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(1.421413741f));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-0.284496736f));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(0.254829592f));
    /* q = 1 - erf(|z|) */
    __m512 q = _mm512_mul_ps(_mm512_mul_ps(poly, t),
                             krn_exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(az, az))));
    __mmask16 neg = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512 ope = _mm512_mask_blend_ps(neg, _mm512_sub_ps(_mm512_set1_ps(2.0f), q), q);
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), u), ope);
}

#endif
