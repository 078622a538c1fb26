/*
 * qlog.h: the question log: one row per answered question in the table `questions`
 * (sql/migrations/0005), which users study with SQL through the view v_questions.
 */
#ifndef LODE_RETRIEVAL_QLOG_H
#define LODE_RETRIEVAL_QLOG_H

#include "common/lode.h"
#include "retrieval/store.h"

#include <stddef.h>
#include <stdint.h>

/* One retrieved chunk as the log records it. */
typedef struct ret_qlog_hit {
    int64_t chunk_id;
    double score;
    int n; /* its passage number in the prompt, 1-based; 0: not in the prompt */
} ret_qlog_hit;

/* A question and its answer, as logged. Borrowed strings (valid UTF-8). */
typedef struct ret_qlog {
    const char *question;
    const char *mode;
    int k;
    const ret_qlog_hit *hits; /* n_hits retrieved chunks, in rank order */
    size_t n_hits;
    const char *answer;
    const int64_t *cited; /* n_cited chunk ids, in order of first citation */
    size_t n_cited;
    const char *finish; /* "stop", "length", "cancelled", "error", "no_passages" */
    const char *model;  /* may be NULL */
    int prompt_tokens, answer_tokens;
    double retrieve_ms, prompt_ms, prefill_ms, decode_ms, total_ms;
} ret_qlog;

/* Appends one row to the question log (committed on its own unless an explicit
 * transaction is open). *id (may be NULL) receives its id. Returns LODE_ERR_INVALID for a
 * NULL question or answer, LODE_ERR_UTF8 for invalid UTF-8, LODE_ERR_BUSY when the write
 * lock could not be had within the busy timeout. */
lode_status ret_qlog_add(ret_store *s, const ret_qlog *q, int64_t *id /* OUT */);

#endif
