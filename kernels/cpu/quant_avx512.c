/*
 * quant_avx512.c: AVX-512 VNNI tiles for the 32-element block types (Q4_0, Q4_1, Q5_0,
 * Q5_1, Q8_0 x Q8_0/Q8_1): two blocks per 512-bit register, each block product one
 * vpdpbusd. Installed only when the CPU has AVX512_VNNI (Cascade Lake and later);
 * otherwise the AVX2 tiles stay.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/kernels_int.h"

/* Every function here may use VNNI (the file is installed only on VNNI CPUs); clang has
 * no `#pragma GCC target`, so it gets the same through an attribute scope. */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512vnni"))), apply_to = function)
#else
#pragma GCC target("avx512vnni")
#endif

#define AI static inline __attribute__((always_inline))

/* ---- 32-element block tiles, two blocks per zmm -------------------------------------- */
/* Weights are made unsigned (nibbles as they are; Q8_0 biased by +128) so each block
 * product is one vpdpbusd; the bias times the activations' block sums is taken off by
 * starting the accumulator at -bias * partial sums of x (computed once per token, shared
 * by all rows). The two half-precision scales (and mins) of a block pair become one
 * 4-float vector [d0, m0, d1, m1]; multiplied by the activation's [d0, s0, d1, s1] it
 * gives both the per-block scales (spread to the lanes by a permute) and the min terms. */
enum { K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1, K_Q8_0 };

AI __m512i w_pair(const uint8_t *b0, const uint8_t *b1, const int KIND, const int two)
{
    if (KIND == K_Q8_0) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(b0 + 2));
        __m256i b = two ? _mm256_loadu_si256((const __m256i *)(b1 + 2)) : _mm256_set1_epi8(0);
        __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
        return _mm512_xor_si512(z, _mm512_set1_epi8((char)0x80));
    }
    const size_t qo = KIND == K_Q4_0 ? 2 : KIND == K_Q4_1 ? 4 : KIND == K_Q5_0 ? 6 : 8;
    __m128i q0 = _mm_loadu_si128((const __m128i *)(b0 + qo));
    __m128i q1 = two ? _mm_loadu_si128((const __m128i *)(b1 + qo)) : _mm_setzero_si128();
    __m256i y = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
    __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(y), _mm256_srli_epi16(y, 4), 1);
    z = _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
    if (KIND == K_Q5_0 || KIND == K_Q5_1) {
        const size_t ho = KIND == K_Q5_0 ? 2 : 4;
        uint32_t h0, h1 = 0;
        memcpy(&h0, b0 + ho, 4);
        if (two) memcpy(&h1, b1 + ho, 4);
        uint64_t m = (uint64_t)(h0 & 0xFFFF) | (uint64_t)(h1 & 0xFFFF) << 16 |
                     (uint64_t)(h0 >> 16) << 32 | (uint64_t)(h1 >> 16) << 48;
        z = _mm512_or_si512(z, _mm512_maskz_mov_epi8((__mmask64)m, _mm512_set1_epi8(0x10)));
    }
    return z;
}

/* [d0, m0, d1, m1] of a weight pair (m = 0 for types without a min) */
AI __m128 w_scales(const uint8_t *b0, const uint8_t *b1, const int KIND, const int two)
{
    const int has_min = KIND == K_Q4_1 || KIND == K_Q5_1;
    uint32_t a0, a1 = 0;
    memcpy(&a0, b0, 4);
    if (two) memcpy(&a1, b1, 4);
    if (!has_min) {
        a0 &= 0xFFFF;
        a1 &= 0xFFFF;
    }
    return _mm_cvtph_ps(_mm_set_epi32(0, 0, (int)a1, (int)a0));
}

