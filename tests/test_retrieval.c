/* test_retrieval.c: the store (schema and migrations, documents and chunks kept in sync
 * with FTS5, the change sequence, concurrent writers) and lexical search. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "retrieval/store_int.h"

#define SHA_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define SHA_B "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

/* A fresh temporary directory per test, removed with everything in it afterwards. */
typedef struct fixture {
    char dir[64];
    char db[128];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/lode-test-retrieval-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->db, sizeof f->db, "%s/lode.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

static ret_store *open_rw(const char *path)
{
    ret_store *s = NULL;
    char err[256];
    lode_status st = ret_store_open(path, 0, &s, err, sizeof err);
    if (st) fprintf(stderr, "open %s: %s\n", path, err);
    assert_int_equal(st, LODE_OK);
    return s;
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

static void test_open_sets_version_and_wal(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    assert_true(ret_store_schema_version() >= 2);
    assert_int_equal(sql_int(s, "PRAGMA user_version"), ret_store_schema_version());
    assert_int_equal(sql_int(s, "PRAGMA foreign_keys"), 1);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM sqlite_schema WHERE name IN ('documents', "
                                "'chunks', 'chunks_fts', 'ingest_runs', 'changes', "
                                "'v_documents', 'v_chunks', 'v_ingest_runs')"),
                     8);
    sqlite3_stmt *q = NULL;
    sqlite3_prepare_v2(ret_store_sqlite(s), "PRAGMA journal_mode", -1, &q, NULL);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    ret_store_close(s);
    /* reopening is a no-op on the schema */
    s = open_rw(f->db);
    assert_int_equal(sql_int(s, "PRAGMA user_version"), ret_store_schema_version());
    ret_store_close(s);
}

static void test_replace_and_delete(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    ret_doc d = {"file:///a.txt", "A", NULL, SHA_A, 10, 5};
    ret_chunk_in c[2] = {{"hello world", "H1 > H2", 0, 11, 2}, {"second chunk", NULL, 11, 23, 2}};
    int64_t id = 0;
    assert_int_equal(ret_store_doc_replace(s, &d, c, 2, &id), LODE_OK);
    assert_true(id > 0);
    ret_doc_info info;
    assert_int_equal(ret_store_doc_lookup(s, "file:///a.txt", &info), LODE_OK);
    assert_int_equal(info.id, id);
    assert_string_equal(info.sha256, SHA_A);
    assert_int_equal(info.size, 10);
    assert_int_equal(info.mtime_ns, 5);
    assert_int_equal(ret_store_doc_lookup(s, "file:///b.txt", &info), LODE_ERR_NOTFOUND);
    ret_store_counts n;
    assert_int_equal(ret_store_get_counts(s, &n), LODE_OK);
    assert_int_equal(n.documents, 1);
    assert_int_equal(n.chunks, 2);
    assert_int_equal(n.change_seq, 1);
    ret_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_sets_version_and_wal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_and_delete, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
