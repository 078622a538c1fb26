/* test_retrieval.c: the store (schema and migrations, documents and chunks kept in sync
 * with FTS5, the change sequence, concurrent writers) and lexical search. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "retrieval/qlog.h"
#include "retrieval/search.h"
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

/* One chunk per document, so a search hit names its document. */
static void put(ret_store *s, const char *uri, const char *heading, const char *text)
{
    ret_doc d = {uri, uri, "text/plain", SHA_A, (int64_t)strlen(text), 1};
    ret_chunk_in c = {text, heading, 0, (int64_t)strlen(text), 3};
    lode_status st = ret_store_doc_replace(s, &d, &c, 1, NULL);
    if (st) fprintf(stderr, "replace %s: %s\n", uri, ret_store_errmsg(s));
    assert_int_equal(st, LODE_OK);
}

static size_t count_hits(ret_store *s, const char *query)
{
    ret_hits *h = NULL;
    ret_search_opts o = {.k = 50};
    lode_status st = ret_search_bm25(s, query, &o, &h);
    if (st) fprintf(stderr, "search %s: %s\n", query, ret_store_errmsg(s));
    assert_int_equal(st, LODE_OK);
    size_t n = h->n;
    ret_hits_free(h);
    return n;
}

static void fts_integrity(ret_store *s)
{
    char *err = NULL;
    int rc = sqlite3_exec(ret_store_sqlite(s),
                          "INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')", NULL,
                          NULL, &err);
    if (rc) fprintf(stderr, "integrity-check: %s\n", err);
    sqlite3_free(err);
    assert_int_equal(rc, SQLITE_OK);
}

static void test_replace_and_lookup(void **state)
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
    assert_int_equal(ret_store_doc_set_mtime(s, id, 77), LODE_OK);
    assert_int_equal(ret_store_doc_lookup(s, "file:///a.txt", &info), LODE_OK);
    assert_int_equal(info.mtime_ns, 77);
    assert_int_equal(ret_store_doc_set_mtime(s, id + 100, 1), LODE_ERR_NOTFOUND);
    ret_store_counts n;
    assert_int_equal(ret_store_get_counts(s, &n), LODE_OK);
    assert_int_equal(n.documents, 1);
    assert_int_equal(n.chunks, 2);
    assert_int_equal(n.change_seq, 1);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM v_chunks WHERE heading_path = 'H1 > H2' "
                                "AND uri = 'file:///a.txt' AND ordinal = 0"),
                     1);
    assert_int_equal(sql_int(s, "SELECT chunks FROM v_documents"), 2);
    ret_store_close(s);
}

static void test_bad_input(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    ret_chunk_in c = {"text", NULL, 0, 4, 1};
    ret_doc d = {"file:///x", NULL, NULL, "abc", 1, 0};
    assert_int_equal(ret_store_doc_replace(s, &d, &c, 1, NULL), LODE_ERR_INVALID);
    assert_non_null(strstr(ret_store_errmsg(s), "sha256"));
    d.sha256 = SHA_A;
    d.uri = "";
    assert_int_equal(ret_store_doc_replace(s, &d, &c, 1, NULL), LODE_ERR_INVALID);
    d.uri = "file:///x";
    c.text = "bad \xff utf8";
    assert_int_equal(ret_store_doc_replace(s, &d, &c, 1, NULL), LODE_ERR_UTF8);
    c.text = "";
    assert_int_equal(ret_store_doc_replace(s, &d, &c, 1, NULL), LODE_ERR_INVALID);
    c.text = "ok";
    c.char_start = 5;
    c.char_end = 2;
    assert_int_equal(ret_store_doc_replace(s, &d, &c, 1, NULL), LODE_ERR_INVALID);
    assert_int_equal(ret_store_doc_delete(s, "file:///nope"), LODE_ERR_NOTFOUND);
    ret_store_counts n;
    assert_int_equal(ret_store_get_counts(s, &n), LODE_OK);
    assert_int_equal(n.documents, 0);
    assert_int_equal(n.change_seq, 0);
    ret_store_close(s);
}

static void test_fts_follows_replace_and_delete(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    put(s, "file:///d1", "Intro", "the quick brown fox jumps");
    put(s, "file:///d2", "Other", "a lazy dog sleeps");
    assert_int_equal(count_hits(s, "fox"), 1);
    assert_int_equal(count_hits(s, "jumping"), 1); /* porter stemming */
    put(s, "file:///d1", "Intro", "a slow green turtle walks");
    assert_int_equal(count_hits(s, "fox"), 0);
    assert_int_equal(count_hits(s, "turtle"), 1);
    assert_int_equal(count_hits(s, "intro"), 1); /* the heading path is indexed too */
    fts_integrity(s);
    assert_int_equal(ret_store_doc_delete(s, "file:///d1"), LODE_OK);
    assert_int_equal(count_hits(s, "turtle"), 0);
    assert_int_equal(count_hits(s, "dog"), 1);
    fts_integrity(s);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM chunks"), 1);
    ret_store_close(s);
}

static void test_change_sequence(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    ret_store_counts n;
    int64_t last = 0;
    const char *uris[] = {"file:///1", "file:///2", "file:///1", "file:///3"};
    for (size_t i = 0; i < LODE_ARRAY_LEN(uris); i++) {
        put(s, uris[i], NULL, "some words here");
        assert_int_equal(ret_store_get_counts(s, &n), LODE_OK);
        assert_true(n.change_seq > last);
        last = n.change_seq;
    }
    assert_int_equal(ret_store_doc_delete(s, "file:///2"), LODE_OK);
    assert_int_equal(ret_store_get_counts(s, &n), LODE_OK);
    assert_true(n.change_seq > last);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM changes"), 5);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM changes WHERE op = 'update' AND "
                                "uri = 'file:///1' AND chunks_removed = 1 AND chunks_added = 1"),
                     1);
    /* the removed ids of the update are the ids the insert added, and never reused */
    assert_int_equal(sql_int(s, "SELECT (SELECT removed_ids FROM changes WHERE op = 'update') = "
                                "(SELECT added_ids FROM changes WHERE seq = 1)"),
                     1);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM changes a JOIN changes b ON a.seq < b.seq "
                                "AND EXISTS (SELECT 1 FROM json_each(a.added_ids) x, "
                                "json_each(b.added_ids) y WHERE x.value = y.value)"),
                     0);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM changes WHERE op = 'delete' AND "
                                "chunks_removed = 1 AND added_ids = '[]'"),
                     1);
    ret_store_close(s);
}

