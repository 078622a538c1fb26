/*
 * kernels.h: lode's CPU compute kernels, the C entry points the CPU backend calls and the
 * reference the CUDA kernels are tested against. Rows of every GGUF weight type are
 * dequantized, quantized and dotted here; matmuls quantize the f32 activations once
 * (Q8_0, Q8_1 or Q8_K, as GGML pairs them with the weight type) and take integer dot
 * products block by block, never dequantizing a matrix. Each entry point dispatches at
 * run time to the best variant the CPU has (AVX-512, AVX2+FMA+F16C, portable C);
 * LODE_KERNELS=scalar|avx2|avx512 forces one.
 *
 * Shapes: n (row length) must be a multiple of the type's block size
 * (lode_dtype_block_elems); quantized rows are packed blocks as in kernels/quant.h.
 * Pointers need no particular alignment. No function here allocates.
 */
#ifndef LODE_KERNELS_CPU_KERNELS_H
#define LODE_KERNELS_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"
#include "common/threadpool.h"
#include "kernels/quant.h"

/* ---- dispatch ---------------------------------------------------------------------- */
typedef enum krn_isa { KRN_ISA_SCALAR = 0, KRN_ISA_AVX2 = 1, KRN_ISA_AVX512 = 2 } krn_isa;

/* The variant in use: chosen once from the CPU (or LODE_KERNELS) on first use. */
krn_isa krn_isa_active(void);
/* 1 when this CPU can run the variant. */
int krn_isa_supported(krn_isa isa);
/* Switches every entry point to the variant (tests and benchmarks; not thread-safe
 * against running kernels). LODE_ERR_UNSUPPORTED when the CPU lacks it. */
lode_status krn_isa_set(krn_isa isa);
const char *krn_isa_name(krn_isa isa); /* "scalar", "avx2", "avx512" */

/* ---- types ------------------------------------------------------------------------- */
/* 1 for the weight types the kernels take (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * Q4_K, Q5_K, Q6_K), 0 otherwise. */
int krn_weight_type_ok(lode_dtype t);
/* The activation type a weight type's dot product takes: Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1
 * for Q4_1/Q5_1, Q8_K for the K types, F32 for F32/F16/BF16 (those dot with f32). */
lode_dtype krn_vec_dot_type(lode_dtype wt);

/* ---- rows -------------------------------------------------------------------------- */
/* y[0..n) = dequantized x (any weight type or Q8_0/Q8_1/Q8_K). LODE_ERR_INVALID for an
 * unknown type or an n that is not a multiple of its block. */
lode_status krn_dequantize_row(lode_dtype t, const void *x, float *y /* OUT */, size_t n);

/* Quantizes n floats into y (lode_dtype_row_bytes(t, n) bytes). Activation types (Q8_0,
 * Q8_1, Q8_K) are fast; weight types (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
 * Q5_K, Q6_K) are reference quality for tests and model writers and may be slow.
 * LODE_ERR_INVALID on a bad type or n. */
lode_status krn_quantize_row(lode_dtype t, const float *x, void *y /* OUT */, size_t n);

/* Dot product of a weight row w (type wt, n elements) with an activation row xq already
 * in krn_vec_dot_type(wt) (for F32/F16/BF16 weights: f32). Integer arithmetic inside a
 * block for quantized types. wt must satisfy krn_weight_type_ok. */
float krn_vec_dot(lode_dtype wt, size_t n, const void *w, const void *xq);

/* Dot product of a weight row with f32 x, dequantizing block by block on the fly. */
float krn_vec_dot_f32(lode_dtype wt, size_t n, const void *w, const float *x);

/* ---- matmul ------------------------------------------------------------------------ */
/* Bytes of workspace krn_matmul needs for n_tok activation rows of n_in elements: the
 * quantized activations (0 for F32/F16/BF16 weights). */
size_t krn_matmul_wsize(lode_dtype wt, size_t n_tok, size_t n_in);

