/* gemm_avx512.c: the 8x32 AVX-512 register tile of krn_gemm_packed: 16 accumulators,
 * two panel loads and eight broadcasts per step of k (compiled with -mavx512f). */
#include <immintrin.h>

#include "kernels/cpu/gemm.h"

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
