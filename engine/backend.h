/*
 * backend.h: the table of operations a compute backend (cpu, cuda) implements for the
 * engine's models. The model code (engine/model.c) only calls these; a backend owns its
 * memory (weights, activations, the KV cache) and may queue work asynchronously until
 * sync. Every CUDA op is tested against the CPU op of the same name.
 *
 * Memory: pointers passed to ops (float activations, weights, the KV cache) live in the
 * backend's memory (alloc/weight_load/kv_create); host data crosses only through
 * upload/download and through the host-side batch description, which the backend copies
 * where its kernels can read it in batch_begin.
 *
 * Batches: one forward step processes the tokens of one or more sequences (the serving
 * scheduler mixes prefill chunks and decode tokens of many sequences). The tokens of a
 * sequence are contiguous in the batch and in position order; each sequence brings its
 * block table, which maps logical KV blocks (pos / ENG_KV_BLOCK) to physical blocks of
 * the paged cache. Activations are row-major: row t of an (n_tokens, dim) buffer belongs
 * to batch token t.
 *
 * Errors: ops return nothing; a backend records the first failure and reports it from
 * sync (as CUDA reports launch errors), after which results are undefined.
 */
#ifndef LODE_ENGINE_BACKEND_H
#define LODE_ENGINE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"
#include "common/threadpool.h"
#include "engine/gguf.h"
#include "kernels/quant.h"

/* Tokens per KV block; the layout of one layer's K (and V) cache is
 *   k[((phys_block * n_kv_head + kv_head) * ENG_KV_BLOCK + slot) * head_dim + d]
 * in half precision (kernels/cpu/kernels.h KRN_KV_BLOCK is the same number). */
#define ENG_KV_BLOCK 16

typedef struct eng_backend eng_backend;
typedef struct eng_kv eng_kv; /* a backend's KV pool: K and V of every layer */

/* A weight matrix in backend memory: n_out rows of n_in elements of `type`, packed as in
 * GGUF (row o at o * lode_dtype_row_bytes(type, n_in)). 1-D tensors (norm weights,
 * biases) have n_out == 1 and type F32. */
typedef struct eng_weight {
    lode_dtype type;
    int64_t n_out; /* rows (GGUF ne[1]) */
    int64_t n_in;  /* elements per row (GGUF ne[0]) */
    const void *data;
    size_t nbytes;
    void *priv; /* backend-private (device copy, repacked layout); NULL for none */
} eng_weight;

/* Shape of a KV pool. */
typedef struct eng_kv_desc {
    int n_layer;
    int n_kv_head;
    int head_dim;
    int n_blocks; /* physical blocks of ENG_KV_BLOCK tokens each */
} eng_kv_desc;

/* One sequence's part of a batch. */
typedef struct eng_batch_seq {
    int32_t first;              /* index of its first token in the batch */
    int32_t n_tokens;           /* its tokens in the batch (>= 1) */
    int32_t pos0;               /* position of its first token; 0..pos0-1 are cached */
    const int32_t *block_table; /* host; logical -> physical, covers pos0 + n_tokens */
    int32_t n_blocks;           /* entries in block_table */
    /* Length of the sequence's prompt, 0 when unknown. llama.cpp evaluates a prompt in one
     * step and each generated token in a step of its own, and sums attention in another
     * order for the two (see krn_attention); a CPU backend reproduces that per position
     * from this, so that results do not depend on how steps are batched. When 0, the
     * step's token count decides. */
    int32_t n_prompt;
} eng_batch_seq;

/* A forward step's input, in host memory. */
typedef struct eng_batch {
    int32_t n_tokens;
    const int32_t *tokens; /* (n_tokens) token ids */
    const int32_t *pos;    /* (n_tokens) position of each token in its sequence */
    int32_t n_seqs;
    const eng_batch_seq *seqs; /* (n_seqs) */
    int32_t n_out;             /* rows whose logits are wanted */
    const int32_t *out_rows;   /* (n_out) batch token indices, ascending */
} eng_batch;

