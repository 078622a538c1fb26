/*
 * ask.h: the direct RAG answer path, shared by `lode ask` and POST /v1/ask. A question is
 * answered in stages, each timed:
 *   retrieve  search the store for the k best chunks (orc_retrieve: one function, so the
 *             retrieval behind it changes in one place) and read their full text;
 *   prompt    number the passages [1], [2], ... (document title and heading path above
 *             each) and keep as many as fit the model's context once the answer's budget
 *             is reserved, counted in real tokens by the model's tokenizer; the system
 *             message tells the model to answer only from the passages and cite them;
 *   prefill, decode
 *             one generation request on the engine (asynchronous, token callbacks);
 * and then the citations are read out of the answer: the [n] markers that name a passage
 * given in the prompt.
 *
 * Numbering: citations keep the number their passage had in the prompt; they are not
 * renumbered. The answer streams to the user before anyone knows what it will cite, so
 * the [2] a reader saw must still mean passage 2 in the sources printed after it. Only
 * the passages the answer cited are its citations; the others stay listed as passages.
 *
 * With no passage at all (empty store, nothing matches) the model is not asked: the
 * answer says so (ORC_NO_PASSAGES_ANSWER) and finish is "no_passages".
 *
 * Threads: orc_prepare uses the store (the caller holds whatever guards it) and the
 * model's tokenizer; orc_start's callbacks run on the engine's worker thread; orc_log
 * uses the store again. An orc_answer is read by its owner only after on_done ran.
 */
#ifndef LODE_ORCHESTRATE_ASK_H
#define LODE_ORCHESTRATE_ASK_H

#include "common/lode.h"
#include "engine/engine.h"
#include "retrieval/dense.h"
#include "retrieval/store.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define ORC_MAX_K                 50
#define ORC_DEFAULT_K             4
#define ORC_DEFAULT_MAX_TOKENS    256
#define ORC_DEFAULT_PASSAGE_TOKNS 160
#define ORC_MAX_QUESTION_BYTES    4096
#define ORC_NO_PASSAGES_ANSWER                                                                     \
    "I found nothing in the store about this question, so I cannot answer it."

/* How passages are retrieved (retrieval/hybrid.h's modes, in the same order). AUTO is
 * hybrid when the store has vectors and a dense side is given, else lexical. */
typedef enum orc_mode {
    ORC_MODE_AUTO = 0,
    ORC_MODE_LEXICAL, /* BM25 over FTS5 */
    ORC_MODE_DENSE,   /* embeddings (FAISS) */
    ORC_MODE_HYBRID,  /* both, fused by reciprocal rank */
} orc_mode;

/* "auto", "lexical" (or "bm25"), "dense", "hybrid". LODE_ERR_INVALID for anything else. */
lode_status orc_mode_parse(const char *s, orc_mode *out /* OUT */);
const char *orc_mode_name(orc_mode m);

typedef struct orc_opts {
    int k;                  /* chunks retrieved, 1..ORC_MAX_K; 0: ORC_DEFAULT_K */
    orc_mode mode;          /* AUTO: the best available */
    const char *uri;        /* filter: only documents whose URI matches this SQLite GLOB
                               ("*lang_*.html"); NULL: all */
    const char *media_type; /* filter: only this media type ("text/html") or prefix ending
                               in '/' ("text/"); NULL: all */
    int max_tokens;         /* the answer's budget in tokens; 0: ORC_DEFAULT_MAX_TOKENS */
    int passage_tokens; /* the most tokens of one passage's text; 0: ORC_DEFAULT_PASSAGE_TOKNS */
    eng_sampling sampling;
    int has_sampling; /* 0: greedy with a mild repetition penalty (tiny models loop) */
    /* The question's embedding from orc_embed_question, when the caller made it before
     * taking the store's lock; NULL: orc_prepare embeds it when retrieval needs it. */
    const float *qvec;
} orc_opts;

/* The embedding dense retrieval uses for question (ret_dense_dim(dense) floats into out),
 * for orc_opts.qvec: a server makes it before it takes the lock around orc_prepare, so
 * that the encoder's queue is not waited for with the store held. */
lode_status orc_embed_question(ret_dense *dense, const char *question, float *out /* OUT */,
                               char *err, size_t errlen);

/* Per-stage milliseconds. */
typedef struct orc_timings {
    double retrieve_ms; /* search and reading the chunks' text */
    double prompt_ms;   /* numbering, fitting and tokenizing */
    double queue_ms;    /* waiting for the engine */
    double prefill_ms;  /* the prompt's forward passes */
    double decode_ms;   /* generating after the first token */
    double total_ms;    /* orc_prepare to on_done */
} orc_timings;

/* One retrieved chunk. Strings are owned by the answer. */
typedef struct orc_passage {
    int n; /* its number in the prompt, 1-based; 0: it did not fit the budget */
    int64_t chunk_id;
    int64_t document_id;
    double score; /* the retrieval's score, higher is better */
    char *uri;
    char *title;        /* "" when the document has none */
    char *heading_path; /* "" when none */
    char *snippet;      /* the matched region, plain text */
    char *text;         /* the text given in the prompt (cut to fit: see truncated) */
    int tokens;         /* tokens of this passage's block in the prompt */
    int truncated;      /* the text was cut to fit passage_tokens or the budget */
    int cited;          /* the answer cites it */
} orc_passage;

