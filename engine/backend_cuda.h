/*
 * backend_cuda.h: a llama-family decoder running entirely on one NVIDIA GPU. It owns the
 * weights (in the kernels' packed layouts), a paged f16 KV cache, the activation buffers and
 * a captured CUDA graph of the decode step, all allocated at creation: prefill and decode
 * allocate nothing. Prefill runs on tensor cores (cuBLAS + FlashAttention-style kernel);
 * a decode step is one graph launch (embedding, 5 fused kernels a layer, head, sampling,
 * state advance), and its result stays on the device until asked for.
 *
 * In a build without CUDA (no LODE_CUDA) every function returns LODE_ERR_UNSUPPORTED, so
 * callers need no #ifdef; eng_cuda_available() says which it is.
 */
#ifndef LODE_ENGINE_BACKEND_CUDA_H
#define LODE_ENGINE_BACKEND_CUDA_H

#include "common/lode.h"

#include <stddef.h>
#include <stdint.h>

typedef struct eng_cuda_config {
    int n_layer, dim, n_head, n_kv_head, head_dim, ff, vocab;
    float eps;        /* RMSNorm epsilon */
    float rope_theta; /* RoPE base; rotation of interleaved pairs (GGUF llama layout) */
    const float *rope_freq_factors; /* NULL, or head_dim/2 divisors of the frequencies */
    int tied;                       /* output head is the token embedding */
    int max_ctx;                    /* tokens a sequence may hold */
    int max_seqs;                   /* sequences held at once = largest decode batch (<= 16) */
    int max_prefill; /* prompt tokens one prefill pass takes (longer prompts are chunked) */
    /* Batched steps of the serving scheduler (eng_cuda_step); all 0 when unused. */
    int step_tokens; /* rows of one step: prefill chunks and decode tokens together */
    int step_seqs;   /* sequences of one step */
    int step_out;    /* logits rows of one step */
    /* Physical blocks of the paged KV pool: > 0 that many (at least what the fixed tables
     * of eng_cuda_prefill/decode need, max_seqs x max_ctx); 0 exactly those; < 0 as many as
     * fit in the GPU's free memory after the buffers, keeping kv_keep bytes for what comes
     * later (the weights, cuBLAS). */
    int kv_blocks;
    size_t kv_keep;
} eng_cuda_config;

typedef struct eng_cuda_model eng_cuda_model;
struct eng_gguf; /* engine/gguf.h */

/* Which weight a call of eng_cuda_model_set_weight provides (GGUF tensor names in comments). */
typedef enum eng_cuda_wkind {
    ENG_CW_TOK_EMBD = 0, /* token_embd         [vocab][dim] */
    ENG_CW_OUTPUT_NORM,  /* output_norm        [dim] f32 */
    ENG_CW_OUTPUT,       /* output             [vocab][dim] (untied models) */
    ENG_CW_ATTN_NORM,    /* blk.N.attn_norm    [dim] f32 */
    ENG_CW_Q,            /* blk.N.attn_q       [H*hd][dim] */
    ENG_CW_K,            /* blk.N.attn_k       [KV*hd][dim] */
    ENG_CW_V,            /* blk.N.attn_v       [KV*hd][dim] */
    ENG_CW_O,            /* blk.N.attn_output  [dim][H*hd] */
    ENG_CW_FFN_NORM,     /* blk.N.ffn_norm     [dim] f32 */
    ENG_CW_GATE,         /* blk.N.ffn_gate     [ff][dim] */
    ENG_CW_UP,           /* blk.N.ffn_up       [ff][dim] */
    ENG_CW_DOWN,         /* blk.N.ffn_down     [dim][ff] */
    ENG_CW_COUNT
} eng_cuda_wkind;

/* Sampling of the next token (on the device). temperature <= 0 is greedy. */
typedef struct eng_cuda_sampling {
    float temperature;
    int top_k;
    float top_p;
    uint64_t seed;
} eng_cuda_sampling;

/* 1 when this build has CUDA and a GPU is present. */
int eng_cuda_available(void);

/* Creates the model with its buffers and KV cache on GPU `device`; weights are set next.
 * *out is owned by the caller (eng_cuda_model_destroy). Fails with LODE_ERR_NOMEM when
 * the GPU lacks memory. */