typedef struct eng_rope {
    float base;                /* rope.freq_base */
    float freq_scale;          /* 1 / linear scaling factor (1 = none) */
    const float *freq_factors; /* backend memory, n_rot/2 divisors (llama3), or NULL */
    int n_rot;                 /* rotated dims per head */
    int neox;                  /* 0: adjacent pairs (llama GGUF); 1: halves (qwen2/neox) */
} eng_rope;

typedef struct eng_backend_opts {
    int n_threads; /* CPU threads (<= 0: all the process may use) */
    int device;    /* GPU ordinal */
} eng_backend_opts;

typedef struct eng_backend_ops {
    const char *name; /* "cpu", "cuda" */
    void (*destroy)(eng_backend *be);

    /* ---- memory ---- */
    /* Backend memory of n bytes, 64-byte aligned, zeroed; NULL on failure. */
    void *(*alloc)(eng_backend *be, size_t n);
    void (*free)(eng_backend *be, void *p); /* accepts NULL */
    lode_status (*upload)(eng_backend *be, void *dst, const void *src, size_t n);
    lode_status (*download)(eng_backend *be, void *dst, const void *src, size_t n);
    /* Makes a GGUF tensor usable by ops (the CPU backend points into the mapping, which
     * must outlive the weight; a GPU backend copies). weight_free undoes it. */
    lode_status (*weight_load)(eng_backend *be, const eng_gguf_tensor *t, eng_weight *out);
    void (*weight_free)(eng_backend *be, eng_weight *w);
    lode_status (*kv_create)(eng_backend *be, const eng_kv_desc *d, eng_kv **out);
    void (*kv_destroy)(eng_backend *be, eng_kv *kv); /* accepts NULL */
    /* Copies `src` physical block into `dst` for every layer (copy-on-write of shared
     * prefix blocks). */
    void (*kv_copy_block)(eng_backend *be, eng_kv *kv, int32_t dst, int32_t src);
    /* Swap (preemption to host memory): for i < n, copies K and V of every layer of
     * physical block blocks[i] to host slot slots[i] (to_host) or back (!to_host). The
     * host pool is plain host memory (pinned where the backend can), slots of
     * eng_kv_slot_bytes(d) bytes; a slot holds per layer the block's K then its V. The
     * copies are ordered with the ops around them (a GPU backend queues them on its
     * stream); the host pool must not be touched before the next sync. NULL in a backend
     * that cannot swap (the engine then preempts by recompute). */
    void (*kv_swap)(eng_backend *be, eng_kv *kv, int to_host, const int32_t *blocks,
                    const int32_t *slots, int n, void *host);

    /* Prepares scratch for steps of up to max_tokens rows whose widest row (matmul input
     * or logits norm) is max_width floats, so that steps allocate nothing. Called once
     * by a runtime before its first step. */
    lode_status (*reserve)(eng_backend *be, int max_tokens, int max_width);

    /* ---- a forward step ---- */
    /* Called first in every step: makes the batch's tokens, positions and block tables
     * available to the ops below (which receive the same host pointer). The batch must
     * stay valid until sync. */
    lode_status (*batch_begin)(eng_backend *be, const eng_batch *b);
    /* x (n_tokens, n_in) = rows of the embedding table for b->tokens. */
    void (*embed)(eng_backend *be, const eng_weight *table, const eng_batch *b, float *x);
    /* y = rmsnorm(x) * w over n_rows rows of dim. */
    void (*rmsnorm)(eng_backend *be, float *y, const float *x, const eng_weight *w, int n_rows,
                    int dim, float eps);
    /* x += r; y = rmsnorm(x) * w (residual add fused with the next norm). */
    void (*add_rmsnorm)(eng_backend *be, float *y, float *x, const float *r, const eng_weight *w,
                        int n_rows, int dim, float eps);
    /* For i < n: ys[i] (n_rows, ws[i]->n_out) = x (n_rows, n_in) * ws[i]^T (+ biases[i] when
     * not NULL). All ws[i] share n_in and x, so the activations are prepared once (Q/K/V,
     * gate/up). n <= 4. */
    void (*matmul)(eng_backend *be, int n, const eng_weight *const *ws, const float *x, int n_rows,
                   float *const *ys, const eng_weight *const *biases);
    /* Rotates n_head heads of each of the n_tokens rows of x (row stride n_head*head_dim)
     * by the row's position b->pos[t]. */
    void (*rope)(eng_backend *be, float *x, int n_head, int head_dim, const eng_batch *b,
                 const eng_rope *r);
    /* Writes K and V rows (n_tokens, n_kv_head*head_dim) of the batch into layer's cache at
     * each token's position through its sequence's block table. */
    void (*kv_store)(eng_backend *be, eng_kv *kv, int layer, const float *k, const float *v,
                     const eng_batch *b);
    /* out (n_tokens, n_head*head_dim): causal attention of each token's queries over its
     * sequence's cache (positions 0..pos), GQA by n_head / n_kv_head. */
    void (*attention)(eng_backend *be, eng_kv *kv, int layer, const float *q, int n_head,
                      const eng_batch *b, float scale, float *out);
    /* y = silu(g) * u over n floats. */
    void (*swiglu)(eng_backend *be, float *y, const float *g, const float *u, size_t n);
    /* y = a + b over n floats. */
    void (*add)(eng_backend *be, float *y, const float *a, const float *b, size_t n);
    /* Final norm and output projection for the rows b->out_rows of x (n_tokens, dim):
     * logits (n_out, out->n_out) = rmsnorm(x[row]) * norm_w * out^T. */
    void (*logits)(eng_backend *be, const eng_weight *out, const eng_weight *norm_w, const float *x,
                   int dim, float eps, const eng_batch *b, float *logits);
    /* Waits for queued work; returns the first error since the last sync. */
    lode_status (*sync)(eng_backend *be);
} eng_backend_ops;

