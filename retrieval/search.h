/*
 * search.h: lexical search over the store, BM25 ranking of chunks through FTS5, with the
 * document, heading path and a highlighted snippet of every hit.
 *
 * User text never reaches FTS5 as syntax: ret_fts_query turns any bytes into a query of
 * quoted phrases (a word, or a "quoted phrase" the user typed), so quotes, parentheses,
 * *, ^, :, NEAR, AND/OR/NOT, invalid UTF-8 or an empty string can never be a syntax
 * error. The raw option passes FTS5 syntax through for those who want it.
 *
 * Matching (RET_MATCH_AUTO, the default): chunks that contain every term come first, in
 * BM25 order; when they are fewer than k, chunks that contain any term fill the rest, in
 * BM25 order too (their hit says all_terms = 0). Scores are comparable between the two
 * groups (the same BM25 over the same terms), but the order puts complete matches first.
 *
 * Common words cost time for every chunk they are in and weigh little in BM25 (FTS5 gives
 * a word in more than half of all chunks no weight at all). In stores of 1000 chunks or
 * more, queries of several words leave out such words, and then, taking the others rarest
 * first, each word that would bring the chunks the words kept match together over
 * RET_SEARCH_QUERY_POSTINGS: "the write-ahead log" searches chunks with "write-ahead" and
 * "log", not every chunk with "the", and a long question is searched by its rarer words.
 * The rarest word is always kept. RET_MATCH_ALL keeps every word, as asked.
 */
#ifndef LODE_RETRIEVAL_SEARCH_H
#define LODE_RETRIEVAL_SEARCH_H

#include "common/lode.h"
#include "retrieval/store.h"

#include <stddef.h>
#include <stdint.h>

typedef enum ret_match_mode {
    RET_MATCH_AUTO = 0, /* every term, then any term to fill up to k */
    RET_MATCH_ALL,      /* every term (implicit AND) */
    RET_MATCH_ANY,      /* any term (OR) */
} ret_match_mode;

#define RET_SEARCH_MAX_K      1000
#define RET_SEARCH_MAX_TERMS  64  /* terms past this are ignored */
#define RET_SEARCH_TERM_BYTES 256 /* longer terms are cut */
/* Chunks matched by a query's terms together (their counts summed) above which its most
 * frequent terms are left out (see the top). */
#define RET_SEARCH_QUERY_POSTINGS 8000

/* Filters on a hit's document; every field set must hold. */
typedef struct ret_filter {
    const char *path_glob;      /* SQLite GLOB on the document's URI (e.g. "*lang_*.html");
                                   NULL: any */
    const char *media_type;     /* the document's media type ("text/html"), or a prefix
                                   ending in '/' ("text/"); NULL: any */
    int64_t modified_after_ns;  /* the source's mtime >= this (ns since the epoch); 0: any */
    int64_t modified_before_ns; /* the source's mtime < this; 0: any */
} ret_filter;

/* 1 when f is NULL or sets nothing. */
int ret_filter_empty(const ret_filter *f);

typedef struct ret_search_opts {
    int k;                    /* hits wanted, 1..RET_SEARCH_MAX_K; 0 means 10 */
    int raw;                  /* the query is FTS5 syntax, passed through as is */
    ret_match_mode mode;      /* ignored when raw */
    const char *hl_open;      /* before each matched term in the snippet; NULL means "[" */
    const char *hl_close;     /* after it; NULL means "]" */
    const char *ellipsis;     /* where the snippet cuts text; NULL means "..." */
    int snippet_tokens;       /* snippet length in tokens, 1..64; 0 means 24 */
    const ret_filter *filter; /* only hits whose document passes it; NULL: all */
    int ids_only;             /* hits carry chunk_id, document_id, score and all_terms only
                                 (uri, title, heading_path and snippet NULL, char_start and
                                 char_end 0): for callers that keep a few of many hits and
                                 make their snippets with ret_search_snippet */
} ret_search_opts;

typedef struct ret_hit {
    int64_t chunk_id;
    int64_t document_id;
    double score;             /* -bm25: higher is better */
    int all_terms;            /* 1 when the chunk matched every term searched (always 1
                                 when raw; common words left out do not count) */
    const char *uri;          /* the document's source */
    const char *title;        /* the document's title, "" when it has none */
    const char *heading_path; /* headings above the chunk joined by " > ", or "" */
    const char *snippet;      /* matched text with hl_open/hl_close around terms */
    int64_t char_start;       /* the chunk's span in its document's text */
    int64_t char_end;
} ret_hit;

typedef struct ret_hits {
    size_t n;
    ret_hit *hit; /* n hits, best first */
    char *fts;    /* the FTS5 query that every hit matches (the terms searched, joined by
                     OR; the raw query when raw), for ret_search_snippet; NULL when
                     nothing was searched */
} ret_hits;

/* Searches the store. On success *out holds 0..k hits (freed with ret_hits_free; it owns
 * every string in them). A query with no searchable term (empty, only punctuation) gives
 * 0 hits. Returns LODE_ERR_INVALID for a bad option or, with raw, an FTS5 syntax error
 * (the message says where); LODE_ERR_BUSY/LODE_ERR_DB for store trouble. Statements are
 * prepared once per store handle and reused. */
lode_status ret_search_bm25(ret_store *s, const char *query, const ret_search_opts *opts,
                            ret_hits **out /* OUT */);
void ret_hits_free(ret_hits *h);

/* The snippet of chunk_id's text for the FTS5 query fts (a ret_hits' fts), as
 * ret_search_bm25 makes it with opts' markers, ellipsis and length (the rest of opts is
 * ignored; NULL: the defaults). On success *out is the caller's (lode_free).
 * LODE_ERR_NOTFOUND when the chunk does not match fts (or no longer exists). */
lode_status ret_search_snippet(ret_store *s, const char *fts, int64_t chunk_id,
                               const ret_search_opts *opts, char **out /* OUT */);

/* Turns user text (len bytes, any content) into a safe FTS5 query appended to out: each
 * word (split on whitespace) or "double-quoted phrase" becomes one quoted FTS5 phrase;
 * control bytes and invalid UTF-8 are separators; terms with no ASCII letter or digit
 * and no non-ASCII character are dropped (a term of non-ASCII symbols only becomes an
 * empty phrase, which FTS5 ignores); terms are cut at RET_SEARCH_TERM_BYTES bytes (on a
 * character boundary); at most RET_SEARCH_MAX_TERMS terms. any != 0 joins them with OR, otherwise
 * with spaces (implicit AND). *n_terms (may be NULL) receives the number of terms; with 0 terms
 * nothing is appended. Returns LODE_ERR_NOMEM/LODE_ERR_LIMIT from the buffer. */
lode_status ret_fts_query(const char *text, size_t len, int any, lode_buf *out,
                          size_t *n_terms /* OUT */);

#endif
