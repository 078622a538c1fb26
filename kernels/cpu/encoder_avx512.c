/* encoder_avx512.c: AVX-512 versions of the encoder's transcendental loops (compiled with
 * -mavx512f): exp for attention's softmax and erf-GELU (vmath_avx512.h). With libm's
 * scalar expf and erff these two loops took over a quarter of the embedding time.
 * LayerNorm and the softmax row: their float sums and maxima are reductions GCC does
 * not vectorize at -O2 (it may not reorder float additions), so they ran at scalar speed
 * and took about 5% of the embedding time. */
#include <immintrin.h>
#include <math.h>

#include "kernels/cpu/encoder.h"
#include "kernels/cpu/vmath_avx512.h"

float krn_exp_sum_avx512(float *x, size_t n, float sub, float scale)
{
    /* (x - sub) * scale as one FMA */
    __m512 vs = _mm512_set1_ps(sub * scale), vk = _mm512_set1_ps(scale), acc = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = krn_exp_ps(_mm512_fmsub_ps(_mm512_loadu_ps(x + i), vk, vs));
        _mm512_storeu_ps(x + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 e = krn_exp_ps(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, x + i), vk, vs));
        _mm512_mask_storeu_ps(x + i, m, e);
        acc = _mm512_mask_add_ps(acc, m, acc, e);
    }
    return _mm512_reduce_add_ps(acc);
}

void krn_gelu_avx512(float *x, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, krn_gelu_ps(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

static inline __mmask16 tail_mask(size_t left)
{
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* LayerNorm's second and third passes, given the sum of x's n values */
static void layernorm_rest(float *y, const float *x, float sum, const float *w, const float *b,
                           size_t n, float eps)
{
    const float mean = sum / (float)n;
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

void krn_layernorm_avx512(float *y, const float *x, const float *w, const float *b, size_t n,
                          float eps)
{
    __m512 s = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16)
        s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
    layernorm_rest(y, x, _mm512_reduce_add_ps(s), w, b, n, eps);
}

void krn_add_bias_layernorm_avx512(float *x, const float *r, const float *bias, const float *w,
                                   const float *b, size_t n, float eps)
{
    __m512 s = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, r + i));
        if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + i));
        _mm512_mask_storeu_ps(x + i, m, v);
        s = _mm512_add_ps(s, v);
    }
    layernorm_rest(x, x, _mm512_reduce_add_ps(s), w, b, n, eps);
}

float krn_max_avx512(const float *x, size_t n)
{
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (size_t i = 0; i < n; i += 16)
        mx = _mm512_max_ps(
            mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail_mask(n - i), x + i));
    return _mm512_reduce_max_ps(mx);
}

void krn_scale_avx512(float *x, size_t n, float s)
{
    const __m512 v = _mm512_set1_ps(s);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), v));
    }
}
