/*
 * gemm.h: f32 matrix multiply with a pre-packed weight matrix, for the BERT encoder's
 * batched projections (hundreds to thousands of token rows against the same weights).
 * krn_matmul (kernels.h) computes each output from dot products of rows, which suits
 * decoding a few tokens; with many rows a register-blocked kernel over packed weight
 * panels does several times the work per load: on this project's 2-core AVX-512 box the
 * 1536x384 projection of 2048 rows ran 3.9x (1 thread) to 6.2x (2 threads) faster than
 * krn_matmul (make bench-retrieval, bench/RESULTS.md). Weights are packed once at load.
 *
 * Variants: AVX-512 (8x32 register tile), AVX2+FMA (6x16), portable C (4x16), chosen at
 * pack time from the CPU (LODE_KERNELS=scalar|avx2|avx512 forces one, as for kernels.h).
 */
#ifndef LODE_KERNELS_CPU_GEMM_H
#define LODE_KERNELS_CPU_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"
#include "common/threadpool.h"

/* A weight matrix W (n_out rows of n_in floats) in panels of nr output columns:
 * data[(p * n_in + k) * nr + j] = W[p * nr + j][k], zero past n_out. */
typedef struct krn_packed {
    float *data; /* owned, 64-byte aligned */
    size_t n_out, n_in;
    int nr, mr; /* panel width and register tile height of the variant */
    int isa;    /* 0 portable, 1 avx2, 2 avx512 */
} krn_packed;

/* Packs W (row-major, n_out x n_in) for krn_gemm_packed. isa < 0 picks the best the CPU
 * (or LODE_KERNELS) allows; 0, 1, 2 force portable, AVX2, AVX-512 (UNSUPPORTED when the
 * CPU lacks it). Returns NOMEM or OK; free with krn_packed_free. */
lode_status krn_pack(const float *W, size_t n_out, size_t n_in, int isa, krn_packed *out /* OUT */);
void krn_packed_free(krn_packed *p);

/* The best variant the CPU (or LODE_KERNELS) allows: 0, 1 or 2 as above. */
int krn_gemm_isa(void);
/* Floats of packed data for an n_out x n_in matrix in variant isa (0..2). */
size_t krn_pack_size(size_t n_out, size_t n_in, int isa);
/* Packs without allocating into dst (krn_pack_size floats, 64-byte aligned), for
 * matrices that change per call (attention's keys and values). Element (o, k) of W is
 * W[o * so + k * sk], so a transposed or strided source packs directly. out->data
 * points at dst and must not be passed to krn_packed_free. */
void krn_pack_into(const float *W, size_t so, size_t sk, size_t n_out, size_t n_in, int isa,
                   float *dst, krn_packed *out /* OUT */);

/* Y[t][o] = sum_k X[t][k] * W[o][k] (+ bias[o] when bias is not NULL) for t < n_tok,
 * o < n_out. X rows ldx floats apart, Y rows ldy apart. Runs on pool (NULL: the calling
 * thread), parallel over blocks of rows and panels. Allocates nothing. */
void krn_gemm_packed(lode_pool *pool, const krn_packed *W, const float *X, size_t ldx, size_t n_tok,
                     float *Y /* OUT */, size_t ldy, const float *bias);

/* The register-tile kernels behind krn_gemm_packed (one per ISA file): rows a[0..MR) of
 * the activations (pointers may repeat to pad a short tile), one packed panel b (k x nr),
 * outputs c[i][0..n) for i < m; bias (nr floats of this panel, or NULL) added. */
void krn_gemm_tile_ref(size_t k, const float *const *a, const float *b, float *const *c, size_t m,
                       size_t n, const float *bias);
void krn_gemm_tile_avx2(size_t k, const float *const *a, const float *b, float *const *c, size_t m,
                        size_t n, const float *bias);
void krn_gemm_tile_avx512(size_t k, const float *const *a, const float *b, float *const *c,
                          size_t m, size_t n, const float *bias);
/* krn_pack_into's AVX-512 variant (32-wide panels; so * 16 below 2^29). */
void krn_pack_into_avx512(const float *W, size_t so, size_t sk, size_t n_out, size_t n_in,
                          float *dst /* OUT */);

