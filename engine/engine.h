/*
 * engine.h: lode's inference engine, the API the rest of lode uses. A model is loaded
 * from a GGUF file onto a backend (cpu, cuda); generation requests are submitted with
 * callbacks and run asynchronously on the engine's worker thread, which owns the model's
 * runtime (activations, KV cache). eng_generate wraps submit/wait for the CLI and tests.
 *
 * Threads: eng_submit, eng_cancel, the tokenizer functions and eng_model_info may be
 * called from any thread. Callbacks run on the worker thread and must not call
 * eng_model_free; they may call eng_cancel and eng_submit.
 */
#ifndef LODE_ENGINE_ENGINE_H
#define LODE_ENGINE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"

typedef struct eng_model eng_model;

/* The default generation model, relative to the working directory; LODE_MODEL
 * overrides it in eng_default_model_path. */
#define ENG_DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"
/* prefill_slack when eng_model_opts leaves it 0 on the CPU backend (on a GPU backend: off) */
#define ENG_PREFILL_SLACK 1.6
/* $LODE_MODEL when set and not empty, else ENG_DEFAULT_MODEL. Never NULL. */
const char *eng_default_model_path(void);

/* How the scheduler orders work (engine/sched.h). */
typedef enum eng_policy {
    ENG_POLICY_FCFS = 0,     /* arrival order for everything (default) */
    ENG_POLICY_DECODE_FIRST, /* running streams' next tokens before any prompt work */
    ENG_POLICY_MLFQ,         /* multi-level feedback queue: sequences drop a level after
                                their quantum of tokens, new ones start at the top and may
                                preempt lower levels */
} eng_policy;
/* "fcfs", "decode-first", "mlfq" -> *out; LODE_ERR_INVALID for another name. */
lode_status eng_policy_parse(const char *name, eng_policy *out /* OUT */);
const char *eng_policy_name(eng_policy p);

/* What happens to a preempted sequence's KV blocks when KV memory runs out. */
typedef enum eng_preempt {
    ENG_PREEMPT_RECOMPUTE = 0, /* released; recomputed on resume (default) */
    ENG_PREEMPT_SWAP,          /* copied to a host pool and back on resume; by recompute
                                  when the host pool is full */
} eng_preempt;
/* "recompute", "swap" -> *out; LODE_ERR_INVALID for another name. */
lode_status eng_preempt_parse(const char *name, eng_preempt *out /* OUT */);
const char *eng_preempt_name(eng_preempt p);

typedef struct eng_model_opts {
    const char *backend; /* "cpu", "cuda", NULL/"auto" */
    int n_threads;       /* CPU threads; <= 0: every CPU the process may use */
    int n_ctx;           /* context window in tokens of one sequence; <= 0: min(trained
                            context, 4096) */
    int n_batch;         /* tokens of one forward step, shared by every running sequence;
                            <= 0: 256 (2048 on the fused CUDA path) */
    int device;          /* GPU ordinal */
    /* serving (engine/sched.h); 0 means the default */
    int kv_mb;     /* KV pool budget in MiB; <= 0: 256, or on the fused CUDA path the GPU's
                      free memory after the weights. Never below one full context. */
    int max_seqs;  /* sequences decoding together; <= 0: 64 (256 on the fused CUDA path) */
    int max_queue; /* requests waiting beyond those; <= 0: 256. eng_submit returns
                      LODE_ERR_BUSY past it */
    eng_policy policy;
    int no_prefix_cache;  /* 1: do not reuse computed prefixes across requests */
    eng_preempt preempt;  /* LODE_ERR_UNSUPPORTED from eng_model_load for swap on a backend
                             that cannot */
    int swap_mb;          /* host pool for swapped blocks in MiB; <= 0: as large as the KV
                             pool */
    double prefill_slack; /* while requests decode, a step's prompt chunk is cut so that
                             the step's predicted time stays within this factor of a
                             decode-only step (sched.h); 0: ENG_PREFILL_SLACK on the
                             CPU, off on a GPU; < 0: off (n_batch alone) */
    int tune_at_load;     /* fused CUDA path: 1 chooses the GEMM algorithms of every step size
                             it may take while loading (servers: no request waits for it);
                             0 chooses a decode step size's the first time a step of it runs,
                             and leaves prefill steps on cuBLAS's default (one-shot commands:
                             the first token does not wait for the tuning) */
} eng_model_opts;

/* Loads the GGUF at path (validated completely first) onto a backend and starts the
 * worker thread. Returns LODE_OK and *out (free with eng_model_free), or a status with a
 * message in err naming the problem (bad file, unsupported architecture or tokenizer,
 * no memory). opts may be NULL. */