lode_status eng_cuda_model_create(const eng_cuda_config *c, int device,
                                  eng_cuda_model **out /* OUT */);
void eng_cuda_model_destroy(eng_cuda_model *m); /* accepts NULL */
/* Last error text of the model (or of model creation, when m is NULL). */
const char *eng_cuda_errmsg(const eng_cuda_model *m);

/* Uploads one weight from host memory in GGML layout (`dtype` a lode_dtype; norms F32).
 * Q/K/V and GATE/UP of one layer share one matrix when their types agree, so each layer's
 * decode reads them in one pass: set Q before K and V, GATE before UP. The data is copied;
 * the caller keeps ownership. */
lode_status eng_cuda_model_set_weight(eng_cuda_model *m, eng_cuda_wkind kind, int layer, int dtype,
                                      const void *data, size_t nbytes);
/* Fills every weight with reproducible random values of `dtype` (matrices) and f32 norms
 * near 1, directly on the GPU: for benchmarks on real shapes without a file. */
lode_status eng_cuda_model_random(eng_cuda_model *m, int dtype, uint64_t seed);
/* Creates the model from a GGUF llama file (general.architecture "llama"): configuration
 * from its llama.* keys, weights uploaded from the mapping. max_* as in eng_cuda_config.
 * On failure err receives the reason. */
lode_status eng_cuda_model_from_gguf(const char *path, int max_ctx, int max_seqs, int max_prefill,
                                     int device, eng_cuda_model **out /* OUT */, char *err,
                                     size_t errlen);
/* The same with the batched-step and KV pool fields of `sizes` (its other fields, which the
 * file decides, are ignored); kv_blocks < 0 keeps room for the file's weights on its own.
 * What the engine's serving scheduler runs on (eng_cuda_step). */
lode_status eng_cuda_model_open(const char *path, const eng_cuda_config *sizes, int device,
                                eng_cuda_model **out /* OUT */, char *err, size_t errlen);
/* Blocks of the paged KV pool and their bytes (K and V of every layer). */
int eng_cuda_kv_blocks(const eng_cuda_model *m);
size_t eng_cuda_kv_bytes(const eng_cuda_model *m);
/* 1 when eng_cuda_model_from_gguf runs the opened file `g` exactly as the engine's model
 * code does and a GPU is present: a llama GGUF (no biases, no RoPE scaling, the rotation
 * over the whole head of 64 or 128) whose matrices all have CUDA kernels. */
int eng_cuda_gguf_supported(struct eng_gguf *g);
/* The configuration the model was created with. */
const eng_cuda_config *eng_cuda_model_config(const eng_cuda_model *m);

/* Checks that every weight is set; builds what depends on them. Call before running. */
lode_status eng_cuda_model_ready(eng_cuda_model *m);
/* How a decode step of one sequence runs its layers (decided when the model became ready):
 * 1 every layer in one persistent kernel (only with LODE_CUDA_PERSIST=1, where the kernel
 * supports the model), 2 one cluster kernel a layer (only with LODE_CUDA_CLUSTER=1, where the
 * layers fit), 0 five kernels a layer (the default). */
int eng_cuda_model_persistent(const eng_cuda_model *m);
/* Whether batch-1 decode steps of short sequences attend and project with one kernel a layer
 * (krn_cuda_attn_o; decided when the model became ready: on unless LODE_CUDA_ATTN_O=0, where
 * the device and the model's shapes allow it). */
int eng_cuda_model_attn_o(const eng_cuda_model *m);
/* Bytes of weights one decode step reads (all layers, the head, norms). */
size_t eng_cuda_model_weight_bytes(const eng_cuda_model *m);

/* Forgets sequence `seq`'s cached tokens. */
lode_status eng_cuda_seq_reset(eng_cuda_model *m, int seq);

/* Appends n prompt tokens to sequence `seq` (at its current length), runs them through the
 * model and chooses the next token with `s` (NULL: greedy). The chosen token is the
 * sequence's next decode input; *next (when not NULL) receives it. logits (when not NULL,
 * vocab floats) receives the last position's logits. */
lode_status eng_cuda_prefill(eng_cuda_model *m, int seq, const int32_t *tokens, int n,
                             const eng_cuda_sampling *s, int32_t *next /* OUT */,
                             float *logits /* OUT */);

