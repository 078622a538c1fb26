/*
 * cuda_kernels.h: C entry points of lode's CUDA kernels (kernels/cuda/). The engine's
 * CUDA backend (engine/backend_cuda.c) and the tests call only these; no CUDA header leaks
 * out, so plain C code includes this file. Streams are passed as `void *` (a cudaStream_t,
 * NULL for the default stream). Every entry point checks its launches and returns a
 * lode_status; the detail of the last failure is in krn_cuda_errmsg().
 *
 * Weights live on the device in lode's own packed layouts (krn_cuda_mat), made once at load
 * time from GGML blocks: quantized values and scales are split into separate arrays so that
 * the decode GEMV reads 16-byte aligned, coalesced units. Q4_K is stored as 4-bit values with
 * a (scale, offset) pair per 32 elements, Q6_K as 4+2-bit values with one scale per 16.
 *
 * Activations are f32 (decode) or bf16/f16 (prefill GEMM inputs); the KV cache is f16, paged
 * in blocks of KRN_CUDA_KV_BLOCK tokens: block b holds [n_kv_head][KRN_CUDA_KV_BLOCK][head_dim].
 */
#ifndef LODE_KERNELS_CUDA_KERNELS_H
#define LODE_KERNELS_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "common/lode.h"

#define KRN_CUDA_KV_BLOCK     16 /* tokens per KV cache block */
#define KRN_CUDA_MAX_BATCH    16 /* rows the GEMV handles at once */
#define KRN_CUDA_ATTN_SPLITS  16 /* decode attention: pieces a sequence is cut into, at most */
#define KRN_CUDA_MAX_HEAD_DIM 128

/* ---- device, memory, streams, graphs ------------------------------------------------- */

/* Text of the last CUDA failure in this thread ("" when none). */
const char *krn_cuda_errmsg(void);

typedef struct krn_cuda_devinfo {
    char name[128];
    int sm_count;
    int cc_major, cc_minor;
    size_t mem_total, mem_free;
    size_t l2_bytes;
} krn_cuda_devinfo;

/* Number of usable CUDA devices; 0 when there is no driver or no GPU (never fails). */
int krn_cuda_device_count(void);
/* Selects device `dev` for this thread and fills *out. */
lode_status krn_cuda_device_info(int dev, krn_cuda_devinfo *out /* OUT */);

lode_status krn_cuda_malloc(void **p /* OUT */, size_t n);
void krn_cuda_free(void *p); /* accepts NULL */
lode_status krn_cuda_h2d(void *dst, const void *src, size_t n, void *stream);
lode_status krn_cuda_d2h(void *dst, const void *src, size_t n, void *stream);
lode_status krn_cuda_d2d(void *dst, const void *src, size_t n, void *stream);
lode_status krn_cuda_memset(void *dst, int byte, size_t n, void *stream);
/* Host memory pinned for fast async copies; free with krn_cuda_host_free. */
lode_status krn_cuda_host_alloc(void **p /* OUT */, size_t n);
void krn_cuda_host_free(void *p);

lode_status krn_cuda_stream_create(void **s /* OUT */);
void krn_cuda_stream_destroy(void *s);
lode_status krn_cuda_stream_sync(void *s);

/* Events for timing: record on a stream, then elapsed milliseconds between two. */
lode_status krn_cuda_event_create(void **e /* OUT */);
void krn_cuda_event_destroy(void *e);
lode_status krn_cuda_event_record(void *e, void *stream);
lode_status krn_cuda_event_ms(void *start, void *end, float *ms /* OUT */);

/* Graph capture of everything launched on `stream` between begin and end; the graph is
 * instantiated into *exec (free with krn_cuda_graph_destroy) and replayed with launch. */
lode_status krn_cuda_graph_begin(void *stream);
lode_status krn_cuda_graph_end(void *stream, void **exec /* OUT */);
lode_status krn_cuda_graph_launch(void *exec, void *stream);
void krn_cuda_graph_destroy(void *exec);

