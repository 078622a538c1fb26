/*
 * hybrid.c: ret_hybrid_search of hybrid.h: the lexical and dense candidate lists, their
 * reciprocal rank fusion, MMR diversification, and the results with each chunk's text and
 * document. Filters go into the lexical query's SQL; dense candidates are checked against
 * them as their metadata is read, fetching deeper from the index while too few pass.
 */
#include "retrieval/hybrid.h"

#include "retrieval/store_int.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A chunk's document and text, when it passes the filter (?2..?5). */
static const char CHUNK_META_SQL[] =
    "SELECT c.document_id, d.uri, coalesce(d.title, ''), c.heading_path, d.media_type, c.text, "
    "c.char_start, c.char_end, d.mtime_ns FROM chunks c JOIN documents d ON d.id = c.document_id "
    "WHERE c.id = ?1 AND " RET_FILTER_SQL("2", "3", "4", "5");

/* A chunk's document, when it passes the filter (?2..?5). */
static const char CHUNK_DOC_SQL[] =
    "SELECT c.document_id FROM chunks c JOIN documents d ON d.id = c.document_id "
    "WHERE c.id = ?1 AND " RET_FILTER_SQL("2", "3", "4", "5");

const char *ret_mode_name(ret_mode m)
{
    switch (m) {
    case RET_MODE_LEXICAL:
        return "lexical";
    case RET_MODE_DENSE:
        return "dense";
    case RET_MODE_HYBRID:
        return "hybrid";
    default:
        return "auto";
    }
}

int ret_mode_parse(const char *s)
{
    if (!s) return -1;
    if (!strcmp(s, "lexical")) return RET_MODE_LEXICAL;
    if (!strcmp(s, "dense")) return RET_MODE_DENSE;
    if (!strcmp(s, "hybrid")) return RET_MODE_HYBRID;
    if (!strcmp(s, "auto")) return RET_MODE_AUTO;
    return -1;
}

int ret_fuse_parse(const char *s)
{
    if (!s) return -1;
    if (!strcmp(s, "document")) return RET_FUSE_DOCUMENT;
    if (!strcmp(s, "chunk")) return RET_FUSE_CHUNK;
    return -1;
}

/* ---- fusion ------------------------------------------------------------------------------ */
typedef struct fused {
    int64_t id;
    double score;
    int best_rank; /* the better of its ranks, for ties */
} fused;

/* The order of fused items (chunks or documents): the higher score first, then the better of
 * their best ranks, then the lower id. */
static int rrf_order(double sx, int rx, int64_t ix, double sy, int ry, int64_t iy)
{
    if (sx != sy) return sx > sy ? -1 : 1;
    if (rx != ry) return rx < ry ? -1 : 1;
    return ix < iy ? -1 : ix > iy;
}

static int fused_cmp(const void *a, const void *b)
{
    const fused *x = a, *y = b;
    return rrf_order(x->score, x->best_rank, x->id, y->score, y->best_rank, y->id);
}

size_t ret_rrf_fuse(const int64_t *a, size_t n_a, double w_a, const int64_t *b, size_t n_b,
                    double w_b, double rrf_k, int64_t *out, double *scores)
{
    size_t cap = n_a + n_b, n = 0;
    if (cap == 0) return 0;
    fused *f = lode_calloc(cap, sizeof *f);
    if (!f) return 0;
    for (int list = 0; list < 2; list++) {
        const int64_t *ids = list ? b : a;
        size_t cnt = list ? n_b : n_a;
        double w = list ? w_b : w_a;
        for (size_t r = 0; r < cnt; r++) {
            size_t j = 0;
            while (j < n && f[j].id != ids[r]) j++; /* lists are short (depth <= 1000) */
            if (j == n) {
                f[n].id = ids[r];
                f[n].best_rank = (int)r + 1;
                n++;
            }
            f[j].score += w / (rrf_k + (double)(r + 1));
            if ((int)r + 1 < f[j].best_rank) f[j].best_rank = (int)r + 1;
        }
    }
    qsort(f, n, sizeof *f, fused_cmp);
    for (size_t i = 0; i < n; i++) {
        out[i] = f[i].id;
        if (scores) scores[i] = f[i].score;
    }
    lode_free(f);
    return n;
}

