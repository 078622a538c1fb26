/*
 * quant_avx2.c: AVX2 quantized kernels: Q8_0/Q8_1/Q8_K activation quantization and the
 * integer dot products of 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) with
 * Q8 activations, as tiles of up to 4 weight rows x 4 tokens so each unpacked weight
 * block is reused across tokens (prefill) and each activation block across rows
 * (decode). Unsigned weights x signed activations go through maddubs; signed x signed
 * through the sign trick (|w| x sign(x, w)).
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/kernels_int.h"

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

/* the 5th bits of a Q5 block as 0x10 per byte */
AI __m256i bits32(const uint8_t *qh4)
{
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
                                           0x0101010101010101LL, 0x0000000000000000LL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* 8 int32 partial sums of u8 a x s8 b */
AI __m256i dot_us(__m256i a, __m256i b)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1));
}

/* 8 int32 partial sums of s8 a x s8 b, given |a| */
AI __m256i dot_ss(__m256i aabs, __m256i a, __m256i b)
{
    return dot_us(aabs, _mm256_sign_epi8(b, a));
}

/* ---- activation quantization ------------------------------------------------------- */
/* Quantizes 32 floats with scale amax/127; returns the 32 int8 values and the scale. */
AI __m256i q32(const float *v, float *d_out)
{
    __m256 x0 = _mm256_loadu_ps(v), x1 = _mm256_loadu_ps(v + 8);
    __m256 x2 = _mm256_loadu_ps(v + 16), x3 = _mm256_loadu_ps(v + 24);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_max_ps(_mm256_andnot_ps(sign, x0), _mm256_andnot_ps(sign, x1));
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, x2));
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, x3));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float amax = _mm_cvtss_f32(m4);
    float d = amax / 127.f;
    *d_out = d;
    __m256 id = _mm256_set1_ps(amax ? 127.f / amax : 0.f); /* as GGML: 127/amax */
    __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(x0, id));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(x1, id));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(x2, id));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(x3, id));
    __m256i p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3);
    __m256i p = _mm256_packs_epi16(p01, p23);
    /* undo the lane interleave of the packs */
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static void aq_q8_0(const float *x, void *y, size_t n)
{
    block_q8_0 *b = y;
    for (size_t i = 0; i < n / 32; i++) {
        float d;
        __m256i q = q32(x + i * 32, &d);
        b[i].d = lode_float_to_half(d);
        _mm256_storeu_si256((__m256i *)b[i].qs, q);
    }
}

AI int sum_i8(__m256i q)
{
    __m256i s =
        _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
    return _mm_cvtsi128_si32(t);
}

static void aq_q8_1(const float *x, void *y, size_t n)
{
    block_q8_1 *b = y;
    for (size_t i = 0; i < n / 32; i++) {
        float d;
        __m256i q = q32(x + i * 32, &d);
        b[i].d = lode_float_to_half(d);
        b[i].s = lode_float_to_half((float)sum_i8(q) * d);
        _mm256_storeu_si256((__m256i *)b[i].qs, q);
    }
}

static void aq_q8_K(const float *x, void *y, size_t n)
{
    block_q8_K *b = y;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (size_t i = 0; i < n / QK_K; i++) {
        const float *v = x + i * QK_K;
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8)
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(v + j)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4), d = amax / 127.f;
        __m256 id = _mm256_set1_ps(amax ? 127.f / amax : 0.f);
        b[i].d = d;
        for (int j = 0; j < QK_K; j += 32) {
            __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + j), id));
            __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + j + 8), id));
            __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + j + 16), id));
            __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + j + 24), id));
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
            p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(b[i].qs + j), p);
            /* sums of 16: i16 pairs then horizontal within each 128-bit half */
            __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), p);
            __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
            __m128i lo = _mm256_castsi256_si128(s32), hi = _mm256_extracti128_si256(s32, 1);
            lo = _mm_hadd_epi32(lo, lo);
            lo = _mm_hadd_epi32(lo, lo);
            hi = _mm_hadd_epi32(hi, hi);
            hi = _mm_hadd_epi32(hi, hi);
            b[i].bsums[j / 16] = (int16_t)_mm_cvtsi128_si32(lo);
            b[i].bsums[j / 16 + 1] = (int16_t)_mm_cvtsi128_si32(hi);
        }
    }
}