/* ---- weight matrices ----------------------------------------------------------------- */

/* A rows x cols weight matrix on the device (y = W x reads a row per output). */
typedef struct krn_cuda_mat {
    int dtype; /* lode_dtype of the source: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K */
    int fmt;   /* packed layout (internal) */
    int64_t rows, cols;
    void *q;  /* values: floats, or packed 4/8-bit quants, 16-byte aligned per unit */
    void *qh; /* Q6_K: the 2 high bits */
    void *s;  /* scales: half (Q4_0, Q8_0), half2 (Q4_1, Q4_K: scale, offset; Q6_K: 2 scales) */
} krn_cuda_mat;

/* True when the GEMV and GEMM accept weights of this type. */
int krn_cuda_dtype_supported(int dtype);
/* Allocates m for rows x cols of `dtype` (cols a multiple of the type's block, of 8 for
 * floats); contents undefined. Free with krn_cuda_mat_free. */
lode_status krn_cuda_mat_alloc(krn_cuda_mat *m /* OUT */, int dtype, int64_t rows, int64_t cols);
/* Uploads `nrows` rows in GGML layout from host memory `src` into rows row0.. of m and
 * repacks them. `tmp` is a device buffer of at least the GGML size of those rows. */
lode_status krn_cuda_mat_upload(krn_cuda_mat *m, int64_t row0, int64_t nrows, const void *src,
                                void *tmp, void *stream);
/* Fills m with reproducible random weights (from seed) of typical magnitude `scale`. */
lode_status krn_cuda_mat_random(krn_cuda_mat *m, uint64_t seed, float scale, void *stream);
/* Bytes of weight data that one full pass over m reads. */
size_t krn_cuda_mat_bytes(const krn_cuda_mat *m);
/* A switch that is on unless the environment sets `name` to 0, read once into *cache (which
 * starts at -1): the knobs that keep an older path for comparison. */
int krn_cuda_env_on(const char *name, int *cache);
/* Bytes of the GGML layout of rows x cols of dtype (what krn_cuda_mat_upload reads). */
size_t krn_cuda_ggml_bytes(int dtype, int64_t rows, int64_t cols);
void krn_cuda_mat_free(krn_cuda_mat *m); /* accepts a zeroed or freed m */

/* Dequantizes rows [row0, row0+nrows) of m to bf16 (or f16 when f16 != 0), row-major. */
lode_status krn_cuda_mat_dequant(const krn_cuda_mat *m, int64_t row0, int64_t nrows, void *out,
                                 int f16, void *stream);

/* ---- decode GEMV: y[b] = W x[b] for b < batch <= KRN_CUDA_MAX_BATCH ------------------- */

/* How the GEMV reads its input row x[b] (K = W->cols elements). */
typedef enum krn_cuda_xmode {
    KRN_X_PLAIN = 0, /* x[b][k] = src[b*ld + k] */
    KRN_X_RMSNORM,   /* src row RMS-normalized (eps) and scaled by norm_w[k] */
    KRN_X_SWIGLU,    /* x[b][k] = silu(src[b*ld + k]) * src[b*ld + K + k] */
    KRN_X_ATTN       /* combine of decode-attention splits (krn_cuda_attn_decode's output) */
} krn_cuda_xmode;

/* How the GEMV writes y[b][n]. */
typedef enum krn_cuda_ymode {
    KRN_Y_STORE = 0, /* y[b*ldy + n] = v */
    KRN_Y_ADD,       /* y[b*ldy + n] += v (residual) */
    KRN_Y_ROPE_KV,   /* rows are [q | k | v] heads: RoPE on q and k, q to y, k/v to the cache */
    KRN_Y_SWIGLU     /* rows are [gate | up], n of each: y[b*ldy + i] = silu(gate_i) * up_i */
} krn_cuda_ymode;