/* A chunk of per-document fusion. */
typedef struct dchunk {
    int64_t id, doc;
    double score;  /* chunk-level RRF */
    int best_rank; /* the better of its chunk ranks */
    size_t d;      /* its document's index in the document table */
    size_t dorder; /* its document's place in the fused document order */
    int rep;       /* 1: the best chunk of its document */
} dchunk;

/* A document of per-document fusion. */
typedef struct ddoc {
    int64_t id;
    double score;  /* RRF over document ranks */
    int best_rank; /* the better of its document ranks */
    size_t rep;    /* index of its best chunk */
    size_t index;  /* its index in the table before sorting */
} ddoc;

static int ddoc_cmp(const void *a, const void *b)
{
    const ddoc *x = a, *y = b;
    return rrf_order(x->score, x->best_rank, x->id, y->score, y->best_rank, y->id);
}

/* The order of per-document fusion: best chunks first, then by document, then by the
 * chunk's own score. */
static int dchunk_cmp(const void *a, const void *b)
{
    const dchunk *x = a, *y = b;
    if (x->rep != y->rep) return x->rep ? -1 : 1;
    if (x->dorder != y->dorder) return x->dorder < y->dorder ? -1 : 1;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->best_rank != y->best_rank) return x->best_rank < y->best_rank ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

size_t ret_rrf_fuse_docs(const ret_cand *a, size_t n_a, double w_a, const ret_cand *b, size_t n_b,
                         double w_b, double rrf_k, int64_t *out, double *scores)
{
    size_t cap = n_a + n_b, nc = 0, nd = 0;
    if (cap == 0) return 0;
    dchunk *c = lode_calloc(cap, sizeof *c);
    ddoc *d = lode_calloc(cap, sizeof *d);
    size_t *order = lode_calloc(cap, sizeof *order);
    if (!c || !d || !order) {
        nc = 0;
        goto out;
    }
    for (int list = 0; list < 2; list++) {
        const ret_cand *l = list ? b : a;
        size_t cnt = list ? n_b : n_a;
        double w = list ? w_b : w_a;
        int drank = 0; /* documents seen so far in this list */
        for (size_t r = 0; r < cnt; r++) {
            size_t j = 0, k = 0;
            while (j < nc && c[j].id != l[r].chunk_id) j++; /* lists are short (<= 1000) */
            if (j == nc) {
                while (k < nd && d[k].id != l[r].document_id) k++;
                if (k == nd) d[nd++] = (ddoc){.id = l[r].document_id, .best_rank = INT32_MAX};
                c[nc++] = (dchunk){
                    .id = l[r].chunk_id, .doc = l[r].document_id, .d = k, .best_rank = (int)r + 1};
            }
            k = c[j].d;
            c[j].score += w / (rrf_k + (double)(r + 1));
            if ((int)r + 1 < c[j].best_rank) c[j].best_rank = (int)r + 1;
            /* the document's first chunk in this list gives it its rank here; a chunk
             * repeated in a list counts once, like a document */
            int first = 1;
            for (size_t p = 0; p < r && first; p++) first = l[p].document_id != d[k].id;
            if (!first) continue;
            drank++;
            d[k].score += w / (rrf_k + (double)drank);
            if (drank < d[k].best_rank) d[k].best_rank = drank;
        }
    }
    /* each document's best chunk */
    for (size_t k = 0; k < nd; k++) d[k].rep = cap;
    for (size_t j = 0; j < nc; j++) {
        ddoc *x = &d[c[j].d];
        const dchunk *r = x->rep < cap ? &c[x->rep] : NULL;
        if (!r || rrf_order(c[j].score, c[j].best_rank, c[j].id, r->score, r->best_rank, r->id) < 0)
            x->rep = j;
    }
    for (size_t k = 0; k < nd; k++) c[d[k].rep].rep = 1;
    /* the document order, then the chunks in it */
    for (size_t k = 0; k < nd; k++) d[k].index = k;
    qsort(d, nd, sizeof *d, ddoc_cmp);
    for (size_t k = 0; k < nd; k++) order[d[k].index] = k;
    for (size_t j = 0; j < nc; j++) c[j].dorder = order[c[j].d];
    qsort(c, nc, sizeof *c, dchunk_cmp);
    for (size_t j = 0; j < nc; j++) {
        out[j] = c[j].id;
        if (scores) scores[j] = d[c[j].dorder].score;
    }
out:
    lode_free(c);
    lode_free(d);
    lode_free(order);
    return nc;
}

