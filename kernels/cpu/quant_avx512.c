/*
 * quant_avx512.c: AVX-512 VNNI tiles for the 32-element block types (Q4_0, Q4_1, Q5_0,
 * Q5_1, Q8_0 x Q8_0/Q8_1) with GGML's rounding: two weight rows per 512-bit register,
 * each block product one vpdpbusd. Installed only when the CPU has AVX512_VNNI (Cascade Lake and
 * later); otherwise the AVX2 tiles stay.
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

/* ---- 32-element block tiles, two rows per zmm --------------------------------------- */
/* The float side follows GGML's x86 dot products (ggml_vec_dot_q4_1_q8_1 and kin) so that
 * results round as llama.cpp's do: per output, 8 lanes each holding the integer sum of 4
 * consecutive products of a block; per block, lane = fma(d_w * d_x, float(lane sum),
 * lane); at the end the 8 lanes are added as GGML's hsum_float_8 does, plus (Q4_1, Q5_1)
 * the sum over blocks of fma(m_w, s_x, .) kept apart. Two weight rows share a zmm (one
 * per 256-bit half), so each vpdpbusd serves two outputs. Weights are made unsigned
 * (nibbles; Q5 with its fifth bit; Q8_0 biased by +128) and the bias times the
 * activations' 4-element sums is taken off by starting vpdpbusd at -bias * those sums,
 * which gives exactly GGML's signed lane sums. */
enum { K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1, K_Q8_0 };

AI float h2f(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* The 32 weight bytes of block i of two rows, row 0 in the low 256 bits, each in element
 * order and unsigned */
AI __m512i w_two(const uint8_t *b0, const uint8_t *b1, const int KIND)
{
    if (KIND == K_Q8_0) {
        __m512i z = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2))),
            _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1);
        return _mm512_xor_si512(z, _mm512_set1_epi8((char)0x80));
    }
    const size_t qo = KIND == K_Q4_0 ? 2 : KIND == K_Q4_1 ? 4 : KIND == K_Q5_0 ? 6 : 8;
    __m256i y = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(b1 + qo)),
                                 _mm_loadu_si128((const __m128i *)(b0 + qo)));
    __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(y), _mm256_srli_epi16(y, 4), 1);
    z = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0)); /* [r0 lo, r0 hi, r1 lo, r1 hi] */
    z = _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
    if (KIND == K_Q5_0 || KIND == K_Q5_1) {
        const size_t ho = KIND == K_Q5_0 ? 2 : 4;
        uint32_t h0, h1;
        memcpy(&h0, b0 + ho, 4);
        memcpy(&h1, b1 + ho, 4);
        z = _mm512_or_si512(
            z, _mm512_maskz_mov_epi8((__mmask64)h0 | (__mmask64)h1 << 32, _mm512_set1_epi8(0x10)));
    }
    return z;
}