/* RoPE and KV cache destination for KRN_Y_ROPE_KV (and krn_cuda_rope_kv). */
typedef struct krn_cuda_rope {
    int n_head, n_kv_head, head_dim;
    const float *inv_freq;   /* device, head_dim/2 frequencies (theta^(-2i/d), scaled) */
    const int32_t *pos;      /* device, position of each row */
    const int32_t *slot;     /* device, KV cache slot of each row: block*KV_BLOCK + offset;
                                a negative slot skips the KV write */
    void *k_cache, *v_cache; /* f16 [n_blocks][n_kv_head][KV_BLOCK][head_dim] */
    int row0;                /* index of W's first row within [q | k | v] (split matrices) */
} krn_cuda_rope;

/* Attention splits read by KRN_X_ATTN (written by krn_cuda_attn_decode). */
typedef struct krn_cuda_attn_parts {
    const float *acc;       /* [batch][n_head][n_split][head_dim], unnormalized */
    const float *ml;        /* [batch][n_head][n_split][2]: running max, sum of exp */
    const int32_t *seq_len; /* device, tokens in each sequence (selects the splits used) */
    int n_head, head_dim, n_split;
} krn_cuda_attn_parts;

typedef struct krn_cuda_gemv_args {
    const krn_cuda_mat *w;
    int batch;
    krn_cuda_xmode xmode;
    const float *x; /* f32 input rows (PLAIN, RMSNORM, SWIGLU) */
    int64_t ldx;
    const float *norm_w; /* RMSNORM: f32 [cols] */
    float eps;
    const krn_cuda_attn_parts *attn; /* ATTN */
    krn_cuda_ymode ymode;
    float *y;
    int64_t ldy;
    const krn_cuda_rope *rope; /* ROPE_KV */
} krn_cuda_gemv_args;

lode_status krn_cuda_gemv(const krn_cuda_gemv_args *a, void *stream);
/* One-time setup of the current device's kernel attributes (shared-memory limits); call it
 * once before capturing graphs that launch the GEMV. */
lode_status krn_cuda_prepare(void);

/* ---- prefill GEMM on tensor cores (cuBLAS) ------------------------------------------- */

typedef struct krn_cuda_blas krn_cuda_blas;
/* A cuBLAS handle bound to `stream` with a fixed workspace (so it can be graph-captured). */
lode_status krn_cuda_blas_create(krn_cuda_blas **out /* OUT */, void *stream);
void krn_cuda_blas_destroy(krn_cuda_blas *h);

/* Y[m][n] (+)= sum_k X[m][k] W[n][k]: X is m x cols, f16 when x_f16 else bf16; Y f32 with
 * row stride ldy. W is used in place when its type is X's; otherwise (quantized, or the other
 * 16-bit type) it is first dequantized into `scratch` (krn_cuda_gemm_scratch_bytes(W) bytes). */
lode_status krn_cuda_gemm(krn_cuda_blas *h, const krn_cuda_mat *w, const void *x, int x_f16,
                          int64_t m, float *y, int64_t ldy, int accumulate, void *scratch,
                          void *stream);
size_t krn_cuda_gemm_scratch_bytes(const krn_cuda_mat *w);
/* Quantized W times at most KRN_CUDA_QMM_MAX rows of bf16 X by default: qmm.cu's kernels,
 * which decode the weights on the fly; more rows (and f16 X) take the dequantized cuBLAS path.
 * LODE_CUDA_QMM_MAX=n sets the limit (0: never). krn_cuda_qmm_limit(n) sets it to n (n >= 0)
 * and returns the previous limit (-1: only reads). */
#define KRN_CUDA_QMM_MAX 64
int krn_cuda_qmm_limit(int set);
/* Whether krn_cuda_qmm takes W for m rows of X (f16 when x_f16) within scratch_bytes of
 * scratch. */
int krn_cuda_qmm_fits(const krn_cuda_mat *w, int x_f16, int64_t m, size_t scratch_bytes);
/* Y[m][n] (+)= sum_k X[m][k] W[n][k] for quantized W (Q4_0, Q4_1, Q4_K, Q8_0, Q6_K), X bf16
 * [m][cols] (16-byte aligned), Y of y_type with row stride ldy; scratch (16-byte aligned) holds
 * the partial sums of K splits. The same result every run. */
