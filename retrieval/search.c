/*
 * search.c: BM25 search over the store's FTS5 index, and the escaping that turns user text
 * into FTS5 queries that cannot be syntax errors. See search.h for the matching rules.
 */
#include "retrieval/search.h"
#include "retrieval/store_int.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The search statement; ?1 the FTS5 query, ?2..?5 snippet() arguments, ?6 the limit.
 * FTS5 consumes ORDER BY rank, so rows stream out best first and the snippet is made
 * only for the rows returned. SEARCH_LODE_SQL ranks with lode_bm25 (below) through rank
 * MATCH; SEARCH_FTS5_SQL is the fallback when lode_bm25 cannot be registered: FTS5's
 * bm25 with the schema's weights. Tried and slower on the SQLite documentation: choosing the top k
 * by ORDER BY lode_bm25(...) in SQL and reading their snippets in a second pass (p50 2.8 ms
 * against 1.2 ms; the second pass evaluates the query again), and one query ordering by
 * lode_bm25(...) directly (a snippet for every match). */
#define SEARCH_SELECT                                                                              \
    "SELECT c.id, c.document_id, chunks_fts.rank, d.uri, coalesce(d.title, ''), "                  \
    "c.heading_path, snippet(chunks_fts, 0, ?2, ?3, ?4, ?5), c.char_start, c.char_end "            \
    "FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "                                    \
    "JOIN documents d ON d.id = c.document_id WHERE chunks_fts MATCH ?1 "
static const char SEARCH_LODE_SQL[] =
    SEARCH_SELECT "AND chunks_fts.rank MATCH 'lode_bm25(" RET_FTS_WEIGHTS ")' "
                  "ORDER BY chunks_fts.rank LIMIT ?6";
static const char SEARCH_FTS5_SQL[] = SEARCH_SELECT "ORDER BY chunks_fts.rank LIMIT ?6";
/* The same with a document filter (?7..?10); separate statements, so that unfiltered
 * searches keep their plan. */
#define SEARCH_FILTER "AND " RET_FILTER_SQL("7", "8", "9", "10") " "
static const char SEARCH_LODE_F_SQL[] =
    SEARCH_SELECT SEARCH_FILTER "AND chunks_fts.rank MATCH 'lode_bm25(" RET_FTS_WEIGHTS ")' "
                                "ORDER BY chunks_fts.rank LIMIT ?6";
static const char SEARCH_FTS5_F_SQL[] =
    SEARCH_SELECT SEARCH_FILTER "ORDER BY chunks_fts.rank LIMIT ?6";

/* The same ranking for hits of ids only (ret_search_opts.ids_only): no snippet, no
 * document row unless the filter needs it. ?2..?5 are bound and unused, so that one
 * binding serves every statement. */
#define SEARCH_IDS_SELECT                                                                          \
    "SELECT c.id, c.document_id, chunks_fts.rank, ?2, ?3, ?4, ?5 FROM chunks_fts "                 \
    "JOIN chunks c ON c.id = chunks_fts.rowid "
#define SEARCH_RANKED                                                                              \
    "AND chunks_fts.rank MATCH 'lode_bm25(" RET_FTS_WEIGHTS ")' ORDER BY chunks_fts.rank LIMIT ?6"
static const char SEARCH_IDS_SQL[] = SEARCH_IDS_SELECT "WHERE chunks_fts MATCH ?1 " SEARCH_RANKED;
static const char SEARCH_IDS_F_SQL[] = SEARCH_IDS_SELECT
    "JOIN documents d ON d.id = c.document_id WHERE chunks_fts MATCH ?1 " SEARCH_FILTER
        SEARCH_RANKED;
/* One chunk's snippet for a query (?6 its rowid). */
static const char SNIPPET_SQL[] =
    "SELECT snippet(chunks_fts, 0, ?2, ?3, ?4, ?5) FROM chunks_fts WHERE chunks_fts MATCH ?1 "
    "AND rowid = ?6";

int ret_filter_empty(const ret_filter *f)
{
    return !f ||
           (!f->path_glob && !f->media_type && !f->modified_after_ns && !f->modified_before_ns);
}

void ret_filter_bind(sqlite3_stmt *q, int first, const struct ret_filter *f)
{
    if (f && f->path_glob)
        sqlite3_bind_text(q, first, f->path_glob, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, first);
    if (f && f->media_type)
        sqlite3_bind_text(q, first + 1, f->media_type, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, first + 1);
    if (f && f->modified_after_ns)
        sqlite3_bind_int64(q, first + 2, f->modified_after_ns);
    else
        sqlite3_bind_null(q, first + 2);
    if (f && f->modified_before_ns)
        sqlite3_bind_int64(q, first + 3, f->modified_before_ns);
    else
        sqlite3_bind_null(q, first + 3);
}

