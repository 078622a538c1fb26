/*
 * quant.h: tensor element types and the quantized block layouts lode reads from GGUF
 * files. The layouts are GGML's (the GGUF format fixes them), shared by the CPU and
 * CUDA kernels, so this header is plain C that nvcc also compiles.
 */
#ifndef LODE_KERNELS_QUANT_H
#define LODE_KERNELS_QUANT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* GGML type ids as stored in GGUF tensor infos. Only these are accepted. */
typedef enum lode_dtype {
    LODE_F32 = 0,
    LODE_F16 = 1,
    LODE_Q4_0 = 2,
    LODE_Q4_1 = 3,
    LODE_Q5_0 = 6,
    LODE_Q5_1 = 7,
    LODE_Q8_0 = 8,
    LODE_Q8_1 = 9, /* activations only */
    LODE_Q4_K = 12,
    LODE_Q5_K = 13,
    LODE_Q6_K = 14,
    LODE_Q8_K = 15, /* activations only */
    LODE_BF16 = 30,
    LODE_DTYPE_MAX = 31
} lode_dtype;

#define QK4_0        32
#define QK4_1        32
#define QK5_0        32
#define QK5_1        32
#define QK8_0        32
#define QK8_1        32
#define QK_K         256
#define K_SCALE_SIZE 12

typedef uint16_t lode_half; /* IEEE binary16 bits */
typedef uint16_t lode_bf16; /* bfloat16 bits */

typedef struct {
    lode_half d;
    uint8_t qs[QK4_0 / 2]; /* low nibbles: elements 0..15, high: 16..31; x = (q - 8) * d */
} block_q4_0;
typedef struct {
    lode_half d, m;
    uint8_t qs[QK4_1 / 2]; /* x = q * d + m */
} block_q4_1;
typedef struct {
    lode_half d;
    uint8_t qh[4]; /* 5th bits */
    uint8_t qs[QK5_0 / 2];
} block_q5_0;
typedef struct {
    lode_half d, m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;
typedef struct {
    lode_half d;
    int8_t qs[QK8_0];
} block_q8_0;
typedef struct {
    lode_half d, s; /* s = d * sum(qs) */
    int8_t qs[QK8_1];
} block_q8_1;
typedef struct {
    lode_half d, dmin;
    uint8_t scales[K_SCALE_SIZE]; /* 8 x (6-bit scale, 6-bit min) */
    uint8_t qs[QK_K / 2];
} block_q4_K;
typedef struct {
    lode_half d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
typedef struct {
    uint8_t ql[QK_K / 2];     /* low 4 bits */
    uint8_t qh[QK_K / 4];     /* high 2 bits */
    int8_t scales[QK_K / 16]; /* 8-bit scales of 16-element groups */
    lode_half d;
} block_q6_K;
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;

_Static_assert(sizeof(block_q4_0) == 18, "q4_0");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0");
_Static_assert(sizeof(block_q8_1) == 36, "q8_1");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K");
_Static_assert(sizeof(block_q8_K) == 292, "q8_K");

/* Elements per block and bytes per block of a type; 0 for an unknown type. */
static inline size_t lode_dtype_block_elems(int t)
{
    switch (t) {
    case LODE_F32:
    case LODE_F16:
    case LODE_BF16:
        return 1;
    case LODE_Q4_0:
    case LODE_Q4_1:
    case LODE_Q5_0:
    case LODE_Q5_1:
    case LODE_Q8_0:
    case LODE_Q8_1:
        return 32;
    case LODE_Q4_K:
    case LODE_Q5_K:
    case LODE_Q6_K:
    case LODE_Q8_K:
        return QK_K;
    default:
        return 0;
    }
}

static inline size_t lode_dtype_block_bytes(int t)
{
    switch (t) {
    case LODE_F32:
        return 4;
    case LODE_F16:
    case LODE_BF16:
        return 2;
    case LODE_Q4_0:
        return sizeof(block_q4_0);
    case LODE_Q4_1:
        return sizeof(block_q4_1);
    case LODE_Q5_0:
        return sizeof(block_q5_0);
    case LODE_Q5_1:
        return sizeof(block_q5_1);
    case LODE_Q8_0:
        return sizeof(block_q8_0);
    case LODE_Q8_1:
        return sizeof(block_q8_1);
    case LODE_Q4_K:
        return sizeof(block_q4_K);
    case LODE_Q5_K:
        return sizeof(block_q5_K);
    case LODE_Q6_K:
        return sizeof(block_q6_K);
    case LODE_Q8_K:
        return sizeof(block_q8_K);
    default:
        return 0;
    }
}

/* Bytes of a row of n elements (n a multiple of the block size), 0 when it is not. */
static inline size_t lode_dtype_row_bytes(int t, size_t n)
{
    size_t be = lode_dtype_block_elems(t);
    if (!be || n % be) return 0;
    return n / be * lode_dtype_block_bytes(t);
}

const char *lode_dtype_name(int t); /* "q4_1", ...; "unknown" otherwise */

/* ---- half and bfloat16 conversion (exact, round-to-nearest-even) ------------------- */
static inline float lode_fp32_from_bits(uint32_t w)
{
    float f;
    memcpy(&f, &w, 4);
    return f;
}
static inline uint32_t lode_fp32_to_bits(float f)
{
    uint32_t w;
    memcpy(&w, &f, 4);
    return w;
}

static inline float lode_half_to_float(lode_half h)
{
    /* branch-free method (Maratea/Dukhan) */
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const uint32_t exp_offset = 0xE0u << 23;
    const float exp_scale = lode_fp32_from_bits(0x7800000u);
    const float normalized = lode_fp32_from_bits((two_w >> 4) + exp_offset) * exp_scale;
    const uint32_t magic_mask = 126u << 23;
    const float magic_bias = 0.5f;
    const float denormalized = lode_fp32_from_bits((two_w >> 17) | magic_mask) - magic_bias;
    const uint32_t denormalized_cutoff = 1u << 27;
    const uint32_t result = sign | (two_w < denormalized_cutoff ? lode_fp32_to_bits(denormalized)
                                                                : lode_fp32_to_bits(normalized));
    return lode_fp32_from_bits(result);
}

static inline lode_half lode_float_to_half(float f)
{
    const float scale_to_inf = lode_fp32_from_bits(0x77800000u);
    const float scale_to_zero = lode_fp32_from_bits(0x08800000u);
    float base = (f < 0 ? -f : f) * scale_to_inf * scale_to_zero;
    const uint32_t w = lode_fp32_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = lode_fp32_from_bits((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = lode_fp32_to_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (lode_half)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

static inline float lode_bf16_to_float(lode_bf16 h)
{
    return lode_fp32_from_bits((uint32_t)h << 16);
}

static inline lode_bf16 lode_float_to_bf16(float f)
{
    uint32_t u = lode_fp32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (lode_bf16)((u >> 16) | 64); /* quiet NaN */
    return (lode_bf16)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

#endif
