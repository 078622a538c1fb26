/*
 * search.c: BM25 search over the store's FTS5 index, and the escaping that turns user text
 * into FTS5 queries that cannot be syntax errors. See search.h for the matching rules.
 */
#include "retrieval/search.h"
#include "retrieval/store_int.h"

#include <string.h>

/* The one search statement; ?1 the FTS5 query, ?2..?5 snippet() arguments, ?6 the limit.
 * FTS5 consumes ORDER BY rank (bm25 with the weights set in the schema), so rows stream
 * out best first and the snippet is made only for the rows returned. */
static const char SEARCH_SQL[] =
    "SELECT c.id, c.document_id, chunks_fts.rank, d.uri, coalesce(d.title, ''), "
    "c.heading_path, snippet(chunks_fts, 0, ?2, ?3, ?4, ?5), c.char_start, c.char_end "
    "FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
    "JOIN documents d ON d.id = c.document_id "
    "WHERE chunks_fts MATCH ?1 ORDER BY chunks_fts.rank LIMIT ?6";

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

/* Appends one term as a quoted FTS5 phrase when it holds a word character. */
static lode_status emit_term(const char *t, size_t n, int any, lode_buf *out, size_t *terms)
{
    int word = 0;
    for (size_t i = 0; i < n && !word; i++)
        word = is_alnum((unsigned char)t[i]) || (unsigned char)t[i] >= 0x80;
    if (!word || *terms >= RET_SEARCH_MAX_TERMS) return LODE_OK;
    lode_status st = LODE_OK;
    if (*terms) st = lode_buf_puts(out, any ? " OR " : " ");
    if (!st) st = lode_buf_putc(out, '"');
    for (size_t i = 0; !st && i < n; i++) {
        /* the term cannot hold a '"' (it delimits phrases), but doubling it keeps this
         * safe whatever the splitting above does */
        st = t[i] == '"' ? lode_buf_puts(out, "\"\"") : lode_buf_putc(out, t[i]);
    }
    if (!st) st = lode_buf_putc(out, '"');
    if (!st) (*terms)++;
    return st;
}

lode_status ret_fts_query(const char *text, size_t len, int any, lode_buf *out, size_t *n_terms)
{
    size_t terms = 0;
    lode_status st = LODE_OK;
    char term[RET_SEARCH_TERM_BYTES];
    size_t tl = 0;
    int in_phrase = 0;
    const unsigned char *p = (const unsigned char *)(text ? text : "");
    size_t start_len = out->len;
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
            if (tl) st = emit_term(term, tl, any, out, &terms);
            tl = 0;
            if (quote) in_phrase = !in_phrase;
        } else if (tl + sl <= sizeof term) { /* long terms are cut on a character boundary */
            memcpy(term + tl, p + i, sl);
            tl += sl;
        }
        i += sl ? sl : 1;
    }
    if (st) {
        out->len = start_len;
        if (out->data) out->data[start_len] = 0;
        terms = 0;
    }
    if (n_terms) *n_terms = terms;
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
    lode_free(h);
}

static char *col_dup(sqlite3_stmt *q, int col)
{
    const char *t = (const char *)sqlite3_column_text(q, col);
    return lode_strdup(t ? t : "");
}

/* Runs one FTS5 query, appending up to k - h->n hits whose chunk is not in h yet. */
static lode_status run_query(ret_store *s, const char *fts, const ret_search_opts *o, int k,
                             int all_terms, int raw, ret_hits *h)
{
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_SEARCH, SEARCH_SQL);
    if (!q) {
        lode_status st = ret_status_from_sqlite(sqlite3_errcode(s->db));
        return st ? st : LODE_ERR_DB;
    }
    size_t have = h->n;
    sqlite3_bind_text(q, 1, fts, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, o->hl_open, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, o->hl_close, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, o->ellipsis, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 5, o->snippet_tokens);
    /* enough rows to fill up after skipping the ones already there */
    sqlite3_bind_int(q, 6, k);
    int rc = SQLITE_DONE;
    lode_status st = LODE_OK;
    while (h->n < (size_t)k && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(q, 0);
        int dup = 0;
        for (size_t i = 0; i < have && !dup; i++) dup = h->hit[i].chunk_id == id;
        if (dup) continue;
        ret_hit *x = &h->hit[h->n];
        memset(x, 0, sizeof *x);
        x->chunk_id = id;
        x->document_id = sqlite3_column_int64(q, 1);
        x->score = -sqlite3_column_double(q, 2);
        x->all_terms = all_terms;
        x->uri = col_dup(q, 3);
        x->title = col_dup(q, 4);
        x->heading_path = col_dup(q, 5);
        x->snippet = col_dup(q, 6);
        x->char_start = sqlite3_column_int64(q, 7);
        x->char_end = sqlite3_column_int64(q, 8);
        h->n++;
        if (!x->uri || !x->title || !x->heading_path || !x->snippet) {
            st = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory in search");
            break;
        }
    }
    if (st == LODE_OK && h->n < (size_t)k && rc != SQLITE_DONE) {
        if (raw && (rc & 0xff) == SQLITE_ERROR)
            st = lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID, "invalid FTS5 query %s: %s",
                             fts, sqlite3_errmsg(s->db));
        else
            st = ret_store_dberr(s, rc, "searching");
    }
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
        goto out;
    }
    size_t terms = 0;
    int any = o.mode == RET_MATCH_ANY;
    if ((st = ret_fts_query(query, strlen(query), any, &fts, &terms))) {
        lode_seterr(s->err, sizeof s->err, st, "search query too large");
        goto out;
    }
    if (terms == 0) goto out;
    if ((st = run_query(s, fts.data, &o, o.k, !any || terms == 1, 0, h))) goto out;
    if (o.mode == RET_MATCH_AUTO && terms > 1 && h->n < (size_t)o.k) {
        lode_buf_reset(&fts);
        if ((st = ret_fts_query(query, strlen(query), 1, &fts, &terms))) {
            lode_seterr(s->err, sizeof s->err, st, "search query too large");
            goto out;
        }
        /* the OR query returns the AND hits again: ask for enough rows to skip them */
        st = run_query(s, fts.data, &o, o.k, 0, 0, h);
    }
out:
    lode_buf_free(&fts);
    if (st) {
        ret_hits_free(h);
        return st;
    }
    *out = h;
    return LODE_OK;
}