/* The change log read back through ret_store_changes: what a derived index replays. */
static void test_change_log_api(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    ret_change *v = NULL;
    size_t n = 9;
    assert_int_equal(ret_store_changes(s, 0, 0, &v, &n), LODE_OK);
    assert_int_equal(n, 0);
    assert_null(v);
    ret_doc d = {"file:///a", NULL, NULL, SHA_A, 1, 0};
    ret_chunk_in c[3] = {{"one", NULL, 0, 3, 1}, {"two", NULL, 3, 6, 1}, {"six", NULL, 6, 9, 1}};
    assert_int_equal(ret_store_doc_replace(s, &d, c, 3, NULL), LODE_OK); /* insert */
    assert_int_equal(ret_store_doc_replace(s, &d, c, 1, NULL), LODE_OK); /* update */
    put(s, "file:///b", NULL, "bee");
    assert_int_equal(ret_store_doc_delete(s, "file:///a"), LODE_OK);
    assert_int_equal(ret_store_changes(s, 0, 0, &v, &n), LODE_OK);
    assert_int_equal(n, 4);
    assert_int_equal(v[0].op, 'i');
    assert_int_equal(v[0].n_removed, 0);
    assert_int_equal(v[0].n_added, 3);
    assert_int_equal(v[1].op, 'u');
    assert_int_equal(v[1].n_removed, 3);
    assert_memory_equal(v[1].removed, v[0].added, 3 * sizeof(int64_t));
    assert_int_equal(v[1].n_added, 1);
    assert_true(v[1].added[0] > v[0].added[2]); /* ids are never reused */
    assert_int_equal(v[2].op, 'i');
    assert_int_equal(v[3].op, 'd');
    assert_int_equal(v[3].n_removed, 1);
    assert_int_equal(v[3].removed[0], v[1].added[0]);
    assert_int_equal(v[3].document_id, v[0].document_id);
    for (size_t i = 1; i < n; i++) assert_true(v[i].seq > v[i - 1].seq);
    int64_t second = v[1].seq;
    ret_changes_free(v, n);
    /* paging: after a seq, at most max */
    assert_int_equal(ret_store_changes(s, second, 1, &v, &n), LODE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(v[0].op, 'i');
    ret_changes_free(v, n);
    /* a row changed by hand into nonsense is reported, not trusted */
    assert_int_equal(sqlite3_exec(ret_store_sqlite(s),
                                  "UPDATE changes SET added_ids = '[1,x]' WHERE seq = 1", NULL,
                                  NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(ret_store_changes(s, 0, 0, &v, &n), LODE_ERR_FORMAT);
    assert_non_null(strstr(ret_store_errmsg(s), "malformed"));
    ret_store_close(s);
}

static void test_explicit_transactions(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    assert_int_equal(ret_store_begin(s), LODE_OK);
    assert_int_equal(ret_store_begin(s), LODE_ERR_INVALID);
    assert_true(ret_store_in_txn(s));
    put(s, "file:///r1", NULL, "rolled back");
    assert_int_equal(ret_store_rollback(s), LODE_OK);
    assert_false(ret_store_in_txn(s));
    assert_int_equal(sql_int(s, "SELECT count(*) FROM documents"), 0);
    assert_int_equal(ret_store_begin(s), LODE_OK);
    put(s, "file:///c1", NULL, "committed one");
    ret_chunk_in bad = {"x", NULL, 3, 1, 1};
    ret_doc d = {"file:///c2", NULL, NULL, SHA_A, 1, 0};
    assert_int_equal(ret_store_doc_replace(s, &d, &bad, 1, NULL), LODE_ERR_INVALID);
    put(s, "file:///c3", NULL, "committed two");
    assert_int_equal(ret_store_commit(s), LODE_OK);
    assert_int_equal(ret_store_commit(s), LODE_ERR_INVALID);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM documents"), 2);
    ret_store_close(s);
}

static void test_doc_uris_prefix(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    put(s, "/data/a/x.txt", NULL, "one");
    put(s, "/data/a/y.txt", NULL, "two");
    put(s, "/data/ab.txt", NULL, "three");
    put(s, "/data/b/z.txt", NULL, "four");
    char **v = NULL;
    size_t n = 0;
    assert_int_equal(ret_store_doc_uris(s, "/data/a/", &v, &n), LODE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(v[0], "/data/a/x.txt");
    assert_string_equal(v[1], "/data/a/y.txt");
    ret_strv_free(v, n);
    assert_int_equal(ret_store_doc_uris(s, "", &v, &n), LODE_OK);
    assert_int_equal(n, 4);
    ret_strv_free(v, n);
    assert_int_equal(ret_store_doc_uris(s, "/nothing", &v, &n), LODE_OK);
    assert_int_equal(n, 0);
    ret_strv_free(v, n);
    ret_store_close(s);
}

static void test_ingest_runs(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    const char *paths[] = {"/docs", "quote\"d"};
    int64_t run = 0;
    assert_int_equal(ret_store_run_start(s, paths, 2, &run), LODE_OK);
    assert_true(run > 0);
    ret_run_stats rs = {.files_seen = 5, .files_added = 3, .files_skipped = 1, .bytes = 4096};
    assert_int_equal(ret_store_run_finish(s, run, &rs, "ok"), LODE_OK);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM v_ingest_runs WHERE status = 'ok' AND "
                                "files_seen = 5 AND files_added = 3 AND bytes = 4096 AND "
                                "json_extract(paths, '$[1]') = 'quote\"d'"),
                     1);
    assert_int_equal(ret_store_run_finish(s, run + 9, &rs, "ok"), LODE_ERR_NOTFOUND);
    ret_store_close(s);
}

static void test_schema_equals_migrations(void **state)
{
    sqlite3 *a = NULL, *b = NULL;
    char err[256];
    assert_int_equal(sqlite3_open(":memory:", &a), SQLITE_OK);
    assert_int_equal(sqlite3_open(":memory:", &b), SQLITE_OK);
    assert_int_equal(ret_schema_create(a, 0, err, sizeof err), LODE_OK);
    assert_int_equal(ret_schema_create(b, 1, err, sizeof err), LODE_OK);
    const char *q = "SELECT group_concat(type || ' ' || name || ' ' || "
                    "coalesce(replace(replace(replace(sql, char(10), ' '), '  ', ' '), '  ', ' '),"
                    " ''), char(10)) FROM (SELECT * FROM sqlite_schema ORDER BY name)";
    sqlite3_stmt *qa, *qb;
    assert_int_equal(sqlite3_prepare_v2(a, q, -1, &qa, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(b, q, -1, &qb, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(qa), SQLITE_ROW);
    assert_int_equal(sqlite3_step(qb), SQLITE_ROW);
    assert_string_equal(sqlite3_column_text(qa, 0), sqlite3_column_text(qb, 0));
    assert_non_null(strstr((const char *)sqlite3_column_text(qa, 0), "v_ingest_runs"));
    sqlite3_finalize(qa);
    sqlite3_finalize(qb);
    sqlite3_close(a);
    sqlite3_close(b);
}

static void test_migrates_old_store(void **state)
{
    fixture *f = *state;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    const char *m1 = ret_sql_file("sql/migrations/0001_initial.sql");
    assert_non_null(m1);
    assert_int_equal(sqlite3_exec(db, m1, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "PRAGMA user_version = 1; INSERT INTO documents(uri, "
                                  "sha256, size, ingested_at) VALUES ('old', '" SHA_B "', 3, 0)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    /* read-only cannot migrate and says so */
    ret_store *s = NULL;
    char err[256];
    assert_int_equal(ret_store_open(f->db, RET_STORE_READONLY, &s, err, sizeof err),
                     LODE_ERR_VERSION);
    assert_non_null(strstr(err, "older"));
    /* ... unless asked to upgrade first */
    assert_int_equal(
        ret_store_open(f->db, RET_STORE_READONLY | RET_STORE_UPGRADE, &s, err, sizeof err),
        LODE_OK);
    assert_int_equal(sql_int(s, "PRAGMA user_version"), ret_store_schema_version());
    ret_store_close(s);
    s = open_rw(f->db);
    assert_int_equal(sql_int(s, "PRAGMA user_version"), ret_store_schema_version());
    assert_int_equal(sql_int(s, "SELECT count(*) FROM v_documents WHERE uri = 'old'"), 1);
    /* 0003 dropped the insert trigger: new chunks are indexed by the store, once */
    assert_int_equal(sql_int(s, "SELECT count(*) FROM sqlite_schema WHERE name = 'chunks_ai'"), 0);
    put(s, "file:///new", NULL, "migrated stores index new chunks");
    assert_int_equal(count_hits(s, "migrated"), 1);
    fts_integrity(s);
    ret_store_close(s);
}

static void test_newer_store_refused(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", ret_store_schema_version() + 1);
    assert_int_equal(sqlite3_exec(ret_store_sqlite(s), sql, NULL, NULL, NULL), SQLITE_OK);
    ret_store_close(s);
    char err[512];
    s = (ret_store *)1;
    assert_int_equal(ret_store_open(f->db, 0, &s, err, sizeof err), LODE_ERR_VERSION);
    assert_null(s);
    assert_non_null(strstr(err, "newer"));
    assert_int_equal(ret_store_open(f->db, RET_STORE_READONLY, &s, err, sizeof err),
                     LODE_ERR_VERSION);
}

static void test_not_a_store(void **state)
{
    fixture *f = *state;
    ret_store *s = NULL;
    char err[512];
    FILE *fp = fopen(f->db, "w");
    assert_non_null(fp);
    fputs("this is not a database, just text that is long enough to look like a header......"
          "................................................................................",
          fp);
    fclose(fp);
    assert_int_equal(ret_store_open(f->db, 0, &s, err, sizeof err), LODE_ERR_FORMAT);
    unlink(f->db);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(ret_store_open(f->db, 0, &s, err, sizeof err), LODE_ERR_FORMAT);
    assert_non_null(strstr(err, "not a lode store"));
    char missing[160];
    snprintf(missing, sizeof missing, "%s/missing.db", f->dir);
    assert_int_equal(ret_store_open(missing, RET_STORE_READONLY, &s, err, sizeof err),
                     LODE_ERR_NOTFOUND);
    assert_int_equal(access(missing, F_OK), -1); /* read-only open creates nothing */
}

static void test_search_hits(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    put(s, "file:///both", "Guide > Logging",
        "the write-ahead log keeps readers and writers apart");
    put(s, "file:///one", "Other", "a ship's log book");
    put(s, "file:///none", "Zed", "nothing relevant at all");
    ret_hits *h = NULL;
    ret_search_opts o = {.k = 5};
    assert_int_equal(ret_search_bm25(s, "write-ahead log", &o, &h), LODE_OK);
    assert_int_equal(h->n, 2);
    assert_string_equal(h->hit[0].uri, "file:///both");
    assert_string_equal(h->hit[0].title, "file:///both");
    assert_string_equal(h->hit[0].heading_path, "Guide > Logging");
    assert_true(h->hit[0].all_terms);
    assert_non_null(strstr(h->hit[0].snippet, "[log]"));
    assert_string_equal(h->hit[1].uri, "file:///one"); /* the OR fill-up */
    assert_false(h->hit[1].all_terms);
    assert_true(h->hit[0].score > 0);
    ret_hits_free(h);
    /* ALL mode: only the complete match; custom markers */
    o.mode = RET_MATCH_ALL;
    o.hl_open = "<b>";
    o.hl_close = "</b>";
    assert_int_equal(ret_search_bm25(s, "write-ahead log", &o, &h), LODE_OK);
    assert_int_equal(h->n, 1);
    assert_non_null(strstr(h->hit[0].snippet, "<b>log</b>"));
    ret_hits_free(h);
    /* k bounds the hits */
    o = (ret_search_opts){.k = 1, .mode = RET_MATCH_ANY};
    assert_int_equal(ret_search_bm25(s, "log nothing", &o, &h), LODE_OK);
    assert_int_equal(h->n, 1);
    ret_hits_free(h);
    o.k = RET_SEARCH_MAX_K + 1;
    assert_int_equal(ret_search_bm25(s, "log", &o, &h), LODE_ERR_INVALID);
    assert_null(h);
    ret_store_close(s);
}

/* Hits of ids only are the full search's hits without their strings, and their snippets,
 * made afterwards from the query the hits carry, are the full search's snippets. */
static void test_search_ids_and_snippets(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    put(s, "file:///both", "Guide > Logging",
        "the write-ahead log keeps readers and writers apart; a log of changes");
    put(s, "file:///one", "Other", "a ship's log book, written at sea");
    put(s, "file:///ahead", "Ahead", "rotate the log well ahead of time");
    put(s, "file:///none", "Zed", "nothing relevant at all");
    ret_filter only_one = {.path_glob = "*/one"};
    for (int filtered = 0; filtered < 2; filtered++) {
        ret_search_opts full = {.k = 5, .filter = filtered ? &only_one : NULL},
                        ids = {.k = 5, .filter = filtered ? &only_one : NULL, .ids_only = 1};
        ret_hits *a = NULL, *b = NULL;
        assert_int_equal(ret_search_bm25(s, "write-ahead log", &full, &a), LODE_OK);
        assert_int_equal(ret_search_bm25(s, "write-ahead log", &ids, &b), LODE_OK);
        assert_int_equal(a->n, filtered ? 1 : 3);
        assert_int_equal(b->n, a->n);
        assert_non_null(b->fts);
        assert_string_equal(b->fts, a->fts);
        for (size_t i = 0; i < a->n; i++) {
            assert_int_equal(b->hit[i].chunk_id, a->hit[i].chunk_id);
            assert_int_equal(b->hit[i].document_id, a->hit[i].document_id);
            assert_true(b->hit[i].score == a->hit[i].score);
            assert_int_equal(b->hit[i].all_terms, a->hit[i].all_terms);
            assert_null(b->hit[i].snippet);
            assert_null(b->hit[i].uri);
            char *sn = NULL;
            assert_int_equal(ret_search_snippet(s, b->fts, b->hit[i].chunk_id, NULL, &sn), LODE_OK);
            assert_string_equal(sn, a->hit[i].snippet);
            lode_free(sn);
        }
        if (!filtered) {
            /* the every-term match first, its snippet marking both words */
            assert_non_null(strstr(a->hit[0].snippet, "[write-ahead]"));
            assert_non_null(strstr(a->hit[0].snippet, "[log]"));
            /* a chunk the query does not match has no snippet */
            ret_hits *z = NULL;
            assert_int_equal(ret_search_bm25(s, "nothing relevant", &ids, &z), LODE_OK);
            assert_int_equal(z->n, 1);
            char *sn = NULL;
            assert_int_equal(ret_search_snippet(s, b->fts, z->hit[0].chunk_id, NULL, &sn),
                             LODE_ERR_NOTFOUND);
            assert_null(sn);
            ret_hits_free(z);
            ret_search_opts marks = {.hl_open = "<", .hl_close = ">", .snippet_tokens = 3};
            assert_int_equal(ret_search_snippet(s, b->fts, a->hit[1].chunk_id, &marks, &sn),
                             LODE_OK);
            assert_non_null(strstr(sn, "<log>"));
            lode_free(sn);
        }
        ret_hits_free(a);
        ret_hits_free(b);
    }
    /* nothing searched: no query to mark */
    ret_hits *h = NULL;
    ret_search_opts o = {.k = 5};
    assert_int_equal(ret_search_bm25(s, "...", &o, &h), LODE_OK);
    assert_int_equal(h->n, 0);
    assert_null(h->fts);
    ret_hits_free(h);
    ret_store_close(s);
}

/* Past RET_SEARCH_QUERY_POSTINGS chunks matched by its terms together, a query leaves out
 * its most frequent terms, even those in fewer than half of the chunks. */
static void test_query_postings_bounded(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    enum { N = 2400, A = 900 };
    /* a0..a7 in chunks 0..899, z in those and ten more: 8 * 900 + 910 > 8000 */
    assert_int_equal(RET_SEARCH_QUERY_POSTINGS, 8000);
    assert_int_equal(ret_store_begin(s), LODE_OK);
    for (int i = 0; i < N; i++) {
        char uri[32], text[128];
        snprintf(uri, sizeof uri, "file:///p%d", i);
        snprintf(text, sizeof text, "%s %s filler%d", i < A ? "a0 a1 a2 a3 a4 a5 a6 a7" : "b",
                 i < A || (i >= 2000 && i < 2010) ? "z" : "y", i);
        put(s, uri, NULL, text);
    }
    assert_int_equal(ret_store_commit(s), LODE_OK);
    ret_hits *h = NULL;
    ret_search_opts any = {.k = 1000, .mode = RET_MATCH_ANY};
    ret_search_opts all = {.k = 1000, .mode = RET_MATCH_ALL};
    ret_search_opts autom = {.k = 1000};
    /* z, the most frequent, is left out: the 900 chunks of the a-words, not 910 */
    assert_int_equal(ret_search_bm25(s, "z a0 a1 a2 a3 a4 a5 a6 a7", &any, &h), LODE_OK);
    assert_int_equal(h->n, A);
    ret_hits_free(h);
    assert_int_equal(ret_search_bm25(s, "z a0 a1 a2 a3 a4 a5 a6 a7", &autom, &h), LODE_OK);
    assert_int_equal(h->n, A);
    ret_hits_free(h);
    /* asked for every word, every word is searched */
    assert_int_equal(ret_search_bm25(s, "z a0 a1 a2 a3 a4 a5 a6 a7", &all, &h), LODE_OK);
    assert_int_equal(h->n, A);
    ret_hits_free(h);
    /* within the budget, z is searched */
    assert_int_equal(ret_search_bm25(s, "z a0", &any, &h), LODE_OK);
    assert_int_equal(h->n, A + 10);
    ret_hits_free(h);
    ret_store_close(s);
}

/* In a store of 1000+ chunks, a word in more than half of them is left out of a query
 * that has other words; alone it is still searched. */
static void test_common_words_left_out(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    enum { N = 1200 };
    assert_int_equal(ret_store_begin(s), LODE_OK);
    for (int i = 0; i < N; i++) {
        char uri[32], text[96];
        snprintf(uri, sizeof uri, "file:///c%d", i);
        /* "the" in every chunk, "often" in 55%, "rare" in 3, "mid" in 40% */
        snprintf(text, sizeof text, "the %s %s %s filler%d", i % 20 < 11 ? "often" : "x",
                 i == 5 || i == 13 || i == 300 ? "rare" : "y", i % 10 < 4 ? "mid" : "z", i);
        put(s, uri, NULL, text);
    }
    /* one chunk with "rare" but without "the" */
    put(s, "file:///norare", NULL, "a rare thing");
    assert_int_equal(ret_store_commit(s), LODE_OK);
    ret_hits *h = NULL;
    ret_search_opts any = {.k = 50, .mode = RET_MATCH_ANY};
    ret_search_opts all = {.k = 50, .mode = RET_MATCH_ALL};
    ret_search_opts autom = {.k = 50};
    /* OR: "the" and "often" are dropped, so only chunks with "rare" */
    assert_int_equal(ret_search_bm25(s, "the often rare", &any, &h), LODE_OK);
    assert_int_equal(h->n, 4);
    ret_hits_free(h);
    /* AND keeps every word: 5 and 300 have "rare", "often" and "the" */
    assert_int_equal(ret_search_bm25(s, "the often rare", &all, &h), LODE_OK);
    assert_int_equal(h->n, 2);
    ret_hits_free(h);
    /* AUTO leaves them out of both of its queries: the four chunks with "rare", each
     * holding every word searched */
    assert_int_equal(ret_search_bm25(s, "the often rare", &autom, &h), LODE_OK);
    assert_int_equal(h->n, 4);
    for (size_t i = 0; i < h->n; i++) assert_true(h->hit[i].all_terms);
    ret_hits_free(h);
    /* with "mid" too: the chunks with both first, then those with either */
    assert_int_equal(ret_search_bm25(s, "the mid rare", &autom, &h), LODE_OK);
    assert_int_equal(h->n, 50);
    assert_true(h->hit[0].all_terms && h->hit[1].all_terms);
    assert_false(h->hit[2].all_terms);
    ret_hits_free(h);
    /* "mid" (40%) is kept in OR queries */
    assert_int_equal(ret_search_bm25(s, "mid rare", &any, &h), LODE_OK);
    assert_int_equal(h->n, 50);
    ret_hits_free(h);
    /* only common words: searched as they are */
    assert_int_equal(ret_search_bm25(s, "the often", &any, &h), LODE_OK);
    assert_int_equal(h->n, 50);
    ret_hits_free(h);
    /* the cached counts follow new commits: after these, "often" is in < 50% */
    assert_int_equal(ret_store_begin(s), LODE_OK);
    for (int i = 0; i < 200; i++) {
        char uri[32];
        snprintf(uri, sizeof uri, "file:///more%d", i);
        put(s, uri, NULL, "more words here");
    }
    assert_int_equal(ret_store_commit(s), LODE_OK);
    assert_int_equal(ret_search_bm25(s, "often rare", &any, &h), LODE_OK);
    assert_int_equal(h->n, 50);
    ret_hits_free(h);
    ret_store_close(s);
}

/* lode_bm25 (the store's ranking function) gives FTS5's bm25 scores and order. */
static void test_ranking_matches_fts5_bm25(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    static const char *words[] = {"index", "table", "vacuum", "journal", "page",  "cache",
                                  "write", "log",   "query",  "planner", "btree", "lock"};
    unsigned seed = 99;
    for (int i = 0; i < 60; i++) {
        char uri[32], text[512], heading[64];
        size_t l = 0;
        int n = 3 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 60;
        for (int w = 0; w < n; w++) {
            seed = seed * 1103515245u + 12345u;
            l += (size_t)snprintf(text + l, sizeof text - l, "%s ",
                                  words[(seed >> 16) % LODE_ARRAY_LEN(words)]);
        }
        snprintf(uri, sizeof uri, "file:///r%d", i);
        snprintf(heading, sizeof heading, "Part %d > %s", i % 4, words[i % 5]);
        put(s, uri, heading, text);
    }
    static const char *queries[] = {"index",         "table OR vacuum",          "journal page",
                                    "\"write log\"", "query OR planner OR lock", "cache btree"};
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(ret_store_sqlite(s),
                                        "SELECT rowid, -bm25(chunks_fts, 1.0, 2.0) FROM chunks_fts "
                                        "WHERE chunks_fts MATCH ?1 ORDER BY rank LIMIT 10",
                                        -1, &q, NULL),
                     SQLITE_OK);
    for (int pass = 0; pass < 2; pass++) /* the second pass uses the cached lengths */
        for (size_t i = 0; i < LODE_ARRAY_LEN(queries); i++) {
            ret_hits *h = NULL;
            ret_search_opts o = {.k = 10, .raw = 1};
            assert_int_equal(ret_search_bm25(s, queries[i], &o, &h), LODE_OK);
            sqlite3_bind_text(q, 1, queries[i], -1, SQLITE_STATIC);
            size_t n = 0;
            while (sqlite3_step(q) == SQLITE_ROW) {
                assert_true(n < h->n);
                double want = sqlite3_column_double(q, 1);
                assert_true(fabs(h->hit[n].score - want) <= 1e-9 * fabs(want) + 1e-12);
                /* equal scores may come in either order */
                if (h->hit[n].chunk_id != sqlite3_column_int64(q, 0))
                    assert_true(n + 1 < h->n && fabs(h->hit[n + 1].score - want) < 1e-9);
                n++;
            }
            sqlite3_reset(q);
            assert_int_equal(n, h->n);
            assert_true(n > 0);
            ret_hits_free(h);
        }
    sqlite3_finalize(q);
    ret_store_close(s);
}

static void test_raw_queries(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    put(s, "file:///a", "Alpha", "alpha beta gamma");
    put(s, "file:///b", "Beta", "beta delta");
    ret_hits *h = NULL;
    ret_search_opts o = {.k = 10, .raw = 1};
    assert_int_equal(ret_search_bm25(s, "alpha OR delta", &o, &h), LODE_OK);
    assert_int_equal(h->n, 2);
    ret_hits_free(h);
    assert_int_equal(ret_search_bm25(s, "heading_path: beta", &o, &h), LODE_OK);
    assert_int_equal(h->n, 1);
    assert_string_equal(h->hit[0].uri, "file:///b");
    ret_hits_free(h);
    assert_int_equal(ret_search_bm25(s, "bet*", &o, &h), LODE_OK);
    assert_int_equal(h->n, 2);
    ret_hits_free(h);
    const char *bad[] = {"alpha AND", "\"unterminated", "(beta", "nocolumn: x", "NEAR(", "*"};
    for (size_t i = 0; i < LODE_ARRAY_LEN(bad); i++) {
        h = NULL;
        assert_int_equal(ret_search_bm25(s, bad[i], &o, &h), LODE_ERR_INVALID);
        assert_null(h);
        assert_non_null(strstr(ret_store_errmsg(s), "invalid FTS5 query"));
    }
    /* the handle still works after the errors */
    o.raw = 0;
    assert_int_equal(ret_search_bm25(s, "alpha AND", &o, &h), LODE_OK);
    assert_int_equal(h->n, 1);
    ret_hits_free(h);
    ret_store_close(s);
}

static void test_query_escaping_never_fails(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    put(s, "file:///a", "A > B", "alpha beta \"quoted\" (paren) star* caret^ col:on near NEAR");
    static const char *nasty[] = {
        "",
        " ",
        "\"",
        "\"\"",
        "\"\"\"",
        "'",
        "(",
        ")",
        "()",
        "*",
        "^",
        ":",
        "-",
        "+",
        "NEAR",
        "NEAR(",
        "NEAR(a b, 3)",
        "a NEAR/2 b",
        "AND",
        "OR",
        "NOT",
        "a AND",
        "OR b",
        "NOT NOT",
        "text:alpha",
        "heading_path:",
        "{text heading_path}: x",
        "alpha*",
        "^alpha",
        "a:b:c",
        "\"alpha",
        "alpha\"",
        "al\"pha",
        "(alpha OR",
        "alpha) OR (beta",
        "- alpha",
        "\\\"",
        "\xff\xfe",
        "\xc3",
        "a\xc3(",
        "\xe2\x80\x94",
        "\xe2\x80",
        "\xf4\x90\x80\x80",
        "\xed\xa0\x80",
        "\x01\x02\x1f",
        "tab\there",
        "new\nline",
        "\x7f",
        "🙂 emoji",
        "日本語",
        "héllo wörld",
        "'; DROP TABLE chunks; --",
        "%s%n%x",
        "alpha \"beta gamma",
        "?",
        "?1",
        ":1",
        "@x",
        "$x",
        "[",
        "]",
        "{",
        "}",
        ",",
        ".",
        "alpha,beta",
        "x\"\"y",
    };
    ret_hits *h = NULL;
    ret_search_opts modes[] = {
        {.k = 5}, {.k = 5, .mode = RET_MATCH_ALL}, {.k = 5, .mode = RET_MATCH_ANY}};
    for (size_t m = 0; m < LODE_ARRAY_LEN(modes); m++)
        for (size_t i = 0; i < LODE_ARRAY_LEN(nasty); i++) {
            lode_status st = ret_search_bm25(s, nasty[i], &modes[m], &h);
            if (st) fprintf(stderr, "query <%s>: %s\n", nasty[i], ret_store_errmsg(s));
            assert_int_equal(st, LODE_OK);
            ret_hits_free(h);
        }
    /* random strings over an alphabet rich in FTS5 syntax */
    static const char alphabet[] = "ab \"'()*^:-+,.{}NEARORANDOT\\\t\n\x01\xc3\xa9\xff\xe2\x80";
    unsigned seed = 12345;
    char q[64];
    for (int it = 0; it < 3000; it++) {
        size_t n = (seed = seed * 1103515245u + 12345u) % (sizeof q - 1);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            q[i] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        q[n] = 0;
        lode_status st = ret_search_bm25(s, q, &modes[it % 3], &h);
        if (st) fprintf(stderr, "query <%s>: %s\n", q, ret_store_errmsg(s));
        assert_int_equal(st, LODE_OK);
        ret_hits_free(h);
    }
    /* the escaper itself: words and phrases become quoted phrases */
    lode_buf b = LODE_BUF_INIT;
    size_t terms = 0;
    const char *in = "say \"write-ahead log\" NEAR(x) ---";
    assert_int_equal(ret_fts_query(in, strlen(in), 1, &b, &terms), LODE_OK);
    assert_int_equal(terms, 3);
    assert_string_equal(b.data, "\"say\" OR \"write-ahead log\" OR \"NEAR(x)\"");
    lode_buf_free(&b);
    ret_store_close(s);
}

/* Two processes write the same store at once; both must finish and lose nothing. */
static void test_two_writer_processes(void **state)
{
    fixture *f = *state;
    ret_store *s = NULL;
    enum { DOCS = 40 };
    /* the store does not exist yet: both create, set WAL and migrate it at once */
    pid_t pids[2];
    for (int p = 0; p < 2; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            ret_store *cs = NULL;
            char err[256];
            if (ret_store_open(f->db, 0, &cs, err, sizeof err)) _exit(10);
            for (int i = 0; i < DOCS; i++) {
                char uri[64], text[64];
                snprintf(uri, sizeof uri, "file:///p%d/%d", p, i);
                snprintf(text, sizeof text, "process %d document %d words", p, i);
                ret_doc d = {uri, NULL, NULL, SHA_A, 1, 0};
                ret_chunk_in c[2] = {{text, NULL, 0, 10, 3}, {"more words", "H", 10, 20, 2}};
                int batch = i % 10 == 0; /* some in explicit transactions */
                if (batch && ret_store_begin(cs)) _exit(11);
                if (ret_store_doc_replace(cs, &d, c, 2, NULL)) {
                    fprintf(stderr, "child %d: %s\n", p, ret_store_errmsg(cs));
                    _exit(12);
                }
                if (batch && ret_store_commit(cs)) _exit(13);
            }
            ret_store_close(cs);
            _exit(0);
        }
    }
    for (int p = 0; p < 2; p++) {
        int ws = 0;
        assert_int_equal(waitpid(pids[p], &ws, 0), pids[p]);
        assert_true(WIFEXITED(ws));
        assert_int_equal(WEXITSTATUS(ws), 0);
    }
    s = open_rw(f->db);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM documents"), 2 * DOCS);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM chunks"), 4 * DOCS);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM changes"), 2 * DOCS);
    assert_int_equal(count_hits(s, "process"), 50); /* capped by k */
    fts_integrity(s);
    sqlite3_stmt *q = NULL;
    sqlite3_prepare_v2(ret_store_sqlite(s), "PRAGMA integrity_check", -1, &q, NULL);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal(sqlite3_column_text(q, 0), "ok");
    sqlite3_finalize(q);
    ret_store_close(s);
}

/* Several processes create the same new store at the same moment (released together
 * through a pipe): every one must open it. */
static void test_concurrent_create(void **state)
{
    fixture *f = *state;
    enum { PROCS = 4, ROUNDS = 5 };
    for (int round = 0; round < ROUNDS; round++) {
        char path[160];
        snprintf(path, sizeof path, "%s/create%d.db", f->dir, round);
        int go[2];
        assert_int_equal(pipe(go), 0);
        pid_t pids[PROCS];
        for (int p = 0; p < PROCS; p++) {
            pids[p] = fork();
            assert_true(pids[p] >= 0);
            if (pids[p] == 0) {
                char c;
                close(go[1]);
                if (read(go[0], &c, 1) != 0) _exit(20); /* EOF: everyone starts */
                ret_store *cs = NULL;
                char err[256];
                if (ret_store_open(path, 0, &cs, err, sizeof err)) {
                    fprintf(stderr, "child %d: %s\n", p, err);
                    _exit(21);
                }
                ret_store_close(cs);
                _exit(0);
            }
        }
        close(go[0]);
        close(go[1]);
        for (int p = 0; p < PROCS; p++) {
            int ws = 0;
            assert_int_equal(waitpid(pids[p], &ws, 0), pids[p]);
            assert_true(WIFEXITED(ws));
            assert_int_equal(WEXITSTATUS(ws), 0);
        }
        ret_store *s = open_rw(path);
        assert_int_equal(sql_int(s, "PRAGMA user_version"), ret_store_schema_version());
        ret_store_close(s);
    }
}

/* Every allocation of lode's own failing in turn gives LODE_ERR_NOMEM (or still works),
 * never a crash, a leak or a half-written document. */
static void test_allocation_failures(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    put(s, "file:///base", "Base", "alpha beta gamma");
    /* the handle's search state is made by the first search and kept until close */
    assert_int_equal(count_hits(s, "alpha beta"), 1);
    lode_alloc_stats before, after;
    lode_alloc_get_stats(&before);
    int failed = 0, worked = 0;
    for (int n = 1; n < 40; n++) {
        ret_chunk_in c[2] = {{"alpha delta", "H", 0, 11, 2}, {"epsilon", NULL, 11, 18, 1}};
        ret_doc d = {"file:///base", "Base", NULL, SHA_B, 18, 2};
        ret_hits *h = NULL;
        ret_search_opts o = {.k = 5};
        lode_alloc_fail_after(n);
        lode_status st1 = ret_store_doc_replace(s, &d, c, 2, NULL);
        lode_status st2 = ret_search_bm25(s, "alpha \"beta gamma\"", &o, &h);
        char **v = NULL;
        size_t nv = 0;
        lode_status st3 = ret_store_doc_uris(s, "file:", &v, &nv);
        lode_alloc_fail_after(0);
        assert_true(st1 == LODE_OK || st1 == LODE_ERR_NOMEM);
        failed += st1 == LODE_ERR_NOMEM || st2 == LODE_ERR_NOMEM;
        worked += st1 == LODE_OK && st2 == LODE_OK;
        assert_true(st2 == LODE_OK || st2 == LODE_ERR_NOMEM);
        assert_true(st3 == LODE_OK || st3 == LODE_ERR_NOMEM);
        ret_hits_free(h);
        ret_strv_free(v, nv);
        /* the document is whole: either version, never a mix */
        assert_int_equal(sql_int(s, "SELECT count(*) FROM documents"), 1);
        int64_t chunks = sql_int(s, "SELECT count(*) FROM chunks");
        int64_t sha_b = sql_int(s, "SELECT count(*) FROM documents WHERE sha256 = '" SHA_B "'");
        assert_int_equal(chunks, sha_b ? 2 : 1);
    }
    assert_true(failed > 0); /* the injection reached the code under test */
    assert_true(worked > 0);
    fts_integrity(s);
    lode_alloc_get_stats(&after);
    assert_int_equal(after.live_blocks, before.live_blocks);
    ret_store_close(s);
}

/* A small store on which every example of sql/examples.sql returns rows. */
static void populate_for_examples(ret_store *s)
{
    ret_doc d = {"file:///docs/wal.html", "Write-Ahead Logging", "text/html", SHA_A, 2048, 1};
    ret_chunk_in c[3] = {
        {"The write ahead log keeps the index consistent.", "WAL > Overview", 0, 48, 9},
        {"A virtual table module implements xBestIndex.", "PRAGMA > journal_mode", 48, 94, 7},
        {"Checkpoints move pages back.", "WAL > Checkpoints", 94, 122, 120},
    };
    assert_int_equal(ret_store_doc_replace(s, &d, c, 3, NULL), LODE_OK);
    put(s, "file:///docs/other.txt", "Other", "an unrelated index of things");
    put(s, "file:///docs/other.txt", "Other", "an updated index of things");
    const char *paths[] = {"/docs"};
    int64_t run = 0;
    ret_run_stats rs = {.files_seen = 2, .files_added = 2, .bytes = 3000};
    assert_int_equal(ret_store_run_start(s, paths, 1, &run), LODE_OK);
    assert_int_equal(ret_store_run_finish(s, run, &rs, "ok"), LODE_OK);
    /* a logged question that cites the first chunk */
    ret_qlog_hit hit = {1, 2.5, 1};
    int64_t cited = 1;
    ret_qlog q = {.question = "What is the WAL?",
                  .answer = "A log [1].",
                  .hits = &hit,
                  .n_hits = 1,
                  .cited = &cited,
                  .n_cited = 1,
                  .finish = "stop"};
    assert_int_equal(ret_qlog_add(s, &q, NULL), LODE_OK);
}

static char *read_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = 0;
    return buf;
}

static void test_examples_all_run(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    populate_for_examples(s);
    /* the file as shipped, read from the source tree (tests run at the repository root);
     * the embedded copy must be the same text */
    char *text = read_file("sql/examples.sql");
    assert_non_null(text);
    assert_string_equal(text, ret_sql_file("sql/examples.sql"));
    /* drop the sqlite3 shell's dot-commands, then run statement after statement */
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        if (*line == '.') memset(line, ' ', nl ? (size_t)(nl - line) : strlen(line));
        if (!nl) break;
        line = nl + 1;
    }
    sqlite3 *db = ret_store_sqlite(s);
    const char *tail = text;
    int n = 0;
    while (*tail) {
        sqlite3_stmt *q = NULL;
        const char *next = NULL;
        int rc = sqlite3_prepare_v2(db, tail, -1, &q, &next);
        if (rc) fprintf(stderr, "example %d: %s\n", n + 1, sqlite3_errmsg(db));
        assert_int_equal(rc, SQLITE_OK);
        if (!q) break;
        n++;
        assert_true(sqlite3_stmt_readonly(q));
        int rows = 0;
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) rows++;
        if (rc != SQLITE_DONE || rows == 0)
            fprintf(stderr, "example %d (%d rows): %s\n%.*s\n", n, rows, sqlite3_errmsg(db),
                    (int)(next - tail), tail);
        assert_int_equal(rc, SQLITE_DONE);
        assert_true(rows > 0);
        sqlite3_finalize(q);
        tail = next;
    }
    assert_in_range(n, 8, 20);
    ret_store_close(s);
}