size_t ret_mmr_order(size_t n, const double *rel, const float *vecs, const int *has_vec, int dim,
                     double lambda, size_t k, size_t *order)
{
    if (k > n) k = n;
    if (k == 0) return 0;
    char *taken = lode_calloc(n, 1);
    double *maxsim = lode_calloc(n, sizeof *maxsim);
    if (!taken || !maxsim) {
        lode_free(taken);
        lode_free(maxsim);
        for (size_t i = 0; i < k; i++) order[i] = i; /* no memory: the plain order */
        return k;
    }
    for (size_t i = 0; i < n; i++) maxsim[i] = -INFINITY;
    for (size_t t = 0; t < k; t++) {
        size_t best = n;
        double best_v = -INFINITY;
        for (size_t i = 0; i < n; i++) {
            if (taken[i]) continue;
            double sim = t == 0 || maxsim[i] == -INFINITY ? 0.0 : maxsim[i];
            double v = lambda * rel[i] - (1.0 - lambda) * sim;
            if (best == n || v > best_v) best = i, best_v = v;
        }
        taken[best] = 1;
        order[t] = best;
        if (has_vec && !has_vec[best]) continue;
        const float *b = vecs + best * (size_t)dim;
        for (size_t i = 0; i < n; i++) {
            if (taken[i] || (has_vec && !has_vec[i])) continue;
            const float *x = vecs + i * (size_t)dim;
            double dot = 0.0;
            for (int j = 0; j < dim; j++) dot += (double)x[j] * (double)b[j];
            if (dot > maxsim[i]) maxsim[i] = dot;
        }
    }
    lode_free(taken);
    lode_free(maxsim);
    return k;
}

/* ---- results ----------------------------------------------------------------------------- */
void ret_results_free(ret_results *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        ret_result *x = &r->r[i];
        lode_free((char *)x->uri);
        lode_free((char *)x->title);
        lode_free((char *)x->heading_path);
        lode_free((char *)x->media_type);
        lode_free((char *)x->text);
        lode_free((char *)x->snippet);
    }
    lode_free(r->r);
    lode_free(r);
}

static char *col_dup(sqlite3_stmt *q, int col)
{
    const char *t = (const char *)sqlite3_column_text(q, col);
    return lode_strdup(t ? t : "");
}

/* Reads chunk id's document and text into x when it passes the filter; *pass says so. */
static lode_status chunk_meta(ret_store *s, int64_t id, const ret_filter *f, ret_result *x,
                              int *pass)
{
    *pass = 0;
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_CHUNK_META, CHUNK_META_SQL);
    if (!q) return ret_stmt_failed(s);
    sqlite3_bind_int64(q, 1, id);
    ret_filter_bind(q, 2, f);
    int rc = sqlite3_step(q);
    lode_status st = LODE_OK;
    if (rc == SQLITE_ROW) {
        *pass = 1;
        if (x) {
            x->chunk_id = id;
            x->document_id = sqlite3_column_int64(q, 0);
            x->uri = col_dup(q, 1);
            x->title = col_dup(q, 2);
            x->heading_path = col_dup(q, 3);
            x->media_type = col_dup(q, 4);
            x->text = col_dup(q, 5);
            x->char_start = sqlite3_column_int64(q, 6);
            x->char_end = sqlite3_column_int64(q, 7);
            x->mtime_ns = sqlite3_column_int64(q, 8);
            if (!x->uri || !x->title || !x->heading_path || !x->media_type || !x->text)
                st = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory in search");
        }
    } else if (rc != SQLITE_DONE) {
        st = ret_store_dberr(s, rc, "reading a chunk");
    }
    sqlite3_reset(q);
    return st;
}

/* Reads chunk id's document into *doc when it passes the filter; *pass says so. */
static lode_status chunk_doc(ret_store *s, int64_t id, const ret_filter *f, int64_t *doc, int *pass)
{
    *pass = 0;
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_CHUNK_DOC, CHUNK_DOC_SQL);
    if (!q) return ret_stmt_failed(s);
    sqlite3_bind_int64(q, 1, id);
    ret_filter_bind(q, 2, f);
    int rc = sqlite3_step(q);
    lode_status st = LODE_OK;
    if (rc == SQLITE_ROW) {
        *pass = 1;
        *doc = sqlite3_column_int64(q, 0);
    } else if (rc != SQLITE_DONE) {
        st = ret_store_dberr(s, rc, "reading a chunk");
    }
    sqlite3_reset(q);
    return st;
}