/* Y[t][o] = sum_i X[t][i] * W[o][i] for t < n_tok, o < n_out.
 * W: n_out rows of n_in elements of type wt, packed (row o at o * row_bytes).
 * X: n_tok rows of n_in floats, row stride ldx floats. Y: row stride ldy floats.
 * ws: caller's workspace of at least krn_matmul_wsize(wt, n_tok, n_in) bytes, which
 * receives the quantized X (kept there for krn_matmul_q). Runs on pool (NULL: calling
 * thread only), parallel over output rows and token tiles. Returns LODE_ERR_INVALID on a
 * bad type, shape or a short workspace. */
lode_status krn_matmul(lode_pool *pool, lode_dtype wt, const void *W, size_t n_out, size_t n_in,
                       const float *X, size_t ldx, size_t n_tok, float *Y /* OUT */, size_t ldy,
                       void *ws, size_t ws_size);

/* The activation half of krn_matmul: quantizes n_tok rows of X into ws as rows of
 * krn_vec_dot_type(wt) (row stride lode_dtype_row_bytes(that type, n_in)). Several
 * weight matrices of the same activation type (Q, K, V; gate and up) can then share it
 * through krn_matmul_q. For F32/F16/BF16 weights nothing is written. */
lode_status krn_quantize_acts(lode_pool *pool, lode_dtype wt, const float *X, size_t ldx,
                              size_t n_tok, size_t n_in, void *ws, size_t ws_size);

/* The weight half of krn_matmul: Y = Xq * W^T with Xq from krn_quantize_acts (for
 * F32/F16/BF16 weights pass the f32 X and its stride in xq/ldx; ldx is ignored
 * otherwise). */
lode_status krn_matmul_q(lode_pool *pool, lode_dtype wt, const void *W, size_t n_out, size_t n_in,
                         const void *xq, size_t ldx, size_t n_tok, float *Y /* OUT */, size_t ldy);

/* One of several matmuls that share their activations (see krn_matmul_q_multi). */
typedef struct krn_mm {
    lode_dtype wt; /* weight type */
    const void *W; /* n_out rows of n_in elements */
    size_t n_out;
    float *Y; /* OUT (n_tok, ldy) */
    size_t ldy;
} krn_mm;

/* Runs up to 8 matmuls over the same quantized activations (from krn_quantize_acts;
 * every weight type must have the same krn_vec_dot_type and the same n_in) in a single
 * parallel region: Q, K and V, or gate and up, in one go. Same rules as krn_matmul_q. */
lode_status krn_matmul_q_multi(lode_pool *pool, const krn_mm *mms, size_t n_mm, size_t n_in,
                               const void *xq, size_t ldx, size_t n_tok);

/* ---- f32 row operations ------------------------------------------------------------ */
/* y = x / sqrt(mean(x^2) + eps) * w. y may equal x. */
void krn_rmsnorm(float *y /* OUT */, const float *x, const float *w, size_t n, float eps);
/* Fused residual: x += r (in place), then y = rmsnorm(x) * w. */
void krn_add_rmsnorm(float *y /* OUT */, float *x, const float *r, const float *w, size_t n,
                     float eps);

typedef struct krn_rope_params {
    float base;                /* theta base (rope.freq_base) */
    float freq_scale;          /* linear position scaling (1 = none) */
    const float *freq_factors; /* NULL or n_rot/2 divisors of each frequency (llama3) */
    size_t n_rot;              /* rotated dims per head (rope.dimension_count), even */
    int neox;                  /* 0: pairs (2i, 2i+1) (GGUF llama); 1: (i, i + n_rot/2) */
} krn_rope_params;

/* Rotates n_head heads of head_dim floats (x[h * head_dim + ...]) in place for position
 * pos: pair i turns by pos * freq_scale * base^(-2i/n_rot) / freq_factors[i]. Dims past
 * n_rot are left alone. */
void krn_rope(float *x, size_t n_head, size_t head_dim, int64_t pos, const krn_rope_params *p);
/* krn_rope in two halves, for a step whose layers all turn the same positions: the
 * angles of position pos once (cs, sn OUT: krn_rope_half(head_dim, p) floats each), then
 * any number of rotations by them, with the same bits as krn_rope. */
