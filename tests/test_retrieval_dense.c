/*
 * test_retrieval_dense.c: dense and hybrid retrieval: reciprocal rank fusion and MMR on
 * hand-made lists; then, on a small corpus embedded by the real all-MiniLM-L6-v2 (skipped
 * when `make model` has not fetched it): dense search finding a paraphrase lexical search
 * misses, filters on path, media type and dates, the FAISS file caught up from the change
 * log after deletes, re-ingest and prune, a change of embedding model, and
 * `lode doctor`'s checks and repairs, also after kill -9 in the middle of an ingest.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/lode.h"
#include "engine/bert.h"
#include "ingest/run.h"
#include "retrieval/dense.h"
#include "retrieval/doctor.h"
#include "retrieval/hybrid.h"
#include "retrieval/store.h"

#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wformat-truncation"

#define MODEL RET_DEFAULT_EMBED_MODEL

/* ---- fusion and MMR on hand-made lists ---------------------------------------------- */
static void test_rrf_math(void **state)
{
    (void)state;
    const int64_t a[] = {1, 2, 3}, b[] = {3, 4, 1};
    int64_t out[6];
    double sc[6];
    size_t n = ret_rrf_fuse(a, 3, 1.0, b, 3, 1.0, 60.0, out, sc);
    assert_int_equal(n, 4);
    /* 1 and 3 are in both lists at ranks 1 and 3: equal scores, tie broken by id */
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 3);
    assert_true(fabs(sc[0] - (1.0 / 61 + 1.0 / 63)) < 1e-12);
    assert_true(fabs(sc[1] - sc[0]) < 1e-15);
    assert_int_equal(out[2], 2);
    assert_int_equal(out[3], 4);
    assert_true(fabs(sc[2] - 1.0 / 62) < 1e-12);

    /* weights: the second list counts three times as much, so its first (3) wins and 4
     * (second there) passes 1 (first in a, third in b) */
    n = ret_rrf_fuse(a, 3, 1.0, b, 3, 3.0, 1.0, out, sc);
    assert_int_equal(n, 4);
    assert_int_equal(out[0], 3); /* 1/4 + 3/2 */
    assert_true(fabs(sc[0] - (1.0 / 4 + 3.0 / 2)) < 1e-12);
    assert_int_equal(out[1], 1); /* 1/2 + 3/4 */
    assert_int_equal(out[2], 4); /* 3/3 */
    assert_int_equal(out[3], 2); /* 1/3 */

    /* one empty list: the other's order; both empty: nothing */
    n = ret_rrf_fuse(a, 3, 1.0, NULL, 0, 1.0, 60.0, out, sc);
    assert_int_equal(n, 3);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[2], 3);
    assert_int_equal(ret_rrf_fuse(NULL, 0, 1, NULL, 0, 1, 60, out, sc), 0);
}

static void test_rrf_docs_math(void **state)
{
    (void)state;
    /* documents 10 (chunks 1, 2), 20 (chunks 3, 4), 30 (chunk 5) */
    const ret_cand a[] = {{1, 10}, {2, 10}, {3, 20}}, b[] = {{4, 20}, {5, 30}, {1, 10}};
    int64_t out[6];
    double sc[6];
    /* document ranks: a: 10 first, 20 second (chunk 2 does not push it to third);
     * b: 20, 30, 10. So 20 (1/62 + 1/61) passes 10 (1/61 + 1/63), then 30 (1/62).
     * Fusing chunks, chunk 1 (1/61 + 1/63) would come first. */
    size_t n = ret_rrf_fuse_docs(a, 3, 1.0, b, 3, 1.0, 60.0, out, sc);
    assert_int_equal(n, 5);
    /* each document's best chunk by its own RRF score, in document order: 4 (1/61) over
     * 3 (1/63); 1 (1/61 + 1/63) over 2 (1/62) */
    assert_int_equal(out[0], 4);
    assert_int_equal(out[1], 1);
    assert_int_equal(out[2], 5);
    assert_true(fabs(sc[0] - (1.0 / 62 + 1.0 / 61)) < 1e-12);
    assert_true(fabs(sc[1] - (1.0 / 61 + 1.0 / 63)) < 1e-12);
    assert_true(fabs(sc[2] - 1.0 / 62) < 1e-12);
    /* then the other chunks, in document order, scored as their document */
    assert_int_equal(out[3], 3);
    assert_int_equal(out[4], 2);
    assert_true(sc[3] == sc[0] && sc[4] == sc[1]);

    /* weights: with a five times b and k 1, 10 (5/2 + 1/4) passes 20 (5/3 + 1/2), and
     * 20's best chunk is now 3 (5/4) rather than 4 (1/2) */
    n = ret_rrf_fuse_docs(a, 3, 5.0, b, 3, 1.0, 1.0, out, sc);
    assert_int_equal(n, 5);
    const int64_t want[] = {1, 3, 5, 2, 4};
    for (size_t i = 0; i < n; i++) assert_int_equal(out[i], want[i]);
    assert_true(fabs(sc[0] - 2.75) < 1e-12);
    assert_true(fabs(sc[1] - (5.0 / 3 + 0.5)) < 1e-12);

    /* one list: its documents in order, best chunks first; both empty: nothing */
    n = ret_rrf_fuse_docs(a, 3, 1.0, NULL, 0, 1.0, 60.0, out, sc);
    assert_int_equal(n, 3);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 3);
    assert_int_equal(out[2], 2);
    assert_true(fabs(sc[1] - 1.0 / 62) < 1e-12);
    assert_int_equal(ret_rrf_fuse_docs(NULL, 0, 1, NULL, 0, 1, 60, out, sc), 0);

    /* equal scores: the better document rank in either list, then the smaller id */
    const ret_cand c[] = {{7, 70}, {8, 80}}, e[] = {{8, 80}, {7, 70}};
    n = ret_rrf_fuse_docs(c, 2, 1.0, e, 2, 1.0, 60.0, out, NULL);
    assert_int_equal(n, 2);
    assert_int_equal(out[0], 7);
    assert_int_equal(out[1], 8);
}

