/*
 * wordpiece.h: BERT's WordPiece tokenizer, for the embedding models. Text goes through
 * BERT's basic tokenizer (drop NUL, U+FFFD and control characters; whitespace splits;
 * CJK ideographs become words of their own; accents stripped by NFD minus nonspacing
 * marks and letters lowercased, through utf8proc, when the model is uncased; punctuation
 * splits), then each word is cut greedily into the longest vocabulary pieces, "##" marking
 * a piece that continues a word; a word with no such cut, or longer than 100 characters,
 * becomes [UNK]. The result is framed as [CLS] ... [SEP] and truncated to a maximum length.
 * This is what Hugging Face's BertTokenizer does for the same vocab.txt.
 *
 * A tokenizer is immutable after loading and may be used from many threads at once.
 */
#ifndef LODE_ENGINE_WORDPIECE_H
#define LODE_ENGINE_WORDPIECE_H

#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"

typedef struct eng_wordpiece eng_wordpiece;

/* Words longer than this many characters become [UNK] (BERT's max_input_chars_per_word). */
#define ENG_WP_MAX_WORD_CHARS 100

/* Loads vocab.txt (one token a line, id = line number). lowercase: 1 for uncased models
 * (lowercase and strip accents), 0 to keep case and accents. The vocab must contain
 * [CLS], [SEP], [UNK] and [PAD]. On success *out is owned by the caller
 * (eng_wordpiece_destroy). */
lode_status eng_wordpiece_load(const char *vocab_path, int lowercase, eng_wordpiece **out /* OUT */,
                               char *err, size_t errlen);
/* The same from vocab text in memory (copied). */
lode_status eng_wordpiece_load_buffer(const char *text, size_t len, int lowercase,
                                      eng_wordpiece **out /* OUT */, char *err, size_t errlen);
void eng_wordpiece_destroy(eng_wordpiece *wp);

int32_t eng_wordpiece_vocab_size(const eng_wordpiece *wp);
/* Id of a vocabulary entry, or -1. */
int32_t eng_wordpiece_id(const eng_wordpiece *wp, const char *token);
/* Text of an id (owned by wp), or NULL when out of range. */
const char *eng_wordpiece_token(const eng_wordpiece *wp, int32_t id);
int32_t eng_wordpiece_cls(const eng_wordpiece *wp);
int32_t eng_wordpiece_sep(const eng_wordpiece *wp);
int32_t eng_wordpiece_pad(const eng_wordpiece *wp);
int32_t eng_wordpiece_unk(const eng_wordpiece *wp);

/* Tokenizes text[0..len) into ids[0..*n_out): [CLS], pieces, [SEP], with the pieces cut
 * so the total is at most max_tokens (>= 2). Invalid UTF-8 bytes are dropped like
 * U+FFFD. *truncated (may be NULL) says whether pieces were cut. Allocates nothing.
 * Returns LODE_OK, or LODE_ERR_INVALID when max_tokens < 2. */
lode_status eng_wordpiece_encode(const eng_wordpiece *wp, const char *text, size_t len,
                                 int32_t *ids /* OUT */, int max_tokens, int *n_out /* OUT */,
                                 int *truncated /* OUT */);

#endif
