/* test_vindex.c: the FAISS vector index: exact top-k of the flat index against brute
 * force, removal and replacement by id, recall of the approximate (HNSW) index against
 * exact search on random data, IVF through a factory string, save/load round trips with
 * the change sequence, and FAISS errors turned into statuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/lode.h"
#include "retrieval/store.h"
#include "retrieval/vindex.h"

#include <sqlite3.h>

static uint64_t rng = 88172645463325252ULL;

static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static float *rand_unit(size_t n, int dim)
{
    float *v = malloc(n * (size_t)dim * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        double ss = 0;
        for (int d = 0; d < dim; d++) {
            float x = frand();
            v[i * dim + d] = x;
            ss += (double)x * x;
        }
        for (int d = 0; d < dim; d++) v[i * dim + d] /= (float)sqrt(ss);
    }
    return v;
}

/* brute-force top k ids (of those with alive[i]) by inner product */
static void brute(const float *base, const int64_t *ids, const int *alive, size_t n, int dim,
                  const float *q, size_t k, int64_t *out)
{
    float *best = malloc(k * sizeof *best);
    for (size_t j = 0; j < k; j++) best[j] = -INFINITY, out[j] = -1;
    for (size_t i = 0; i < n; i++) {
        if (alive && !alive[i]) continue;
        float s = 0;
        for (int d = 0; d < dim; d++) s += base[i * dim + d] * q[d];
        if (s <= best[k - 1]) continue;
        size_t j = k - 1;
        while (j > 0 && best[j - 1] < s) {
            best[j] = best[j - 1];
            out[j] = out[j - 1];
            j--;
        }
        best[j] = s;
        out[j] = ids[i];
    }
    free(best);
}

static ret_vindex *make(int dim, int64_t threshold, const char *factory)
{
    ret_vindex_opts o = {dim, threshold, factory, 0, 0};
    ret_vindex *v = NULL;
    char err[256];
    if (ret_vindex_create(&o, &v, err, sizeof err) != LODE_OK) fail_msg("create: %s", err);
    return v;
}

static void test_flat_exact(void **state)
{
    const int dim = 32;
    const size_t n = 600, k = 10;
    float *base = rand_unit(n, dim), *qs = rand_unit(20, dim);
    int64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = 1000 + (int64_t)i * 7;
    ret_vindex *v = make(dim, -1, NULL);
    assert_int_equal(ret_vindex_add(v, n / 2, ids, base), LODE_OK);
    assert_int_equal(ret_vindex_add(v, n - n / 2, ids + n / 2, base + (n / 2) * dim), LODE_OK);
    assert_int_equal(ret_vindex_count(v), n);
    assert_false(ret_vindex_is_approx(v));
    ret_vhit hits[10];
    int64_t want[10];
    for (int q = 0; q < 20; q++) {
        size_t got = 0;
        assert_int_equal(ret_vindex_search(v, qs + q * dim, k, hits, &got), LODE_OK);
        assert_int_equal(got, k);
        brute(base, ids, NULL, n, dim, qs + q * dim, k, want);
        for (size_t j = 0; j < k; j++) assert_int_equal(hits[j].id, want[j]);
        for (size_t j = 1; j < k; j++) assert_true(hits[j - 1].score >= hits[j].score);
    }
    /* a stored vector finds itself with score 1 */
    size_t got = 0;
    assert_int_equal(ret_vindex_search(v, base + 5 * dim, 1, hits, &got), LODE_OK);
    assert_int_equal(hits[0].id, ids[5]);
    assert_true(fabsf(hits[0].score - 1) < 1e-5f);
    /* k beyond the count returns what there is */
    ret_vhit *many = malloc(1000 * sizeof *many);
    assert_int_equal(ret_vindex_search(v, qs, 1000, many, &got), LODE_OK);
    assert_int_equal(got, n);
    free(many);
    ret_vindex_destroy(v);
    free(base), free(qs), free(ids);
}

