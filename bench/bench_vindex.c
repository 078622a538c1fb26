/*
 * bench_vindex.c: the store's approximate vector index against exact (flat) search on the
 * same vectors: recall of the approximate neighbours and search time of both, for the
 * questions of an evaluation file embedded by the store's model. The store's own index is
 * opened as `lode search` opens it (built and saved beside the database when missing, so
 * later searches load it); the flat index is built here from the vectors table.
 * Then the latency of ret_hybrid_search, as `lode search` runs it (k = 10, query embedding
 * included), per mode over the same questions.
 * Prints markdown table rows; bench/bench_retrieval.sh runs it on the 100k-chunk store.
 *
 *   bench_vindex DB QUESTIONS.jsonl [EF_SEARCH...]
 *
 * The first row of the approximate index is at its default efSearch, then one a value given.
 */
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/lode.h"
#include "retrieval/dense.h"
#include "retrieval/hybrid.h"
#include "retrieval/store.h"
#include "retrieval/vindex.h"

#define MAX_Q 1000
#define K_MAX 50

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Share of the first k ids of want that are among the first k of got. */
static double overlap(const ret_vhit *want, size_t nw, const ret_vhit *got, size_t ng, size_t k)
{
    size_t hit = 0, n = LODE_MIN(k, nw);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < LODE_MIN(k, ng); j++)
            if (want[i].id == got[j].id) {
                hit++;
                break;
            }
    return n ? (double)hit / (double)n : 1.0;
}

/* The "query" strings of a JSONL file; returns how many were read (at most max). */
static size_t read_questions(const char *path, char **q, size_t max)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char *line = NULL;
    size_t cap = 0, n = 0;
    while (n < max && getline(&line, &cap, f) > 0) {
        json_t *o = json_loads(line, 0, NULL);
        const char *t = json_string_value(json_object_get(o, "query"));
        if (t && (q[n] = lode_strdup(t))) n++;
        json_decref(o);
    }
    free(line); /* getline's buffer comes from libc */
    fclose(f);
    return n;
}