static void test_mmr_math(void **state)
{
    (void)state;
    /* 0 and 1 are the same direction, 2 is orthogonal */
    const float v[] = {1, 0, 1, 0, 0, 1};
    const double rel[] = {1.0, 0.95, 0.5};
    size_t order[3];
    /* lambda 1: relevance only */
    assert_int_equal(ret_mmr_order(3, rel, v, NULL, 2, 1.0, 3, order), 3);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 2);
    /* lambda 0.5: after 0, the duplicate scores 0.475 - 0.5 < 0.25 of the other one */
    assert_int_equal(ret_mmr_order(3, rel, v, NULL, 2, 0.5, 3, order), 3);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 1);
    /* a candidate without a vector has no similarity to the chosen ones */
    const int has[] = {1, 0, 1};
    assert_int_equal(ret_mmr_order(3, rel, v, has, 2, 0.5, 2, order), 2);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 1);
}

static void test_mode_names(void **state)
{
    (void)state;
    assert_int_equal(ret_mode_parse("hybrid"), RET_MODE_HYBRID);
    assert_int_equal(ret_mode_parse("dense"), RET_MODE_DENSE);
    assert_int_equal(ret_mode_parse("lexical"), RET_MODE_LEXICAL);
    assert_int_equal(ret_mode_parse("bm25"), -1);
    assert_string_equal(ret_mode_name(RET_MODE_DENSE), "dense");
    assert_int_equal(ret_fuse_parse("document"), RET_FUSE_DOCUMENT);
    assert_int_equal(ret_fuse_parse("chunk"), RET_FUSE_CHUNK);
    assert_int_equal(ret_fuse_parse("page"), -1);
    assert_int_equal(ret_fuse_parse(NULL), -1);
}

/* ---- a small corpus with the real model ---------------------------------------------- */
static eng_bert *g_bert;

static int have_model(void)
{
    struct stat sb;
    if (stat(MODEL "/model.safetensors", &sb) != 0) {
        print_message("no %s (make model fetches it): skipped\n", MODEL);
        return 0;
    }
    return 1;
}

static eng_bert *bert(void)
{
    if (!g_bert) {
        char err[256];
        eng_bert_opts o = {.n_threads = 2};
        assert_int_equal(eng_bert_load(MODEL, &o, &g_bert, err, sizeof err), LODE_OK);
    }
    return g_bert;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb, (void)flag, (void)f;
    return remove(p);
}

