/* gemm_avx512.c: the 8x32 AVX-512 register tiles: f32 for krn_gemm_packed (16
 * accumulators, two panel loads and eight broadcasts per step of k; compiled with
 * -mavx512f) and 16-bit integer for krn_gemm_q16 (the same shape on VNNI's VPDPWSSD,
 * enabled per function, with its scaling, bias and GELU epilogue), and the activation
 * quantizer of krn_gemm_q16. */
#include <immintrin.h>
#include <stdint.h>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/vmath_avx512.h"

void krn_gemm_tile_avx512(size_t k, const float *const *a, const float *b, float *const *c,
                          size_t m, size_t n, const float *bias)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00,
           c70 = c00, c71 = c00;
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5], *a6 = a[6],
                *a7 = a[7];
    for (size_t kk = 0; kk < k; kk++) {
        __m512 b0 = _mm512_load_ps(b + kk * 32), b1 = _mm512_load_ps(b + kk * 32 + 16);
        __m512 x;
#define ROW(i)                                                                                     \
    x = _mm512_set1_ps(a##i[kk]);                                                                  \
    c##i##0 = _mm512_fmadd_ps(x, b0, c##i##0);                                                     \
    c##i##1 = _mm512_fmadd_ps(x, b1, c##i##1);
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7)
#undef ROW
    }
    __mmask16 m0 = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
    __mmask16 m1 = n >= 32 ? (__mmask16)0xFFFF : n > 16 ? (__mmask16)((1u << (n - 16)) - 1) : 0;
    __m512 bb0 = _mm512_setzero_ps(), bb1 = bb0;
    if (bias) {
        bb0 = _mm512_maskz_loadu_ps(m0, bias);
        bb1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    }
    __m512 r[8][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                      {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
    for (size_t i = 0; i < m; i++) {
        _mm512_mask_storeu_ps(c[i], m0, _mm512_add_ps(r[i][0], bb0));
        _mm512_mask_storeu_ps(c[i] + 16, m1, _mm512_add_ps(r[i][1], bb1));
    }
}

/* The 8x32 tile of krn_gemm_q16 (see gemm.h): rows a[0..8) of 16-bit activations, one
 * packed 16-bit panel b, n_pairs pairs of k. VPDPWSSD multiplies two pairs of 16-bit
 * values and adds both products to a 32-bit lane, twice the multiply-adds of an f32 FMA
 * per instruction. The 32-bit sums are moved to f32 every KRN_Q16_BLOCK pairs, before
 * they could overflow (|a|, |w| <= KRN_Q16_MAX). The epilogue scales, adds the bias and
 * applies GELU in registers and stores rows c[0..m), n columns: done as a scalar loop over
 * a buffer it took 13% of the embedding time. */
__attribute__((target("avx512vnni"))) void
krn_gemm_tile_q16_avx512(size_t n_pairs, const int16_t *const *a, const int16_t *b, float *const *c,
                         size_t m, size_t n, const float *xs, const float *ws, const float *bias,
                         int gelu)
{
    const int32_t *a0 = (const int32_t *)a[0], *a1 = (const int32_t *)a[1],
                  *a2 = (const int32_t *)a[2], *a3 = (const int32_t *)a[3],
                  *a4 = (const int32_t *)a[4], *a5 = (const int32_t *)a[5],
                  *a6 = (const int32_t *)a[6], *a7 = (const int32_t *)a[7];
    __m512 f[8][2];
    for (int i = 0; i < 8; i++) f[i][0] = f[i][1] = _mm512_setzero_ps();
    for (size_t k0 = 0; k0 < n_pairs; k0 += KRN_Q16_BLOCK) {
        size_t k1 = n_pairs - k0 < KRN_Q16_BLOCK ? n_pairs : k0 + KRN_Q16_BLOCK;
        __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
                c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00,
                c61 = c00, c70 = c00, c71 = c00;
        for (size_t kk = k0; kk < k1; kk++) {
            __m512i b0 = _mm512_load_si512(b + kk * 64), b1 = _mm512_load_si512(b + kk * 64 + 32);
            __m512i x;
#define ROW(i)                                                                                     \
    x = _mm512_set1_epi32(a##i[kk]);                                                               \
    c##i##0 = _mm512_dpwssd_epi32(c##i##0, x, b0);                                                 \
    c##i##1 = _mm512_dpwssd_epi32(c##i##1, x, b1);
            ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7)
#undef ROW
        }
        __m512i r[8][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                           {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
        for (int i = 0; i < 8; i++) {
            f[i][0] = _mm512_add_ps(f[i][0], _mm512_cvtepi32_ps(r[i][0]));
            f[i][1] = _mm512_add_ps(f[i][1], _mm512_cvtepi32_ps(r[i][1]));
        }
    }
    __mmask16 m0 = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
    __mmask16 m1 = n >= 32 ? (__mmask16)0xFFFF : n > 16 ? (__mmask16)((1u << (n - 16)) - 1) : 0;
    const __m512 w0 = _mm512_maskz_loadu_ps(m0, ws), w1 = _mm512_maskz_loadu_ps(m1, ws + 16);
    __m512 bb0 = _mm512_setzero_ps(), bb1 = bb0;
    if (bias) {
        bb0 = _mm512_maskz_loadu_ps(m0, bias);
        bb1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    }
    for (size_t i = 0; i < m && i < 8; i++) {
        __m512 s = _mm512_set1_ps(xs[i]);
        __m512 y0 = _mm512_fmadd_ps(f[i][0], _mm512_mul_ps(s, w0), bb0);
        __m512 y1 = _mm512_fmadd_ps(f[i][1], _mm512_mul_ps(s, w1), bb1);
        if (gelu) {
            y0 = krn_gelu_ps(y0);
            y1 = krn_gelu_ps(y1);
        }
        _mm512_mask_storeu_ps(c[i], m0, y0);
        _mm512_mask_storeu_ps(c[i] + 16, m1, y1);
    }
}

/* Quantizes n floats of x to 16-bit q (n_pad values, zeros past n) with one scale, so
 * that max |x| maps to KRN_Q16_MAX; returns the scale (0 for an all-zero row). */
float krn_quant_row_q16_avx512(const float *x, size_t n, size_t n_pad, int16_t *q)
{
    __m512 mx = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + i)));
    }
    float amax = _mm512_reduce_max_ps(mx);
    float scale = amax / (float)KRN_Q16_MAX, inv = amax > 0 ? (float)KRN_Q16_MAX / amax : 0.0f;
    const __m512 vi = _mm512_set1_ps(inv);
    const __m512i lo = _mm512_set1_epi32(-KRN_Q16_MAX), hi = _mm512_set1_epi32(KRN_Q16_MAX);
    for (size_t i = 0; i < n_pad; i += 16) {
        size_t left = i < n ? n - i : 0;
        __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
        __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vi));
        v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
        __mmask16 st = n_pad - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n_pad - i)) - 1);
        _mm256_mask_storeu_epi16(q + i, st, _mm512_cvtepi32_epi16(v));
    }
    return scale;
}