/* Runs `lode ARGS...` with stdout to a file; returns its exit status, or -1. */
static int run_lode_in(const char *in, const char *out, const char *const *args);

static int run_lode(const char *out, const char *const *args)
{
    return run_lode_in(NULL, out, args);
}

/* The same with stdin from the file in (when not NULL). */
static int run_lode_in(const char *in, const char *out, const char *const *args)
{
    const char *b = getenv("LODE_BUILD");
    char bin[256];
    snprintf(bin, sizeof bin, "%s/lode", b && *b ? b : "build");
    if (access(bin, X_OK)) return -2;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        FILE *fo = freopen(out, "w", stdout);
        if (!fo) _exit(127);
        if (in && !freopen(in, "r", stdin)) _exit(127);
        char *argv[16];
        int i = 0;
        argv[i++] = bin;
        for (; args[i - 1] && i < 15; i++) argv[i] = (char *)args[i - 1];
        argv[i] = NULL;
        execv(bin, argv);
        _exit(127);
    }
    int ws = 0;
    if (waitpid(pid, &ws, 0) != pid || !WIFEXITED(ws)) return -1;
    return WEXITSTATUS(ws);
}

static void test_cli_sql_is_read_only(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    populate_for_examples(s);
    ret_store_close(s);
    char out[160];
    snprintf(out, sizeof out, "%s/out.txt", f->dir);
    const char *sel[] = {"sql", "--db", f->db, "--csv", "SELECT count(*) AS n FROM documents",
                         NULL};
    int rc = run_lode(out, sel);
    if (rc == -2) {
        printf("lode binary not built (make tests builds it); skipping\n");
        skip();
    }
    assert_int_equal(rc, 0);
    assert_string_equal(read_file(out), "n\r\n2\r\n");
    const char *writes[] = {
        "DELETE FROM documents", "SELECT 1; DROP TABLE chunks", "UPDATE documents SET title = 'x'",
        "INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')", "PRAGMA user_version = 99"};
    for (size_t i = 0; i < LODE_ARRAY_LEN(writes); i++) {
        const char *args[] = {"sql", "--db", f->db, writes[i], NULL};
        assert_int_equal(run_lode(out, args), 1);
    }
    s = open_rw(f->db);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM documents"), 2);
    assert_int_equal(sql_int(s, "SELECT count(*) FROM chunks"), 4);
    assert_int_equal(sql_int(s, "PRAGMA user_version"), ret_store_schema_version());
    ret_store_close(s);
    /* lode search over the same store, as JSON */
    const char *search[] = {"search", "--db", f->db, "--json", "-k", "2", "write ahead", NULL};
    assert_int_equal(run_lode(out, search), 0);
    char *js = read_file(out);
    assert_non_null(strstr(js, "\"uri\": \"file:///docs/wal.html\""));
    assert_non_null(strstr(js, "<mark>write</mark>"));
}

