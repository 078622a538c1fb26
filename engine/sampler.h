/*
 * sampler.h: choosing the next token from logits, and deciding when generation stops.
 *
 * The sampler applies, in llama.cpp's default order: repetition/presence/frequency
 * penalties over a window of recent tokens, top-k, top-p, min-p, temperature, then draws
 * from the softmax with its own seeded PRNG (xoshiro256**: the same seed and logits give
 * the same tokens on every machine). Temperature <= 0 is greedy (argmax after penalties,
 * lowest id on ties). It also reports the log-probability of the chosen token and the
 * top-n alternatives, from the log-softmax of the raw logits (before any penalty or
 * filter), which is what prompt/answer logprobs mean elsewhere in lode.
 * All buffers are sized to the vocabulary at creation: sampling does not allocate.
 *
 * The stop side: eng_stop matches stop strings over streamed text, holding back what may
 * be the start of one; eng_textgen joins the streaming UTF-8 decoder, the stop strings,
 * end-of-generation tokens and a token budget into one per-request object.
 */
#ifndef LODE_ENGINE_SAMPLER_H
#define LODE_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"
#include "engine/tokenizer.h"

#define ENG_MAX_LOGPROBS 20

typedef struct eng_sampler_params {
    float temperature;       /* <= 0: greedy; default 0.8 */
    int32_t top_k;           /* <= 0 or >= n_vocab: off; default 40 */
    float top_p;             /* >= 1: off; default 0.95 */
    float min_p;             /* <= 0: off; default 0.05 */
    float repeat_penalty;    /* 1: off; > 1 discourages repeats; default 1 */
    float presence_penalty;  /* 0: off; subtracted once from tokens in the window */
    float frequency_penalty; /* 0: off; subtracted per occurrence in the window */
    int32_t penalty_last_n;  /* window of recent tokens the penalties look at; default 64 */
    uint64_t seed;           /* PRNG seed; default 0 */
    int32_t n_logprobs;      /* top alternatives to report, 0..ENG_MAX_LOGPROBS */
} eng_sampler_params;

/* The defaults above (llama.cpp's, but penalties off). */
void eng_sampler_params_default(eng_sampler_params *p /* OUT */);

typedef struct eng_sampler eng_sampler;

typedef struct eng_token_logprob {
    eng_token token;
    float logprob;
} eng_token_logprob;

typedef struct eng_sample_result {
    eng_token token;
    float logprob;                           /* log-softmax of the raw logits at token */
    int32_t n_top;                           /* = params.n_logprobs */
    eng_token_logprob top[ENG_MAX_LOGPROBS]; /* best first, ties by lower id */
} eng_sample_result;

/* A sampler for a vocabulary of n_vocab logits. Parameters out of range (NaN, negative
 * top_p, n_logprobs beyond the maximum, a window over 1<<20) are LODE_ERR_INVALID.
 * *out is freed with eng_sampler_destroy. */
lode_status eng_sampler_create(const eng_sampler_params *p, int32_t n_vocab,
                               eng_sampler **out /* OUT */);
void eng_sampler_destroy(eng_sampler *s); /* accepts NULL */

/* Forgets the penalty window and restarts the PRNG from the seed. */
void eng_sampler_reset(eng_sampler *s);

/* Adds a token to the penalty window (the prompt's tokens, typically; sampled tokens are
 * added by eng_sampler_sample itself). Ids out of range are ignored. */
void eng_sampler_accept(eng_sampler *s, eng_token t);

/* Chooses the next token from logits[n_vocab] (not modified), adds it to the window and
 * returns it; fills *res (may be NULL) with its logprob and the top-n logprobs. Logits
 * that are all -inf or NaN give token 0 with logprob -inf rather than a crash.
 * The logprob costs a pass of exp over the vocabulary: pass res = NULL when it is not
 * wanted (greedy is then one argmax pass). */
eng_token eng_sampler_sample(eng_sampler *s, const float *logits, eng_sample_result *res);

/* Log-softmax of logits[n] at token t, and the top n_top (<= ENG_MAX_LOGPROBS) entries;
 * for prompt logprobs, where nothing is sampled. Returns the logprob of t. */
float eng_logprobs(const float *logits, int32_t n, eng_token t, eng_token_logprob *top,
                   int32_t n_top);

/* ---- stop strings --------------------------------------------------------------------- */
#define ENG_STOP_MAX_STRINGS 16
#define ENG_STOP_MAX_LEN     256

typedef struct eng_stop eng_stop;

/* A matcher for up to ENG_STOP_MAX_STRINGS non-empty strings of at most
 * ENG_STOP_MAX_LEN bytes each (else LODE_ERR_LIMIT / LODE_ERR_INVALID). The strings are
 * copied. Free with eng_stop_destroy. */
lode_status eng_stop_create(const char *const *stops, size_t n, eng_stop **out /* OUT */);
void eng_stop_destroy(eng_stop *m); /* accepts NULL */
void eng_stop_reset(eng_stop *m);

/* Feeds text[0..n) of the stream. Writes into out (cap >= n + ENG_STOP_MAX_LEN) the text
 * that can no longer be part of a stop string, into *n_out its length, and returns the
 * index of the stop string that completed (the text before it was written, the rest is
 * dropped and the matcher must be reset before reuse) or -1. The first stop string to be
 * completed wins. */
int eng_stop_feed(eng_stop *m, const char *text, size_t n, char *out, size_t cap,
                  size_t *n_out /* OUT */);
/* Releases the held-back text (generation ended for another reason). Returns its length
 * (cap >= ENG_STOP_MAX_LEN). */
size_t eng_stop_flush(eng_stop *m, char *out, size_t cap);

/* ---- per-request text generation state -------------------------------------------------- */
typedef enum eng_stop_reason {
    ENG_STOP_NONE = 0,   /* go on */
    ENG_STOP_EOG,        /* an end-of-generation token (not part of the text) */
    ENG_STOP_STRING,     /* a stop string completed (not part of the text) */
    ENG_STOP_MAX_TOKENS, /* the token budget is spent (the last token's text is kept) */
} eng_stop_reason;

typedef struct eng_textgen eng_textgen;

/* State for one request: streaming decode (flags as for eng_detok_init), stop strings
 * (may be NULL/0), max_tokens (<= 0: no limit). Free with eng_textgen_destroy. */
lode_status eng_textgen_create(const eng_vocab *v, const char *const *stops, size_t n_stops,
                               int32_t max_tokens, unsigned detok_flags,
                               eng_textgen **out /* OUT */);
void eng_textgen_destroy(eng_textgen *g); /* accepts NULL */

/* Bytes out[] must hold for one push, or for a push and a finish written after it. */
size_t eng_textgen_bound(const eng_textgen *g);

/* Feeds a generated token. Writes the text it makes final into out, its length into
 * *n_out, and says whether to stop. When a stop reason is returned, the text written
 * includes everything that remained held back (nothing more comes). */
eng_stop_reason eng_textgen_push(eng_textgen *g, eng_token t, char *out, size_t cap,
                                 size_t *n_out /* OUT */);
/* For a stop decided outside (cancel, context full): the held-back text. */
size_t eng_textgen_finish(eng_textgen *g, char *out, size_t cap);
/* Index of the stop string that ended generation, or -1. */
int eng_textgen_stop_index(const eng_textgen *g);
int32_t eng_textgen_n_tokens(const eng_textgen *g);

#endif
