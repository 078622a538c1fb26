/* encoder_avx512.c: AVX-512 versions of the encoder's transcendental loops (compiled with
 * -mavx512f): exp for attention's softmax and erf-GELU. With libm's scalar expf and erff
 * these two loops took over a quarter of the embedding time. exp: Cephes' range
 * reduction and degree-6 polynomial (about 2 ulp); erf: Abramowitz and Stegun 7.1.26
 * (absolute error below 1.5e-7), with 1 + erf formed without cancellation for z < 0.
 * LayerNorm and the softmax row: their float sums and maxima are reductions GCC does
 * not vectorize at -O2 (it may not reorder float additions), so they ran at scalar speed
 * and took about 5% of the embedding time. */
#include <immintrin.h>
#include <math.h>

#include "kernels/cpu/encoder.h"

static inline __m512 exp_ps(__m512 x)
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

float krn_exp_sum_avx512(float *x, size_t n, float sub, float scale)
{
    __m512 vs = _mm512_set1_ps(sub), vk = _mm512_set1_ps(scale), acc = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), vs), vk));
        _mm512_storeu_ps(x + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 e = exp_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vs), vk));
        _mm512_mask_storeu_ps(x + i, m, e);
        acc = _mm512_mask_add_ps(acc, m, acc, e);
    }
    return _mm512_reduce_add_ps(acc);
}

void krn_gelu_avx512(float *x, size_t n)
{
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f),
                 two = _mm512_set1_ps(2.0f);
    const __m512 rs2 = _mm512_set1_ps(0.70710678118654752f), p = _mm512_set1_ps(0.3275911f);
    const __m512 a1 = _mm512_set1_ps(0.254829592f), a2 = _mm512_set1_ps(-0.284496736f),
                 a3 = _mm512_set1_ps(1.421413741f), a4 = _mm512_set1_ps(-1.453152027f),
                 a5 = _mm512_set1_ps(1.061405429f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 u = _mm512_maskz_loadu_ps(m, x + i);
        __m512 z = _mm512_mul_ps(u, rs2);
        __m512 az = _mm512_abs_ps(z);
        __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(p, az, one));
        __m512 poly = _mm512_fmadd_ps(a5, t, a4);
        poly = _mm512_fmadd_ps(poly, t, a3);
        poly = _mm512_fmadd_ps(poly, t, a2);
        poly = _mm512_fmadd_ps(poly, t, a1);
        /* q = 1 - erf(|z|) */
        __m512 q = _mm512_mul_ps(_mm512_mul_ps(poly, t),
                                 exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(az, az))));
        __mmask16 neg = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
        __m512 ope = _mm512_mask_blend_ps(neg, _mm512_sub_ps(two, q), q); /* 1 + erf(z) */
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_mul_ps(half, u), ope));
    }
}

static inline __mmask16 tail_mask(size_t left)
{
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

void krn_layernorm_avx512(float *y, const float *x, const float *w, const float *b, size_t n,
                          float eps)
{
    __m512 s = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16)
        s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
    const float mean = _mm512_reduce_add_ps(s) / (float)n;
    const __m512 vm = _mm512_set1_ps(mean);
    __m512 v = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + i), vm);
        v = _mm512_fmadd_ps(d, d, v);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(v) / (float)n + eps));
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm), inv);
        __m512 o =
            _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, b + i));
        _mm512_mask_storeu_ps(y + i, m, o);
    }
}

void krn_softmax_avx512(float *x, size_t n, float scale)
{
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (size_t i = 0; i < n; i += 16)
        mx = _mm512_max_ps(
            mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail_mask(n - i), x + i));
    float sum = krn_exp_sum_avx512(x, n, _mm512_reduce_max_ps(mx), scale);
    const __m512 inv = _mm512_set1_ps(1.0f / sum);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    }
}