AI __m512i x_pair(const uint8_t *x0, const uint8_t *x1, const int KIND, const int two)
{
    const int has_min = KIND == K_Q4_1 || KIND == K_Q5_1;
    const size_t qo = has_min ? 4 : 2;
    __m256i a = _mm256_loadu_si256((const __m256i *)(x0 + qo));
    __m256i b = two ? _mm256_loadu_si256((const __m256i *)(x1 + qo)) : _mm256_set1_epi8(0);
    __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
    if (KIND == K_Q8_0) return z;                               /* [x0 lo, x0 hi, x1 lo, x1 hi] */
    return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0)); /* [x0 lo, x1 lo, x0 hi, x1 hi] */
}

AI __m128 x_scales(const uint8_t *x0, const uint8_t *x1, const int KIND, const int two)
{
    const int has_min = KIND == K_Q4_1 || KIND == K_Q5_1;
    uint32_t a0, a1 = 0;
    memcpy(&a0, x0, 4);
    if (two) memcpy(&a1, x1, 4);
    if (!has_min) {
        a0 &= 0xFFFF;
        a1 &= 0xFFFF;
    }
    return _mm_cvtph_ps(_mm_set_epi32(0, 0, (int)a1, (int)a0));
}

AI void pair_step(const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, size_t i,
                  __m512 acc[4][4], __m128 macc[4][4], const int NR, const int NT, const int KIND,
                  const int two)
{
    const size_t wbs = KIND == K_Q4_0   ? sizeof(block_q4_0)
                       : KIND == K_Q4_1 ? sizeof(block_q4_1)
                       : KIND == K_Q5_0 ? sizeof(block_q5_0)
                       : KIND == K_Q5_1 ? sizeof(block_q5_1)
                                        : sizeof(block_q8_0);
    const int has_min = KIND == K_Q4_1 || KIND == K_Q5_1;
    const size_t xbs = has_min ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const int bias = KIND == K_Q4_0 ? 8 : KIND == K_Q5_0 ? 16 : KIND == K_Q8_0 ? 128 : 0;
    const __m512i perm = KIND == K_Q8_0
                             ? _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2)
                             : _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2);
    __m512i wq[4];
    __m128 wsc[4];
    __m512 wsv[4];
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++) {
        const uint8_t *b0 = w + r * ws + i * wbs;
        wq[r] = w_pair(b0, b0 + wbs, KIND, two);
        wsc[r] = w_scales(b0, b0 + wbs, KIND, two);
        wsv[r] = _mm512_permutexvar_ps(perm, _mm512_castps128_ps512(wsc[r]));
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        const uint8_t *x0 = x + t * xs + i * xbs;
        __m512i xq = x_pair(x0, x0 + xbs, KIND, two);
        __m128 xsc = x_scales(x0, x0 + xbs, KIND, two);
        __m512 xsv = _mm512_permutexvar_ps(perm, _mm512_castps128_ps512(xsc));
        __m512i init = _mm512_setzero_si512();
        if (bias)
            init =
                _mm512_sub_epi32(init, _mm512_dpbusd_epi32(init, _mm512_set1_epi8((char)bias), xq));
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            __m512i p = _mm512_dpbusd_epi32(init, wq[r], xq);
            __m512 px = _mm512_mul_ps(_mm512_cvtepi32_ps(p), xsv);
            acc[r][t] = _mm512_fmadd_ps(px, wsv[r], acc[r][t]);
            if (has_min) macc[r][t] = _mm_fmadd_ps(wsc[r], xsc, macc[r][t]);
        }
    }
}

AI void tile32(size_t n, const void *w, size_t ws, const void *x, size_t xs, float *y, size_t ldy,
               const int NR, const int NT, const int KIND)
{
    const int has_min = KIND == K_Q4_1 || KIND == K_Q5_1;
    __m512 acc[4][4];
    __m128 macc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm512_setzero_ps();
            macc[r][t] = _mm_setzero_ps();
        }
    const size_t nb = n / 32;
    size_t i = 0;
    for (; i + 2 <= nb; i += 2) pair_step(w, ws, x, xs, i, acc, macc, NR, NT, KIND, 1);
    if (i < nb) pair_step(w, ws, x, xs, i, acc, macc, NR, NT, KIND, 0);
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++)
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            float s = _mm512_reduce_add_ps(acc[r][t]);
            if (has_min) {
                __m128 m = macc[r][t];
                s +=
                    _mm_cvtss_f32(_mm_shuffle_ps(m, m, 1)) + _mm_cvtss_f32(_mm_shuffle_ps(m, m, 3));
            }
            y[t * ldy + r] = s;
        }
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