/* lode search's plain output (no terminal: no colour codes) and lode sql's JSON and
 * script modes. */
static void test_cli_output(void **state)
{
    fixture *f = *state;
    ret_store *s = open_rw(f->db);
    populate_for_examples(s);
    ret_store_close(s);
    char out[160];
    snprintf(out, sizeof out, "%s/out.txt", f->dir);
    const char *search[] = {"search", "--db", f->db, "write", "ahead", NULL};
    int rc = run_lode(out, search);
    if (rc == -2) {
        printf("lode binary not built (make tests builds it); skipping\n");
        skip();
    }
    assert_int_equal(rc, 0);
    char *text = read_file(out);
    assert_non_null(strstr(text, " 1. Write-Ahead Logging"));
    assert_non_null(strstr(text, "> WAL > Overview"));
    assert_null(strchr(text, '\x1b'));
    const char *bad[] = {"search", "--db", f->db, "--raw", "write AND", NULL};
    assert_int_equal(run_lode(out, bad), 2);
    const char *nok[] = {"search", "--db", f->db, "-k", "0", "x", NULL};
    assert_int_equal(run_lode(out, nok), 2);

    const char *js[] = {
        "sql", "--db", f->db, "--json", "SELECT uri, size, NULL AS n FROM documents ORDER BY uri",
        NULL};
    assert_int_equal(run_lode(out, js), 0);
    json_error_t jerr;
    json_t *arr = json_loads(read_file(out), 0, &jerr);
    assert_non_null(arr);
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "uri")),
                        "file:///docs/other.txt");
    assert_true(json_is_integer(json_object_get(json_array_get(arr, 1), "size")));
    assert_true(json_is_null(json_object_get(json_array_get(arr, 1), "n")));
    json_decref(arr);

    /* a script on stdin: the examples file runs whole, dot-commands and all */
    const char *script[] = {"sql", "--db", f->db, NULL};
    assert_int_equal(run_lode_in("sql/examples.sql", out, script), 0);
    assert_non_null(strstr(read_file(out), "Write-Ahead Logging"));
    char in[160];
    snprintf(in, sizeof in, "%s/in.sql", f->dir);
    FILE *fp = fopen(in, "w");
    assert_non_null(fp);
    fputs("SELECT 1;\nDELETE FROM chunks;\nSELECT 2;\n", fp);
    fclose(fp);
    assert_int_equal(run_lode_in(in, out, script), 1); /* a script stops at the refusal */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_sets_version_and_wal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_and_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fts_follows_replace_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_sequence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_log_api, setup, teardown),
        cmocka_unit_test_setup_teardown(test_explicit_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_doc_uris_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingest_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schema_equals_migrations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrates_old_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_store_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_search_hits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_search_ids_and_snippets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_common_words_left_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_postings_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ranking_matches_fts5_bm25, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_queries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_escaping_never_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_writer_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allocation_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_examples_all_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_sql_is_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_output, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