/* ---- query escaping ----------------------------------------------------------------- */
/* Length of the valid UTF-8 sequence at p (n bytes left), or 0 when it is invalid. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    size_t len = p[0] < 0x80   ? 1
                 : p[0] < 0xc2 ? 0
                 : p[0] < 0xe0 ? 2
                 : p[0] < 0xf0 ? 3
                 : p[0] < 0xf5 ? 4
                               : 0;
    if (len == 0 || len > n) return 0;
    return lode_utf8_valid_prefix((const char *)p, len) == len ? len : 0;
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* 1 when a term holds a word character: an ASCII letter or digit, or any non-ASCII
 * character (unicode61 decides about those; a term of non-ASCII symbols only becomes an
 * empty phrase, which FTS5 ignores). */
static int has_word(const char *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (is_alnum((unsigned char)t[i]) || (unsigned char)t[i] >= 0x80) return 1;
    return 0;
}

typedef lode_status (*term_fn)(void *ctx, const char *t, size_t n);

/* Splits user text into terms (words, or "quoted phrases") and calls fn on each one that
 * holds a word character, at most RET_SEARCH_MAX_TERMS times. */
static lode_status split_terms(const char *text, size_t len, term_fn fn, void *ctx)
{
    size_t terms = 0;
    lode_status st = LODE_OK;
    char term[RET_SEARCH_TERM_BYTES];
    size_t tl = 0;
    int in_phrase = 0;
    const unsigned char *p = (const unsigned char *)(text ? text : "");
    if (!text) len = 0;

    for (size_t i = 0; i <= len && !st && terms < RET_SEARCH_MAX_TERMS;) {
        size_t sl = i < len ? utf8_seq(p + i, len - i) : 0;
        int quote = i < len && p[i] == '"';
        /* whitespace, control bytes and invalid UTF-8 separate words (and are spaces
         * inside a phrase); a quote starts or ends a phrase */
        int sep = i == len || quote || sl == 0 || p[i] < 0x20 || p[i] == 0x7f || is_space(p[i]);
        if (sep && in_phrase && !quote && i < len) {
            if (tl < sizeof term) term[tl++] = ' ';
        } else if (sep) {
            if (tl && has_word(term, tl)) {
                st = fn(ctx, term, tl);
                terms++;
            }
            tl = 0;
            if (quote) in_phrase = !in_phrase;
        } else if (tl + sl <= sizeof term) { /* long terms are cut on a character boundary */
            memcpy(term + tl, p + i, sl);
            tl += sl;
        }
        i += sl ? sl : 1;
    }
    return st;
}

/* Appends one term as a quoted FTS5 phrase, joined to the ones before it. */
static lode_status emit_term(lode_buf *out, int any, size_t index, const char *t, size_t n)
{
    lode_status st = LODE_OK;
    if (index) st = lode_buf_puts(out, any ? " OR " : " ");
    if (!st) st = lode_buf_putc(out, '"');
    for (size_t i = 0; !st && i < n; i++) {
        /* the term cannot hold a '"' (it delimits phrases), but doubling it keeps this
         * safe whatever the splitting does */
        st = t[i] == '"' ? lode_buf_puts(out, "\"\"") : lode_buf_putc(out, t[i]);
    }
    return st ? st : lode_buf_putc(out, '"');
}

typedef struct emit_ctx {
    lode_buf *out;
    int any;
    size_t terms;
} emit_ctx;

static lode_status emit_cb(void *ctx, const char *t, size_t n)
{
    emit_ctx *e = ctx;
    lode_status st = emit_term(e->out, e->any, e->terms, t, n);
    if (!st) e->terms++;
    return st;
}

lode_status ret_fts_query(const char *text, size_t len, int any, lode_buf *out, size_t *n_terms)
{
    emit_ctx e = {out, any, 0};
    size_t start_len = out->len;
    lode_status st = split_terms(text, len, emit_cb, &e);
    if (st) {
        out->len = start_len;
        if (out->data) out->data[start_len] = 0;
        e.terms = 0;
    }
    if (n_terms) *n_terms = e.terms;
    return st;
}