/* ---- row panels: the activations' side prepared once for many rows ---------------- */
/* For a panel of rows x up to 4 tokens, the x half of every block pair (permuted bytes,
 * scales spread over the lanes, bias start) is built once on the stack and then read
 * (as memory operands) by every 4-row group, instead of being rebuilt per group. */
#define PANEL_MAX_PAIRS 128 /* n_in <= 8192 */

typedef struct xprep {
    __m512i q;
    __m512 sv;
    __m512i init;
    __m128 sc;
} xprep;

AI void panel_core(const uint8_t *w, size_t ws, const xprep (*xp)[4], const __m512 *xsc4, size_t nb,
                   float *y, size_t ldy, const int NR, const int NT, const int KIND)
{
    const size_t wbs = KIND == K_Q4_0   ? sizeof(block_q4_0)
                       : KIND == K_Q4_1 ? sizeof(block_q4_1)
                       : KIND == K_Q5_0 ? sizeof(block_q5_0)
                       : KIND == K_Q5_1 ? sizeof(block_q5_1)
                                        : sizeof(block_q8_0);
    const int has_min = KIND == K_Q4_1 || KIND == K_Q5_1;
    const __m512i perm = KIND == K_Q8_0
                             ? _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2)
                             : _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2);
    __m512 acc[4][4];
    __m512 macc[4]; /* per row: 128-bit lane t holds token t's [., m0 s0, ., m1 s1] sums */
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++) {
        macc[r] = _mm512_setzero_ps();
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) acc[r][t] = _mm512_setzero_ps();
    }
    for (size_t i = 0; i < nb; i += 2) {
        const int two = i + 1 < nb;
        __m512i wq[4];
        __m128 wsc[4];
        __m512 wsv[4];
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            const uint8_t *b0 = w + r * ws + i * wbs;
            if (two) {
                wq[r] = w_pair(b0, b0 + wbs, KIND, 1);
                wsc[r] = w_scales(b0, b0 + wbs, KIND, 1);
            } else {
                wq[r] = w_pair(b0, b0, KIND, 0);
                wsc[r] = w_scales(b0, b0, KIND, 0);
            }
            wsv[r] = _mm512_permutexvar_ps(perm, _mm512_castps128_ps512(wsc[r]));
        }
        const xprep *xr = xp[i / 2];
        if (has_min)
#pragma GCC unroll 4
            for (int r = 0; r < NR; r++)
                macc[r] = _mm512_fmadd_ps(_mm512_broadcast_f32x4(wsc[r]), xsc4[i / 2], macc[r]);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
#pragma GCC unroll 4
            for (int r = 0; r < NR; r++) {
                __m512i p = _mm512_dpbusd_epi32(xr[t].init, wq[r], xr[t].q);
                __m512 px = _mm512_mul_ps(_mm512_cvtepi32_ps(p), xr[t].sv);
                acc[r][t] = _mm512_fmadd_ps(px, wsv[r], acc[r][t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++)
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            float s = _mm512_reduce_add_ps(acc[r][t]);
            if (has_min) {
                _Alignas(64) float m[16];
                _mm512_store_ps(m, macc[r]);
                s += m[4 * t + 1] + m[4 * t + 3];
            }
            y[t * ldy + r] = s;
        }
}