/* ---- 16-bit integer GEMM (AVX-512 VNNI) ----------------------------------------------
 * The encoder's projections on CPUs with AVX-512 VNNI: weights quantized once per output
 * row, activations per input row at each call, both to 16-bit integers (|q| <= 4095, a
 * relative step of 1/8190 of the row's largest value), multiplied with VPDPWSSD, which
 * does two multiply-adds per 32-bit lane where an f32 FMA does one. On this project's
 * 2-core Cascade Lake box it issues once a cycle (132 GOP/s in a register-only loop at
 * real-time priority) where f32 FMAs issue twice (150 GFLOP/s): the same peak, but the
 * 16-bit tile, with half the broadcasts per operation, reaches 97% of it on the
 * 2048x1536x384 projection where the f32 tile reaches 61%. The rounding moves
 * all-MiniLM-L6-v2's sentence vectors by a cosine distance of at most 2.3e-5 (the 60
 * reference sentences of tests/test_embed.c; f32 stays within 1e-11). 8-bit weights
 * (VPDPBUSD, twice the rate) were tried in a simulation on the same sentences: per-row
 * 8-bit weights alone gave a worst cosine of 0.9964, below the 0.999 the vectors must
 * keep. */
#define KRN_Q16_MAX   4095
#define KRN_Q16_BLOCK 64 /* pairs of k summed in 32 bits: 2 * 64 * 4095^2 < 2^31 */

typedef struct krn_packed_q16 {
    int16_t *data; /* owned: panels of 32 outputs, per pair of k 32 x 2 values */
    float *scale;  /* owned: (n_out) per-output dequantization scales */
    size_t n_out, n_in, n_pairs;
} krn_packed_q16;

/* 1 when the CPU has AVX-512 VNNI (and LODE_KERNELS does not ask for less). */
int krn_gemm_q16_supported(void);
/* Quantizes and packs W (n_out x n_in, row-major). NOMEM, UNSUPPORTED (no VNNI) or OK;
 * free with krn_packed_q16_free. */
lode_status krn_pack_q16(const float *W, size_t n_out, size_t n_in, krn_packed_q16 *out /* OUT */);
void krn_packed_q16_free(krn_packed_q16 *p);
/* Bytes of scratch krn_gemm_q16 needs for n_tok rows of n_in inputs. */
size_t krn_gemm_q16_scratch(size_t n_tok, size_t n_in);
/* Y[t][o] ~= sum_k X[t][k] * W[o][k] (+ bias[o]) as krn_gemm_packed, through 16-bit
 * quantized activations (per row) and weights. scratch: krn_gemm_q16_scratch bytes,
 * 64-byte aligned. Runs on pool (NULL: the calling thread); allocates nothing. */
void krn_gemm_q16(lode_pool *pool, const krn_packed_q16 *W, const float *X, size_t ldx,
                  size_t n_tok, float *Y /* OUT */, size_t ldy, const float *bias, void *scratch);
/* krn_gemm_q16 with its activations' quantization exposed, so that a producer can write
 * them while its rows are in cache. Quantized rows use the scratch layout: for n_tok
 * rows of n values, n_tok rows of 16-bit values 64-byte aligned, then n_tok float scales
 * (krn_gemm_q16_scratch(n_tok, n) bytes); krn_q16_rows_set fills row r.
 *   xq: X's rows already quantized so (n = W->n_in; X is then not read), or NULL to
 *       quantize X into scratch;
 *   gelu: Y = gelu(Y) (exact, erf), applied to each tile in registers;
 *   yq: NULL, or receives Y's rows quantized so (n = W->n_out) for the next GEMM. */
void krn_gemm_q16_ex(lode_pool *pool, const krn_packed_q16 *W, const float *X, size_t ldx,
                     const void *xq, size_t n_tok, float *Y /* OUT */, size_t ldy,
                     const float *bias, int gelu, void *yq /* OUT */, void *scratch);
/* Quantizes the n floats of x into row r of rows (the layout above, n_tok rows). */
void krn_q16_rows_set(void *rows /* OUT */, size_t n_tok, size_t n, size_t r, const float *x);
/* The AVX-512 VNNI pieces behind krn_gemm_q16 (gemm_avx512.c). The tile: rows a[0..8) of
 * quantized activations (pointers may repeat to pad a short tile) against one packed panel
 * b; c[i][0..n) = gelu?(acc[i][j] * xs[i] * ws[j] + bias[j]) for i < m, with xs the rows'
 * scales, ws and bias (NULL: none) the panel's n columns. */
void krn_gemm_tile_q16_avx512(size_t n_pairs, const int16_t *const *a, const int16_t *b,
                              float *const *c /* OUT */, size_t m, size_t n, const float *xs,
                              const float *ws, const float *bias, int gelu);
float krn_quant_row_q16_avx512(const float *x, size_t n, size_t n_pad, int16_t *q /* OUT */);

#endif
