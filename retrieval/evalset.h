/*
 * evalset.h: one line of a retrieval evaluation set (`lode eval retrieval FILE.jsonl`): a
 * question and either the documents that answer it or strings one of which a retrieved
 * chunk must contain. The file comes from outside, so each line is validated here (and
 * fuzzed: tests/fuzz/fuzz_evalset.c), apart from the command that runs the searches.
 */
#ifndef LODE_RETRIEVAL_EVALSET_H
#define LODE_RETRIEVAL_EVALSET_H

#include <stddef.h>

#define RET_EVAL_MAX_TARGETS 64 /* relevant entries or answers per query */

typedef struct ret_evalq {
    char *id; /* "" when the line has none */
    char *query;
    char **targets; /* relevant URIs/suffixes, or answers (normalized) */
    size_t n_targets;
    int by_answer; /* targets are answers, not documents */
    int line;      /* set by the caller: the line number for messages */
} ret_evalq;

/* Parses one JSON line {"id", "query", "relevant": [...] | "answers": [...]} into q
 * (zeroed by the caller). Returns 0, or -1 with a message in msg; either way q owns what
 * it holds until ret_evalq_free. */
int ret_evalq_parse(const char *line, size_t len, ret_evalq *q /* OUT */, char *msg, size_t msglen);
void ret_evalq_free(ret_evalq *q);

/* Lower-cases ASCII letters and turns every run of whitespace into one space, trimming
 * both ends: how answers and chunk text are compared. The result is the caller's
 * (lode_free); NULL when out of memory. */
char *ret_eval_normalize(const char *s);

#endif