/* ---- common terms ------------------------------------------------------------------- */
/* Ranking costs a step per chunk that a query's terms match, and FTS5's AND and OR both
 * walk the whole list of every term (a 13-word question with "the" and "of" in it took
 * 7 ms to find that no chunk of 100k holds all its words, 0.4 ms without its five most
 * common words; the any-word fill-up of such questions ranked most of the 100k chunks,
 * 2.7 s). Yet common terms weigh little: BM25's IDF, log((N - n + 0.5) / (n + 0.5)), is
 * about 0.5 for a term in a quarter of the chunks against 5 to 9 for the rare words that
 * decide a ranking, and FTS5 clamps it to 1e-6 above N/2. So in stores of at least
 * RET_COMMON_MIN_ROWS chunks, queries of several terms leave out (1) terms in more than
 * half of the chunks, then (2) taking the others rarest first, every term that would bring
 * the chunks matched by the terms kept over RET_SEARCH_QUERY_POSTINGS. The rarest term is always
 * kept (of a query of common words only, the one in fewest chunks). Both the every-term
 * query and the any-term fill-up of RET_MATCH_AUTO, and RET_MATCH_ANY, search the terms
 * kept; RET_MATCH_ALL keeps every term, as asked. Small stores are fast anyway, and there
 * a half is few chunks, so they keep every term.
 *
 * A term's count is that of its own query ("word" or "a phrase"), counted up to
 * RET_SEARCH_QUERY_POSTINGS + 1 (FTS5 streams a single term's rows in rowid order, so a capped
 * count costs what it counts: 0.2-0.5 ms), and kept until the store changes. Terms
 * counted to the cap are ordered by the rowid at which they reached it, the later the
 * rarer (an estimate that holds when rowids do not follow the words, as in a collection
 * of many documents; exact counts walked whole lists, 10 ms for "the" in 100k chunks).
 * RET_SEARCH_QUERY_POSTINGS, measured on the 70 questions of tests/data/eval (k = 50, real-time
 * priority, 2-core box): over 100k synthetic chunks of the documentation's words, lexical
 * p50 8.5 ms with 4000, 12 ms with 8000 (every term below N/2 kept: about 130 ms of CPU);
 * over the SQLite documentation (10.6k chunks), recall@5/@10 and MRR@10 were 0.586/0.671/
 * 0.398 keeping every term below N/2 (p50 12 ms, p99 39 ms), 0.557/0.671/0.408 with 8000
 * (p50 8 ms, p99 14 ms), 0.543/0.586/0.385 with 4000, the same as all from 16000 on.
 */
#define RET_COMMON_MIN_ROWS 1000

#define DF_CACHE         256       /* slots of the term count cache */
#define DF_TERM_BYTES    48        /* longer terms are not cached */
#define LEN_CACHE_MAX_ID (1 << 26) /* rowids above are not cached (256 MiB of cache) */

struct ret_search_state {
    int ready;            /* 1: set up, 0: not tried yet, -1: unavailable */
    int bm25;             /* lode_bm25 is registered on the connection */
    int64_t rows;         /* chunks in the index, cached */
    int64_t rows_version; /* PRAGMA data_version when rows was read */
    int64_t rows_changes; /* sqlite3_total_changes64 then */
    struct {
        char term[DF_TERM_BYTES];
        int len;       /* 0: empty slot */
        int64_t df;    /* chunks counted, up to the cap */
        int64_t reach; /* the rowid of the last one counted */
    } dfc[DF_CACHE];   /* chunk counts of terms, kept while rows stays valid */
    uint32_t *len;     /* (len_cap) tokens of chunk rowid, + 1; 0 = not known yet */
    size_t len_cap;
    int64_t len_version; /* PRAGMA data_version the lengths belong to */
};

void ret_search_state_free(struct ret_search_state *ss)
{
    if (!ss) return;
    lode_free(ss->len);
    lode_free(ss);
}

/* ---- ranking ------------------------------------------------------------------------ */
/* lode_bm25: the same BM25 as FTS5's bm25() (k1 = 1.2, b = 0.75, IDF clamped at 1e-6,
 * column weights as arguments, the negated score so that smaller ranks first), with one
 * difference: a row's length in tokens comes from a per-handle cache instead of FTS5's
 * docsize table. FTS5 reads that table with one SQL lookup per matching row, which was
 * two thirds of the ranking time (measured on the SQLite documentation, 10.6k chunks,
 * the query "table" matching 3.5k of them: bm25 4.9 ms, of which xColumnSize 3.3 ms).
 * A length is read through xColumnSize the first time its row is ranked and kept.
 * lode never rewrites a chunk in place (a changed document gets new chunk ids), so a
 * kept length stays right; the cache is dropped whenever another connection commits,
 * in case that was an UPDATE by hand. */