lode_status eng_model_load(const char *path, const eng_model_opts *opts, eng_model **out /* OUT */,
                           char *err, size_t errlen);
/* Cancels every request (their on_done runs with LODE_ERR_CANCELLED), stops the worker
 * and frees everything. A hosted embedder (embedder.h) gets its queued work cancelled and
 * refuses more; it is still to be destroyed by its owner. Accepts NULL. */
void eng_model_free(eng_model *m);

typedef struct eng_model_info {
    const char *name;          /* general.name or the file name */
    const char *arch;          /* general.architecture */
    const char *backend;       /* "cpu", "cuda" */
    const char *chat_template; /* tokenizer.chat_template or NULL */
    int n_vocab;
    int n_ctx;       /* the window requests share */
    int n_ctx_train; /* the model's trained context */
    int n_layer, dim, n_head, n_head_kv;
    int n_threads;
    int32_t bos, eos, eot; /* -1 when absent */
} eng_model_info;
/* Strings point into the model and live as long as it. */
void eng_model_info_get(const eng_model *m, eng_model_info *out /* OUT */);

/* ---- tokens ------------------------------------------------------------------------ */
/* Tokenizes text[0..len) (add_special: BOS as the model wants; parse_special: control
 * tokens written in the text become tokens). *out (free with lode_free) holds *n ids. */
lode_status eng_tokenize(const eng_model *m, const char *text, size_t len, int add_special,
                         int parse_special, int32_t **out /* OUT */, size_t *n /* OUT */);
/* Appends the text of tokens (control tokens rendered when render_special) to out. */
lode_status eng_detokenize(const eng_model *m, const int32_t *toks, size_t n, int render_special,
                           lode_buf *out);
/* 1 when the token ends generation (EOS, end of turn). */
int eng_token_is_eog(const eng_model *m, int32_t tok);
/* Renders a conversation with the model's chat template (ChatML, Llama 2/3 styles) and
 * appends it to out; add_generation_prompt opens the assistant's turn. roles[i] is
 * "system", "user" or "assistant". LODE_ERR_UNSUPPORTED when the template is unknown. */
lode_status eng_chat_apply(const eng_model *m, const char *const *roles,
                           const char *const *contents, size_t n, int add_generation_prompt,
                           lode_buf *out);

/* ---- requests ---------------------------------------------------------------------- */
typedef struct eng_sampling {
    float temperature;    /* <= 0: greedy */
    int top_k;            /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off */
    int repeat_last_n;    /* tokens the penalties look back over; 0: 64 */
    float presence_penalty;
    float frequency_penalty;
    uint64_t seed; /* same seed, same output */
} eng_sampling;
/* Greedy, no penalties. */
void eng_sampling_default(eng_sampling *s /* OUT */);

typedef enum eng_finish {
    ENG_FINISH_NONE = 0,
    ENG_FINISH_LENGTH,    /* max_tokens or the context window reached */
    ENG_FINISH_EOG,       /* the model ended its turn */
    ENG_FINISH_STOP,      /* a stop string matched (it is not emitted) */
    ENG_FINISH_CANCELLED, /* eng_cancel or on_token asked to stop */
    ENG_FINISH_ERROR
} eng_finish;
const char *eng_finish_name(eng_finish f);

typedef struct eng_stats {
    int prompt_tokens;
    int generated;
    double queue_ms;   /* submit to start */
    double prefill_ms; /* the prompt's forward steps */
    double decode_ms;  /* everything after the first token */
    double ttft_ms;    /* submit to the first token */
} eng_stats;

/* Called for every generated token on the worker thread. piece/len is the text that
 * became final with this token: complete UTF-8, possibly empty (text held back while it
 * could still become a stop string or an incomplete character) or holding text of
 * earlier tokens. logprob is log p(token) under the model (before sampling transforms);
 * 0 unless want_logprobs. Return nonzero to stop (finish CANCELLED). */
typedef int (*eng_on_token)(void *user, int32_t token, const char *piece, size_t len,
                            float logprob);
/* Called once per request, last, on the worker thread (or in eng_submit's caller when
 * the request is refused there: then eng_submit returns the error and does not call it).
 * st is LODE_OK unless finish is ERROR or CANCELLED. */
typedef void (*eng_on_done)(void *user, lode_status st, eng_finish finish, const eng_stats *stats);
/* With want_prompt_logprobs: called once after the prompt, before the first token, with
 * logprobs[i] = log p(prompt[i+1] | prompt[0..i]) for i < n = n_prompt - 1. */