size_t krn_rope_half(size_t head_dim, const krn_rope_params *p);
void krn_rope_angles(float *cs /* OUT */, float *sn /* OUT */, size_t head_dim, int64_t pos,
                     const krn_rope_params *p);
void krn_rope_apply(float *x, size_t n_head, size_t head_dim, const float *cs, const float *sn,
                    const krn_rope_params *p);

/* In place: x = exp(x - max) / sum. */
void krn_softmax(float *x, size_t n);
/* y = silu(g) * u (SwiGLU); y may alias g or u. */
void krn_silu_mul(float *y /* OUT */, const float *g, const float *u, size_t n);
/* y = a + b; y may alias a or b. */
void krn_add(float *y /* OUT */, const float *a, const float *b, size_t n);
/* x *= s. */
void krn_scale(float *x, float s, size_t n);
/* Index of the largest x (the first on ties; NaNs are skipped); 0 when n == 0. */
size_t krn_argmax(const float *x, size_t n);
/* Half <-> float rows (F16C when present; round to nearest even). */
void krn_f16_to_f32(const lode_half *x, float *y /* OUT */, size_t n);
void krn_f32_to_f16(const float *x, lode_half *y /* OUT */, size_t n);
/* sum x[i] * y[i] over a half row and a float row. */
float krn_dot_f16_f32(const lode_half *x, const float *y, size_t n);

/* ---- attention over a paged F16 KV cache ------------------------------------------- */
/* The KV cache is paged in blocks of KRN_KV_BLOCK tokens. A physical block holds, for
 * each KV head, KRN_KV_BLOCK rows of head_dim halves:
 *   k_cache[((phys * n_kv_head + kvh) * KRN_KV_BLOCK + slot) * head_dim + d]
 * (v_cache alike). A sequence's block table maps logical block (pos / KRN_KV_BLOCK) to
 * its physical block. */
#define KRN_KV_BLOCK 16

/* Writes the K and V rows (n_kv_head * head_dim floats each) of the token at position
 * pos into the cache, converting to half. */
void krn_kv_store(lode_half *k_cache, lode_half *v_cache, const int32_t *block_table,
                  size_t n_kv_head, size_t head_dim, int64_t pos, const float *k, const float *v);

typedef struct krn_attn_args {
    const float *q;           /* (n_q, n_head, head_dim), row stride q_stride floats */
    size_t q_stride;          /* floats between queries; 0 = n_head * head_dim */
    const lode_half *k_cache; /* paged, see above */
    const lode_half *v_cache;
    const int32_t *block_table;         /* logical block -> physical block */
    size_t n_q;                         /* queries in this chunk */
    int64_t pos0;                       /* position of query 0; query i sees positions 0..pos0+i */
    size_t n_head, n_kv_head, head_dim; /* n_head a multiple of n_kv_head (GQA) */
    float scale;                        /* usually 1/sqrt(head_dim) */
    int64_t several_end;                /* queries at positions below it sum in the order
                                           llama.cpp uses in a step of several tokens, the
                                           others in its one-token order */
    float *out;                         /* OUT (n_q, n_head, head_dim), row stride out_stride */
    size_t out_stride;                  /* floats between queries; 0 = n_head * head_dim */
} krn_attn_args;

/* Causal multi-head attention of a chunk of queries over the cache (which must already
 * hold positions 0..pos0+n_q-1) with the numerics of llama.cpp's CPU attention without
 * flash attention (q and the probabilities rounded to half, GGML's summation orders),
 * parallel over heads and queries on pool (NULL: calling thread). head_dim <= 512,
 * positions < 32768. LODE_ERR_INVALID on bad shapes. */
lode_status krn_attention(lode_pool *pool, const krn_attn_args *a);
/* n independent attentions (the sequences of one step) as one parallel region, so that
 * a step of many one-token sequences does not pay a region per sequence; each result is
 * that of krn_attention on it. LODE_ERR_INVALID if any has bad shapes (nothing is run). */
lode_status krn_attention_many(lode_pool *pool, const krn_attn_args *a, size_t n);

#endif