typedef struct bm25_query {
    int nphrase;
    double avgdl;
    double *idf;  /* (nphrase) */
    double *freq; /* (nphrase) the current row's weighted hits */
} bm25_query;

static int count_rows_cb(const Fts5ExtensionApi *api, Fts5Context *f, void *ctx)
{
    (*(int64_t *)ctx)++;
    return SQLITE_OK;
}

static void bm25_query_free(void *p)
{
    bm25_query *q = p;
    if (!q) return;
    lode_free(q->idf);
    lode_free(q);
}

/* The per-query part: average row length and each phrase's IDF, once per query. */
static bm25_query *bm25_query_make(const Fts5ExtensionApi *api, Fts5Context *f, int *rc)
{
    int np = api->xPhraseCount(f);
    sqlite3_int64 nrow = 0, ntok = 0;
    bm25_query *q = lode_calloc(1, sizeof *q);
    if (!q || !(q->idf = lode_calloc((size_t)(np > 0 ? np : 1) * 2, sizeof(double)))) {
        bm25_query_free(q);
        *rc = SQLITE_NOMEM;
        return NULL;
    }
    q->nphrase = np;
    q->freq = q->idf + (np > 0 ? np : 1);
    if ((*rc = api->xRowCount(f, &nrow)) || (*rc = api->xColumnTotalSize(f, -1, &ntok))) {
        bm25_query_free(q);
        return NULL;
    }
    q->avgdl = nrow > 0 ? (double)ntok / (double)nrow : 1.0;
    if (q->avgdl <= 0) q->avgdl = 1.0;
    for (int i = 0; i < np; i++) {
        int64_t hits = 0;
        if ((*rc = api->xQueryPhrase(f, i, &hits, count_rows_cb))) {
            bm25_query_free(q);
            return NULL;
        }
        double idf = log(((double)nrow - (double)hits + 0.5) / ((double)hits + 0.5));
        q->idf[i] = idf <= 0.0 ? 1e-6 : idf;
    }
    return q;
}

/* The current row's length in tokens, all columns together. */
static int row_length(struct ret_search_state *ss, const Fts5ExtensionApi *api, Fts5Context *f,
                      int *len)
{
    sqlite3_int64 id = api->xRowid(f);
    if (id > 0 && (size_t)id < ss->len_cap && ss->len[id]) {
        *len = (int)(ss->len[id] - 1);
        return SQLITE_OK;
    }
    int rc = api->xColumnSize(f, -1, len);
    if (rc || id <= 0 || id >= LEN_CACHE_MAX_ID) return rc;
    if ((size_t)id >= ss->len_cap) {
        size_t cap = ss->len_cap ? ss->len_cap : 4096;
        while (cap <= (size_t)id) cap *= 2;
        uint32_t *nl = lode_realloc(ss->len, cap * sizeof *nl);
        if (!nl) return SQLITE_OK; /* no cache, still a right answer */
        memset(nl + ss->len_cap, 0, (cap - ss->len_cap) * sizeof *nl);
        ss->len = nl;
        ss->len_cap = cap;
    }
    ss->len[id] = (uint32_t)*len + 1;
    return SQLITE_OK;
}

static void lode_bm25(const Fts5ExtensionApi *api, Fts5Context *f, sqlite3_context *ctx, int nval,
                      sqlite3_value **vals)
{
    struct ret_search_state *ss = api->xUserData(f);
    int rc = SQLITE_OK;
    bm25_query *q = api->xGetAuxdata(f, 0);
    if (!q) {
        if (!(q = bm25_query_make(api, f, &rc))) goto fail;
        if ((rc = api->xSetAuxdata(f, q, bm25_query_free))) goto fail; /* it freed q */
    }
    for (int i = 0; i < q->nphrase; i++) q->freq[i] = 0.0;
    int ninst = 0;
    if ((rc = api->xInstCount(f, &ninst))) goto fail;
    for (int i = 0; i < ninst; i++) {
        int phrase = 0, col = 0, off = 0;
        if ((rc = api->xInst(f, i, &phrase, &col, &off))) goto fail;
        if (phrase >= 0 && phrase < q->nphrase)
            q->freq[phrase] += col < nval ? sqlite3_value_double(vals[col]) : 1.0;
    }
    int len = 0;
    if ((rc = row_length(ss, api, f, &len))) goto fail;
    const double k1 = 1.2, b = 0.75;
    double score = 0.0, norm = k1 * (1.0 - b + b * (double)len / q->avgdl);
    for (int i = 0; i < q->nphrase; i++)
        score += q->idf[i] * (q->freq[i] * (k1 + 1.0)) / (q->freq[i] + norm);
    sqlite3_result_double(ctx, -score);
    return;
fail:
    sqlite3_result_error_code(ctx, rc);
}

