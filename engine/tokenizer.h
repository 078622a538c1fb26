/*
 * tokenizer.h: the vocabularies of GGUF models and their tokenizers, token-exact with
 * llama.cpp. Two kinds: "gpt2" (byte-level BPE with merge ranks and a pre-tokenizer
 * regex chosen by tokenizer.ggml.pre, run with PCRE2) and "llama" (SentencePiece-style
 * score merges with <0xXX> byte fallback). Special/control tokens are split out of the
 * text first (when asked), decoding maps tokens back to bytes, and a streaming decoder
 * emits only complete UTF-8.
 *
 * A vocabulary is immutable after creation and may be shared by threads; encoding
 * allocates its scratch per call (it is not on the per-token path), decoding does not
 * allocate.
 */
#ifndef LODE_ENGINE_TOKENIZER_H
#define LODE_ENGINE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"

typedef int32_t eng_token;
#define ENG_TOKEN_NONE (-1)

typedef struct eng_vocab eng_vocab;
typedef struct eng_gguf eng_gguf;

typedef enum eng_vocab_type {
    ENG_VOCAB_BPE = 1, /* tokenizer.ggml.model = "gpt2" */
    ENG_VOCAB_SPM = 2  /* tokenizer.ggml.model = "llama" */
} eng_vocab_type;

/* tokenizer.ggml.token_type values (the GGUF/llama.cpp numbering). */
typedef enum eng_token_type {
    ENG_TOKTYPE_UNDEFINED = 0,
    ENG_TOKTYPE_NORMAL = 1,
    ENG_TOKTYPE_UNKNOWN = 2,
    ENG_TOKTYPE_CONTROL = 3,
    ENG_TOKTYPE_USER_DEFINED = 4,
    ENG_TOKTYPE_UNUSED = 5,
    ENG_TOKTYPE_BYTE = 6
} eng_token_type;

/* Everything a vocabulary is made of, as plain arrays (what the GGUF metadata holds).
 * Strings are byte slices: lens may be NULL, then each string is NUL-terminated. The
 * arrays are copied; the caller keeps ownership. Ids out of range count as "none". */
typedef struct eng_vocab_desc {
    eng_vocab_type type;
    const char *pre; /* tokenizer.ggml.pre (BPE only); NULL or "" = "default" */
    int32_t n_tokens;
    const char *const *tokens;  /* tokenizer.ggml.tokens [n_tokens] */
    const size_t *token_lens;   /* [n_tokens] or NULL */
    const int32_t *token_types; /* tokenizer.ggml.token_type [n_tokens] or NULL = normal */
    const float *scores;        /* tokenizer.ggml.scores [n_tokens] or NULL = 0 (SPM) */
    int32_t n_merges;
    const char *const *merges; /* tokenizer.ggml.merges "left right" [n_merges] (BPE) */
    const size_t *merge_lens;  /* [n_merges] or NULL */
    /* Special ids; ENG_TOKEN_NONE = absent (the type's default applies, as in llama.cpp:
     * SPM bos 1, eos 2, unk 0; BPE none). */
    eng_token bos, eos, unk, pad, eot, eom;
    /* -1 = the default of the type and pre-tokenizer; 0/1 = the GGUF's value. */
    int add_bos, add_eos, add_space_prefix;
} eng_vocab_desc;

/* Fills d with "absent" for every optional field (ids NONE, flags -1, arrays NULL). */
void eng_vocab_desc_init(eng_vocab_desc *d /* OUT */);

/* Builds a vocabulary from arrays. On success *out owns a new vocabulary (free with
 * eng_vocab_destroy). On failure returns a status and writes a message into err (may be
 * NULL): an unknown pre-tokenizer is LODE_ERR_UNSUPPORTED, inconsistent arrays
 * LODE_ERR_INVALID. */
lode_status eng_vocab_create(const eng_vocab_desc *d, eng_vocab **out /* OUT */, char *err,
                             size_t errlen);

/* Builds the vocabulary from a GGUF's tokenizer.* metadata. Same ownership and errors as
 * eng_vocab_create; a missing or unknown tokenizer.ggml.model is LODE_ERR_UNSUPPORTED. */
lode_status eng_vocab_from_gguf(struct eng_gguf *g, eng_vocab **out /* OUT */, char *err,
                                size_t errlen);

void eng_vocab_destroy(eng_vocab *v); /* accepts NULL */

