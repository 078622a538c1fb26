/*
 * model.h: the llama-family decoder (llama, mistral, qwen2 and the like) read from GGUF
 * metadata, and its runtime: the activation buffers and paged KV pool that a forward step
 * over a batch (backend.h eng_batch) uses. Internal to the engine: engine.c runs requests
 * on it, and the serving scheduler drives eng_runtime_forward with batches of many
 * sequences.
 */
#ifndef LODE_ENGINE_MODEL_H
#define LODE_ENGINE_MODEL_H

#include "engine/backend.h"
#include "engine/gguf.h"

typedef struct eng_hparams {
    char arch[32]; /* general.architecture */
    int n_vocab;
    int n_ctx_train;
    int dim;       /* embedding_length */
    int n_layer;   /* block_count */
    int n_head;    /* attention.head_count */
    int n_head_kv; /* attention.head_count_kv (GQA/MQA) */
    int head_dim;  /* dim / n_head, or attention.key_length */
    int ffn_dim;   /* feed_forward_length */
    float eps;     /* attention.layer_norm_rms_epsilon */
    float rope_base;
    float rope_freq_scale; /* 1 / rope.scaling.factor for linear scaling */
    int rope_n_rot;
    int rope_neox;
    int tied_output; /* output projection is token_embd */
    int has_qkv_bias;
} eng_hparams;

typedef struct eng_layer {
    eng_weight attn_norm;  /* (dim) */
    eng_weight wq;         /* (n_head*head_dim, dim) */
    eng_weight wk, wv;     /* (n_head_kv*head_dim, dim) */
    eng_weight bq, bk, bv; /* biases (qwen2) or empty (data NULL) */
    eng_weight wo;         /* (dim, n_head*head_dim) */
    eng_weight ffn_norm;   /* (dim) */
    eng_weight w_gate;     /* (ffn_dim, dim) */
    eng_weight w_up;       /* (ffn_dim, dim) */
    eng_weight w_down;     /* (dim, ffn_dim) */
} eng_layer;

typedef struct eng_llama {
    eng_gguf *gguf; /* owned; weights may point into its mapping */
    eng_backend *be;
    eng_hparams hp;
    eng_weight tok_embd;    /* (n_vocab, dim) */
    eng_weight output_norm; /* (dim) */
    eng_weight output;      /* (n_vocab, dim); a copy of tok_embd when tied */
    eng_layer *layers;      /* (n_layer) */
    float *freq_factors;    /* backend memory (rope_n_rot/2) or NULL */
} eng_llama;

/* Reads hyperparameters and weights. On success the model owns g (closed by
 * eng_llama_free) and uses be (not owned; must outlive the model). On failure g is left
 * to the caller and err names the problem: LODE_ERR_UNSUPPORTED for an architecture that
 * is not of the llama family, LODE_ERR_FORMAT for missing or inconsistent tensors and
 * keys. */
lode_status eng_llama_load(eng_gguf *g, eng_backend *be, eng_llama **out /* OUT */, char *err,
                           size_t errlen);
void eng_llama_free(eng_llama *m); /* accepts NULL */

/* A runtime: buffers for steps of up to max_tokens tokens, logits for up to max_out
 * rows, and a KV pool of n_blocks blocks of ENG_KV_BLOCK tokens. Everything is allocated
 * here; eng_runtime_forward allocates nothing. */
typedef struct eng_runtime eng_runtime;

lode_status eng_runtime_create(eng_llama *m, int max_tokens, int max_out, int n_blocks,
                               eng_runtime **out /* OUT */, char *err, size_t errlen);
void eng_runtime_destroy(eng_runtime *rt); /* accepts NULL */

int eng_runtime_max_tokens(const eng_runtime *rt);
int eng_runtime_max_out(const eng_runtime *rt);
int eng_runtime_n_blocks(const eng_runtime *rt);

/* Copies KV blocks to / from slots of a host pool (backend.h kv_swap), ordered before
 * the next forward. LODE_ERR_UNSUPPORTED when the backend cannot swap; copy errors come
 * from the next forward's sync. */
lode_status eng_runtime_kv_swap(eng_runtime *rt, int to_host, const int32_t *blocks,
                                const int32_t *slots, int n, void *host);
/* Bytes of one host slot of the swap pool (backend.h eng_kv_slot_bytes). */
size_t eng_runtime_kv_slot_bytes(const eng_runtime *rt);

/* Runs the model over a batch and writes the logits of b->out_rows to logits_host
 * (n_out, n_vocab) (may be NULL when n_out is 0). The KV cache of the batch's sequences
 * grows by their tokens. Returns LODE_OK or the backend's error (err has the detail). */
lode_status eng_runtime_forward(eng_runtime *rt, const eng_batch *b, float *logits_host, char *err,
                                size_t errlen);

#endif