/* Drops the cached lengths when another connection has committed since they were read. */
static void lengths_check(ret_store *s)
{
    struct ret_search_state *ss = s->search;
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_DATA_VERSION, "PRAGMA data_version");
    if (!q || sqlite3_step(q) != SQLITE_ROW) return;
    int64_t version = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    if (version != ss->len_version && ss->len_cap)
        memset(ss->len, 0, ss->len_cap * sizeof *ss->len);
    ss->len_version = version;
}

static fts5_api *fts5_api_of(sqlite3 *db)
{
    fts5_api *api = NULL;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &q, NULL) != SQLITE_OK) return NULL;
    sqlite3_bind_pointer(q, 1, (void *)&api, "fts5_api_ptr", NULL);
    sqlite3_step(q);
    sqlite3_finalize(q);
    return api;
}

/* Sets up the state once per handle; returns 1 when it can be used. */
static int state_ready(ret_store *s)
{
    if (!s->search && !(s->search = lode_calloc(1, sizeof *s->search))) return 0;
    struct ret_search_state *ss = s->search;
    if (ss->ready) return ss->ready > 0;
    ss->ready = -1;
    fts5_api *api = fts5_api_of(s->db);
    if (!api) {
        LODE_DEBUG("search: no FTS5 API; FTS5's bm25 ranks and every term stays in queries");
        return 0;
    }
    ss->bm25 = api->xCreateFunction(api, "lode_bm25", ss, lode_bm25, NULL) == SQLITE_OK;
    ss->rows = -1;
    ss->ready = 1;
    return 1;
}

/* The number of chunks, re-read only after a commit here or elsewhere. -1 on error. */
static int64_t indexed_rows(ret_store *s)
{
    struct ret_search_state *ss = s->search;
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_DATA_VERSION, "PRAGMA data_version");
    if (!q || sqlite3_step(q) != SQLITE_ROW) return -1;
    int64_t version = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    int64_t changes = sqlite3_total_changes64(s->db);
    if (ss->rows >= 0 && version == ss->rows_version && changes == ss->rows_changes)
        return ss->rows;
    for (int i = 0; i < DF_CACHE; i++) ss->dfc[i].len = 0; /* counts may have changed */
    q = ret_store_stmt(s, RET_STMT_ROW_COUNT, "SELECT count(*) FROM chunks");
    if (!q || sqlite3_step(q) != SQLITE_ROW) return -1;
    ss->rows = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    ss->rows_version = version;
    ss->rows_changes = changes;
    return ss->rows;
}

/* The chunks matching one term, counted up to cap (FTS5 streams them in rowid order, so
 * this costs what it counts). When the count reaches the cap, *reach (may be NULL) is the
 * rowid of the last one counted: the later, the sparser the term. -1 on error. */
static int64_t term_rows(ret_store *s, const char *t, size_t n, int64_t cap, int64_t *reach)
{
    struct ret_search_state *ss = s->search;
    uint32_t hash = 2166136261u;
    for (size_t i = 0; i < n; i++) hash = (hash ^ (unsigned char)t[i]) * 16777619u;
    int slot = (int)(hash % DF_CACHE), cacheable = n < DF_TERM_BYTES;
    if (cacheable && ss->dfc[slot].len == (int)n && !memcmp(ss->dfc[slot].term, t, n)) {
        if (reach) *reach = ss->dfc[slot].reach;
        return ss->dfc[slot].df;
    }
    lode_buf fts = LODE_BUF_INIT;
    if (emit_term(&fts, 0, 0, t, n)) {
        lode_buf_free(&fts);
        return -1;
    }
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_TERM_COUNT,
                                     "SELECT count(*), max(r) FROM (SELECT rowid AS r FROM "
                                     "chunks_fts WHERE chunks_fts MATCH ?1 LIMIT ?2)");
    int64_t df = -1, last = 0;
    if (q) {
        sqlite3_bind_text(q, 1, fts.data, (int)fts.len, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, cap);
        if (sqlite3_step(q) == SQLITE_ROW) {
            df = sqlite3_column_int64(q, 0);
            last = sqlite3_column_int64(q, 1);
        }
        sqlite3_reset(q);
        sqlite3_clear_bindings(q);
    }
    lode_buf_free(&fts);
    if (reach) *reach = last;
    if (cacheable && df >= 0) {
        memcpy(ss->dfc[slot].term, t, n);
        ss->dfc[slot].len = (int)n;
        ss->dfc[slot].reach = last;
        ss->dfc[slot].df = df;
    }
    return df;
}

