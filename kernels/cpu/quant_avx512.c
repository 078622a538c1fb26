/*
 * quant_avx512.c: AVX-512 VNNI versions of the 32-element block tiles of quant_avx2.c:
 * the same unpacking, with each u8 x s8 block product a single vpdpbusd. Installed only
 * when the CPU has AVX512_VNNI (Cascade Lake and later); otherwise the AVX2 tiles stay.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/kernels_int.h"

#pragma GCC target("avx512vnni")

#define AI static inline __attribute__((always_inline))

AI float h2f(lode_half h)
{
    return _cvtsh_ss(h);
}

AI float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI __m256i nib32(const uint8_t *qs)
{
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

AI __m256i bits32(const uint8_t *qh4)
{
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    return _mm256_maskz_mov_epi8((__mmask32)qh, _mm256_set1_epi8(0x10));
}

/* 8 int32 partial sums of u8 a x s8 b */
AI __m256i dot_us(__m256i a, __m256i b)
{
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b);
}

/* 8 int32 partial sums of s8 a x s8 b, given |a| */
AI __m256i dot_ss(__m256i aabs, __m256i a, __m256i b)
{
    return dot_us(aabs, _mm256_sign_epi8(b, a));
}

/* ---- 32-element block tiles -------------------------------------------------------- */
/* One tile body for all five types: KIND selects how a weight block is unpacked and
 * whether it carries a min (Q4_1/Q5_1, paired with Q8_1's s = d * sum(q)). */
enum { K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1, K_Q8_0 };

AI void tile32(size_t n, const void *w, size_t ws, const void *x, size_t xs, float *y, size_t ldy,
               const int NR, const int NT, const int KIND)
{
    const size_t wbs = KIND == K_Q4_0   ? sizeof(block_q4_0)
                       : KIND == K_Q4_1 ? sizeof(block_q4_1)
                       : KIND == K_Q5_0 ? sizeof(block_q5_0)
                       : KIND == K_Q5_1 ? sizeof(block_q5_1)
                                        : sizeof(block_q8_0);
    const int has_min = KIND == K_Q4_1 || KIND == K_Q5_1;
    const int is_signed = !has_min;
    const size_t xbs = has_min ? sizeof(block_q8_1) : sizeof(block_q8_0);
    __m256 acc[4][4];
    float mins[4][4];
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm256_setzero_ps();
            mins[r][t] = 0;
        }
    const size_t nb = n / 32;
    for (size_t i = 0; i < nb; i++) {
        __m256i wq[4], wa[4];
        float wd[4], wm[4];
        for (int r = 0; r < NR; r++) {
            const uint8_t *bp = (const uint8_t *)w + r * ws + i * wbs;
            lode_half hd, hm = 0;
            memcpy(&hd, bp, 2);
            if (has_min) memcpy(&hm, bp + 2, 2);
            wd[r] = h2f(hd);
            wm[r] = has_min ? h2f(hm) : 0.f;
            __m256i q;
            if (KIND == K_Q4_0) {
                q = _mm256_sub_epi8(nib32(bp + 2), _mm256_set1_epi8(8));
            } else if (KIND == K_Q4_1) {
                q = nib32(bp + 4);
            } else if (KIND == K_Q5_0) {
                q = _mm256_sub_epi8(_mm256_or_si256(nib32(bp + 6), bits32(bp + 2)),
                                    _mm256_set1_epi8(16));
            } else if (KIND == K_Q5_1) {
                q = _mm256_or_si256(nib32(bp + 8), bits32(bp + 4));
            } else {
                q = _mm256_loadu_si256((const __m256i *)(bp + 2));
            }
            wq[r] = q;
            wa[r] = is_signed ? _mm256_sign_epi8(q, q) : q;
        }
        for (int t = 0; t < NT; t++) {
            const uint8_t *xp = (const uint8_t *)x + t * xs + i * xbs;
            lode_half hd, hs = 0;
            memcpy(&hd, xp, 2);
            if (has_min) memcpy(&hs, xp + 2, 2);
            __m256i xq = _mm256_loadu_si256((const __m256i *)(xp + (has_min ? 4 : 2)));
            __m256 xd = _mm256_set1_ps(h2f(hd));
            float xsum = has_min ? h2f(hs) : 0.f;
            for (int r = 0; r < NR; r++) {
                __m256i p = is_signed ? dot_ss(wa[r], wq[r], xq) : dot_us(wq[r], xq);
                __m256 sc = _mm256_mul_ps(_mm256_set1_ps(wd[r]), xd);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc[r][t]);
                if (has_min) mins[r][t] += wm[r] * xsum;
            }
        }
    }
    for (int t = 0; t < NT; t++)
        for (int r = 0; r < NR; r++) y[t * ldy + r] = hsum8(acc[r][t]) + mins[r][t];
}