/* ---- 32-element block tiles -------------------------------------------------------- */
/* One tile body for all five types: KIND selects how a weight block is unpacked and
 * whether it carries a min (Q4_1/Q5_1, paired with Q8_1's s = d * sum(q)). The float
 * side is GGML's (see quant_ref.c), so results are those of llama.cpp's x86 builds. */
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
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm256_setzero_ps();
            mins[r][t] = 0;
        }
    const size_t nb = n / 32;
    for (size_t i = 0; i < nb; i++) {
        __m256i wq[4], wa[4];
        float wd[4], wm[4];
#pragma GCC unroll 4
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
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const uint8_t *xp = (const uint8_t *)x + t * xs + i * xbs;
            lode_half hd, hs = 0;
            memcpy(&hd, xp, 2);
            if (has_min) memcpy(&hs, xp + 2, 2);
            __m256i xq = _mm256_loadu_si256((const __m256i *)(xp + (has_min ? 4 : 2)));
            __m256 xd = _mm256_set1_ps(h2f(hd));
            float xsum = has_min ? h2f(hs) : 0.f;
#pragma GCC unroll 4
            for (int r = 0; r < NR; r++) {
                __m256i p = is_signed ? dot_ss(wa[r], wq[r], xq) : dot_us(wq[r], xq);
                __m256 sc = _mm256_mul_ps(_mm256_set1_ps(wd[r]), xd);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc[r][t]);
                if (has_min)
                    mins[r][t] = fmaf(wm[r], xsum, mins[r][t]); /* as GCC contracts GGML's */
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++)
#pragma GCC unroll 4
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

/* ---- K-quants x Q8_K ---------------------------------------------------------------- */
/* Sub-block scales are applied in 16-bit (madd with the broadcast scale), the block's
 * integer sum stays in int32, and one float multiply-add per 256 elements remains. */
AI int hsum_i32(__m256i v)
{
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
    return _mm_cvtsi128_si32(t);
}

/* sum over sub-blocks j of mins[j] * (bsums[2j] + bsums[2j+1]) */
AI int k4_min_sum(const uint8_t *mins8, const int16_t *bsums)
{
    __m256i bs = _mm256_loadu_si256((const __m256i *)bsums);    /* 16 x i16 */
    __m256i pair = _mm256_madd_epi16(bs, _mm256_set1_epi16(1)); /* 8 x i32 */
    __m128i m16 = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)mins8));
    __m256i m32 = _mm256_cvtepi16_epi32(m16);
    return hsum_i32(_mm256_mullo_epi32(pair, m32));
}

AI void k4_scales(const uint8_t *q, uint8_t *sc, uint8_t *mn)
{
    for (int j = 0; j < 8; j++) krn_get_scale_min_k4(j, q, &sc[j], &mn[j]);
}

static float dot_q4_K(size_t n, const void *w, const void *x)
{
    const block_q4_K *a = w;
    const block_q8_K *b = x;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    for (size_t i = 0; i < n / QK_K; i++) {
        uint8_t sc[8], mn[8];
        k4_scales(a[i].scales, sc, mn);
        __m256i sumi = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(a[i].qs + c * 32));
            __m256i lo = _mm256_and_si256(q, m4),
                    hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            __m256i x0 = _mm256_loadu_si256((const __m256i *)(b[i].qs + c * 64));
            __m256i x1 = _mm256_loadu_si256((const __m256i *)(b[i].qs + c * 64 + 32));
            __m256i p0 =
                _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), _mm256_set1_epi16(sc[2 * c]));
            __m256i p1 =
                _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), _mm256_set1_epi16(sc[2 * c + 1]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
        }
        float d = h2f(a[i].d) * b[i].d;
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(d), acc);
        mins += h2f(a[i].dmin) * b[i].d * (float)k4_min_sum(mn, b[i].bsums);
    }
    return hsum8(acc) - mins;
}