/* One decode step of sequences 0..batch-1 (each must hold a prefilled prompt): feeds each
 * its pending token, appends it to the cache and chooses the next. The step is a CUDA graph
 * captured on first use per (batch, sampling); steps queue on the GPU without waiting.
 * eng_cuda_read_tokens then returns the tokens chosen by the last n steps. */
lode_status eng_cuda_decode(eng_cuda_model *m, int batch, const eng_cuda_sampling *s);
/* Waits for queued steps and copies the chosen tokens of the last `steps` decode steps
 * (steps x batch, step-major) to out; logits (when not NULL, batch x vocab) receives the
 * logits of the last step. */
lode_status eng_cuda_read_tokens(eng_cuda_model *m, int steps, int32_t *out /* OUT */,
                                 float *logits /* OUT */);
/* Tokens held by sequence seq. */
int eng_cuda_seq_len(const eng_cuda_model *m, int seq);

/* One forward step of the engine's own loop (host-side sampling): sequence seq is first cut
 * back to pos0 tokens (0 restarts it; pos0 may not exceed its length), then tokens[0..n) run
 * at positions pos0.., and the logits of rows out_first..out_first+n_out-1 (n_out x vocab
 * floats) are written to logits. One token with its logits on sequence 0 runs the captured
 * decode graph; longer steps run prefill (one pass up to the first output row, then a pass
 * per further output row). Waits for the result. */
lode_status eng_cuda_forward(eng_cuda_model *m, int seq, const int32_t *tokens, int n, int pos0,
                             int n_out, int out_first, float *logits /* OUT */);

struct eng_batch; /* engine/backend.h */

/* One forward step of many sequences (the serving scheduler's batch: prefill chunks and
 * decode tokens mixed, each sequence with its block table into the paged pool, blocks
 * below eng_cuda_kv_blocks): K/V of the batch's tokens are written through the tables,
 * attention reads through them (flash prefill for chunks, split decode for single tokens),
 * matrices run on tensor cores (cuBLAS). A step of one decode token runs the fused decode
 * GEMVs as a captured CUDA graph; a step of many decode tokens and nothing else replays a
 * graph of the GEMM step padded to a few sizes (LODE_CUDA_STEP_GRAPH=0: eagerly). For out
 * row i (b->out_rows[i]):
 * tok[i] and lp[i] receive its argmax and that token's log-softmax; when host_rows is not
 * NULL and host_rows[i] != 0, logits + i * vocab also receives its logits. Waits for the
 * result. Needs a model made with step_tokens > 0. */
lode_status eng_cuda_step(eng_cuda_model *m, const struct eng_batch *b, const uint8_t *host_rows,
                          int32_t *tok /* OUT */, float *lp /* OUT */, float *logits /* OUT */);

/* Chooses now the GEMM algorithms of every step size eng_cuda_step may take (each decode
 * bucket and a full prefill step; krn_cuda_gemm_prepare), so that no step waits for it. Without
 * it a decode bucket's are chosen the first time a step of it runs, and prefill steps keep
 * cuBLAS's default. Needs a model made with step_tokens > 0. */
lode_status eng_cuda_model_tune(eng_cuda_model *m);

/* Timing helpers for benchmarks: events on the model's stream (ms between the last two
 * marks), and a wait for all queued work. */
lode_status eng_cuda_mark(eng_cuda_model *m);
lode_status eng_cuda_elapsed_ms(eng_cuda_model *m, float *ms /* OUT */);
lode_status eng_cuda_sync(eng_cuda_model *m);

/* Runs one decode step of sequences 0..batch-1 eagerly with an event after each op and
 * calls fn(arg, op, count, total_ms) per op name (summed over layers), in step order. The
 * step counts as a real step (the sequences advance). */
typedef void (*eng_cuda_prof_fn)(void *arg, const char *op, int count, float total_ms);
lode_status eng_cuda_profile(eng_cuda_model *m, int batch, eng_cuda_prof_fn fn, void *arg);
/* The same for one prefill pass of n <= max_prefill tokens appended to sequence seq. */
lode_status eng_cuda_profile_prefill(eng_cuda_model *m, int seq, const int32_t *tokens, int n,
                                     eng_cuda_prof_fn fn, void *arg);

#endif