/* GGML's hsum_float_8 */
AI float hsum8(__m256 v)
{
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

AI void tile32(size_t n, const void *w, size_t ws, const void *x, size_t xs, float *y, size_t ldy,
               const int NR, const int NT, const int KIND)
{
    const size_t wbs = KIND == K_Q4_0   ? sizeof(block_q4_0)
                       : KIND == K_Q4_1 ? sizeof(block_q4_1)
                       : KIND == K_Q5_0 ? sizeof(block_q5_0)
                       : KIND == K_Q5_1 ? sizeof(block_q5_1)
                                        : sizeof(block_q8_0);
    const int has_min = KIND == K_Q4_1 || KIND == K_Q5_1;
    const size_t xbs = has_min ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const size_t xqo = has_min ? 4 : 2;
    const int bias = KIND == K_Q4_0 ? 8 : KIND == K_Q5_0 ? 16 : KIND == K_Q8_0 ? 128 : 0;
    const int NP = (NR + 1) / 2;
    const uint8_t *wb = w, *xb = x;
    __m512 acc[2][4];
    __m128 msum[4]; /* token t: lane r = sum of fma(m_w, s_x) of row r */
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        msum[t] = _mm_setzero_ps();
#pragma GCC unroll 2
        for (int p = 0; p < NP; p++) acc[p][t] = _mm512_setzero_ps();
    }
    /* the (d, m) halves of block i of the 4 rows, as floats [d0 m0 d1 m1 d2 m2 d3 m3] */
    const __m512i pick0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    const __m512i pick1 = _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6);
    const __m256i pickm = _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7);
    const size_t nb = n / 32;
    for (size_t i = 0; i < nb; i++) {
        int32_t dm[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) memcpy(&dm[r], wb + (r < NR ? r : NR - 1) * ws + i * wbs, 4);
        __m512 sc =
            _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_setr_epi32(dm[0], dm[1], dm[2], dm[3])));
        __m512i wq[2];
        __m512 wd[2];
        wq[0] = w_two(wb + i * wbs, wb + (NR > 1 ? 1 : 0) * ws + i * wbs, KIND);
        wd[0] = _mm512_permutexvar_ps(pick0, sc);
        if (NP > 1) {
            wq[1] = w_two(wb + 2 * ws + i * wbs, wb + (NR > 3 ? 3 : 2) * ws + i * wbs, KIND);
            wd[1] = _mm512_permutexvar_ps(pick1, sc);
        }
        __m128 wm = _mm_setzero_ps();
        if (has_min)
            wm =
                _mm256_castps256_ps128(_mm256_permutevar8x32_ps(_mm512_castps512_ps256(sc), pickm));
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const uint8_t *xk = xb + t * xs + i * xbs;
            __m512i xq = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(xk + xqo)));
            __m512 xd = _mm512_set1_ps(h2f(xk));
            __m512i init = _mm512_setzero_si512();
            if (bias)
                init = _mm512_sub_epi32(
                    init, _mm512_dpbusd_epi32(init, _mm512_set1_epi8((char)bias), xq));
            if (has_min) msum[t] = _mm_fmadd_ps(wm, _mm_set1_ps(h2f(xk + 2)), msum[t]);
#pragma GCC unroll 2
            for (int p = 0; p < NP; p++) {
                __m512 q = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, wq[p], xq));
                acc[p][t] = _mm512_fmadd_ps(_mm512_mul_ps(wd[p], xd), q, acc[p][t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        _Alignas(16) float ms[4];
        _mm_store_ps(ms, msum[t]);
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            __m512 a = acc[r / 2][t];
            float s = hsum8(r % 2 ? _mm512_extractf32x8_ps(a, 1) : _mm512_castps512_ps256(a));
            y[t * ldy + r] = has_min ? s + ms[r] : s;
        }
    }
}

/* ---- panels: many rows x up to 16 tokens ------------------------------------------- */
/* The same numbers as tile32 (GGML's 8 lanes of 4-product sums per block, each lane
 * fma(d_w * d_x, lane, acc) over the blocks in order, hsum8, plus the min term), laid out
 * so that the float work is shared: one zmm holds the 8 lanes of one weight row for two
 * tokens, interleaved (lane 2g: token A's group g, lane 2g+1: token B's). A row's block is
 * unpacked once for all the tokens, and its d_w * d_x for 16 tokens is one multiply whose
 * pairs are then read back by 64-bit broadcast loads. Per row, block and pair of tokens
 * this leaves a vpdpbusd, a conversion and an fma. The activations (interleaved pairs,
 * their scales as floats, the bias correction) are laid out once per call. */
#define PANEL_T      16
#define PANEL_MAX_NB 128 /* blocks per row (n <= 4096); longer rows use the tiles */

/* The 32 weights of a block for an interleaved pair: dword lane 2g and 2g+1 both hold
 * the 4 weights of group g (elements 4g..4g+3), unsigned */
AI __m512i w_dup(const uint8_t *blk, const int KIND)
{
    if (KIND == K_Q8_0) {
        const __m512i dup8 = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        __m512i z = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(blk + 2)));
        return _mm512_xor_si512(_mm512_permutexvar_epi32(dup8, z), _mm512_set1_epi8((char)0x80));
    }
    const __m512i dup4 = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 1, 1, 2, 2, 3, 3);
    __m512i z =
        _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(blk + (KIND == K_Q4_0 ? 2 : 4))));
    z = _mm512_permutexvar_epi32(dup4, z);
    z = _mm512_mask_srli_epi16(z, (__mmask32)0xFFFF0000u, z, 4); /* groups 4..7: high nibbles */
    return _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
}

