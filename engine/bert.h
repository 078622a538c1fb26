/*
 * bert.h: sentence embeddings with a BERT-family encoder (default all-MiniLM-L6-v2) on
 * the CPU. A model is a folder as sentence-transformers publishes it: model.safetensors
 * (F32, F16 or BF16), config.json, vocab.txt, and optionally tokenizer_config.json
 * (do_lower_case), sentence_bert_config.json (max_seq_length) and 1_Pooling/config.json
 * (mean or CLS pooling). Texts are WordPiece-tokenized, run through the encoder packed
 * back to back without padding (each attends only to itself), pooled and L2-normalized.
 *
 * An embedder owns its thread pool and its activation buffers, sized once for the
 * largest batch, so embedding allocates nothing. One call at a time per embedder (the
 * buffers are shared); use one per thread or serialize calls.
 */
#ifndef LODE_ENGINE_BERT_H
#define LODE_ENGINE_BERT_H

#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"

typedef struct eng_bert eng_bert;

typedef struct eng_bert_opts {
    int n_threads;        /* threads of its pool; <= 0: all the process may use */
    int max_seq_len;      /* tokens per text incl. [CLS]/[SEP]; 0: the model's setting */
    int max_batch_tokens; /* tokens run through the encoder at once; 0: 2048 */
} eng_bert_opts;

/* Loads the model from a folder, or from a .safetensors file whose folder holds the rest.
 * o may be NULL (defaults). On success *out is owned by the caller (eng_bert_destroy).
 * Returns IO, FORMAT or UNSUPPORTED (architecture, activation, pooling) with a message
 * in err. */
lode_status eng_bert_load(const char *path, const eng_bert_opts *o, eng_bert **out /* OUT */,
                          char *err, size_t errlen);
void eng_bert_destroy(eng_bert *m);

/* Output dimension (hidden size). */
int eng_bert_dim(const eng_bert *m);
/* Tokens per text after truncation. */
int eng_bert_max_seq_len(const eng_bert *m);
/* A short model name for stores and messages: the folder's base name
 * ("all-MiniLM-L6-v2"); owned by m. */
const char *eng_bert_name(const eng_bert *m);
/* The last detailed error message; owned by m. */
const char *eng_bert_errmsg(const eng_bert *m);

/* Embeds n texts (texts[i] of lens[i] bytes; lens may be NULL for NUL-terminated texts)
 * into out[i * dim .. ), L2-normalized. Texts longer than max_seq_len tokens are
 * truncated. Returns LODE_OK, or an error with eng_bert_errmsg. */
lode_status eng_bert_embed(eng_bert *m, const char *const *texts, const size_t *lens, size_t n,
                           float *out /* OUT */);

/* The same for texts tokenized already by eng_bert_tokenize: text i is ids[i][0..n_ids[i])
 * (1..max_seq_len ids). The vectors are bitwise those eng_bert_embed gives for the
 * texts, in any grouping: every text's rows are computed independently of the others in
 * its batch. LODE_ERR_INVALID for bad ids. */
lode_status eng_bert_embed_ids(eng_bert *m, const int32_t *const *ids, const int *n_ids, size_t n,
                               float *out /* OUT */);

/* Token ids of one text as the embedder sees it ([CLS] ... [SEP], truncated) into
 * ids[0..*n_ids), at most max_ids. For tests and tools. */
lode_status eng_bert_tokenize(const eng_bert *m, const char *text, size_t len, int32_t *ids,
                              int max_ids, int *n_ids /* OUT */);

#endif
