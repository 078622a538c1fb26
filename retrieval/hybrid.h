/*
 * hybrid.h: lode's one search entry point. The CLI, the server (/v1/search, /v1/ask),
 * the SQLite extension and the evaluation harness all call ret_hybrid_search.
 *
 * Modes: lexical (BM25 over FTS5, search.h), dense (the query embedded by the store's
 * model, nearest chunks in the FAISS index, dense.h), and hybrid: both lists fused by
 * reciprocal rank fusion, score(x) = sum over lists L of w_L / (rrf_k + rank_L(x)), ranks
 * from 1, an x absent from a list adding nothing. By default x is a document (fusion per
 * document, RET_FUSE_DOCUMENT): in each list a document takes the rank of its best chunk
 * among the documents there (its other chunks do not push later documents down), the
 * documents are ordered by their fused score, and the results list each document's best
 * chunk (by the chunk-level score) in that order, then the other candidate chunks of
 * those documents. Relevance is a document's: a page that both lists find, each by
 * another passage, is what fusion should raise, and a page with many matching chunks
 * should not crowd the others out of either list. RET_FUSE_CHUNK fuses chunks as they
 * are. Optionally the fused list is then
 * diversified by maximal marginal relevance: greedily take the candidate with the
 * highest lambda * rel(c) - (1 - lambda) * max cos(c, taken), rel being the fused score
 * divided by the best one. Filters (path glob, media type, modification dates) apply to
 * both lists before fusion.
 *
 * RET_MODE_AUTO is hybrid when the store has vectors and a ret_dense is given, lexical
 * otherwise (results->mode says which ran, and results->note why, for a message).
 */
#ifndef LODE_RETRIEVAL_HYBRID_H
#define LODE_RETRIEVAL_HYBRID_H

#include "common/lode.h"
#include "retrieval/dense.h"
#include "retrieval/search.h"
#include "retrieval/store.h"

#include <stddef.h>
#include <stdint.h>

typedef enum ret_mode {
    RET_MODE_AUTO = 0, /* hybrid when dense search is possible, else lexical */
    RET_MODE_LEXICAL,
    RET_MODE_DENSE,
    RET_MODE_HYBRID,
} ret_mode;

#define RET_RRF_K_DEFAULT 60.0
/* The default weights of the lexical and the dense list. Chosen on the 70 development
 * questions over the SQLite documentation (tests/data/eval, bench/RESULTS.md), the only
 * judged set there is, by recall@5 then nDCG@10 over RRF k 5..120 and dense weights 1..6,
 * fusing chunks: weights 1 and 1 gave R@5 0.714 against dense alone 0.771; 1 and 6 gave
 * 0.771, with R@1, R@10, MRR@10 and nDCG@10 above dense alone. On paraphrased questions
 * the BM25 list is mostly noise; with these weights it reorders and adds to the dense
 * list. Fusing documents (the default since) kept them: on the same questions it gave R@5
 * 0.786 with them, and a higher R@5 than fusing chunks at each of the 15 pairs of RRF k
 * (10, 30, 60) and dense weight (1 to 6) tried; R@10 was lower at 8 of them (by one to
 * three questions of 70). */
#define RET_W_LEXICAL_DEFAULT 1.0
#define RET_W_DENSE_DEFAULT   6.0
/* Candidates hybrid search takes from each list by default: max(4 k, this). On the same
 * questions, fusing documents, R@5 was 0.771 with 50 or 100 per list (dense alone's
 * figure) and 0.786 with 200 or 400: a list's 50 chunks are a dozen or two documents, and
 * a page that one list ranks low needs to be in it to be raised by the other. Deeper
 * lists cost little (the lexical query ranks every match whatever it returns; the
 * candidates of both lists are ids until fusion keeps k). */
#define RET_FUSE_DEPTH 200

/* What reciprocal rank fusion ranks (see the top). */
typedef enum ret_fuse_unit {
    RET_FUSE_DOCUMENT = 0, /* documents, at the rank of their best chunk (the default) */
    RET_FUSE_CHUNK,        /* chunks */
} ret_fuse_unit;

typedef struct ret_query {
    const char *text; /* the user's words (never FTS5 syntax here) */
    int k;            /* results wanted, 1..RET_SEARCH_MAX_K; 0: 10 */
    ret_mode mode;
    ret_filter filter;  /* all-zero: no filter */
    ret_fuse_unit fuse; /* hybrid: documents (default) or chunks */
    double rrf_k;       /* 0: RET_RRF_K_DEFAULT */
    double w_lexical;   /* weights of the two lists in the fusion; both 0: the defaults */
    double w_dense;
    double mmr_lambda;    /* 0: no MMR; (0, 1]: relevance weight of MMR (1 = plain order) */
    int depth;            /* candidates taken from each list; 0: max(4 k, RET_FUSE_DEPTH)
                             fusing, max(4 k, 50) for MMR over one list, else k */
    ret_match_mode match; /* lexical matching (search.h); default every term, then any */
    const char *hl_open;  /* snippet markers (search.h); NULL: "[" and "]" */
    const char *hl_close;
    const char *ellipsis; /* NULL: "..." */
    int snippet_tokens;   /* 0: 24 */
    /* The text's embedding by the dense side (ret_dense_dim floats, from ret_dense_embed),
     * when the caller made it beforehand, e.g. outside a lock it holds around the search;
     * NULL: the search embeds the text itself when it needs to. */
    const float *vec;
} ret_query;