static void test_remove_replace(void **state)
{
    const int dim = 16;
    const size_t n = 300, k = 5;
    float *base = rand_unit(n, dim), *other = rand_unit(1, dim);
    int64_t *ids = malloc(n * sizeof *ids);
    int *alive = malloc(n * sizeof *alive);
    for (size_t i = 0; i < n; i++) ids[i] = (int64_t)i, alive[i] = 1;
    ret_vindex *v = make(dim, -1, NULL);
    assert_int_equal(ret_vindex_add(v, n, ids, base), LODE_OK);
    int64_t rm[4] = {3, 50, 299, 123456};
    size_t removed = 0;
    assert_int_equal(ret_vindex_remove(v, 4, rm, &removed), LODE_OK);
    assert_int_equal(removed, 3);
    alive[3] = alive[50] = alive[299] = 0;
    assert_int_equal(ret_vindex_count(v), n - 3);
    ret_vhit hits[5];
    int64_t want[5];
    size_t got;
    for (int q = 0; q < 3; q++) {
        const float *qv = base + rm[q] * dim; /* the removed vector itself */
        assert_int_equal(ret_vindex_search(v, qv, k, hits, &got), LODE_OK);
        assert_int_equal(got, k);
        brute(base, ids, alive, n, dim, qv, k, want);
        for (size_t j = 0; j < k; j++) {
            assert_int_not_equal(hits[j].id, rm[q]);
            assert_int_equal(hits[j].id, want[j]);
        }
    }
    /* replacing id 7's vector: the old one no longer finds it, the new one does */
    int64_t seven = 7;
    assert_int_equal(ret_vindex_add(v, 1, &seven, other), LODE_OK);
    assert_int_equal(ret_vindex_count(v), n - 3);
    assert_int_equal(ret_vindex_search(v, other, 1, hits, &got), LODE_OK);
    assert_int_equal(hits[0].id, 7);
    assert_int_equal(ret_vindex_search(v, base + 7 * dim, 1, hits, &got), LODE_OK);
    assert_true(hits[0].id != 7 || hits[0].score < 0.999f);
    /* negative ids are refused */
    int64_t neg = -5;
    assert_int_equal(ret_vindex_add(v, 1, &neg, other), LODE_ERR_INVALID);
    ret_vindex_destroy(v);
    free(base), free(other), free(ids), free(alive);
}

static double recall(ret_vindex *v, const float *base, const int64_t *ids, size_t n, int dim,
                     const float *qs, int nq, size_t k)
{
    ret_vhit *hits = malloc(k * sizeof *hits);
    int64_t *want = malloc(k * sizeof *want);
    size_t found = 0;
    for (int q = 0; q < nq; q++) {
        size_t got = 0;
        assert_int_equal(ret_vindex_search(v, qs + q * dim, k, hits, &got), LODE_OK);
        brute(base, ids, NULL, n, dim, qs + q * dim, k, want);
        for (size_t a = 0; a < got; a++)
            for (size_t b = 0; b < k; b++) found += hits[a].id == want[b];
    }
    free(hits), free(want);
    return (double)found / (double)(nq * (int)k);
}