typedef struct term_list {
    size_t n;
    const char *p[RET_SEARCH_MAX_TERMS];
    size_t len[RET_SEARCH_MAX_TERMS];
    int common[RET_SEARCH_MAX_TERMS];
    lode_buf text; /* the terms' bytes, one after another */
} term_list;

static lode_status collect_cb(void *ctx, const char *t, size_t n)
{
    term_list *l = ctx;
    if (l->n >= RET_SEARCH_MAX_TERMS) return LODE_OK;
    l->len[l->n] = n;
    l->p[l->n] = (const char *)(uintptr_t)l->text.len; /* an offset until the end */
    l->n++;
    return lode_buf_append(&l->text, t, n);
}

/* Splits the query into l and marks the common terms (see above). */
static lode_status collect_terms(const char *query, term_list *l)
{
    lode_status st = split_terms(query, strlen(query), collect_cb, l);
    if (st) return st;
    for (size_t i = 0; i < l->n; i++) l->p[i] = l->text.data + (uintptr_t)l->p[i];
    return LODE_OK;
}

/* Marks the terms a query leaves out (see above) in l->common. */
static void mark_common(ret_store *s, term_list *l)
{
    if (l->n < 2 || !state_ready(s)) return;
    int64_t rows = indexed_rows(s);
    if (rows < RET_COMMON_MIN_ROWS) return;
    const int64_t cap = RET_SEARCH_QUERY_POSTINGS + 1;
    int64_t df[RET_SEARCH_MAX_TERMS], reach[RET_SEARCH_MAX_TERMS];
    size_t order[RET_SEARCH_MAX_TERMS], n = 0;
    for (size_t i = 0; i < l->n; i++) {
        df[i] = term_rows(s, l->p[i], l->len[i], cap, &reach[i]);
        l->common[i] = 0;
        if (df[i] < 0) continue; /* unknown: kept */
        /* insertion sort, rarest first; terms at the cap by how late they reached it */
        size_t j = n++;
        for (; j > 0; j--) {
            size_t o = order[j - 1];
            if (df[o] < df[i] || (df[o] == df[i] && (df[i] < cap || reach[o] >= reach[i]))) break;
            order[j] = o;
        }
        order[j] = i;
        l->common[i] = 1;
    }
    int64_t postings = 0;
    int kept = n < l->n; /* an unknown term is kept */
    for (size_t j = 0; j < n; j++) {
        size_t i = order[j];
        /* counts below the cap are exact */
        if ((df[i] < cap && df[i] * 2 > rows) || postings + df[i] > RET_SEARCH_QUERY_POSTINGS)
            continue;
        postings += df[i];
        l->common[i] = 0;
        kept = 1;
    }
    if (!kept && n) l->common[order[0]] = 0; /* common words only: the rarest one */
}

/* The FTS5 query of the terms that are not common, joined by OR (any) or AND. */
static lode_status build_query(const term_list *l, int any, lode_buf *out, size_t *n_terms)
{
    size_t k = 0;
    lode_status st = LODE_OK;
    lode_buf_reset(out);
    for (size_t i = 0; i < l->n && !st; i++)
        if (!l->common[i]) st = emit_term(out, any, k++, l->p[i], l->len[i]);
    *n_terms = k;
    return st;
}

/* ---- search ------------------------------------------------------------------------- */
void ret_hits_free(ret_hits *h)
{
    if (!h) return;
    for (size_t i = 0; i < h->n; i++) {
        lode_free((char *)h->hit[i].uri);
        lode_free((char *)h->hit[i].title);
        lode_free((char *)h->hit[i].heading_path);
        lode_free((char *)h->hit[i].snippet);
    }
    lode_free(h->hit);
    lode_free(h->fts);
    lode_free(h);
}

static char *col_dup(sqlite3_stmt *q, int col)
{
    const char *t = (const char *)sqlite3_column_text(q, col);
    return lode_strdup(t ? t : "");
}