static char *make_tmpdir(void)
{
    char *d = lode_strdup("/tmp/lode-dense-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void rm_tree(char *d)
{
    nftw(d, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    lode_free(d);
}

static void spits(const char *dir, const char *name, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void set_mtime(const char *dir, const char *name, time_t t)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct timeval tv[2] = {{t, 0}, {t, 0}};
    assert_int_equal(utimes(path, tv), 0);
}

/* Short documents, one chunk each; the first is what the paraphrase asks about. */
static void write_corpus(const char *dir)
{
    spits(dir, "vacuum.md",
          "# VACUUM\n\nThe VACUUM command rebuilds the database file, repacking it into a "
          "minimal amount of disk space. Freed pages are returned to the operating system.\n");
    spits(dir, "wal.md",
          "# Write-ahead logging\n\nIn WAL mode changes are appended to a separate log and "
          "readers do not block writers. A checkpoint moves pages back into the database.\n");
    spits(dir, "fk.html",
          "<html><head><title>Foreign keys</title></head><body><h1>Foreign keys</h1><p>A "
          "foreign key constraint relates a column of a child table to the parent key of "
          "another table, and ON DELETE CASCADE removes child rows.</p></body></html>");
    spits(dir, "json.txt",
          "The json_extract function reads a value out of a JSON text at a path such as "
          "$.a.b and returns it as SQL text, integer or real.\n");
    spits(dir, "fts.md",
          "# Full-text search\n\nFTS5 is a virtual table module that provides full-text "
          "search. Its MATCH operator and bm25 ranking find documents by their words.\n");
    set_mtime(dir, "vacuum.md", 1600000000); /* 2020-09-13 */
    set_mtime(dir, "wal.md", 1700000000);    /* 2023-11-14 */
    set_mtime(dir, "fk.html", 1700000000);
    set_mtime(dir, "json.txt", 1700000000);
    set_mtime(dir, "fts.md", 1700000000);
}

static void ingest(ret_store *s, const char *dir, int embed, int prune, ing_run_stats *st)
{
    ing_run_opts o = {
        .threads = 1, .prune = prune, .embedder = embed ? bert() : NULL, .embed_path = MODEL};
    o.chunk.target_tokens = 256;
    o.chunk.overlap_tokens = 16;
    const char *paths[] = {dir};
    assert_int_equal(ing_run(s, paths, 1, &o, st), LODE_OK);
}

static int64_t sql_int(ret_store *s, const char *sql)
{
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(ret_store_sqlite(s), sql, -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return v;
}

typedef struct fixture {
    char *dir, *docs;
    char db[4200];
    ret_store *s;
} fixture;

static void fixture_open(fixture *f, int embed)
{
    memset(f, 0, sizeof *f);
    f->dir = make_tmpdir();
    char docs[4200];
    snprintf(docs, sizeof docs, "%s/docs", f->dir);
    assert_int_equal(mkdir(docs, 0755), 0);
    f->docs = lode_strdup(docs);
    snprintf(f->db, sizeof f->db, "%s/store.db", f->dir);
    write_corpus(docs);
    char err[512];
    assert_int_equal(ret_store_open(f->db, 0, &f->s, err, sizeof err), LODE_OK);
    ing_run_stats st;
    ingest(f->s, docs, embed, 0, &st);
    assert_int_equal(st.files_added, 5);
    if (embed) assert_int_equal(st.chunks_embedded, st.chunks);
}

static void fixture_close(fixture *f)
{
    ret_store_close(f->s);
    lode_free(f->docs);
    rm_tree(f->dir);
}

static ret_dense *dense_open(ret_store *s)
{
    ret_dense *d = NULL;
    char err[1024];
    ret_dense_opts o = {.model = bert()};
    lode_status st = ret_dense_open(s, &o, &d, err, sizeof err);
    if (st) print_message("ret_dense_open: %s\n", err);
    assert_int_equal(st, LODE_OK);
    return d;
}

/* 1 when the index holds exactly the store's vectors: same count, and every chunk's own
 * vector finds that chunk first. */
static void assert_index_matches(ret_store *s, ret_dense *d)
{
    int64_t nvec = 0, missing = 0;
    assert_int_equal(ret_store_vector_counts(s, ret_dense_model(d), &nvec, &missing), LODE_OK);
    assert_int_equal(missing, 0);
    assert_int_equal(ret_dense_count(d), nvec);
    sqlite3_stmt *q = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(ret_store_sqlite(s), "SELECT chunk_id, vec FROM vectors", -1, &q, NULL),
        SQLITE_OK);
    while (sqlite3_step(q) == SQLITE_ROW) {
        ret_vhit h[1];
        size_t n = 0;
        assert_int_equal(ret_dense_search_vec(d, sqlite3_column_blob(q, 1), 1, h, &n), LODE_OK);
        assert_int_equal(n, 1);
        assert_int_equal(h[0].id, sqlite3_column_int64(q, 0));
    }
    sqlite3_finalize(q);
}

static const char *top_uri(ret_store *s, ret_dense *d, ret_mode mode, const char *text,
                           const ret_filter *f, size_t *n_out, char *buf, size_t buflen)
{
    ret_query q = {.text = text, .k = 5, .mode = mode};
    if (f) q.filter = *f;
    ret_results *r = NULL;
    lode_status st = ret_hybrid_search(s, d, &q, &r);
    if (st) print_message("search: %s\n", ret_store_errmsg(s));
    assert_int_equal(st, LODE_OK);
    assert_int_equal(r->mode, mode);
    *n_out = r->n;
    snprintf(buf, buflen, "%s", r->n ? r->r[0].uri : "");
    /* best first; fusing documents, each document's best chunk comes before any second
     * chunk, and those carry their document's score */
    int repeat = 0;
    for (size_t i = 0; i < r->n; i++) {
        assert_non_null(r->r[i].text);
        assert_non_null(r->r[i].snippet);
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++) seen = r->r[j].document_id == r->r[i].document_id;
        if (mode == RET_MODE_HYBRID) {
            if (repeat) assert_true(seen);
            if (seen) {
                for (size_t j = 0; j < i; j++)
                    if (r->r[j].document_id == r->r[i].document_id)
                        assert_true(r->r[j].score == r->r[i].score);
                repeat = 1;
                continue;
            }
        }
        if (i) assert_true(r->r[i].score <= r->r[i - 1].score);
    }
    ret_results_free(r);
    return buf;
}

static void test_dense_and_hybrid(void **state)
{
    (void)state;
    if (!have_model()) skip();
    fixture f;
    fixture_open(&f, 1);
    ret_dense *d = dense_open(f.s);
    assert_index_matches(f.s, d);
    char buf[4096];
    size_t n = 0;
    /* a paraphrase sharing no word with the VACUUM page */
    const char *para = "shrinking bloated db storage";
    assert_non_null(
        strstr(top_uri(f.s, d, RET_MODE_DENSE, para, NULL, &n, buf, sizeof buf), "/vacuum.md"));
    top_uri(f.s, d, RET_MODE_LEXICAL, para, NULL, &n, buf, sizeof buf);
    assert_true(n == 0 || !strstr(buf, "/vacuum.md"));
    assert_non_null(
        strstr(top_uri(f.s, d, RET_MODE_HYBRID, para, NULL, &n, buf, sizeof buf), "/vacuum.md"));
    /* auto is hybrid when vectors exist */
    ret_query q = {.text = "foreign key cascade", .k = 3};
    ret_results *r = NULL;
    assert_int_equal(ret_hybrid_search(f.s, d, &q, &r), LODE_OK);
    assert_int_equal(r->mode, RET_MODE_HYBRID);
    assert_true(r->n >= 1);
    assert_non_null(strstr(r->r[0].uri, "/fk.html"));
    assert_true(r->r[0].lexical_rank == 1 && r->r[0].dense_rank >= 1);
    assert_string_equal(r->r[0].media_type, "text/html");
    ret_results_free(r);
    /* without a dense side: auto falls back with a note, dense is refused */
    assert_int_equal(ret_hybrid_search(f.s, NULL, &q, &r), LODE_OK);
    assert_int_equal(r->mode, RET_MODE_LEXICAL);
    assert_true(r->note[0] != 0);
    ret_results_free(r);
    q.mode = RET_MODE_DENSE;
    assert_int_equal(ret_hybrid_search(f.s, NULL, &q, &r), LODE_ERR_UNSUPPORTED);
    assert_null(r);
    /* fusing chunks finds the same page first; an unknown unit is refused */
    q.mode = RET_MODE_HYBRID;
    q.fuse = RET_FUSE_CHUNK;
    assert_int_equal(ret_hybrid_search(f.s, d, &q, &r), LODE_OK);
    assert_true(r->n >= 1);
    assert_non_null(strstr(r->r[0].uri, "/fk.html"));
    ret_results_free(r);
    q.fuse = (ret_fuse_unit)7;
    assert_int_equal(ret_hybrid_search(f.s, d, &q, &r), LODE_ERR_INVALID);
    q.fuse = RET_FUSE_DOCUMENT;
    /* bad options */
    q.mmr_lambda = 2;
    assert_int_equal(ret_hybrid_search(f.s, d, &q, &r), LODE_ERR_INVALID);
    q.mmr_lambda = 0.5; /* MMR runs and keeps k results */
    assert_int_equal(ret_hybrid_search(f.s, d, &q, &r), LODE_OK);
    assert_int_equal(r->n, 3);
    ret_results_free(r);
    ret_dense_close(d);
    fixture_close(&f);
}

static void test_filters(void **state)
{
    (void)state;
    if (!have_model()) skip();
    fixture f;
    fixture_open(&f, 1);
    ret_dense *d = dense_open(f.s);
    char buf[4096];
    size_t n = 0;
    const char *text = "database pages table";
    ret_mode modes[] = {RET_MODE_LEXICAL, RET_MODE_DENSE, RET_MODE_HYBRID};
    for (int m = 0; m < 3; m++) {
        ret_filter pf = {.path_glob = "*/wal.md"};
        top_uri(f.s, d, modes[m], text, &pf, &n, buf, sizeof buf);
        assert_int_equal(n, 1);
        assert_non_null(strstr(buf, "/wal.md"));
        ret_filter tf = {.media_type = "text/html"};
        top_uri(f.s, d, modes[m], "foreign key parent table", &tf, &n, buf, sizeof buf);
        assert_int_equal(n, 1);
        assert_non_null(strstr(buf, "/fk.html"));
        ret_filter family = {.media_type = "text/"}; /* every document here */
        top_uri(f.s, d, modes[m], "database", &family, &n, buf, sizeof buf);
        assert_true(n >= 1);
        /* before 2021: only the VACUUM page */
        ret_filter df = {.modified_before_ns = (int64_t)1609459200 * 1000000000};
        top_uri(f.s, d, modes[m], "database file pages", &df, &n, buf, sizeof buf);
        assert_int_equal(n, 1);
        assert_non_null(strstr(buf, "/vacuum.md"));
        ret_filter af = {.modified_after_ns = (int64_t)1609459200 * 1000000000,
                         .path_glob = "*/vacuum.md"};
        top_uri(f.s, d, modes[m], "database file pages", &af, &n, buf, sizeof buf);
        assert_int_equal(n, 0);
    }
    ret_dense_close(d);
    fixture_close(&f);
}

/* The FAISS file is caught up from the change log: deletes, re-ingest and prune made
 * while no dense side was open are applied when one opens. */
static void test_catch_up(void **state)
{
    (void)state;
    if (!have_model()) skip();
    fixture f;
    fixture_open(&f, 1);
    ret_dense *d = dense_open(f.s);
    int64_t seq0 = ret_dense_seq(d);
    int64_t n0 = ret_dense_count(d);
    ret_dense_close(d);
    /* a delete through the store (a change row, vectors gone by cascade) */
    char uri[4200];
    snprintf(uri, sizeof uri, "%s/json.txt", f.docs);
    assert_int_equal(ret_store_doc_delete(f.s, uri), LODE_OK);
    d = dense_open(f.s);
    assert_non_null(strstr(ret_dense_open_note(d), "caught up"));
    assert_int_equal(ret_dense_seq(d), seq0 + 1);
    assert_int_equal(ret_dense_count(d), n0 - 1);
    assert_index_matches(f.s, d);
    ret_dense_close(d);
    /* a re-ingest of a changed file and a prune of a removed one */
    spits(f.docs, "wal.md", "# WAL\n\nCheckpoints copy the write-ahead log into the database.\n");
    char p[4200];
    snprintf(p, sizeof p, "%s/fts.md", f.docs);
    assert_int_equal(unlink(p), 0);
    ing_run_stats st;
    ingest(f.s, f.docs, 1, 1, &st);
    assert_int_equal(st.files_updated, 1);
    assert_int_equal(st.files_pruned, 1);
    assert_int_equal(st.files_added, 1); /* json.txt again */
    d = dense_open(f.s);
    assert_int_equal(ret_dense_count(d), sql_int(f.s, "SELECT count(*) FROM chunks"));
    assert_index_matches(f.s, d);
    ret_store_counts c;
    assert_int_equal(ret_store_get_counts(f.s, &c), LODE_OK);
    assert_int_equal(ret_dense_seq(d), c.change_seq);
    ret_dense_close(d);
    /* a long-lived index sees vectors written without a change row (a fill) */
    d = dense_open(f.s);
    int64_t before = ret_dense_count(d);
    spits(f.docs, "new.txt", "A new note about savepoints and nested transactions.\n");
    ingest(f.s, f.docs, 0, 0, &st); /* lexical only: a chunk without a vector */
    assert_int_equal(ret_dense_sync(d, f.s), LODE_OK);
    assert_int_equal(ret_dense_count(d), before);
    int64_t filled = 0;
    assert_int_equal(ret_vectors_fill(f.s, bert(), NULL, NULL, NULL, &filled), LODE_OK);
    assert_int_equal(filled, 1);
    assert_int_equal(ret_dense_sync(d, f.s), LODE_OK);
    assert_int_equal(ret_dense_count(d), before + 1);
    assert_index_matches(f.s, d);
    ret_dense_close(d);
    /* a damaged file is rebuilt */
    char idx[4300];
    snprintf(idx, sizeof idx, "%s.faiss", f.db);
    assert_int_equal(truncate(idx, 100), 0);
    d = dense_open(f.s);
    assert_non_null(strstr(ret_dense_open_note(d), "rebuilt"));
    assert_index_matches(f.s, d);
    ret_dense_close(d);
    fixture_close(&f);
}

/* Flat below the store's threshold, approximate (HNSW) at or above it. */
static void test_index_kind(void **state)
{
    (void)state;
    if (!have_model()) skip();
    fixture f;
    fixture_open(&f, 1);
    ret_dense *d = dense_open(f.s);
    assert_false(ret_dense_is_approx(d));
    ret_dense_close(d);
    assert_int_equal(ret_store_index_kind_set(f.s, 3, "HNSW16,Flat"), LODE_OK);
    d = dense_open(f.s);
    assert_true(ret_dense_is_approx(d));
    assert_non_null(strstr(ret_dense_open_note(d), "approximate"));
    assert_index_matches(f.s, d);
    ret_dense_close(d);
    d = dense_open(f.s); /* the saved file is approximate already: loaded as it is */
    assert_true(ret_dense_is_approx(d));
    assert_non_null(strstr(ret_dense_open_note(d), "loaded"));
    ret_dense_close(d);
    assert_int_equal(ret_store_index_kind_set(f.s, 1000, NULL), LODE_OK);
    d = dense_open(f.s);
    assert_false(ret_dense_is_approx(d));
    assert_index_matches(f.s, d);
    ret_dense_close(d);
    fixture_close(&f);
}

/* A store embedded by another model is re-embedded, never mixed. */
static void test_model_change(void **state)
{
    (void)state;
    if (!have_model()) skip();
    fixture f;
    fixture_open(&f, 0); /* lexical only */
    ret_dense *d = NULL;
    char err[1024];
    ret_dense_opts o = {.model = bert()};
    assert_int_equal(ret_dense_open(f.s, &o, &d, err, sizeof err), LODE_ERR_NOTFOUND);
    /* pretend another model embedded it */
    int64_t chunks = sql_int(f.s, "SELECT count(*) FROM chunks");
    assert_int_equal(ret_store_embed_set(f.s, "other-model", 4, "/nowhere", NULL), LODE_OK);
    float v4[4] = {1, 0, 0, 0};
    sqlite3_stmt *q = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(ret_store_sqlite(f.s), "SELECT id FROM chunks", -1, &q, NULL),
        SQLITE_OK);
    while (sqlite3_step(q) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(q, 0);
        assert_int_equal(ret_store_vectors_put(f.s, "other-model", 4, 1, &id, v4, NULL), LODE_OK);
    }
    sqlite3_finalize(q);
    assert_int_equal(ret_dense_open(f.s, &o, &d, err, sizeof err), LODE_ERR_INVALID);
    assert_non_null(strstr(err, "other-model"));
    /* an ingest with the real model: nothing changed on disk, still every chunk is
     * re-embedded and the old vectors are gone */
    ing_run_stats st;
    ingest(f.s, f.docs, 1, 0, &st);
    assert_int_equal(st.vectors_dropped, chunks);
    assert_int_equal(st.chunks_embedded, chunks);
    assert_int_equal(sql_int(f.s, "SELECT count(*) FROM vectors WHERE model <> "
                                  "'all-MiniLM-L6-v2'"),
                     0);
    assert_int_equal(sql_int(f.s, "SELECT count(*) FROM vectors"), chunks);
    d = dense_open(f.s);
    assert_index_matches(f.s, d);
    ret_dense_close(d);
    ret_doctor_report rep;
    assert_int_equal(ret_doctor_run(f.s, &(ret_doctor_opts){0}, &rep), LODE_OK);
    assert_int_equal(rep.problems, 0);
    fixture_close(&f);
}

static const char *lode_bin(void)
{
    static char path[512];
    const char *b = getenv("LODE_BUILD");
    snprintf(path, sizeof path, "%s/lode", b && *b ? b : "build");
    return path;
}

/* `lode ingest` with embeddings, killed with SIGKILL at several moments: every time the
 * store reopens consistent (doctor finds no problem), no committed chunk lacks its
 * vector, and a last ingest completes it with the index matching. */
static void test_kill9(void **state)
{
    (void)state;
    if (!have_model()) skip();
    if (access(lode_bin(), X_OK) != 0) {
        print_message("no %s (make builds it): skipped\n", lode_bin());
        skip();
    }
    char *dir = make_tmpdir();
    char docs[4200], db[4200];
    snprintf(docs, sizeof docs, "%s/docs", dir);
    snprintf(db, sizeof db, "%s/store.db", dir);
    assert_int_equal(mkdir(docs, 0755), 0);
    enum { N = 40 };
    for (int i = 0; i < N; i++) {
        char name[64], text[512];
        snprintf(name, sizeof name, "doc%02d.txt", i);
        snprintf(text, sizeof text,
                 "Document %d says that topic %d is about %s and that its number squared is "
                 "%d.\n",
                 i, i, i % 3 ? "tables and indexes" : "transactions and locks", i * i);
        spits(docs, name, text);
    }
    /* kill right away, after the first commit, and deep into the run */
    const int at_docs[] = {-1, 1, 20};
    for (size_t k = 0; k < LODE_ARRAY_LEN(at_docs); k++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            int fd = open("/dev/null", O_WRONLY);
            dup2(fd, 1);
            dup2(fd, 2);
            execl(lode_bin(), lode_bin(), "ingest", "--quiet", "--threads", "1", "--db", db,
                  "--embed-model", MODEL, docs, (char *)NULL);
            _exit(127);
        }
        struct timespec ts = {0, 20 * 1000000L};
        int64_t seen = 0;
        int reaped = 0;
        for (int waited = 0; at_docs[k] > 0 && seen < at_docs[k] && waited < 120000; waited += 20) {
            nanosleep(&ts, NULL);
            sqlite3 *ro = NULL;
            sqlite3_stmt *q = NULL;
            if (sqlite3_open_v2(db, &ro, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
                sqlite3_prepare_v2(ro, "SELECT count(*) FROM documents", -1, &q, NULL) ==
                    SQLITE_OK &&
                sqlite3_step(q) == SQLITE_ROW)
                seen = sqlite3_column_int64(q, 0);
            sqlite3_finalize(q);
            sqlite3_close(ro);
            if (waitpid(pid, NULL, WNOHANG) == pid) { /* it finished first */
                reaped = 1;
                break;
            }
        }
        if (!reaped) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        struct stat sb;
        if (stat(db, &sb) != 0) continue; /* killed before the store was made */
        ret_store *s = NULL;
        char err[512];
        assert_int_equal(ret_store_open(db, 0, &s, err, sizeof err), LODE_OK);
        int64_t chunks = sql_int(s, "SELECT count(*) FROM chunks");
        int64_t vecs = sql_int(s, "SELECT count(*) FROM vectors");
        print_message("killed at %lld documents: %lld chunks, %lld vectors\n", (long long)seen,
                      (long long)chunks, (long long)vecs);
        assert_int_equal(chunks, vecs);
        ret_doctor_report rep;
        assert_int_equal(ret_doctor_run(s, NULL, &rep), LODE_OK);
        assert_int_equal(rep.problems, 0);
        ret_store_close(s);
    }
    /* finish the ingest: complete, and the doctor reports nothing at all */
    ret_store *s = NULL;
    char err[512];
    assert_int_equal(ret_store_open(db, 0, &s, err, sizeof err), LODE_OK);
    ing_run_stats st;
    ingest(s, docs, 1, 0, &st);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM documents"), N);
    ret_doctor_report rep;
    assert_int_equal(ret_doctor_run(s, NULL, &rep), LODE_OK);
    assert_int_equal(rep.problems, 0);
    assert_int_equal(rep.notes, 0);
    ret_dense *d = dense_open(s);
    assert_index_matches(s, d);
    ret_dense_close(d);
    ret_store_close(s);
    rm_tree(dir);
}

/* The doctor finds stray vectors, a damaged index file and a broken FTS index, and
 * repairs them. */
static void test_doctor_repairs(void **state)
{
    (void)state;
    if (!have_model()) skip();
    fixture f;
    fixture_open(&f, 1);
    ret_doctor_report rep;
    assert_int_equal(ret_doctor_run(f.s, NULL, &rep), LODE_OK);
    assert_int_equal(rep.problems, 0);
    assert_int_equal(rep.notes, 0);
    sqlite3 *db = ret_store_sqlite(f.s);
    /* a vector of another model, a chunk without a vector, the FTS row of a chunk gone,
     * and the index file cut short */
    assert_int_equal(sqlite3_exec(db,
                                  "INSERT INTO vectors SELECT chunk_id, 'x', 2, zeroblob(8) FROM "
                                  "vectors LIMIT 1; DELETE FROM vectors WHERE chunk_id = (SELECT "
                                  "max(id) FROM chunks) AND model = 'all-MiniLM-L6-v2'; "
                                  "INSERT INTO chunks_fts(chunks_fts, rowid, text, heading_path) "
                                  "SELECT 'delete', id, text, heading_path FROM chunks LIMIT 1",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    char idx[4300];
    snprintf(idx, sizeof idx, "%s.faiss", f.db);
    assert_int_equal(truncate(idx, 64), 0);
    assert_int_equal(ret_doctor_run(f.s, NULL, &rep), LODE_OK);
    assert_true(rep.problems >= 3); /* fts, model, index file */
    assert_int_equal(rep.notes, 1); /* the missing vector */
    ret_doctor_opts o = {.repair = 1, .model = bert()};
    assert_int_equal(ret_doctor_run(f.s, &o, &rep), LODE_OK);
    assert_true(rep.repaired >= 4);
    assert_int_equal(rep.unrepaired, 0);
    assert_int_equal(ret_doctor_run(f.s, NULL, &rep), LODE_OK);
    assert_int_equal(rep.problems, 0);
    assert_int_equal(rep.notes, 0);
    ret_dense *d = dense_open(f.s);
    assert_index_matches(f.s, d);
    ret_dense_close(d);
    fixture_close(&f);
}

/* Runs `lode args...` with stdout into out (a file); returns its exit status. */
static int run_lode(const char *const *args, const char *out)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int nul = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(nul, 2);
        char *argv[32];
        int n = 0;
        argv[n++] = (char *)lode_bin();
        for (; args[n - 1] && n < 31; n++) argv[n] = (char *)args[n - 1];
        argv[n] = NULL;
        execv(lode_bin(), argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    lode_buf b = LODE_BUF_INIT;
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) lode_buf_append(&b, tmp, n);
    fclose(f);
    return lode_buf_take(&b);
}

/* The commands: lode search's modes and JSON, lode doctor's exit status. */
static void test_cli(void **state)
{
    (void)state;
    if (!have_model()) skip();
    if (access(lode_bin(), X_OK) != 0) {
        print_message("no %s (make builds it): skipped\n", lode_bin());
        skip();
    }
    fixture f;
    fixture_open(&f, 1);
    char out[4300];
    snprintf(out, sizeof out, "%s/out.txt", f.dir);
    const char *a1[] = {"search", "--db",  f.db,
                        "--json", "-k",    "2",
                        "--mode", "dense", "shrinking bloated db storage",
                        NULL};
    assert_int_equal(run_lode(a1, out), 0);
    char *o = slurp(out);
    assert_non_null(strstr(o, "\"mode\": \"dense\""));
    assert_non_null(strstr(o, "vacuum.md"));
    lode_free(o);
    const char *a2[] = {"search", "--db",      f.db,    "--json",
                        "--path", "*/fk.html", "table", NULL}; /* hybrid by default */
    assert_int_equal(run_lode(a2, out), 0);
    o = slurp(out);
    assert_non_null(strstr(o, "\"mode\": \"hybrid\""));
    assert_non_null(strstr(o, "fk.html"));
    assert_null(strstr(o, "wal.md"));
    lode_free(o);
    const char *a3[] = {"search", "--db", f.db, "--mode", "fuzzy", "x", NULL};
    assert_int_equal(run_lode(a3, out), 2);
    const char *a4[] = {"doctor", "--db", f.db, NULL};
    assert_int_equal(run_lode(a4, out), 0);
    o = slurp(out);
    assert_non_null(strstr(o, "0 problems"));
    lode_free(o);
    /* a broken index file: doctor says so (exit 1), --repair fixes it (exit 0) */
    char idx[4300];
    snprintf(idx, sizeof idx, "%s.faiss", f.db);
    assert_int_equal(truncate(idx, 10), 0);
    assert_int_equal(run_lode(a4, out), 1);
    const char *a5[] = {"doctor", "--db", f.db, "--repair", NULL};
    assert_int_equal(run_lode(a5, out), 0);
    assert_int_equal(run_lode(a4, out), 0);
    fixture_close(&f);
    /* a lexical-only store: dense search is refused, the default falls back */
    fixture_open(&f, 0);
    snprintf(out, sizeof out, "%s/out.txt", f.dir);
    const char *b1[] = {"search", "--db", f.db, "--mode", "dense", "vacuum", NULL};
    assert_int_equal(run_lode(b1, out), 1);
    const char *b2[] = {"search", "--db", f.db, "--json", "vacuum", NULL};
    assert_int_equal(run_lode(b2, out), 0);
    o = slurp(out);
    assert_non_null(strstr(o, "\"mode\": \"lexical\""));
    lode_free(o);
    fixture_close(&f);
}

static int teardown_all(void **state)
{
    (void)state;
    eng_bert_destroy(g_bert);
    g_bert = NULL;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rrf_math),         cmocka_unit_test(test_rrf_docs_math),
        cmocka_unit_test(test_mmr_math),         cmocka_unit_test(test_mode_names),
        cmocka_unit_test(test_dense_and_hybrid), cmocka_unit_test(test_filters),
        cmocka_unit_test(test_catch_up),         cmocka_unit_test(test_model_change),
        cmocka_unit_test(test_doctor_repairs),   cmocka_unit_test(test_kill9),
        cmocka_unit_test(test_index_kind),       cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_all);
}