/* A question on its way to an answer, then the answer. Fields are read-only for callers
 * and complete once on_done ran (the passages and prompt already after orc_prepare). */
typedef struct orc_answer {
    char *question;
    orc_mode mode;            /* the mode used (never AUTO) */
    char retrieval_note[256]; /* why AUTO fell back to lexical, else "" */
    int k;
    orc_passage *passages; /* n_passages retrieved, in rank order */
    size_t n_passages;
    size_t n_used;     /* passages[0..n_used) are in the prompt, numbered 1..n_used */
    char *prompt_text; /* the rendered prompt (chat template applied) */
    int32_t *prompt;   /* (n_prompt) its tokens */
    int n_prompt;
    int n_ctx;        /* the model's context window */
    int max_tokens;   /* the answer budget reserved */
    char *model_name; /* the model's name, for the log */
    lode_buf text;    /* the answer */
    int n_tokens;     /* tokens generated */
    eng_finish finish;
    lode_status status;
    int no_passages; /* answered without the model: nothing was retrieved */
    size_t *cited;   /* n_cited indexes into passages, in order of first citation */
    size_t n_cited;
    orc_timings t;
    /* internals */
    eng_sampling sampling;
    eng_model *model;
    uint64_t eng_id;
    int64_t t0_ns;
    void (*on_delta)(void *user, const char *text, size_t len);
    void (*on_done)(void *user, struct orc_answer *a);
    void *user;
} orc_answer;

/* Stages retrieve and prompt: validates the question (non-empty, valid UTF-8, at most
 * ORC_MAX_QUESTION_BYTES) and options, searches the store (dense: its dense side for dense
 * and hybrid retrieval, or NULL), and assembles the prompt for model. On success *out is a new
 * answer (free with orc_answer_free). Errors, with a message in err: LODE_ERR_INVALID (bad question
 * or option), LODE_ERR_UNSUPPORTED (dense or hybrid without a dense side or on a store without
 * vectors), LODE_ERR_RANGE (the question alone and the answer budget do not fit the context), the
 * store's status (LODE_ERR_BUSY, LODE_ERR_DB), LODE_ERR_NOMEM. */
lode_status orc_prepare(ret_store *store, ret_dense *dense, eng_model *model, const char *question,
                        const orc_opts *opts, orc_answer **out /* OUT */, char *err, size_t errlen);

/* Stages prefill and decode: submits the prompt. on_delta (may be NULL) receives the
 * answer's text as it becomes final, and on_done runs once at the end with the answer
 * complete (text, finish, citations, timings); both on the engine's worker thread, or,
 * when the answer needs no model (no passages), in the caller's thread before orc_start
 * returns. The answer must outlive on_done. Returns LODE_OK, or the engine's refusal
 * (then no callback runs; message in eng_errmsg). */
lode_status orc_start(orc_answer *a, void (*on_delta)(void *user, const char *text, size_t len),
                      void (*on_done)(void *user, orc_answer *a), void *user);

/* Asks a started answer to stop; its on_done reports ENG_FINISH_CANCELLED. Any thread. */
void orc_cancel(orc_answer *a);

/* orc_start and wait for on_done (CLI, tests). on_delta as for orc_start. Returns the
 * answer's status (LODE_OK unless generation failed or was refused). */
lode_status orc_run(orc_answer *a, void (*on_delta)(void *user, const char *text, size_t len),
                    void *user);

/* Writes the finished answer to the store's question log; *id (may be NULL) receives the
 * row id. Returns the store's status. */
lode_status orc_log(ret_store *store, const orc_answer *a, int64_t *id /* OUT */);

/* "stop", "length", "cancelled", "error" or "no_passages". */
const char *orc_finish_name(const orc_answer *a);

/* The answer as the API returns it: {answer, finish_reason, citations: [...],
 * passages: [...], timings: {...}, usage: {...}, mode, k}; with_answer 0 leaves the
 * answer text out (the stream has sent it). A new reference, or NULL for no memory. */
json_t *orc_answer_json(const orc_answer *a, int with_answer);

/* The citations in text[0..len): markers [n], [n, m], [n; m], [n-m] (a range) and
 * [Passage n], and the words "passage n" (as small models write), naming passages
 * 1..n_used. Writes the distinct numbers, in order of first appearance, to
 * out[0..max) and returns how many there are (at most max). */
size_t orc_citations_extract(const char *text, size_t len, size_t n_used, int *out /* OUT */,
                             size_t max);

/* (Re)reads the citations of a's answer text into cited/n_cited and the passages' cited
 * flags. on_done has done it already; for callers that edit the text. Returns the status
 * of the allocation. */
lode_status orc_answer_cite(orc_answer *a);

void orc_answer_free(orc_answer *a); /* accepts NULL */

#endif