/* Builds the exact index from the vectors table. */
static lode_status flat_build(ret_store *s, const char *model, int dim, ret_vindex **out,
                              double *secs)
{
    char err[256];
    ret_vindex_opts vo = {.dim = dim, .approx_threshold = -1};
    lode_status st = ret_vindex_create(&vo, out, err, sizeof err);
    if (st) {
        fprintf(stderr, "bench_vindex: %s\n", err);
        return st;
    }
    double t0 = lode_now_s();
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(ret_store_sqlite(s),
                           "SELECT chunk_id, vec FROM vectors WHERE model = ?1", -1, &q,
                           NULL) != SQLITE_OK)
        return LODE_ERR_DB;
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    enum { BATCH = 4096 };
    int64_t *ids = lode_malloc(BATCH * sizeof *ids);
    float *vecs = lode_malloc((size_t)BATCH * (size_t)dim * sizeof *vecs);
    size_t n = 0;
    st = ids && vecs ? LODE_OK : LODE_ERR_NOMEM;
    while (!st && sqlite3_step(q) == SQLITE_ROW) {
        if (sqlite3_column_bytes(q, 1) != (int)sizeof(float) * dim) continue;
        ids[n] = sqlite3_column_int64(q, 0);
        memcpy(vecs + n * (size_t)dim, sqlite3_column_blob(q, 1), sizeof(float) * (size_t)dim);
        if (++n == BATCH) {
            st = ret_vindex_add(*out, n, ids, vecs);
            n = 0;
        }
    }
    if (!st && n) st = ret_vindex_add(*out, n, ids, vecs);
    sqlite3_finalize(q);
    lode_free(ids);
    lode_free(vecs);
    *secs = lode_now_s() - t0;
    return st;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_vindex DB QUESTIONS.jsonl [EF_SEARCH...]\n");
        return 2;
    }
    char err[1024];
    ret_store *s = NULL;
    ret_dense *d = NULL;
    ret_vindex *flat = NULL;
    char *qs[MAX_Q];
    float *qv = NULL;
    ret_vhit *exact = NULL, *approx = NULL;
    size_t *n_exact = NULL;
    double *ms = NULL;
    int rc = 1;
    size_t nq = read_questions(argv[2], qs, MAX_Q);
    if (!nq) {
        fprintf(stderr, "bench_vindex: no questions in %s\n", argv[2]);
        return 1;
    }
    if (ret_store_open(argv[1], 0, &s, err, sizeof err)) {
        fprintf(stderr, "bench_vindex: %s\n", err);
        goto out;
    }
    /* the store's own index, saved when it had to be built */
    double t0 = lode_now_s();
    ret_dense_opts dopts = {0};
    if (ret_dense_open(s, &dopts, &d, err, sizeof err)) {
        fprintf(stderr, "bench_vindex: %s\n", err);
        goto out;
    }
    double open_s = lode_now_s() - t0;
    int dim = ret_dense_dim(d);
    int64_t count = ret_dense_count(d);
    printf("store index: %lld vectors, %s, %s in %.1f s\n", (long long)count,
           ret_dense_is_approx(d) ? "approximate" : "flat", ret_dense_open_note(d), open_s);
    qv = lode_malloc(nq * (size_t)dim * sizeof *qv);
    exact = lode_calloc(nq * K_MAX, sizeof *exact);
    approx = lode_calloc(K_MAX, sizeof *approx);
    n_exact = lode_calloc(nq, sizeof *n_exact);
    ms = lode_calloc(nq, sizeof *ms);
    if (!qv || !exact || !approx || !n_exact || !ms) goto out;
    for (size_t i = 0; i < nq; i++)
        if (ret_dense_embed(d, qs[i], qv + i * (size_t)dim)) {
            fprintf(stderr, "bench_vindex: %s\n", ret_dense_errmsg(d));
            goto out;
        }
    double flat_s = 0;
    if (flat_build(s, ret_dense_model(d), dim, &flat, &flat_s)) goto out;
    printf("flat index: %lld vectors added in %.1f s\n\n", (long long)ret_vindex_count(flat),
           flat_s);
    printf("| index | efSearch | recall@10 vs flat | recall@50 vs flat | p50 ms | p99 ms |\n");
    printf("| --- | --- | --- | --- | --- | --- |\n");
    for (size_t i = 0; i < nq; i++) {
        double t = lode_now_s();
        if (ret_vindex_search(flat, qv + i * (size_t)dim, K_MAX, exact + i * K_MAX, &n_exact[i]))
            goto out;
        ms[i] = (lode_now_s() - t) * 1e3;
    }
    qsort(ms, nq, sizeof *ms, cmp_double);
    printf("| flat (exact) | - | 1.000 | 1.000 | %.2f | %.2f |\n", ms[(nq - 1) / 2],
           ms[(size_t)((double)(nq - 1) * 0.99 + 0.5)]);
    /* the store's index at its own efSearch, then reopened at each one asked for */
    for (int a = 2; a < argc; a++) {
        int ef = a == 2 ? 0 : atoi(argv[a]);
        if (a > 2) {
            ret_dense_close(d);
            d = NULL;
            ret_dense_opts eo = {.ef_search = ef, .no_save = 1};
            if (ret_dense_open(s, &eo, &d, err, sizeof err)) {
                fprintf(stderr, "bench_vindex: %s\n", err);
                goto out;
            }
        }
        double r10 = 0, r50 = 0;
        for (size_t i = 0; i < nq; i++) {
            size_t na = 0;
            double t = lode_now_s();
            if (ret_dense_search_vec(d, qv + i * (size_t)dim, K_MAX, approx, &na)) goto out;
            ms[i] = (lode_now_s() - t) * 1e3;
            r10 += overlap(exact + i * K_MAX, n_exact[i], approx, na, 10);
            r50 += overlap(exact + i * K_MAX, n_exact[i], approx, na, 50);
        }
        qsort(ms, nq, sizeof *ms, cmp_double);
        char efs[32];
        snprintf(efs, sizeof efs, a == 2 ? "default (128)" : "%d", ef);
        printf("| %s | %s | %.3f | %.3f | %.2f | %.2f |\n",
               ret_dense_is_approx(d) ? "the store's (approximate)" : "the store's (flat)", efs,
               r10 / (double)nq, r50 / (double)nq, ms[(nq - 1) / 2],
               ms[(size_t)((double)(nq - 1) * 0.99 + 0.5)]);
    }
    /* whole searches, as lode search runs them */
    ret_dense_close(d);
    d = NULL;
    ret_dense_opts so = {.no_save = 1};
    if (ret_dense_open(s, &so, &d, err, sizeof err)) {
        fprintf(stderr, "bench_vindex: %s\n", err);
        goto out;
    }
    printf("\n| mode (k = 10) | p50 ms | p99 ms | of which embedding p50 ms |\n");
    printf("| --- | --- | --- | --- |\n");
    static const ret_mode modes[] = {RET_MODE_LEXICAL, RET_MODE_DENSE, RET_MODE_HYBRID};
    double *ems = lode_calloc(nq, sizeof *ems);
    if (!ems) goto out;
    for (size_t m = 0; m < LODE_ARRAY_LEN(modes); m++) {
        for (size_t i = 0; i < nq; i++) {
            ret_query rq = {.text = qs[i], .k = 10, .mode = modes[m]};
            ret_results *r = NULL;
            double t = lode_now_s();
            if (ret_hybrid_search(s, d, &rq, &r)) {
                fprintf(stderr, "bench_vindex: %s\n", ret_store_errmsg(s));
                lode_free(ems);
                goto out;
            }
            ms[i] = (lode_now_s() - t) * 1e3;
            ems[i] = r->embed_ms;
            ret_results_free(r);
        }
        qsort(ms, nq, sizeof *ms, cmp_double);
        qsort(ems, nq, sizeof *ems, cmp_double);
        printf("| %s | %.1f | %.1f | %.1f |\n", ret_mode_name(modes[m]), ms[(nq - 1) / 2],
               ms[(size_t)((double)(nq - 1) * 0.99 + 0.5)], ems[(nq - 1) / 2]);
    }
    lode_free(ems);
    rc = 0;
out:
    for (size_t i = 0; i < nq; i++) lode_free(qs[i]);
    lode_free(qv);
    lode_free(exact);
    lode_free(approx);
    lode_free(n_exact);
    lode_free(ms);
    ret_vindex_destroy(flat);
    ret_dense_close(d);
    ret_store_close(s);
    return rc;
}