lode_status krn_cuda_qmm(const krn_cuda_mat *w, const void *x, int x_f16, int64_t m, void *y,
                         int y_type, int64_t ldy, int accumulate, void *scratch,
                         size_t scratch_bytes, void *stream);
/* As krn_cuda_gemm with Y of y_type: LODE_F32, LODE_BF16 or LODE_F16 (ldy in elements). */
lode_status krn_cuda_gemm_y(krn_cuda_blas *h, const krn_cuda_mat *w, const void *x, int x_f16,
                            int64_t m, void *y, int y_type, int64_t ldy, int accumulate,
                            void *scratch, void *stream);
/* Chooses, once per shape, the algorithm krn_cuda_gemm(_y) will then use for the same
 * arguments: the fastest of cublasGemmEx's default and cuBLASLt's candidates, timed on these
 * operands. It writes y (its contents are undefined afterwards; nothing else changes).
 * Shapes never prepared get cuBLAS's default. Does nothing during a graph capture, or with
 * LODE_CUDA_GEMM_TUNE=0. */
lode_status krn_cuda_gemm_prepare(krn_cuda_blas *h, const krn_cuda_mat *w, const void *x, int x_f16,
                                  int64_t m, void *y, int y_type, int64_t ldy, int accumulate,
                                  void *scratch, void *stream);

/* ---- elementwise ----------------------------------------------------------------------- */

/* out[r] = x[r] / rms(x[r]) * w, rows of dim; out_type LODE_F32, LODE_BF16 or LODE_F16. */
lode_status krn_cuda_rmsnorm(const float *x, const float *w, float eps, int64_t rows, int dim,
                             void *out, int out_type, void *stream);
/* out[r][j] = silu(gu[r][j]) * gu[r][ff + j] from 16-bit gate/up rows: gu_type LODE_BF16 or
 * LODE_F16, [rows][2 ff]; out_type as above. (The prefill and the serving step write gate/up
 * in 16 bits, so there is no f32 form.) */
lode_status krn_cuda_swiglu16(const void *gu, int gu_type, int64_t rows, int ff, void *out,
                              int out_type, void *stream);
/* out[i] = row tokens[i] of the embedding matrix, f32 [n][cols]. Token ids are checked
 * against emb->rows on the device: an id out of range yields a zero row. */
lode_status krn_cuda_embed(const krn_cuda_mat *emb, const int32_t *tokens, int64_t n, float *out,
                           void *stream);
/* Prefill RoPE: qkv f32 [n][(H + 2 KV) hd] -> q f16 [n][H][hd] and K/V into the cache
 * slots rope->slot[i], positions rope->pos[i]. */
lode_status krn_cuda_rope_kv(const float *qkv, int64_t n, const krn_cuda_rope *rope, void *q_out,
                             void *stream);
/* dst f32 -> bf16/f16 conversion and back, n elements. */
lode_status krn_cuda_convert(const void *src, int src_type, void *dst, int dst_type, int64_t n,
                             void *stream);

/* ---- the generic backend's elementwise ops (ops.cu), f32 rows ------------------------- */

/* x += r; y = rmsnorm(x) * w, rows of dim. */
lode_status krn_cuda_add_rmsnorm(float *y, float *x, const float *r, const float *w, int64_t rows,
                                 int dim, float eps, void *stream);
/* In-place RoPE of n_tok rows of n_head heads (row stride n_head*head_dim) at positions pos
 * (device): the first n_rot dims, adjacent pairs or NeoX halves, frequencies
 * base^(-2k/n_rot) * freq_scale / freq_factors[k] (freq_factors device or NULL). */
lode_status krn_cuda_rope_f32(float *x, int64_t n_tok, int n_head, int head_dim, const int32_t *pos,
                              float base, float freq_scale, const float *freq_factors, int n_rot,
                              int neox, void *stream);