/* Every backend's handle starts with this; a backend's private state follows it. */
struct eng_backend {
    const eng_backend_ops *ops;
    char err[256]; /* detail of the first failure */
};

/* Bytes of one host slot of the swap pool for a KV pool of shape d: K and V of one block
 * of every layer, in half precision. */
size_t eng_kv_slot_bytes(const eng_kv_desc *d);

/* Creates a backend by name: "cpu", "cuda" (when built with CUDA=1), or NULL/"auto"
 * (cuda when built in and a GPU is present, else cpu). Returns LODE_OK and *out (free
 * with eng_backend_destroy), LODE_ERR_UNSUPPORTED for an unknown or absent backend (the
 * message in err), or the backend's creation status. */
lode_status eng_backend_create(const char *name, const eng_backend_opts *o,
                               eng_backend **out /* OUT */, char *err, size_t errlen);
void eng_backend_destroy(eng_backend *be); /* accepts NULL */

/* The implementations (backend_cpu.c, backend_cuda.c). */
lode_status eng_backend_cpu_create(const eng_backend_opts *o, eng_backend **out /* OUT */,
                                   char *err, size_t errlen);
/* Threads of a CPU backend (for reports); 1 for any other backend. */
int eng_backend_cpu_threads(const eng_backend *be);
/* The thread pool of a CPU backend, for host work between steps (sampling) while its
 * ops are idle; NULL for any other backend. The backend keeps it. */
lode_pool *eng_backend_cpu_pool(eng_backend *be);
#ifdef LODE_CUDA
lode_status eng_backend_cuda_create(const eng_backend_opts *o, eng_backend **out /* OUT */,
                                    char *err, size_t errlen);
/* 1 when a CUDA device is usable. */
int eng_backend_cuda_available(void);
#endif

#endif
