/* gemm_avx2.c: the 6x16 AVX2+FMA register tile of krn_gemm_packed: 12 accumulators, two
 * panel loads and six broadcasts per step of k (compiled with -mavx2 -mfma). */
#include <immintrin.h>

#include "kernels/cpu/gemm.h"

void krn_gemm_tile_avx2(size_t k, const float *const *a, const float *b, float *const *c, size_t m,
                        size_t n, const float *bias)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
    for (size_t kk = 0; kk < k; kk++) {
        __m256 b0 = _mm256_load_ps(b + kk * 16), b1 = _mm256_load_ps(b + kk * 16 + 8);
        __m256 x;
#define ROW(i)                                                                                     \
    x = _mm256_broadcast_ss(a##i + kk);                                                            \
    c##i##0 = _mm256_fmadd_ps(x, b0, c##i##0);                                                     \
    c##i##1 = _mm256_fmadd_ps(x, b1, c##i##1);
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
    }
    __m256 r[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (size_t i = 0; i < m; i++) {
        float tmp[16];
        _mm256_storeu_ps(tmp, r[i][0]);
        _mm256_storeu_ps(tmp + 8, r[i][1]);
        if (n == 16 && !bias) {
            _mm256_storeu_ps(c[i], r[i][0]);
            _mm256_storeu_ps(c[i] + 8, r[i][1]);
            continue;
        }
        for (size_t j = 0; j < n; j++) c[i][j] = tmp[j] + (bias ? bias[j] : 0.0f);
    }
}
