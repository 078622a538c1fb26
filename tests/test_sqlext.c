/*
 * test_sqlext.c: the SQLite extension build/lode_sqlite.so, loaded by the stock sqlite3
 * shell (Debian's /usr/bin/sqlite3, run as a process with -json output) into a store
 * this test ingests: lode_search returns what lode's own search returns (same chunks,
 * order and scores), its columns agree with the tables they join with, k and mode work,
 * a query from another table's rows is searched row by row, and bad arguments, a
 * non-file database and FTS5 syntax in the query give messages, never crashes. On a
 * second store, ingested with embeddings (all-MiniLM-L6-v2 from `make model`), dense and
 * hybrid modes give what ret_hybrid_search gives, dense finds a paraphrase that shares no
 * word with its document, and a missing model is a clear error.
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
#include "retrieval/hybrid.h"
#include "retrieval/search.h"
#include "retrieval/store.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wformat-truncation"

typedef struct fixture {
    char dir[64];
    char db[128];    /* lexical only */
    char db_e[128];  /* with embeddings; "" when the model is missing */
    char model[512]; /* the embedding model's folder */
    const char *env; /* "NAME=value" for the next sqlite3 run, or NULL */
    char ext[512];   /* the extension's path */
    char load[600];  /* ".load <ext>" */
} fixture;

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    lode_buf b = LODE_BUF_INIT;
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) lode_buf_append(&b, tmp, n);
    fclose(f);
    return lode_buf_take(&b);
}