/* Fills hit x from a row of the search statement (of ids only: the first three columns). */
static lode_status fill_hit(ret_store *s, sqlite3_stmt *q, int all_terms, int ids_only, ret_hit *x)
{
    memset(x, 0, sizeof *x);
    x->chunk_id = sqlite3_column_int64(q, 0);
    x->document_id = sqlite3_column_int64(q, 1);
    x->score = -sqlite3_column_double(q, 2);
    x->all_terms = all_terms;
    if (ids_only) return LODE_OK;
    x->uri = col_dup(q, 3);
    x->title = col_dup(q, 4);
    x->heading_path = col_dup(q, 5);
    x->snippet = col_dup(q, 6);
    x->char_start = sqlite3_column_int64(q, 7);
    x->char_end = sqlite3_column_int64(q, 8);
    if (!x->uri || !x->title || !x->heading_path || !x->snippet)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory in search");
    return LODE_OK;
}

static lode_status search_failed(ret_store *s, int rc, int raw, const char *fts)
{
    if (raw && (rc & 0xff) == SQLITE_ERROR)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID, "invalid FTS5 query %s: %s",
                           fts, sqlite3_errmsg(s->db));
    return ret_store_dberr(s, rc, "searching");
}

static int is_dup(const ret_hits *h, size_t have, int64_t id)
{
    for (size_t i = 0; i < have; i++)
        if (h->hit[i].chunk_id == id) return 1;
    return 0;
}

static void bind_snippet(sqlite3_stmt *q, const ret_search_opts *o)
{
    sqlite3_bind_text(q, 2, o->hl_open, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, o->hl_close, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, o->ellipsis, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 5, o->snippet_tokens);
}

/* Runs one FTS5 query, appending up to k - h->n hits whose chunk is not in h yet. The
 * rows wanted are at most k: the ones skipped as already there are among them. */
static lode_status run_query(ret_store *s, const char *fts, const ret_search_opts *o, int k,
                             int all_terms, int raw, ret_hits *h)
{
    size_t have = h->n;
    int rc = SQLITE_DONE;
    lode_status st = LODE_OK;
    int lode_rank = state_ready(s) && s->search->bm25;
    if (lode_rank) lengths_check(s);
    int filtered = !ret_filter_empty(o->filter);
    int ids_only = o->ids_only && lode_rank; /* FTS5's bm25 ranks with the full statement */
    sqlite3_stmt *q =
        ids_only    ? (filtered ? ret_store_stmt(s, RET_STMT_SEARCH_IDS_F, SEARCH_IDS_F_SQL)
                                : ret_store_stmt(s, RET_STMT_SEARCH_IDS, SEARCH_IDS_SQL))
        : filtered  ? (lode_rank ? ret_store_stmt(s, RET_STMT_SEARCH_F, SEARCH_LODE_F_SQL)
                                 : ret_store_stmt(s, RET_STMT_SEARCH_FTS5_F, SEARCH_FTS5_F_SQL))
        : lode_rank ? ret_store_stmt(s, RET_STMT_SEARCH, SEARCH_LODE_SQL)
                    : ret_store_stmt(s, RET_STMT_SEARCH_FTS5, SEARCH_FTS5_SQL);
    if (!q) return ret_stmt_failed(s);
    if (filtered) ret_filter_bind(q, 7, o->filter);
    sqlite3_bind_text(q, 1, fts, -1, SQLITE_STATIC);
    bind_snippet(q, o);
    sqlite3_bind_int(q, 6, k);
    while (!st && h->n < (size_t)k && (rc = sqlite3_step(q)) == SQLITE_ROW)
        if (!is_dup(h, have, sqlite3_column_int64(q, 0)))
            st = fill_hit(s, q, all_terms, ids_only, &h->hit[h->n++]);
    if (!st && h->n < (size_t)k && rc != SQLITE_DONE) st = search_failed(s, rc, raw, fts);
    sqlite3_reset(q);
    return st;
}