/* The first words of text (at most words of them), with ellipsis when cut. */
static char *lead_snippet(const char *text, int words, const char *ellipsis)
{
    const char *p = text;
    int w = 0, in_word = 0;
    for (; *p; p++) {
        int sp = *p == ' ' || *p == '\n' || *p == '\t' || *p == '\r';
        if (!sp && !in_word && ++w > words) break;
        in_word = !sp;
    }
    lode_buf b = LODE_BUF_INIT;
    size_t n = (size_t)(p - text);
    while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\n')) n--;
    if (lode_buf_append(&b, text, n) || (*p && lode_buf_puts(&b, ellipsis))) {
        lode_buf_free(&b);
        return NULL;
    }
    return lode_buf_take(&b);
}

/* The dense candidates: up to depth chunks that pass the filter, best first, with their
 * documents when docs is not NULL (the filter, or per-document fusion, reads them).
 * pre (may be NULL) holds the index's first n_pre hits for depth, already fetched. */
static lode_status dense_list(ret_store *s, ret_dense *d, const float *qv, size_t depth,
                              const ret_vhit *pre, size_t n_pre, const ret_filter *f, int64_t **ids,
                              double **scores, int64_t **docs, size_t *n)
{
    *ids = NULL;
    *scores = NULL;
    if (docs) *docs = NULL;
    *n = 0;
    int64_t total = ret_dense_count(d);
    size_t fetch = depth, got = 0;
    ret_vhit *hits = NULL;
    int64_t *out_ids = lode_calloc(depth ? depth : 1, sizeof *out_ids);
    double *out_sc = lode_calloc(depth ? depth : 1, sizeof *out_sc);
    int64_t *out_docs = docs ? lode_calloc(depth ? depth : 1, sizeof *out_docs) : NULL;
    lode_status st = LODE_OK;
    if (!out_ids || !out_sc || (docs && !out_docs)) goto nomem;
    int filtered = !ret_filter_empty(f);
    for (int round = 0;; round++) {
        size_t nh = 0;
        const ret_vhit *hv = pre;
        if (round == 0 && pre) {
            nh = n_pre;
        } else {
            lode_free(hits);
            if (!(hits = lode_calloc(fetch ? fetch : 1, sizeof *hits))) goto nomem;
            if ((st = ret_dense_search_vec(d, qv, fetch, hits, &nh))) {
                lode_seterr(s->err, sizeof s->err, st, "%s", ret_dense_errmsg(d));
                goto out;
            }
            hv = hits;
        }
        got = 0;
        for (size_t i = 0; i < nh && got < depth; i++) {
            int pass = 1;
            int64_t doc = 0;
            if ((filtered || docs) && (st = chunk_doc(s, hv[i].id, f, &doc, &pass))) goto out;
            if (!pass) continue; /* filtered out, or deleted since the index saw it */
            if (out_docs) out_docs[got] = doc;
            out_ids[got] = hv[i].id;
            out_sc[got] = hv[i].score;
            got++;
        }
        /* too few passed the filter: look deeper, up to the whole index */
        if (got >= depth || nh < fetch || (int64_t)fetch >= total) break;
        fetch = fetch * 4 > (size_t)total ? (size_t)total : fetch * 4;
    }
    *ids = out_ids;
    *scores = out_sc;
    if (docs) *docs = out_docs;
    *n = got;
    out_ids = NULL;
    out_sc = NULL;
    out_docs = NULL;
    goto out;
nomem:
    st = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory in search");
out:
    lode_free(hits);
    lode_free(out_ids);
    lode_free(out_sc);
    lode_free(out_docs);
    return st;
}

/* The lexical candidates, run where ret_hybrid_search says. */
typedef struct lex_job {
    ret_store *s;
    const char *text;
    ret_search_opts so;
    ret_hits *hits; /* OUT */
    lode_status st; /* OUT; its message in s */
    pthread_t th;
} lex_job;

static void *lex_run(void *arg)
{
    lex_job *j = arg;
    j->st = ret_search_bm25(j->s, j->text, &j->so, &j->hits);
    return NULL;
}