/* K/V rows f32 [n_tok][n_kv_head*head_dim] into the paged f16 caches at slot[t] (device). */
lode_status krn_cuda_kv_store(void *k_cache, void *v_cache, const float *k, const float *v,
                              int64_t n_tok, int n_kv_head, int head_dim, const int32_t *slot,
                              void *stream);
lode_status krn_cuda_add(float *y, const float *a, const float *b, int64_t n, void *stream);
/* y = silu(g) * u */
lode_status krn_cuda_swiglu2(float *y, const float *g, const float *u, int64_t n, void *stream);
/* y[r][c] += bias[c] */
lode_status krn_cuda_add_bias(float *y, const float *bias, int64_t rows, int64_t cols,
                              void *stream);
/* dst[i] = src row rows[i] (device), n rows of cols */
lode_status krn_cuda_gather_rows(float *dst, const float *src, const int32_t *rows, int64_t n,
                                 int64_t cols, void *stream);

/* ---- attention ------------------------------------------------------------------------- */

typedef struct krn_cuda_attn_cfg {
    int n_head, n_kv_head, head_dim;
    float scale;                   /* usually 1/sqrt(head_dim) */
    const void *k_cache, *v_cache; /* f16 paged, see the file comment */
    const int32_t *block_table;    /* [n_seq][max_blocks] */
    int max_blocks;
    /* Decode: nonzero when seq_len, the block table and the keys and values of every position
     * but each sequence's newest were written before the kernel launched just ahead of this
     * one (as in a decode step, where only the QKV projection precedes it): the first tile is
     * then requested before waiting for that kernel (programmatic launch). */
    int kv_early;
} krn_cuda_attn_cfg;

/* Decode: one query token per sequence b < batch: q f32 [batch][H][hd] (RoPE applied),
 * keys 0..seq_len[b]-1 of sequence b, split along the sequence into at most n_split pieces
 * (each a multiple of 32 tokens). Writes acc [batch][H][n_split][hd] and ml
 * [batch][H][n_split][2] of the splits used, the input of krn_cuda_attn_combine / KRN_X_ATTN. */
lode_status krn_cuda_attn_decode(const krn_cuda_attn_cfg *c, const float *q, int batch,
                                 const int32_t *seq_len, int n_split, float *acc, float *ml,
                                 void *stream);
/* Decode of many sequences (the regime of a serving step): one query token per sequence
 * b < batch, q f16 [batch][H][hd] (RoPE applied, the layout krn_cuda_rope_kv writes), keys
 * 0..seq_len[b]-1 through row b of c->block_table. One block per (KV head, sequence) scores
 * every key for all the query heads that share it on tensor cores, with no split and no
 * combine pass; out [batch][H*hd] bf16 (f16 when out_f16), the next GEMM's input. Suited to
 * many sequences of short to moderate length (few blocks when the batch is small). */
lode_status krn_cuda_attn_decode_rows(const krn_cuda_attn_cfg *c, const void *q, int batch,
                                      const int32_t *seq_len, void *out, int out_f16, void *stream);
/* Batch-1 decode attention and the o projection in one launch (attn_o.cu): q f32 [H][hd]
 * (RoPE applied) of sequence 0 attends over keys 0..seq_len[0]-1 (the newest written by the
 * kernel just ahead, every other one before it, as kv_early), and y[n] += o[n] . attention
 * for every row n of o (the residual). seq_len[0] must be at most
 * krn_cuda_attn_o_max_len(head_dim); every row's sum is one warp's, so results do not depend
 * on timing. */
lode_status krn_cuda_attn_o(const krn_cuda_attn_cfg *c, const float *q, const int32_t *seq_len,
                            const krn_cuda_mat *o, float *y, void *stream);
/* Longest sequence krn_cuda_attn_o takes for head_dim (0: none). */
int krn_cuda_attn_o_max_len(int head_dim);
/* Whether krn_cuda_attn_o runs this shape and layout on the current device (Hopper or
 * later, a cluster of n_kv_head blocks resident). */