AI void panel32(size_t n, const void *w, size_t ws, size_t nr, const void *x, size_t xs, size_t nt,
                float *y, size_t ldy, const int NP, const int KIND)
{
    const size_t wbs = KIND == K_Q4_0   ? sizeof(block_q4_0)
                       : KIND == K_Q4_1 ? sizeof(block_q4_1)
                                        : sizeof(block_q8_0);
    const int has_min = KIND == K_Q4_1;
    const size_t xbs = has_min ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const size_t xqo = has_min ? 4 : 2;
    const int bias = KIND == K_Q4_0 ? 8 : KIND == K_Q8_0 ? 128 : 0;
    const size_t nb = n / 32;
    const uint8_t *wb = w, *xb = x;
    __m512i xq[PANEL_MAX_NB * (PANEL_T / 2)];
    __m512i corr[PANEL_MAX_NB * (PANEL_T / 2)];
    _Alignas(64) float dx[PANEL_MAX_NB * PANEL_T], sx[PANEL_MAX_NB * PANEL_T];
    const __m512i inter = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    for (size_t i = 0; i < nb; i++) {
        for (int t = 0; t < PANEL_T; t++) {
            const uint8_t *xk = xb + LODE_MIN((size_t)t, nt - 1) * xs + i * xbs;
            dx[i * PANEL_T + t] = h2f(xk);
            if (has_min) sx[i * PANEL_T + t] = h2f(xk + 2);
        }
#pragma GCC unroll 8
        for (int p = 0; p < NP; p++) {
            const uint8_t *xa = xb + LODE_MIN((size_t)(2 * p), nt - 1) * xs + i * xbs + xqo;
            const uint8_t *xc = xb + LODE_MIN((size_t)(2 * p + 1), nt - 1) * xs + i * xbs + xqo;
            __m512i z = _mm512_permutex2var_epi32(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)xa)), inter,
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)xc)));
            xq[i * NP + p] = z;
            if (bias)
                corr[i * NP + p] = _mm512_sub_epi32(
                    _mm512_setzero_si512(),
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)bias), z));
        }
    }
    /* the row's block scales (d, and m at +2), 16 blocks per gather */
    const __m512i boff =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)wbs));
    for (size_t r = 0; r < nr; r++) {
        const uint8_t *wr = wb + r * ws;
        _Alignas(64) float wd[PANEL_MAX_NB + 16], wm[PANEL_MAX_NB + 16];
        for (size_t i = 0; i < nb; i += 16) {
            __mmask16 k = nb - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nb - i)) - 1);
            __m512i g =
                _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), k, boff, wr + i * wbs, 1);
            _mm512_store_ps(wd + i, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g)));
            if (has_min)
                _mm512_store_ps(wm + i,
                                _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(g, 16))));
        }
        __m512 acc[PANEL_T / 2];
        __m512 msum = _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int p = 0; p < NP; p++) acc[p] = _mm512_setzero_ps();
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *blk = wr + i * wbs;
            __m512i wq = w_dup(blk, KIND);
            _Alignas(64) float dd[PANEL_T];
            _mm512_store_ps(dd,
                            _mm512_mul_ps(_mm512_set1_ps(wd[i]), _mm512_load_ps(dx + i * PANEL_T)));
            /* read the pairs back from memory: one broadcast load each, where the
             * compiler would otherwise extract them with shuffles */
            __asm__("" : "+m"(dd));
            if (has_min)
                msum =
                    _mm512_fmadd_ps(_mm512_set1_ps(wm[i]), _mm512_load_ps(sx + i * PANEL_T), msum);
#pragma GCC unroll 8
            for (int p = 0; p < NP; p++) {
                double d2;
                memcpy(&d2, dd + 2 * p, sizeof d2);
                __m512i init = bias ? corr[i * NP + p] : _mm512_setzero_si512();
                __m512 q = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, wq, xq[i * NP + p]));
                acc[p] = _mm512_fmadd_ps(_mm512_castpd_ps(_mm512_set1_pd(d2)), q, acc[p]);
            }
        }
        _Alignas(64) float ms[PANEL_T];
        if (has_min) _mm512_store_ps(ms, msum);
            /* hsum8 of both tokens at once: lane 2g + h holds token h's lane g, so each of
             * hsum8's three halvings is one add of the two halves of the pair */