/* Vectors of the candidates for MMR, from the store (rows without one get has[i] = 0). */
static lode_status candidate_vectors(ret_store *s, const char *model, int dim, const int64_t *ids,
                                     size_t n, float *vecs, int *has)
{
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_VECTORS_OF,
                                     "SELECT vec FROM vectors WHERE chunk_id = ?1 AND model = ?2");
    if (!q) return ret_stmt_failed(s);
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(q, 1, ids[i]);
        sqlite3_bind_text(q, 2, model, -1, SQLITE_STATIC);
        int rc = sqlite3_step(q);
        has[i] = rc == SQLITE_ROW && sqlite3_column_bytes(q, 0) == (int)sizeof(float) * dim;
        if (has[i]) memcpy(vecs + i * (size_t)dim, sqlite3_column_blob(q, 0), sizeof(float) * dim);
        sqlite3_reset(q);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) return ret_store_dberr(s, rc, "reading vectors");
    }
    return LODE_OK;
}

lode_status ret_hybrid_search(ret_store *s, ret_dense *d, const ret_query *qin, ret_results **out)
{
    *out = NULL;
    double t0 = lode_now_s();
    ret_query q = {0};
    if (qin) q = *qin;
    if (q.k == 0) q.k = 10;
    if (q.rrf_k == 0) q.rrf_k = RET_RRF_K_DEFAULT;
    if (q.w_lexical == 0 && q.w_dense == 0) {
        q.w_lexical = RET_W_LEXICAL_DEFAULT;
        q.w_dense = RET_W_DENSE_DEFAULT;
    }
    if (!q.ellipsis) q.ellipsis = "...";
    if (q.k < 1 || q.k > RET_SEARCH_MAX_K)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID, "k must be 1..%d, not %d",
                           RET_SEARCH_MAX_K, q.k);
    if (!(q.rrf_k > 0) || q.w_lexical < 0 || q.w_dense < 0 || !isfinite(q.w_lexical) ||
        !isfinite(q.w_dense) || !isfinite(q.rrf_k))
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID,
                           "RRF k must be > 0 and the weights >= 0");
    if (!(q.mmr_lambda >= 0 && q.mmr_lambda <= 1))
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID,
                           "the MMR lambda must be in [0, 1]");
    if (q.fuse != RET_FUSE_DOCUMENT && q.fuse != RET_FUSE_CHUNK)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID, "unknown fusion unit %d",
                           (int)q.fuse);
    if (q.depth < 0 || q.depth > RET_SEARCH_MAX_K)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID, "depth must be 0..%d",
                           RET_SEARCH_MAX_K);
    lode_status st = LODE_OK;
    ret_hits *lex = NULL;
    lex_job job = {0};
    int64_t *dids = NULL, *ddocs = NULL, *lids = NULL, *order_ids = NULL;
    ret_cand *lc = NULL, *dc = NULL;
    ret_vhit *pre = NULL;
    double *dsc = NULL, *fsc = NULL, *rel = NULL;
    size_t nd = 0, nl = 0, nf = 0;
    float *qv = NULL, *cvecs = NULL;
    int *chas = NULL;
    size_t *order = NULL;
    ret_results *r = lode_calloc(1, sizeof *r);
    if (!r) return lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory in search");

    /* the mode that runs */
    ret_mode mode = q.mode;
    if (d) {
        if ((st = ret_dense_sync(d, s))) {
            lode_seterr(s->err, sizeof s->err, st, "%s", ret_dense_errmsg(d));
            goto out;
        }
    }
    int dense_ok = d && ret_dense_count(d) > 0;
    if (mode == RET_MODE_AUTO) {
        mode = dense_ok ? RET_MODE_HYBRID : RET_MODE_LEXICAL;
        if (!dense_ok)
            snprintf(r->note, sizeof r->note, "%s",
                     d ? "the store has no vectors yet: lexical search only"
                       : "no embedding model for this store: lexical search only");
    } else if ((mode == RET_MODE_DENSE || mode == RET_MODE_HYBRID) && !dense_ok) {
        st = lode_seterr(s->err, sizeof s->err, LODE_ERR_UNSUPPORTED,
                         "%s search needs the store's vectors, and %s", ret_mode_name(mode),
                         d ? "the store has none yet (ingest with an embedding model)"
                           : "none were opened (the store was ingested without embeddings, or "
                             "its embedding model could not be loaded)");
        goto out;
    }
    r->mode = mode;

    /* one list alone needs only k candidates, unless MMR picks among more */
    int mmr = q.mmr_lambda > 0 && q.mmr_lambda < 1;
    size_t depth = q.depth                   ? (size_t)q.depth
                   : mode == RET_MODE_HYBRID ? (size_t)LODE_MAX(4 * q.k, RET_FUSE_DEPTH)
                   : mmr                     ? (size_t)LODE_MAX(4 * q.k, 50)
                                             : (size_t)q.k;
    if (depth > RET_SEARCH_MAX_K) depth = RET_SEARCH_MAX_K;
    if (depth < (size_t)q.k) depth = (size_t)q.k;

    /* Hybrid search runs the lexical query on a thread of its own while this one embeds
     * the query and searches the vector index: neither waits for the other, and the two
     * use nothing in common (the store handle stays the lexical side's until the join;
     * the dense candidates' documents are read after it). */
    job.s = s;
    job.text = q.text ? q.text : "";
    int lexical = mode == RET_MODE_LEXICAL || mode == RET_MODE_HYBRID, threaded = 0;
    if (lexical) {
        job.so = (ret_search_opts){
            .k = (int)depth,
            .mode = q.match,
            .hl_open = q.hl_open,
            .hl_close = q.hl_close,
            .ellipsis = q.ellipsis,
            .snippet_tokens = q.snippet_tokens,
            .filter = ret_filter_empty(&q.filter) ? NULL : &q.filter,
            /* fusion keeps a few of the candidates: their snippets are made at the end */
            .ids_only = mode == RET_MODE_HYBRID,
        };
        threaded = mode == RET_MODE_HYBRID && pthread_create(&job.th, NULL, lex_run, &job) == 0;
        if (!threaded) lex_run(&job);
    }
    if (mode == RET_MODE_DENSE || mode == RET_MODE_HYBRID) {
        double te = lode_now_s();
        lode_status es = LODE_ERR_NOMEM, ds = LODE_ERR_NOMEM;
        size_t n_pre = 0;
        qv = lode_malloc(sizeof(float) * (size_t)ret_dense_dim(d));
        pre = lode_calloc(depth, sizeof *pre);
        if (qv && pre) {
            if (q.vec) { /* embedded by the caller */
                memcpy(qv, q.vec, sizeof(float) * (size_t)ret_dense_dim(d));
                es = LODE_OK;
            } else if (!(es = ret_dense_embed(d, q.text ? q.text : "", qv))) {
                r->embed_ms = (lode_now_s() - te) * 1e3;
            }
            if (!es) ds = ret_dense_search_vec(d, qv, depth, pre, &n_pre);
        }
        if (threaded) pthread_join(job.th, NULL);
        threaded = 0;
        if (!qv || !pre) goto nomem;
        if (es || ds) {
            st = lode_seterr(s->err, sizeof s->err, es ? es : ds, "%s", ret_dense_errmsg(d));
            goto out;
        }
        int by_doc = mode == RET_MODE_HYBRID && q.fuse == RET_FUSE_DOCUMENT;
        if ((st = dense_list(s, d, qv, depth, pre, n_pre, &q.filter, &dids, &dsc,
                             by_doc ? &ddocs : NULL, &nd)))
            goto out;
    }
    if (lexical) {
        lex = job.hits;
        job.hits = NULL;
        if ((st = job.st)) goto out; /* its message is in s */
        nl = lex->n;
        if (!(lids = lode_calloc(nl ? nl : 1, sizeof *lids))) goto nomem;
        for (size_t i = 0; i < nl; i++) lids[i] = lex->hit[i].chunk_id;
    }

    /* fuse (or take the one list) */
    size_t cap = nl + nd;
    if (!(order_ids = lode_calloc(cap ? cap : 1, sizeof *order_ids)) ||
        !(fsc = lode_calloc(cap ? cap : 1, sizeof *fsc)))
        goto nomem;
    if (mode == RET_MODE_HYBRID && q.fuse == RET_FUSE_DOCUMENT) {
        if (!(lc = lode_calloc(nl ? nl : 1, sizeof *lc)) ||
            !(dc = lode_calloc(nd ? nd : 1, sizeof *dc)))
            goto nomem;
        for (size_t i = 0; i < nl; i++)
            lc[i] = (ret_cand){lex->hit[i].chunk_id, lex->hit[i].document_id};
        for (size_t i = 0; i < nd; i++) dc[i] = (ret_cand){dids[i], ddocs[i]};
        nf = ret_rrf_fuse_docs(lc, nl, q.w_lexical, dc, nd, q.w_dense, q.rrf_k, order_ids, fsc);
        if (nf == 0 && cap) goto nomem;
    } else if (mode == RET_MODE_HYBRID) {
        nf = ret_rrf_fuse(lids, nl, q.w_lexical, dids, nd, q.w_dense, q.rrf_k, order_ids, fsc);
        if (nf == 0 && cap) goto nomem;
    } else if (mode == RET_MODE_LEXICAL) {
        for (size_t i = 0; i < nl; i++) order_ids[i] = lids[i], fsc[i] = lex->hit[i].score;
        nf = nl;
    } else {
        for (size_t i = 0; i < nd; i++) order_ids[i] = dids[i], fsc[i] = dsc[i];
        nf = nd;
    }

    /* MMR over the fused candidates */
    size_t want = LODE_MIN((size_t)q.k, nf);
    if (!(order = lode_calloc(nf ? nf : 1, sizeof *order))) goto nomem;
    for (size_t i = 0; i < nf; i++) order[i] = i;
    if (q.mmr_lambda > 0 && q.mmr_lambda < 1 && d && nf > 1) {
        int dim = ret_dense_dim(d);
        if (!(cvecs = lode_malloc(sizeof(float) * (size_t)dim * nf)) ||
            !(chas = lode_calloc(nf, sizeof *chas)) || !(rel = lode_calloc(nf, sizeof *rel)))
            goto nomem;
        if ((st = candidate_vectors(s, ret_dense_model(d), dim, order_ids, nf, cvecs, chas)))
            goto out;
        /* relevance on [0, 1]: the score over the best one (cosine and BM25 are >= 0 for
         * useful hits; a negative best leaves the order to the similarities) */
        double top = fsc[0] > 0 ? fsc[0] : 1.0;
        for (size_t i = 0; i < nf; i++) rel[i] = fsc[i] / top;
        want = ret_mmr_order(nf, rel, cvecs, chas, dim, q.mmr_lambda, want, order);
    }

    if (!(r->r = lode_calloc(want ? want : 1, sizeof *r->r))) goto nomem;
    for (size_t i = 0; i < want; i++) {
        size_t c = order[i];
        ret_result *x = &r->r[r->n];
        int pass = 0;
        if ((st = chunk_meta(s, order_ids[c], NULL, x, &pass))) {
            r->n++; /* free what was copied */
            goto out;
        }
        if (!pass) continue; /* deleted since the index saw it */
        x->score = fsc[c];
        for (size_t j = 0; j < nl; j++)
            if (lids[j] == x->chunk_id) {
                x->lexical_rank = (int)j + 1;
                x->lexical_score = lex->hit[j].score;
                if (lex->hit[j].snippet) {
                    x->snippet = lode_strdup(lex->hit[j].snippet);
                    break;
                }
                ret_search_opts so = {.hl_open = q.hl_open,
                                      .hl_close = q.hl_close,
                                      .ellipsis = q.ellipsis,
                                      .snippet_tokens = q.snippet_tokens};
                st = ret_search_snippet(s, lex->fts, x->chunk_id, &so, (char **)&x->snippet);
                if (st == LODE_ERR_NOTFOUND) st = LODE_OK; /* changed since: its first words */
                if (st) {
                    r->n++; /* free what was copied */
                    goto out;
                }
                break;
            }
        for (size_t j = 0; j < nd; j++)
            if (dids[j] == x->chunk_id) {
                x->dense_rank = (int)j + 1;
                x->dense_score = dsc[j];
                break;
            }
        if (!x->snippet)
            x->snippet =
                lead_snippet(x->text, q.snippet_tokens > 0 ? q.snippet_tokens : 24, q.ellipsis);
        r->n++;
        if (!x->snippet) goto nomem;
    }
    goto out;
nomem:
    st = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory in search");
out:
    ret_hits_free(job.hits); /* when a later step failed first */
    ret_hits_free(lex);
    lode_free(lids);
    lode_free(pre);
    lode_free(dids);
    lode_free(ddocs);
    lode_free(lc);
    lode_free(dc);
    lode_free(dsc);
    lode_free(order_ids);
    lode_free(fsc);
    lode_free(rel);
    lode_free(qv);
    lode_free(cvecs);
    lode_free(chas);
    lode_free(order);
    if (st) {
        ret_results_free(r);
        return st;
    }
    r->took_ms = (lode_now_s() - t0) * 1e3;
    *out = r;
    return LODE_OK;
}