int krn_cuda_attn_o_supported(const krn_cuda_attn_cfg *c, const krn_cuda_mat *o);
/* One-time setup of the attention kernels' shared-memory limits on the current device
 * (krn_cuda_prepare calls it). */
lode_status krn_cuda_attn_prepare(void);
/* Combines decode splits to out f32 [batch][H*hd] (the KRN_X_ATTN input, for tests). */
lode_status krn_cuda_attn_combine(const krn_cuda_attn_parts *p, int batch, float *out,
                                  void *stream);
/* Prefill of one sequence: n query tokens at positions pos0..pos0+n-1, q f16 [n][H][hd];
 * causal over the cached keys 0..pos0+i (all already in the cache). out [n][H*hd] bf16
 * (f16 when out_f16). Tensor cores (mma.sync), online softmax, K/V tiles in shared memory. */
lode_status krn_cuda_attn_prefill(const krn_cuda_attn_cfg *c, const void *q, int64_t n,
                                  int64_t pos0, void *out, int out_f16, void *stream);

/* Prefill of n_seq sequences in one launch: sequence i has seqs[4i+1] query rows starting at
 * row seqs[4i] of q (f16 [rows][H][hd]) and out ([rows][H*hd]), at positions seqs[4i+2]..,
 * and its block table in row seqs[4i+3] of c->block_table (stride c->max_blocks); seqs is
 * device memory; max_n >= every seqs[4i+1]. */
lode_status krn_cuda_attn_prefill_varlen(const krn_cuda_attn_cfg *c, const void *q,
                                         const int32_t *seqs, int n_seq, int64_t max_n, void *out,
                                         int out_f16, void *stream);

/* ---- every layer of a batch-1 decode step in one persistent kernel (layers.cu) -------- */

/* One decoder layer's weights and cache, as the persistent kernel reads them. */
typedef struct krn_cuda_layer {
    krn_cuda_mat qkv;                  /* (n_head + 2 n_kv_head) head_dim x dim: [q | k | v] */
    krn_cuda_mat o;                    /* dim x n_head head_dim */
    krn_cuda_mat gu;                   /* 2 ff x dim: [gate | up] */
    krn_cuda_mat down;                 /* dim x ff */
    const float *attn_norm, *ffn_norm; /* [dim] */
    void *k_cache, *v_cache;           /* f16 paged, as in krn_cuda_attn_cfg */
} krn_cuda_layer;

typedef struct krn_cuda_layers_cfg {
    const krn_cuda_layer *layers; /* device array [n_layer] */
    int n_layer, dim, ff, n_head, n_kv_head, head_dim;
    int fmt; /* the packed layout (krn_cuda_mat.fmt) of every matrix of every layer */
    float eps;
    const float *inv_freq;      /* device, head_dim/2 RoPE frequencies */
    const int32_t *pos, *slot;  /* device: the token's position and KV cache slot (-1: skip) */
    const int32_t *seq_len;     /* device: tokens cached after this one is written */
    const int32_t *block_table; /* device, the sequence's row */
    float *x;                   /* device [dim]: the residual stream, in and out */
    float *q;                   /* device [n_head head_dim] scratch */
    float *h;                   /* device [ff] scratch */
    float *att_acc, *att_ml;    /* device [att_splits][n_head][head_dim] and [..][2] scratch */
    int att_splits;             /* splits of a head's attention the scratch holds (>= 1) */
    unsigned *bar;              /* device, 2 words zeroed once (the grid barrier's state) */
    unsigned long long *trace;  /* NULL, or device [2][5 n_layer + 1][blocks]: when each
                                   block arrived at and left each barrier (ns) */
} krn_cuda_layers_cfg;

/* Whether krn_cuda_layers_decode runs this shape and layout on the current device (sets up
 * its kernel attributes; call it outside graph capture). */