/* krn_pack_into for the AVX-512 layout (32-wide panels): source columns (so == 1) are
 * copied 16 floats at a time, strided ones (attention's keys, so = the row stride) are
 * gathered 16 at a time. Written element by element, packing K and V per head took 3% of
 * the embedding time, a seventh of attention. */
void krn_pack_into_avx512(const float *W, size_t so, size_t sk, size_t n_out, size_t n_in,
                          float *dst)
{
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)so));
    size_t n_panels = (n_out + 31) / 32;
    for (size_t p = 0; p < n_panels; p++) {
        size_t live = n_out - p * 32 < 32 ? n_out - p * 32 : 32;
        __mmask16 m0 = live >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << live) - 1);
        __mmask16 m1 = live >= 32  ? (__mmask16)0xFFFF
                       : live > 16 ? (__mmask16)((1u << (live - 16)) - 1)
                                   : 0;
        const float *col = W + p * 32 * so;
        float *d = dst + p * n_in * 32;
        for (size_t k = 0; k < n_in; k++, d += 32) {
            const float *src = col + k * sk;
            __m512 v0, v1;
            if (so == 1) {
                v0 = _mm512_maskz_loadu_ps(m0, src);
                v1 = _mm512_maskz_loadu_ps(m1, src + 16);
            } else {
                v0 = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m0, idx, src, 4);
                v1 = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m1, idx, src + 16 * so, 4);
            }
            _mm512_store_ps(d, v0);
            _mm512_store_ps(d + 16, v1);
        }
    }
}