AI void panel32(size_t n, const void *w, size_t ws, size_t nr, const void *x, size_t xs, float *y,
                size_t ldy, const int NT, const int KIND)
{
    const int has_min = KIND == K_Q4_1 || KIND == K_Q5_1;
    const size_t xbs = has_min ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const int bias = KIND == K_Q4_0 ? 8 : KIND == K_Q5_0 ? 16 : KIND == K_Q8_0 ? 128 : 0;
    const __m512i perm = KIND == K_Q8_0
                             ? _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2)
                             : _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2);
    const size_t nb = n / 32;
    xprep xp[PANEL_MAX_PAIRS][4];
    __m512 xsc4[PANEL_MAX_PAIRS];
    for (size_t i = 0; i < nb; i += 2) {
        const int two = i + 1 < nb;
        _Alignas(64) float sc4[16] = {0};
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const uint8_t *x0 = (const uint8_t *)x + t * xs + i * xbs;
            xprep *e = &xp[i / 2][t];
            e->q = two ? x_pair(x0, x0 + xbs, KIND, 1) : x_pair(x0, x0, KIND, 0);
            e->sc = two ? x_scales(x0, x0 + xbs, KIND, 1) : x_scales(x0, x0, KIND, 0);
            e->sv = _mm512_permutexvar_ps(perm, _mm512_castps128_ps512(e->sc));
            __m512i init = _mm512_setzero_si512();
            if (bias)
                init = _mm512_sub_epi32(
                    init, _mm512_dpbusd_epi32(init, _mm512_set1_epi8((char)bias), e->q));
            e->init = init;
            _mm_store_ps(sc4 + 4 * t, e->sc);
        }
        xsc4[i / 2] = _mm512_load_ps(sc4);
    }
    const uint8_t *wb = w;
    size_t r = 0;
    for (; r + 4 <= nr; r += 4) panel_core(wb + r * ws, ws, xp, xsc4, nb, y + r, ldy, 4, NT, KIND);
    switch (nr - r) {
    case 3:
        panel_core(wb + r * ws, ws, xp, xsc4, nb, y + r, ldy, 3, NT, KIND);
        break;
    case 2:
        panel_core(wb + r * ws, ws, xp, xsc4, nb, y + r, ldy, 2, NT, KIND);
        break;
    case 1:
        panel_core(wb + r * ws, ws, xp, xsc4, nb, y + r, ldy, 1, NT, KIND);
        break;
    default:
        break;
    }
}

#define DEFINE_PANEL(name, KIND)                                                                   \
    static void panel_##name(size_t n, const void *w, size_t ws, size_t nr, const void *x,         \
                             size_t xs, size_t nt, float *y, size_t ldy)                           \
    {                                                                                              \
        if (n / 32 > 2 * PANEL_MAX_PAIRS) {                                                        \
            for (size_t r = 0; r < nr; r += 4)                                                     \
                tile_##name(n, (const uint8_t *)w + r * ws, ws, LODE_MIN((size_t)4, nr - r), x,    \
                            xs, nt, y + r, ldy);                                                   \
            return;                                                                                \
        }                                                                                          \
        switch (nt) {                                                                              \
        case 1:                                                                                    \
            panel32(n, w, ws, nr, x, xs, y, ldy, 1, KIND);                                         \
            break;                                                                                 \
        case 2:                                                                                    \
            panel32(n, w, ws, nr, x, xs, y, ldy, 2, KIND);                                         \
            break;                                                                                 \
        case 3:                                                                                    \
            panel32(n, w, ws, nr, x, xs, y, ldy, 3, KIND);                                         \
            break;                                                                                 \
        default:                                                                                   \
            panel32(n, w, ws, nr, x, xs, y, ldy, 4, KIND);                                         \
            break;                                                                                 \
        }                                                                                          \
    }

DEFINE_PANEL(q4_0, K_Q4_0)
DEFINE_PANEL(q4_1, K_Q4_1)
DEFINE_PANEL(q5_0, K_Q5_0)
DEFINE_PANEL(q5_1, K_Q5_1)
DEFINE_PANEL(q8_0, K_Q8_0)

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
    o->panel[LODE_Q4_0] = panel_q4_0;
    o->panel[LODE_Q4_1] = panel_q4_1;
    o->panel[LODE_Q5_0] = panel_q5_0;
    o->panel[LODE_Q5_1] = panel_q5_1;
    o->panel[LODE_Q8_0] = panel_q8_0;
}

#if defined(__clang__)
#pragma clang attribute pop
#endif