#define TILE_SWITCH(KIND)                                                                          \
    switch ((nr - 1) * 4 + (nt - 1)) {                                                             \
    case 0:                                                                                        \
        tile32(n, w, ws, x, xs, y, ldy, 1, 1, KIND);                                               \
        break;                                                                                     \
    case 1:                                                                                        \
        tile32(n, w, ws, x, xs, y, ldy, 1, 2, KIND);                                               \
        break;                                                                                     \
    case 2:                                                                                        \
        tile32(n, w, ws, x, xs, y, ldy, 1, 3, KIND);                                               \
        break;                                                                                     \
    case 3:                                                                                        \
        tile32(n, w, ws, x, xs, y, ldy, 1, 4, KIND);                                               \
        break;                                                                                     \
    case 4:                                                                                        \
        tile32(n, w, ws, x, xs, y, ldy, 2, 1, KIND);                                               \
        break;                                                                                     \
    case 5:                                                                                        \
        tile32(n, w, ws, x, xs, y, ldy, 2, 2, KIND);                                               \
        break;                                                                                     \
    case 6:                                                                                        \
        tile32(n, w, ws, x, xs, y, ldy, 2, 3, KIND);                                               \
        break;                                                                                     \
    case 7:                                                                                        \
        tile32(n, w, ws, x, xs, y, ldy, 2, 4, KIND);                                               \
        break;                                                                                     \
    case 8:                                                                                        \
        tile32(n, w, ws, x, xs, y, ldy, 3, 1, KIND);                                               \
        break;                                                                                     \
    case 9:                                                                                        \
        tile32(n, w, ws, x, xs, y, ldy, 3, 2, KIND);                                               \
        break;                                                                                     \
    case 10:                                                                                       \
        tile32(n, w, ws, x, xs, y, ldy, 3, 3, KIND);                                               \
        break;                                                                                     \
    case 11:                                                                                       \
        tile32(n, w, ws, x, xs, y, ldy, 3, 4, KIND);                                               \
        break;                                                                                     \
    case 12:                                                                                       \
        tile32(n, w, ws, x, xs, y, ldy, 4, 1, KIND);                                               \
        break;                                                                                     \
    case 13:                                                                                       \
        tile32(n, w, ws, x, xs, y, ldy, 4, 2, KIND);                                               \
        break;                                                                                     \
    case 14:                                                                                       \
        tile32(n, w, ws, x, xs, y, ldy, 4, 3, KIND);                                               \
        break;                                                                                     \
    default:                                                                                       \
        tile32(n, w, ws, x, xs, y, ldy, 4, 4, KIND);                                               \
        break;                                                                                     \
    }

#define DEFINE_TYPE(name, KIND)                                                                    \
    static void tile_##name(size_t n, const void *w, size_t ws, size_t nr, const void *x,          \
                            size_t xs, size_t nt, float *y, size_t ldy)                            \
    {                                                                                              \
        TILE_SWITCH(KIND)                                                                          \
    }                                                                                              \
    static float dot_##name(size_t n, const void *w, const void *x)                                \
    {                                                                                              \
        float y;                                                                                   \
        tile32(n, w, 0, x, 0, &y, 1, 1, 1, KIND);                                                  \
        return y;                                                                                  \
    }

DEFINE_TYPE(q4_0, K_Q4_0)
DEFINE_TYPE(q4_1, K_Q4_1)
DEFINE_TYPE(q5_0, K_Q5_0)
DEFINE_TYPE(q5_1, K_Q5_1)
DEFINE_TYPE(q8_0, K_Q8_0)

void krn_quant_avx512_init(krn_ops *o);
void krn_quant_avx512_init(krn_ops *o)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512vnni")) return;
    o->dot[LODE_Q4_0] = dot_q4_0;
    o->dot[LODE_Q4_1] = dot_q4_1;
    o->dot[LODE_Q5_0] = dot_q5_0;
    o->dot[LODE_Q5_1] = dot_q5_1;
    o->dot[LODE_Q8_0] = dot_q8_0;
    o->tile[LODE_Q4_0] = tile_q4_0;
    o->tile[LODE_Q4_1] = tile_q4_1;
    o->tile[LODE_Q5_0] = tile_q5_0;
    o->tile[LODE_Q5_1] = tile_q5_1;
    o->tile[LODE_Q8_0] = tile_q8_0;
}