static float dot_q5_K(size_t n, const void *w, const void *x)
{
    const block_q5_K *a = w;
    const block_q8_K *b = x;
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    for (size_t i = 0; i < n / QK_K; i++) {
        uint8_t sc[8], mn[8];
        k4_scales(a[i].scales, sc, mn);
        __m256i qh = _mm256_loadu_si256((const __m256i *)a[i].qh);
        __m256i sumi = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(a[i].qs + c * 32));
            __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one);
            __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one);
            __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_slli_epi16(h0, 4));
            __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                                         _mm256_slli_epi16(h1, 4));
            __m256i x0 = _mm256_loadu_si256((const __m256i *)(b[i].qs + c * 64));
            __m256i x1 = _mm256_loadu_si256((const __m256i *)(b[i].qs + c * 64 + 32));
            __m256i p0 =
                _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), _mm256_set1_epi16(sc[2 * c]));
            __m256i p1 =
                _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), _mm256_set1_epi16(sc[2 * c + 1]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
        }
        float d = h2f(a[i].d) * b[i].d;
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(d), acc);
        mins += h2f(a[i].dmin) * b[i].d * (float)k4_min_sum(mn, b[i].bsums);
    }
    return hsum8(acc) - mins;
}

/* scale pair for a 32-element chunk covering 16-groups g and g+1 */
AI __m256i sc_pair(const int8_t *sc, int g)
{
    return _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
}

static float dot_q6_K(size_t n, const void *w, const void *x)
{
    const block_q6_K *a = w;
    const block_q8_K *b = x;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (size_t i = 0; i < n / QK_K; i++) {
        const int8_t *sc = a[i].scales;
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = a[i].ql + h * 64, *qhp = a[i].qh + h * 32;
            const int8_t *xq = b[i].qs + h * 128;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)qhp);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
            q[1] = _mm256_or_si256(
                _mm256_and_si256(l1, m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
            q[2] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
            q[3] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
            for (int k = 0; k < 4; k++) {
                __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + k * 32));
                __m256i p = _mm256_maddubs_epi16(q[k], xv);
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sc_pair(sc, h * 8 + k * 2)));
            }
        }
        /* the -32 offset of every weight: 32 * sum_g sc[g] * bsums[g] */
        __m256i bs = _mm256_loadu_si256((const __m256i *)b[i].bsums);
        __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
        int off = hsum_i32(_mm256_madd_epi16(bs, sc16));
        float d = h2f(a[i].d) * b[i].d;
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(
                                  sumi, _mm256_setr_epi32(32 * off, 0, 0, 0, 0, 0, 0, 0))),
                              _mm256_set1_ps(d), acc);
    }
    return hsum8(acc);
}

/* ---- float weights x f32 -------------------------------------------------------------- */
static float dot_f32w(size_t n, const void *w, const void *x)
{
    const float *a = w, *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static float dot_f16w(size_t n, const void *w, const void *x)
{
    const lode_half *a = w;
    const float *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i))),
                             _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 8))),
                             _mm256_loadu_ps(b + i + 8), s1);
    }
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += h2f(a[i]) * b[i];
    return s;
}

AI __m256 bf16x8(const lode_bf16 *p)
{
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static float dot_bf16w(size_t n, const void *w, const void *x)
{
    const lode_bf16 *a = w;
    const float *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(bf16x8(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(bf16x8(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += lode_bf16_to_float(a[i]) * b[i];
    return s;
}

void krn_quant_avx2_init(krn_ops *o);
void krn_quant_avx2_init(krn_ops *o)
{
    o->quant[LODE_Q8_1] = aq_q8_1;
    o->quant[LODE_Q8_K] = aq_q8_K;
    /* Q8_0 as a weight type keeps the reference quantizer's exact rounding; as the
     * activation quantizer both round to nearest, so the fast one serves both. */
    o->quant[LODE_Q8_0] = aq_q8_0;
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
    o->dot[LODE_Q4_K] = dot_q4_K;
    o->dot[LODE_Q5_K] = dot_q5_K;
    o->dot[LODE_Q6_K] = dot_q6_K;
    o->dot[LODE_F32] = dot_f32w;
    o->dot[LODE_F16] = dot_f16w;
    o->dot[LODE_BF16] = dot_bf16w;
}