/* ---- queries (all O(1) but eng_vocab_find) ------------------------------------------ */
eng_vocab_type eng_vocab_kind(const eng_vocab *v);
int32_t eng_vocab_n_tokens(const eng_vocab *v);
eng_token eng_vocab_bos(const eng_vocab *v); /* ENG_TOKEN_NONE when absent */
eng_token eng_vocab_eos(const eng_vocab *v);
eng_token eng_vocab_eot(const eng_vocab *v); /* end of turn (<|im_end|>, <|eot_id|> ...) */
bool eng_vocab_adds_bos(const eng_vocab *v); /* ENG_TOK_ADD_SPECIAL prepends BOS */
bool eng_vocab_adds_eos(const eng_vocab *v);
/* True for tokens that end generation: EOS, EOT, EOM and the end-of-turn tokens
 * llama.cpp recognizes by text (<|im_end|>, <|eot_id|>, <|endoftext|>, <end_of_turn> ...). */
bool eng_vocab_is_eog(const eng_vocab *v, eng_token t);
eng_token_type eng_vocab_token_type(const eng_vocab *v, eng_token t); /* UNDEFINED if bad id */
/* The token's text as stored in the vocabulary (BPE: byte-level form, e.g. "Ġthe");
 * points into v, not NUL-terminated; NULL with *len = 0 for a bad id. */
const char *eng_vocab_token_text(const eng_vocab *v, eng_token t, size_t *len /* OUT */);
/* The id whose stored text is exactly text[0..n), or ENG_TOKEN_NONE. */
eng_token eng_vocab_find(const eng_vocab *v, const char *text, size_t n);
/* Longest piece in bytes (for sizing decode buffers). */
size_t eng_vocab_max_piece(const eng_vocab *v);

/* ---- encode ------------------------------------------------------------------------ */
enum {
    ENG_TOK_ADD_SPECIAL = 1u << 0,   /* BOS/EOS as the vocabulary asks (llama add_special) */
    ENG_TOK_PARSE_SPECIAL = 1u << 1, /* control tokens written in the text become tokens */
};

/* Tokenizes text[0..n) (any bytes: invalid UTF-8 is read the way llama.cpp reads it,
 * each bad byte as U+FFFD). Writes at most cap ids into out and the number the text
 * needs into *n_out; returns LODE_ERR_RANGE when cap was too small (call again with
 * *n_out), LODE_ERR_NOMEM on allocation failure. Same ids as llama_tokenize(text,
 * add_special, parse_special). */
lode_status eng_tok_encode(const eng_vocab *v, const char *text, size_t n, unsigned flags,
                           eng_token *out, size_t cap, size_t *n_out /* OUT */);

/* The same into a new array: *out (free with lode_free) holds *n_out ids. */
lode_status eng_tok_encode_alloc(const eng_vocab *v, const char *text, size_t n, unsigned flags,
                                 eng_token **out /* OUT */, size_t *n_out /* OUT */);

/* ---- decode ------------------------------------------------------------------------ */
enum {
    ENG_TOK_RENDER_SPECIAL = 1u << 4, /* control/unknown tokens render as their text */
    ENG_TOK_STRIP_LEADING = 1u << 5,  /* SPM: drop the prefix space of the first piece */
};

/* The bytes a token stands for (llama_token_to_piece): BPE byte-level text mapped back
 * to bytes, SPM with U+2581 as space and <0xXX> as the byte. Control and unknown tokens
 * give "" unless ENG_TOK_RENDER_SPECIAL. Points into v; *len = 0 and "" for a bad id.
 * A piece may be an incomplete UTF-8 sequence. */
const char *eng_tok_piece(const eng_vocab *v, eng_token t, unsigned flags, size_t *len /* OUT */);

/* Appends the concatenated pieces of toks to out (raw bytes, possibly invalid UTF-8). */
lode_status eng_tok_decode(const eng_vocab *v, const eng_token *toks, size_t n, unsigned flags,
                           lode_buf *out);

/* Streaming decoder: pieces in, complete valid UTF-8 out. A sequence split across tokens
 * is held until its last byte arrives; bytes that cannot start or continue a valid
 * sequence come out as U+FFFD. Plain struct, no allocation; one per stream. */
typedef struct eng_detok {
    const eng_vocab *v;
    unsigned flags;
    unsigned char held[4]; /* the incomplete sequence so far */
    uint8_t n_held;
    uint8_t need; /* total length of the held sequence */
    bool started; /* a piece was emitted (for ENG_TOK_STRIP_LEADING) */
} eng_detok;

void eng_detok_init(eng_detok *d /* OUT */, const eng_vocab *v, unsigned flags);
/* Bytes out[] must hold for one push: eng_detok_push never writes more. */
size_t eng_detok_bound(const eng_vocab *v);
/* Feeds token t; writes the text that became complete into out (cap bytes, at least
 * eng_detok_bound) and returns its length. */
size_t eng_detok_push(eng_detok *d, eng_token t, char *out, size_t cap);
/* Ends the stream: a held incomplete sequence becomes U+FFFD. Returns bytes written
 * (cap >= 3). */
size_t eng_detok_flush(eng_detok *d, char *out, size_t cap);

#endif