static void test_hnsw_recall(void **state)
{
    const int dim = 64, nq = 100;
    const size_t n = 5000, k = 10;
    float *base = rand_unit(n, dim), *qs = rand_unit(nq, dim);
    int64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = (int64_t)i + 1;
    ret_vindex *v = make(dim, 2000, NULL);
    assert_int_equal(ret_vindex_add(v, 1500, ids, base), LODE_OK);
    assert_false(ret_vindex_is_approx(v));
    assert_int_equal(ret_vindex_add(v, n - 1500, ids + 1500, base + 1500 * dim), LODE_OK);
    assert_true(ret_vindex_is_approx(v));
    assert_int_equal(ret_vindex_count(v), n);
    double r = recall(v, base, ids, n, dim, qs, nq, k);
    printf("HNSW32 recall@10 vs exact: %.3f (5000 random 64-d unit vectors, efSearch 64)\n", r);
    assert_true(r >= 0.9);
    /* removal works on HNSW too (labels are lode's) */
    int64_t rm = ids[10];
    size_t removed = 0, got = 0;
    assert_int_equal(ret_vindex_remove(v, 1, &rm, &removed), LODE_OK);
    assert_int_equal(removed, 1);
    ret_vhit hit;
    assert_int_equal(ret_vindex_search(v, base + 10 * dim, 1, &hit, &got), LODE_OK);
    assert_int_not_equal(hit.id, rm);

    /* save/load keeps the kind, the ids, the removal and the sequence */
    char path[] = "/tmp/lode-vix-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    assert_int_equal(ret_vindex_save(v, path, 77), LODE_OK);
    ret_vindex_opts o = {dim, 2000, NULL, 0, 0};
    ret_vindex *w = NULL;
    int64_t seq = 0;
    char err[256];
    assert_int_equal(ret_vindex_load(path, &o, &w, &seq, err, sizeof err), LODE_OK);
    assert_int_equal(seq, 77);
    assert_true(ret_vindex_is_approx(w));
    assert_int_equal(ret_vindex_count(w), n - 1);
    ret_vhit a[10], b[10];
    size_t ga, gb;
    for (int q = 0; q < 10; q++) {
        assert_int_equal(ret_vindex_search(v, qs + q * dim, 10, a, &ga), LODE_OK);
        assert_int_equal(ret_vindex_search(w, qs + q * dim, 10, b, &gb), LODE_OK);
        assert_int_equal(ga, gb);
        for (size_t j = 0; j < ga; j++) assert_int_equal(a[j].id, b[j].id);
    }
    assert_int_equal(ret_vindex_search(w, base + 10 * dim, 1, &hit, &got), LODE_OK);
    assert_int_not_equal(hit.id, rm);
    unlink(path);
    ret_vindex_destroy(w);
    ret_vindex_destroy(v);
    free(base), free(qs), free(ids);
}

static void test_ivf_factory(void **state)
{
    const int dim = 32, nq = 50;
    const size_t n = 3000, k = 10;
    float *base = rand_unit(n, dim), *qs = rand_unit(nq, dim);
    int64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = (int64_t)i * 3;
    ret_vindex *v = make(dim, 1000, "IVF16,Flat");
    assert_int_equal(ret_vindex_add(v, n, ids, base), LODE_OK); /* trains on the live vectors */
    assert_true(ret_vindex_is_approx(v));
    double r = recall(v, base, ids, n, dim, qs, nq, k);
    printf("IVF16 (nprobe 1) recall@10 vs exact: %.3f\n", r);
    assert_true(r > 0.2); /* one probe of 16 lists: coarse, but a working index */
    /* heavy removal compacts the index and keeps results right */
    size_t removed = 0;
    assert_int_equal(ret_vindex_remove(v, 2000, ids, &removed), LODE_OK);
    assert_int_equal(removed, 2000);
    assert_int_equal(ret_vindex_count(v), 1000);
    ret_vhit hits[10];
    size_t got = 0;
    assert_int_equal(ret_vindex_search(v, base + 2500 * dim, 10, hits, &got), LODE_OK);
    assert_true(got >= 1);
    assert_int_equal(hits[0].id, ids[2500]);
    for (size_t j = 0; j < got; j++) assert_true(hits[j].id >= ids[2000]);
    ret_vindex_destroy(v);
    free(base), free(qs), free(ids);
}