lode_status ret_search_bm25(ret_store *s, const char *query, const ret_search_opts *opts,
                            ret_hits **out)
{
    *out = NULL;
    ret_search_opts o = {0};
    if (opts) o = *opts;
    if (o.k == 0) o.k = 10;
    if (o.snippet_tokens == 0) o.snippet_tokens = 24;
    if (!o.hl_open) o.hl_open = "[";
    if (!o.hl_close) o.hl_close = "]";
    if (!o.ellipsis) o.ellipsis = "...";
    if (o.k < 0 || o.k > RET_SEARCH_MAX_K)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID, "k must be 1..%d, not %d",
                           RET_SEARCH_MAX_K, o.k);
    if (o.snippet_tokens < 1 || o.snippet_tokens > 64)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID,
                           "snippet length must be 1..64 tokens, not %d", o.snippet_tokens);
    if (!query) query = "";

    lode_status st = LODE_OK;
    lode_buf fts = LODE_BUF_INIT;
    term_list tl;
    tl.n = 0;
    tl.text = (lode_buf)LODE_BUF_INIT;
    memset(tl.common, 0, sizeof tl.common);
    ret_hits *h = lode_calloc(1, sizeof *h);
    if (!h || !(h->hit = lode_calloc((size_t)o.k, sizeof *h->hit))) {
        st = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory in search");
        goto out;
    }
    if (o.raw) {
        size_t ql = strlen(query);
        if (lode_utf8_valid_prefix(query, ql) != ql) {
            st = lode_seterr(s->err, sizeof s->err, LODE_ERR_UTF8,
                             "the raw FTS5 query is not valid UTF-8");
            goto out;
        }
        if (ql == 0) goto out; /* nothing to match; FTS5 would call it a syntax error */
        st = run_query(s, query, &o, o.k, 1, 1, h);
        if (!st && !(h->fts = lode_strdup(query)))
            st = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory in search");
        goto out;
    }
    size_t terms = 0;
    int any = o.mode == RET_MATCH_ANY;
    if ((st = collect_terms(query, &tl))) {
        lode_seterr(s->err, sizeof s->err, st, "out of memory for the search query");
        goto out;
    }
    /* common terms are left out, unless every term was asked for */
    if (o.mode != RET_MATCH_ALL) mark_common(s, &tl);
    if ((st = build_query(&tl, any, &fts, &terms))) {
        lode_seterr(s->err, sizeof s->err, st, "out of memory for the search query");
        goto out;
    }
    if (terms == 0) goto out;
    if ((st = run_query(s, fts.data, &o, o.k, !any || terms == 1, 0, h))) goto out;
    if (o.mode == RET_MATCH_AUTO && terms > 1 && h->n < (size_t)o.k) {
        if ((st = build_query(&tl, 1, &fts, &terms))) {
            lode_seterr(s->err, sizeof s->err, st, "out of memory for the search query");
            goto out;
        }
        /* the OR query returns the AND hits again; run_query skips those */
        if ((st = run_query(s, fts.data, &o, o.k, 0, 0, h))) goto out;
    }
    /* the terms searched, joined by OR: every hit matches it, and its snippet marks the
     * same words as the query that found it */
    if (!any && terms > 1 && (st = build_query(&tl, 1, &fts, &terms))) {
        lode_seterr(s->err, sizeof s->err, st, "out of memory for the search query");
        goto out;
    }
    if (!(h->fts = lode_buf_take(&fts)))
        st = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory in search");
out:
    lode_buf_free(&tl.text);
    lode_buf_free(&fts);
    if (st) {
        ret_hits_free(h);
        return st;
    }
    *out = h;
    return LODE_OK;
}

lode_status ret_search_snippet(ret_store *s, const char *fts, int64_t chunk_id,
                               const ret_search_opts *opts, char **out)
{
    *out = NULL;
    ret_search_opts o = {0};
    if (opts) o = *opts;
    if (o.snippet_tokens == 0) o.snippet_tokens = 24;
    if (!o.hl_open) o.hl_open = "[";
    if (!o.hl_close) o.hl_close = "]";
    if (!o.ellipsis) o.ellipsis = "...";
    if (o.snippet_tokens < 1 || o.snippet_tokens > 64)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID,
                           "snippet length must be 1..64 tokens, not %d", o.snippet_tokens);
    if (!fts || !*fts)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_NOTFOUND, "no query to mark");
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_SNIPPET, SNIPPET_SQL);
    if (!q) return ret_stmt_failed(s);
    sqlite3_bind_text(q, 1, fts, -1, SQLITE_STATIC);
    bind_snippet(q, &o);
    sqlite3_bind_int64(q, 6, chunk_id);
    int rc = sqlite3_step(q);
    lode_status st = LODE_OK;
    if (rc == SQLITE_ROW) {
        if (!(*out = col_dup(q, 0)))
            st = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory in search");
    } else if (rc == SQLITE_DONE) {
        st = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOTFOUND,
                         "chunk %lld does not match the query", (long long)chunk_id);
    } else {
        st = search_failed(s, rc, 1, fts);
    }
    sqlite3_reset(q);
    return st;
}