int krn_cuda_layers_supported(const krn_cuda_layers_cfg *c);
/* Every layer of a decode step of one sequence, in one cooperative launch (layers.cu): the
 * weights (Q4_0, Q4_1/Q4_K, Q8_0 layouts) stream through a ring in each block's shared memory
 * while grid-wide barriers separate RMSNorm + QKV + RoPE + KV write, attention (split along the
 * sequence into att_acc/att_ml), o projection + residual, RMSNorm + gate/up + SwiGLU, and down
 * projection + residual. x holds the embedded token on entry and the residual stream after
 * the last layer on return. With LODE_CUDA_LAYERS_TRACE=1, an eager (not captured) call waits
 * for the kernel and prints to stderr how long each kind of stage and the barriers took (the
 * slowest block's arrival). */
lode_status krn_cuda_layers_decode(const krn_cuda_layers_cfg *c, void *stream);

/* ---- a batch-1 decode layer on one thread-block cluster (cluster.cu) ------------------ */

/* (An option, off by default in the engine: slower than the five kernels a layer, see
 * cluster.cu.) Whether krn_cuda_clayer_decode runs this shape and layout on the current device:
 * 4-bit weights (Q4_0, Q4_1) whose layer, cut in 16 shares, fits a block's shared memory, and a
 * device where a cluster of 16 such blocks can be resident (sets up the kernel's attributes;
 * call it outside graph capture). c->layers, x, q, h and bar are not used. */
int krn_cuda_clayer_supported(const krn_cuda_layers_cfg *c);
/* Decoder layer `layer` (weights and cache L) of a decode step of one sequence on one
 * cluster: RMSNorm + QKV + RoPE + KV write, attention, o projection + residual, RMSNorm +
 * gate/up + SwiGLU, down projection + residual; x (c->x) in and out. Launched with
 * programmatic serialization, so the next layer's kernel copies its weights while this one
 * runs. With LODE_CUDA_LAYERS_TRACE=1, eager (not captured) calls record when each block
 * reaches each stage, and the call for the last layer waits and prints the times to stderr. */
lode_status krn_cuda_clayer_decode(const krn_cuda_layers_cfg *c, const krn_cuda_layer *L, int layer,
                                   void *stream);

/* ---- sampling on the device ------------------------------------------------------------ */

/* tok[b] = argmax of logits[b][0..vocab) (the lowest index on ties). */
lode_status krn_cuda_argmax(const float *logits, int batch, int vocab, int32_t *tok, void *stream);

typedef struct krn_cuda_sample_cfg {
    float temperature; /* <= 0: greedy */
    int top_k;         /* 0: off */
    float top_p;       /* >= 1: off */
    uint64_t seed;
    const uint32_t *step; /* device counter mixed into the random draw (NULL: 0) */
} krn_cuda_sample_cfg;

/* Samples tok[b] from softmax(logits[b] / T) restricted to the top_k most likely and to the
 * smallest set of mass >= top_p; logprob[b] (when not NULL) is the log-softmax (T = 1) of the
 * chosen token. */
lode_status krn_cuda_sample(const float *logits, int batch, int vocab, const krn_cuda_sample_cfg *c,
                            int32_t *tok, float *logprob, void *stream);
/* After a decode step of sequences 0..batch-1: tokens[b] = chosen[b], pos[b] += 1,
 * seq_len[b] = pos[b] + 1, slot[b] = the cache slot of pos[b] through block_table row b (-1
 * past the table: the next KV write is skipped); when history is not NULL, row
 * (*step % hist_rows) of history (row stride hist_stride) receives chosen; then *step += 1.
 * Lets a captured decode graph be replayed step after step with no host work. */
lode_status krn_cuda_decode_advance(int batch, const int32_t *chosen, int32_t *tokens, int32_t *pos,
                                    int32_t *seq_len, int32_t *slot, const int32_t *block_table,
                                    int max_blocks, int32_t *history, int hist_rows,
                                    int hist_stride, uint32_t *step, void *stream);
/* lp[i] = log_softmax(logits[i])[tok[i]] for n rows. */
lode_status krn_cuda_logprobs(const float *logits, int64_t n, int vocab, const int32_t *tok,
                              float *lp, void *stream);

#ifdef __cplusplus
}
#endif

#endif