static void test_errors(void **state)
{
    char err[256];
    ret_vindex *v = NULL;
    ret_vindex_opts bad = {0, 0, NULL, 0, 0};
    assert_int_equal(ret_vindex_create(&bad, &v, err, sizeof err), LODE_ERR_INVALID);
    /* an unknown factory string fails when the index turns approximate, with FAISS's text */
    v = make(8, 2, "NoSuchIndex");
    float x[16] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    int64_t ids[2] = {1, 2};
    assert_int_equal(ret_vindex_add(v, 2, ids, x), LODE_ERR_INDEX);
    assert_non_null(strstr(ret_vindex_errmsg(v), "vindex"));
    assert_true(strlen(ret_vindex_errmsg(v)) > 20);
    ret_vindex_destroy(v);

    ret_vindex_opts o = {8, -1, NULL, 0, 0};
    int64_t seq;
    assert_int_equal(ret_vindex_load("/nonexistent/x.vix", &o, &v, &seq, err, sizeof err),
                     LODE_ERR_NOTFOUND);
    char path[] = "/tmp/lode-vix-XXXXXX";
    int fd = mkstemp(path);
    assert_int_equal(write(fd, "not an index at all, just text", 30), 30);
    close(fd);
    assert_int_equal(ret_vindex_load(path, &o, &v, &seq, err, sizeof err), LODE_ERR_FORMAT);
    /* a good file, then the wrong dimension, then truncated */
    v = make(8, -1, NULL);
    assert_int_equal(ret_vindex_add(v, 2, ids, x), LODE_OK);
    assert_int_equal(ret_vindex_save(v, path, 5), LODE_OK);
    ret_vindex_destroy(v);
    ret_vindex_opts o16 = {16, -1, NULL, 0, 0};
    assert_int_equal(ret_vindex_load(path, &o16, &v, &seq, err, sizeof err), LODE_ERR_INVALID);
    /* a file made for other vectors (another model's tag) is refused */
    ret_vindex_opts otag = {8, -1, NULL, 0, 77};
    assert_int_equal(ret_vindex_load(path, &otag, &v, &seq, err, sizeof err), LODE_ERR_INVALID);
    assert_null(v);
    assert_int_equal(ret_vindex_load(path, &o, &v, &seq, err, sizeof err), LODE_OK);
    assert_int_equal(seq, 5);
    assert_int_equal(ret_vindex_count(v), 2);
    ret_vindex_destroy(v);
    FILE *f = fopen(path, "r+");
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fclose(f);
    assert_int_equal(truncate(path, len - 10), 0);
    assert_int_equal(ret_vindex_load(path, &o, &v, &seq, err, sizeof err), LODE_ERR_FORMAT);
    assert_null(v);
    unlink(path);
    /* saving where it cannot be written */
    v = make(8, -1, NULL);
    assert_int_equal(ret_vindex_save(v, "/nonexistent/dir/x.vix", 1), LODE_ERR_IO);
    ret_vindex_destroy(v);
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* The store's vectors table (migration 0004): shape checks and cascade with its chunk. */
static void test_vectors_table(void **state)
{
    char dir[] = "/tmp/lode-vtab-XXXXXX", path[64], err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
    ret_store *s = NULL;
    assert_int_equal(ret_store_open(path, 0, &s, err, sizeof err), LODE_OK);
    assert_true(ret_store_schema_version() >= 4);
    sqlite3 *db = ret_store_sqlite(s);
    assert_int_equal(exec(db,
                          "INSERT INTO documents(uri, sha256, size, ingested_at) VALUES "
                          "('a', printf('%064d', 0), 1, 0);"
                          "INSERT INTO chunks(document_id, ordinal, text, char_start, char_end)"
                          " VALUES (1, 0, 'x', 0, 1);"
                          "INSERT INTO chunks_fts(rowid, text, heading_path) VALUES (1, 'x', '');"),
                     SQLITE_OK);
    assert_int_equal(exec(db, "INSERT INTO vectors VALUES (1, 'm', 2, zeroblob(8))"), SQLITE_OK);
    /* a blob of the wrong size, and a second vector of the same model, are refused */
    assert_int_not_equal(exec(db, "INSERT INTO vectors VALUES (1, 'n', 2, zeroblob(7))"),
                         SQLITE_OK);
    assert_int_not_equal(exec(db, "INSERT INTO vectors VALUES (1, 'm', 2, zeroblob(8))"),
                         SQLITE_OK);
    assert_int_equal(exec(db, "INSERT INTO vectors VALUES (1, 'other-model', 1, zeroblob(4))"),
                     SQLITE_OK);
    assert_int_equal(exec(db, "DELETE FROM chunks WHERE id = 1"), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM vectors", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 0); /* gone with their chunk */
    sqlite3_finalize(st);
    ret_store_close(s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flat_exact),  cmocka_unit_test(test_remove_replace),
        cmocka_unit_test(test_hnsw_recall), cmocka_unit_test(test_ivf_factory),
        cmocka_unit_test(test_errors),      cmocka_unit_test(test_vectors_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
