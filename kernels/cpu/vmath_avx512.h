/*
 * vmath_avx512.h: 16-lane exp and erf-GELU shared by the AVX-512 files (include it only
 * from *_avx512.c, which are compiled with -mavx512f): the encoder's softmax and GELU rows
 * use them, and the 16-bit GEMM applies GELU to its tiles while they are in registers.
 * exp: 2^n 2^f with f = x log2(e) - n in [-0.5, 0.5] and 2^f a degree-5 polynomial fitted
 * for relative error (2.4e-7 evaluated in float; 11 operations where Cephes' exp took 15,
 * with the same accuracy); erf: Abramowitz and Stegun 7.1.26 (absolute error below
 * 1.5e-7), with 1 + erf formed without cancellation for z < 0.
 */
#ifndef LODE_KERNELS_CPU_VMATH_AVX512_H
#define LODE_KERNELS_CPU_VMATH_AVX512_H

#include <immintrin.h>

static inline __m512 krn_exp_ps(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f)); /* larger x overflow to inf in scalef */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* f = x log2(e) - n in [-0.5, 0.5], log2(e) split in two floats */
    __m512 f = _mm512_fmsub_ps(x, _mm512_set1_ps(1.44269502162933350f), n);
    f = _mm512_fmadd_ps(x, _mm512_set1_ps(1.92596298909109e-8f), f);
    __m512 p = _mm512_set1_ps(1.3276451500e-3f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6755409613e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5507134646e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022120237e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314694405e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0000001192f));
    return _mm512_scalef_ps(p, n);
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