typedef struct ret_result {
    int64_t chunk_id;
    int64_t document_id;
    double score;         /* the fused score (hybrid: its document's, fusing documents),
                             -bm25 (lexical), cosine (dense) */
    int lexical_rank;     /* 1-based rank in the lexical list; 0 when not in it */
    int dense_rank;       /* 1-based rank in the dense list; 0 when not in it */
    double lexical_score; /* -bm25, when lexical_rank > 0 */
    double dense_score;   /* cosine similarity, when dense_rank > 0 */
    const char *uri;
    const char *title;        /* "" when none */
    const char *heading_path; /* "" when none */
    const char *media_type;
    const char *text;             /* the whole chunk */
    const char *snippet;          /* highlighted text when it matched lexically, else the chunk's
                                     first words */
    int64_t char_start, char_end; /* the chunk's span in its document's text */
    int64_t mtime_ns;             /* the document's modification time */
} ret_result;

typedef struct ret_results {
    size_t n;
    ret_result *r;   /* n results, best first; every string owned by the results */
    ret_mode mode;   /* the mode that ran (never AUTO) */
    char note[256];  /* why AUTO fell back to lexical, else "" */
    double embed_ms; /* time spent embedding the query */
    double took_ms;  /* the whole search */
} ret_results;

/* Searches s. d (may be NULL) is the store's dense side for dense and hybrid modes;
 * dense or hybrid without it, or on a store without vectors, is LODE_ERR_UNSUPPORTED with
 * a message saying so. On success *out is owned by the caller (ret_results_free).
 * LODE_ERR_INVALID for a bad option (k, weights, lambda); other errors from the store or
 * the index, with ret_store_errmsg(s) set. */
lode_status ret_hybrid_search(ret_store *s, ret_dense *d, const ret_query *q,
                              ret_results **out /* OUT */);
void ret_results_free(ret_results *r);

/* Reciprocal rank fusion of two ranked lists of chunk ids (either may be empty), into
 * out (room for n_a + n_b), best first, ties by the better rank in either list. Returns
 * the number of fused ids. Exposed for tests and tools. */
size_t ret_rrf_fuse(const int64_t *a, size_t n_a, double w_a, const int64_t *b, size_t n_b,
                    double w_b, double rrf_k, int64_t *out /* OUT */, double *scores /* OUT */);

/* A candidate of a list fused per document: a chunk and its document. */
typedef struct ret_cand {
    int64_t chunk_id;
    int64_t document_id;
} ret_cand;

/* Reciprocal rank fusion per document of two ranked lists of chunks (either may be
 * empty; see the top): each list ranks documents by their best chunk there, and
 * score(d) = w_a / (rrf_k + rank_a(d)) + w_b / (rrf_k + rank_b(d)). Writes the fused
 * chunk ids into out (room for n_a + n_b): first each document's best chunk (the highest
 * chunk-level RRF score, as ret_rrf_fuse gives it), documents by score, ties by the
 * better document rank in either list, then by id; after them the documents' other
 * chunks, in the same document order and by their own score within a document.
 * scores[i] (may be NULL) is the score of out[i]'s document. Returns the number of chunks
 * written; 0 for none or when out of memory. Exposed for tests and tools. */
size_t ret_rrf_fuse_docs(const ret_cand *a, size_t n_a, double w_a, const ret_cand *b, size_t n_b,
                         double w_b, double rrf_k, int64_t *out /* OUT */,
                         double *scores /* OUT */);

/* MMR over n candidates with relevance rel[i] (on [0, 1]) and L2-normalized vectors
 * vecs[i * dim ..]; has_vec[i] = 0 marks a candidate without a vector, whose
 * similarity to the others counts 0 (has_vec NULL: every candidate has one). Writes
 * the chosen order of min(k, n) indexes into order and returns that count. */
size_t ret_mmr_order(size_t n, const double *rel, const float *vecs, const int *has_vec, int dim,
                     double lambda, size_t k, size_t *order /* OUT */);

/* "lexical", "dense", "hybrid", "auto"; and back (-1 for an unknown word). */
const char *ret_mode_name(ret_mode m);
int ret_mode_parse(const char *s);
/* RET_FUSE_* for "document" or "chunk"; -1 otherwise. */
int ret_fuse_parse(const char *s);

#endif