#pragma GCC unroll 8
        for (int p = 0; p < NP; p++) {
            __m256 v8 =
                _mm256_add_ps(_mm512_extractf32x8_ps(acc[p], 1), _mm512_castps512_ps256(acc[p]));
            __m128 v4 = _mm_add_ps(_mm256_extractf128_ps(v8, 1), _mm256_castps256_ps128(v8));
            __m128 v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
            if (has_min)
                v2 = _mm_add_ps(v2, _mm_castpd_ps(_mm_load_sd((const double *)(ms + 2 * p))));
            _mm_store_ss(y + (size_t)(2 * p) * ldy + r, v2);
            if ((size_t)(2 * p + 1) < nt)
                _mm_store_ss(y + (size_t)(2 * p + 1) * ldy + r, _mm_movehdup_ps(v2));
        }
    }
}

#define PANEL_CASE(P, KIND)                                                                        \
    case P:                                                                                        \
        panel32(n, w, ws, nr, x, xs, nt, y, ldy, P, KIND);                                         \
        break;
#define DEFINE_PANEL(name, KIND)                                                                   \
    static void panel_##name(size_t n, const void *w, size_t ws, size_t nr, const void *x,         \
                             size_t xs, size_t nt, float *y, size_t ldy)                           \
    {                                                                                              \
        if (n / 32 > PANEL_MAX_NB) {                                                               \
            for (size_t t = 0; t < nt; t += 4)                                                     \
                for (size_t r = 0; r < nr; r += 4)                                                 \
                    tile_##name(n, (const char *)w + r * ws, ws, LODE_MIN((size_t)4, nr - r),      \
                                (const char *)x + t * xs, xs, LODE_MIN((size_t)4, nt - t),         \
                                y + t * ldy + r, ldy);                                             \
            return;                                                                                \
        }                                                                                          \
        switch ((nt + 1) / 2) {                                                                    \
            PANEL_CASE(1, KIND)                                                                    \
            PANEL_CASE(2, KIND)                                                                    \
            PANEL_CASE(3, KIND)                                                                    \
            PANEL_CASE(4, KIND)                                                                    \
            PANEL_CASE(5, KIND)                                                                    \
            PANEL_CASE(6, KIND)                                                                    \
            PANEL_CASE(7, KIND)                                                                    \
        default:                                                                                   \
            panel32(n, w, ws, nr, x, xs, nt, y, ldy, 8, KIND);                                     \
            break;                                                                                 \
        }                                                                                          \
    }

#define TILE_CASE(R, T, KIND)                                                                      \
    case (R - 1) * 4 + (T - 1):                                                                    \
        tile32(n, w, ws, x, xs, y, ldy, R, T, KIND);                                               \
        break;
#define TILE_SWITCH(KIND)                                                                          \
    switch ((nr - 1) * 4 + (nt - 1)) {                                                             \
        TILE_CASE(1, 1, KIND)                                                                      \
        TILE_CASE(1, 2, KIND)                                                                      \
        TILE_CASE(1, 3, KIND)                                                                      \
        TILE_CASE(1, 4, KIND)                                                                      \
        TILE_CASE(2, 1, KIND)                                                                      \
        TILE_CASE(2, 2, KIND)                                                                      \
        TILE_CASE(2, 3, KIND)                                                                      \
        TILE_CASE(2, 4, KIND)                                                                      \
        TILE_CASE(3, 1, KIND)                                                                      \
        TILE_CASE(3, 2, KIND)                                                                      \
        TILE_CASE(3, 3, KIND)                                                                      \
        TILE_CASE(3, 4, KIND)                                                                      \
        TILE_CASE(4, 1, KIND)                                                                      \
        TILE_CASE(4, 2, KIND)                                                                      \
        TILE_CASE(4, 3, KIND)                                                                      \
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

DEFINE_PANEL(q4_0, K_Q4_0)
DEFINE_PANEL(q4_1, K_Q4_1)
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
    o->panel[LODE_Q5_0] = NULL;
    o->panel[LODE_Q5_1] = NULL;
    o->panel[LODE_Q8_0] = panel_q8_0;
}

#if defined(__clang__)
#pragma clang attribute pop
#endif