static void spit(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

/* With AddressSanitizer in the extension, the uninstrumented shell must load the ASan
 * runtime first: the one this test process runs with. */
static void sanitizer_preload(void)
{
#if defined(__SANITIZE_ADDRESS__)
    FILE *f = fopen("/proc/self/maps", "r");
    char line[1024];
    while (f && fgets(line, sizeof line, f)) {
        char *path = strchr(line, '/');
        if (!path || !strstr(path, "/libasan.so")) continue;
        path[strcspn(path, "\n")] = 0;
        setenv("LD_PRELOAD", path, 1);
        break;
    }
    if (f) fclose(f);
    /* no leak check: the shell unloads the extension at exit, and an allocation a library
     * constructor made (8 bytes, with nothing but .load) then reads as a leak */
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
#endif
}

/* Runs sqlite3 -batch -bail -json db args...; returns the exit status, with stdout and
 * stderr in *out and *err (lode_free). */
static int run_sqlite(const fixture *fx, const char *db, const char *const *args, char **out,
                      char **err)
{
    char o[200], e[200];
    snprintf(o, sizeof o, "%s/out", fx->dir);
    snprintf(e, sizeof e, "%s/err", fx->dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fo = open(o, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(e, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fi = open("/dev/null", O_RDONLY);
        if (fo < 0 || fe < 0 || fi < 0) _exit(127);
        dup2(fi, 0);
        dup2(fo, 1);
        dup2(fe, 2);
        sanitizer_preload();
        if (fx->env) putenv((char *)fx->env);
        const char *argv[32];
        int n = 0;
        argv[n++] = "sqlite3";
        argv[n++] = "-batch";
        argv[n++] = "-bail";
        argv[n++] = "-json";
        argv[n++] = db;
        for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
        argv[n] = NULL;
        execvp("sqlite3", (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    *out = slurp(o);
    *err = slurp(e);
    assert_non_null(*out);
    assert_non_null(*err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Loads the extension and runs one SELECT; returns its rows (a JSON array, [] for none).
 * Fails the test on an error. */
static json_t *query(const fixture *fx, const char *sql)
{
    const char *args[] = {fx->load, sql, NULL};
    char *out, *err;
    int rc = run_sqlite(fx, fx->db, args, &out, &err);
    if (rc != 0) fail_msg("sqlite3 exit %d for %s:\n%s", rc, sql, err);
    json_error_t je;
    /* the shell prints nothing at all for zero rows */
    json_t *v = out[strspn(out, " \n")] ? json_loads(out, 0, &je) : json_array();
    if (!v) fail_msg("not JSON (%s) for %s:\n%s", je.text, sql, out);
    assert_true(json_is_array(v));
    lode_free(out);
    lode_free(err);
    return v;
}

/* Runs sql expecting failure; returns stderr (lode_free). */
static char *query_fails(const fixture *fx, const char *db, const char *sql)
{
    const char *args[] = {fx->load, sql, NULL};
    char *out, *err;
    int rc = run_sqlite(fx, db, args, &out, &err);
    if (rc == 0) fail_msg("%s succeeded:\n%s", sql, out);
    if (rc >= 128) fail_msg("sqlite3 died (%d) for %s:\n%s", rc, sql, err);
    lode_free(out);
    return err;
}

static int64_t jint(json_t *row, const char *key)
{
    json_t *v = json_object_get(row, key);
    if (!json_is_integer(v)) fail_msg("%s is not an integer", key);
    return json_integer_value(v);
}

static const char *jstr(json_t *row, const char *key)
{
    json_t *v = json_object_get(row, key);
    if (!json_is_string(v)) fail_msg("%s is not a string", key);
    return json_string_value(v);
}

static const char *const DOCS[][2] = {
    {"wal.md", "# Write-ahead log\n\nThe write-ahead log keeps changes in a separate file until "
               "a checkpoint copies them back into the database.\n\n## Checkpoints\n\nA checkpoint "
               "runs when the log grows past a thousand pages.\n"},
    {"vacuum.md", "# Vacuum\n\nVACUUM rebuilds the database file, repacking it into a minimal "
                  "amount of disk space.\n"},
    {"fts.md", "# Full-text search\n\nFTS5 is a virtual table module that provides full-text "
               "search. Queries rank documents with BM25.\n"},
    {"harbour.txt", "Harbour notes\n\nThe harbour pilot boarded freighters at dawn to steer them "
                    "past the sandbanks of the log-strewn estuary.\n"},
    {"locks.md", "# Locking\n\nA writer takes a reserved lock, then an exclusive lock to commit; "
                 "readers in WAL mode never wait for the log writer.\n"},
};

/* Ingests folder in into a new store at db, embedding the chunks when bert is set. */
static int ingest(const char *db, const char *in, eng_bert *bert, const char *model_path)
{
    ret_store *s = NULL;
    char err[256];
    if (ret_store_open(db, 0, &s, err, sizeof err)) return -1;
    ing_run_stats st;
    const char *paths[] = {in};
    ing_run_opts o = {.threads = 1, .embedder = bert, .embed_path = model_path};
    lode_status rc = ing_run(s, paths, 1, &o, &st);
    ret_store_close(s);
    if (rc || st.files_added != (int64_t)LODE_ARRAY_LEN(DOCS)) return -1;
    if (bert && st.chunks_embedded != st.chunks) return -1;
    return 0;
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/lode-test-sqlext-XXXXXX");
    if (!mkdtemp(fx->dir)) return -1;
    snprintf(fx->db, sizeof fx->db, "%s/store.db", fx->dir);
    const char *b = getenv("LODE_BUILD");
    char cwd[256];
    if (!getcwd(cwd, sizeof cwd)) return -1;
    snprintf(fx->ext, sizeof fx->ext, "%s/%s/lode_sqlite.so", cwd, b && *b ? b : "build");
    snprintf(fx->load, sizeof fx->load, ".load %s", fx->ext);
    char in[128];
    snprintf(in, sizeof in, "%s/in", fx->dir);
    mkdir(in, 0755);
    for (size_t i = 0; i < LODE_ARRAY_LEN(DOCS); i++) spit(in, DOCS[i][0], DOCS[i][1]);
    if (ingest(fx->db, in, NULL, NULL)) return -1;
    /* the same documents, embedded, when the model is there */
    const char *m = getenv("LODE_EMBED_MODEL");
    snprintf(fx->model, sizeof fx->model, "%s", m && *m ? m : RET_DEFAULT_EMBED_MODEL);
    eng_bert *bert = NULL;
    char err[512];
    eng_bert_opts bo = {.n_threads = 1};
    if (eng_bert_load(fx->model, &bo, &bert, err, sizeof err) == LODE_OK) {
        snprintf(fx->db_e, sizeof fx->db_e, "%s/embedded.db", fx->dir);
        int bad = ingest(fx->db_e, in, bert, fx->model);
        eng_bert_destroy(bert);
        if (bad) return -1;
    } else {
        print_message("no embedding model (%s): dense tests skip; `make model` fetches it\n", err);
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    if (!fx) return 0;
    nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static int have_tools(const fixture *fx)
{
    if (access(fx->ext, R_OK) != 0) {
        print_message("no %s (build it first: make)\n", fx->ext);
        return 0;
    }
    if (system("sqlite3 -version >/dev/null 2>&1") != 0) {
        print_message("no sqlite3 shell on PATH (Debian package sqlite3; make deps)\n");
        return 0;
    }
    return 1;
}

/* lode_search gives what ret_search_bm25 gives, and its columns match the tables. */
static void test_matches_lode_search(void **state)
{
    fixture *fx = *state;
    if (!have_tools(fx)) skip();
    json_t *rows = query(fx, "SELECT * FROM lode_search('write-ahead log', 10, 'lexical')");
    ret_store *s = NULL;
    char err[256];
    assert_int_equal(ret_store_open(fx->db, RET_STORE_READONLY, &s, err, sizeof err), LODE_OK);
    ret_hits *h = NULL;
    ret_search_opts so = {.k = 10};
    assert_int_equal(ret_search_bm25(s, "write-ahead log", &so, &h), LODE_OK);
    assert_true(h->n >= 3); /* wal.md twice, harbour.txt and locks.md mention the log */
    assert_int_equal(json_array_size(rows), h->n);
    for (size_t i = 0; i < h->n; i++) {
        json_t *r = json_array_get(rows, i);
        const ret_hit *x = &h->hit[i];
        assert_int_equal(jint(r, "rank"), (int64_t)i + 1);
        assert_int_equal(jint(r, "chunk_id"), x->chunk_id);
        assert_int_equal(jint(r, "document_id"), x->document_id);
        double sc = json_number_value(json_object_get(r, "score"));
        assert_true(fabs(sc - x->score) <= 1e-9 * fabs(x->score));
        assert_string_equal(jstr(r, "uri"), x->uri);
        assert_string_equal(jstr(r, "document"), x->title);
        assert_string_equal(jstr(r, "heading_path"), x->heading_path);
        assert_string_equal(jstr(r, "snippet"), x->snippet);
        assert_int_equal(jint(r, "lexical_rank"), (int64_t)i + 1);
        assert_true(json_is_null(json_object_get(r, "dense_rank")));
        assert_null(json_object_get(r, "query")); /* hidden columns stay out of SELECT * */
    }
    assert_string_equal(jstr(json_array_get(rows, 0), "heading_path"), "Write-ahead log");
    ret_hits_free(h);
    ret_store_close(s);
    json_decref(rows);

    /* text is the whole chunk: equal to the chunks table's, through a join */
    rows = query(fx, "SELECT count(*) AS n, sum(s.text = c.text) AS same, "
                     "sum(s.document = d.title AND s.uri = d.uri) AS docs "
                     "FROM lode_search('checkpoint', 10) s JOIN chunks c ON c.id = s.chunk_id "
                     "JOIN v_documents d ON d.id = s.document_id");
    json_t *r = json_array_get(rows, 0);
    assert_true(jint(r, "n") >= 1);
    assert_int_equal(jint(r, "same"), jint(r, "n"));
    assert_int_equal(jint(r, "docs"), jint(r, "n"));
    json_decref(rows);
}

static void test_arguments(void **state)
{
    fixture *fx = *state;
    if (!have_tools(fx)) skip();
    /* k limits the rows; the default is 10; rank orders them either way */
    json_t *rows = query(fx, "SELECT rank FROM lode_search('log', 2)");
    assert_int_equal(json_array_size(rows), 2);
    json_decref(rows);
    rows = query(fx, "SELECT rank, chunk_id FROM lode_search('the') ORDER BY rank DESC");
    size_t n = json_array_size(rows);
    assert_true(n > 2 && n <= 10);
    assert_int_equal(jint(json_array_get(rows, 0), "rank"), (int64_t)n);
    json_decref(rows);
    /* named hidden columns work as arguments too, and read back */
    rows = query(fx, "SELECT query, k, mode, rank FROM lode_search WHERE query = 'vacuum' AND "
                     "k = 3 AND mode = 'lexical'");
    assert_int_equal(json_array_size(rows), 1);
    assert_string_equal(jstr(json_array_get(rows, 0), "query"), "vacuum");
    assert_int_equal(jint(json_array_get(rows, 0), "k"), 3);
    assert_string_equal(jstr(json_array_get(rows, 0), "mode"), "lexical");
    json_decref(rows);
    /* the query comes from another table, row by row */
    rows = query(fx, "SELECT q.w, s.uri FROM (SELECT 'harbour' AS w UNION ALL SELECT 'vacuum') q, "
                     "lode_search(q.w, 1) s ORDER BY q.w");
    assert_int_equal(json_array_size(rows), 2);
    assert_non_null(strstr(jstr(json_array_get(rows, 0), "uri"), "/harbour.txt"));
    assert_non_null(strstr(jstr(json_array_get(rows, 1), "uri"), "/vacuum.md"));
    json_decref(rows);
    /* k and mode from another table too */
    rows =
        query(fx, "SELECT t.n, count(*) AS hits FROM (SELECT 1 AS n, 'lexical' AS m UNION ALL "
                  "SELECT 3, 'auto') t, lode_search('log', t.n, t.m) s GROUP BY t.n ORDER BY t.n");
    assert_int_equal(json_array_size(rows), 2);
    assert_int_equal(jint(json_array_get(rows, 0), "hits"), 1);
    assert_int_equal(jint(json_array_get(rows, 1), "hits"), 3);
    json_decref(rows);
    /* FTS5 syntax in user text is only words; nothing searchable gives no rows */
    rows = query(fx, "SELECT uri FROM lode_search('vacuum* (NEAR OR ^col:', 5)");
    assert_true(json_array_size(rows) >= 1);
    assert_non_null(strstr(jstr(json_array_get(rows, 0), "uri"), "/vacuum.md"));
    json_decref(rows);
    rows = query(fx, "SELECT rank FROM lode_search('\"unclosed (phrase', 5)");
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);
    rows = query(fx, "SELECT rank FROM lode_search('?!', 5)");
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);
}

static void test_errors(void **state)
{
    fixture *fx = *state;
    if (!have_tools(fx)) skip();
    static const char *const bad[][2] = {
        {"SELECT * FROM lode_search()", "a query is needed"},
        {"SELECT * FROM lode_search(NULL)", "a query is needed"},
        {"SELECT * FROM lode_search('log', 0)", "k must be 1 to 1000"},
        {"SELECT * FROM lode_search('log', 'ten')", "k must be an integer"},
        {"SELECT * FROM lode_search('log', 5, 'fuzzy')", "mode must be"},
        /* the first store has no embeddings */
        {"SELECT * FROM lode_search('log', 5, 'dense')", "dense search"},
        {"SELECT * FROM lode_search('log', 5, 'hybrid')", "hybrid search"},
    };
    for (size_t i = 0; i < LODE_ARRAY_LEN(bad); i++) {
        char *e = query_fails(fx, fx->db, bad[i][0]);
        if (!strstr(e, bad[i][1])) fail_msg("%s: '%s' lacks '%s'", bad[i][0], e, bad[i][1]);
        lode_free(e);
    }
    char *e = query_fails(fx, ":memory:", "SELECT * FROM lode_search('log')");
    assert_non_null(strstr(e, "not a file"));
    lode_free(e);
    /* a database that is not a lode store */
    char other[200];
    snprintf(other, sizeof other, "%s/other.db", fx->dir);
    const char *mk[] = {"CREATE TABLE t(x)", NULL};
    char *o;
    assert_int_equal(run_sqlite(fx, other, mk, &o, &e), 0);
    lode_free(o);
    lode_free(e);
    e = query_fails(fx, other, "SELECT * FROM lode_search('log')");
    assert_non_null(strstr(e, "lode_search: "));
    lode_free(e);
}

/* Runs sql on the embedded store. */
static json_t *query_e(fixture *fx, const char *sql)
{
    char db[128];
    memcpy(db, fx->db, sizeof db);
    memcpy(fx->db, fx->db_e, sizeof db);
    json_t *v = query(fx, sql);
    memcpy(fx->db, db, sizeof db);
    return v;
}

/* dense and hybrid rows are ret_hybrid_search's */
static void test_dense_and_hybrid(void **state)
{
    fixture *fx = *state;
    if (!have_tools(fx)) skip();
    if (!fx->db_e[0]) {
        print_message("no embedding model at %s (make model)\n", fx->model);
        skip();
    }
    ret_store *s = NULL;
    ret_dense *d = NULL;
    char err[1024];
    assert_int_equal(ret_store_open(fx->db_e, RET_STORE_READONLY, &s, err, sizeof err), LODE_OK);
    ret_dense_opts o = {.model_path = fx->model, .no_save = 1, .n_threads = 1};
    if (ret_dense_open(s, &o, &d, err, sizeof err)) fail_msg("ret_dense_open: %s", err);
    static const char *const modes[] = {"dense", "hybrid", "auto"};
    for (size_t m = 0; m < LODE_ARRAY_LEN(modes); m++) {
        char sql[256];
        snprintf(sql, sizeof sql,
                 "SELECT * FROM lode_search('how the log is copied back', 6, '%s')", modes[m]);
        json_t *rows = query_e(fx, sql);
        ret_query q = {.text = "how the log is copied back",
                       .k = 6,
                       .mode = (ret_mode)ret_mode_parse(modes[m])};
        ret_results *r = NULL;
        assert_int_equal(ret_hybrid_search(s, d, &q, &r), LODE_OK);
        assert_int_equal(r->mode, m == 0 ? RET_MODE_DENSE : RET_MODE_HYBRID);
        assert_true(r->n >= 3);
        assert_int_equal(json_array_size(rows), r->n);
        for (size_t i = 0; i < r->n; i++) {
            json_t *row = json_array_get(rows, i);
            const ret_result *x = &r->r[i];
            assert_int_equal(jint(row, "chunk_id"), x->chunk_id);
            double sc = json_number_value(json_object_get(row, "score"));
            assert_true(fabs(sc - x->score) <= 1e-6 * fabs(x->score) + 1e-9);
            assert_string_equal(jstr(row, "text"), x->text);
            json_t *dr = json_object_get(row, "dense_rank"),
                   *lr = json_object_get(row, "lexical_rank");
            assert_int_equal(x->dense_rank ? json_integer_value(dr) : -1,
                             x->dense_rank ? x->dense_rank : -1);
            assert_true(x->dense_rank ? json_is_integer(dr) : json_is_null(dr));
            assert_true(x->lexical_rank ? json_is_integer(lr) : json_is_null(lr));
            if (m == 0) assert_int_equal(x->dense_rank, (int)i + 1);
        }
        ret_results_free(r);
        json_decref(rows);
    }
    ret_dense_close(d);
    ret_store_close(s);

    /* a paraphrase with no word of its document: dense finds it, lexical cannot */
    json_t *rows = query_e(fx, "SELECT uri FROM lode_search('shrinking how much room it takes "
                               "on disk', 1, 'dense')");
    assert_int_equal(json_array_size(rows), 1);
    assert_non_null(strstr(jstr(json_array_get(rows, 0), "uri"), "/vacuum.md"));
    json_decref(rows);
    rows = query_e(fx, "SELECT uri FROM lode_search('shrinking room', 5, 'lexical')");
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);

    /* a model that is not there: an error naming the way out */
    char env[600];
    snprintf(env, sizeof env, "LODE_EMBED_MODEL=%s/no-such-model", fx->dir);
    fx->env = env;
    char *e = query_fails(fx, fx->db_e, "SELECT * FROM lode_search('log', 5)");
    fx->env = NULL;
    if (!strstr(e, "LODE_EMBED_MODEL") || !strstr(e, "no-such-model"))
        fail_msg("unexpected: %s", e);
    lode_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_lode_search),
        cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_dense_and_hybrid),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