typedef void (*eng_on_prompt_logprobs)(void *user, const float *logprobs, int n);

typedef struct eng_request {
    const int32_t *prompt; /* copied by eng_submit */
    int n_prompt;          /* >= 1 */
    eng_sampling sampling;
    int max_tokens;           /* <= 0: until EOG or the context is full */
    const char *const *stop;  /* stop strings (copied) */
    int n_stop;               /* <= 16 */
    int want_logprobs;        /* per generated token */
    int want_prompt_logprobs; /* see eng_on_prompt_logprobs */
    eng_on_token on_token;
    eng_on_prompt_logprobs on_prompt_logprobs;
    eng_on_done on_done;
    void *user;
} eng_request;

/* Queues a request; *id (may be NULL) identifies it for eng_cancel. It joins the running
 * batch at the next step. Returns LODE_OK, or LODE_ERR_INVALID (empty prompt, bad token
 * ids, too many stop strings), LODE_ERR_RANGE (the prompt does not fit the context),
 * LODE_ERR_BUSY (max_seqs + max_queue requests are in the engine already: try later; a
 * server answers 429), LODE_ERR_CANCELLED (the model is shutting down), LODE_ERR_NOMEM;
 * on error no callback runs. */
lode_status eng_submit(eng_model *m, const eng_request *r, uint64_t *id /* OUT */);
/* Asks a queued or running request to stop; its on_done reports CANCELLED. Returns
 * LODE_ERR_NOTFOUND when it already finished or never existed. */
lode_status eng_cancel(eng_model *m, uint64_t id);

/* What eng_generate collects; free with eng_output_free. */
typedef struct eng_output {
    int32_t *tokens; /* (n_tokens) */
    float *logprobs; /* (n_tokens) when want_logprobs, else NULL */
    int n_tokens;
    char *text; /* NUL-terminated, the emitted pieces (without a matched stop string) */
    size_t text_len;
    float *prompt_logprobs; /* (n_prompt - 1) when want_prompt_logprobs, else NULL */
    int n_prompt_logprobs;
    eng_finish finish;
    eng_stats stats;
} eng_output;

/* Submits r and waits for it. r's own callbacks still run (for streaming). Returns the
 * request's status; out (may be NULL) receives the results either way. */
lode_status eng_generate(eng_model *m, const eng_request *r, eng_output *out /* OUT */);
void eng_output_free(eng_output *o); /* frees the arrays, keeps the struct; accepts NULL */

/* The serving state of a model, for /metrics. */
typedef struct eng_serving_stats {
    int running; /* sequences in the batch */
    int waiting; /* admitted to the engine, not running (queued or preempted) */
    int kv_blocks_total, kv_blocks_used, kv_blocks_cached, kv_block_tokens;
    size_t kv_bytes; /* of the whole pool (GPU memory on the CUDA path) */
    uint64_t prefix_lookup_tokens, prefix_hit_tokens;
    double prefix_hit_rate;
    uint64_t preemptions; /* by recompute and by swap */
    eng_preempt preempt;  /* the configured mode */
    int swap_slots_total; /* host pool, in blocks (0 without swap) */
    int swap_slots_used;  /* blocks of swapped-out sequences held there */
    uint64_t swapped_out; /* preemptions by swap */
    uint64_t swapped_in;  /* resumes from the host pool */
    uint64_t swap_blocks; /* blocks copied either way */
    uint64_t steps;       /* forward steps run */
    double gen_seconds;   /* the scheduler thread's time in generation steps */
    double enc_seconds;   /* and in encoder batches of the hosted embedder */
    uint64_t enc_batches;
    uint64_t step_tokens;   /* tokens they computed */
    uint64_t rejected_busy; /* eng_submit calls refused with LODE_ERR_BUSY */
} eng_serving_stats;
/* A consistent snapshot, from any thread. */
void eng_serving_stats_get(eng_model *m, eng_serving_stats *out /* OUT */);

/* ---- embeddings on the same thread (embedder.h) ------------------------------------ */
struct eng_embedder;
/* Serves e's encoder batches on this model's scheduler thread, between its generation
 * steps: while both kinds have work, encoder batches get share percent (1..99) of the
 * thread's time. e NULL detaches the one served, waiting for a batch in progress.
 * LODE_ERR_BUSY when another embedder is served. eng_embedder_create calls this. */
lode_status eng_model_host_embedder(eng_model *m, struct eng_embedder *e, int share);
/* Wakes the scheduler thread (the hosted embedder has work). */
void eng_model_wake(eng_model *m);

/* The last detailed message of a failed call on this model. */
const char *eng_errmsg(const eng_model *m);

#endif
