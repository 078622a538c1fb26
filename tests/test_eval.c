/*
 * test_eval.c: `lode eval retrieval` end to end. A store of a few hand-made chunks whose
 * BM25 order is known (more occurrences in fewer words rank higher) is searched through
 * the real binary with a question file; the test checks each query's rank and the
 * averaged recall@1/@5/@10, MRR@10 and nDCG@10 against values worked out by hand,
 * including a document with two chunks that must count once, path-suffix matching, an
 * answer string judged on chunk text, and a relevant entry that matches nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/lode.h"
#include "retrieval/store.h"

#define SHA "0000000000000000000000000000000000000000000000000000000000000000"

typedef struct fixture {
    char dir[64];
    char db[128];
    char file[128];
    char out[128];
    char err[128];
} fixture;

static const char *lode_bin(void)
{
    static char path[512];
    const char *b = getenv("LODE_BUILD");
    snprintf(path, sizeof path, "%s/lode", b && *b ? b : "build");
    return path;
}

/* Runs `lode args...` with stdout and stderr to files; returns its exit status. */
static int run_lode(const char *const *args, const char *out, const char *err)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0) _exit(127);
        dup2(o, 1);
        dup2(e, 2);
        char *argv[32];
        size_t n = 0;
        argv[n++] = (char *)lode_bin();
        for (; args[n - 1] && n < 31; n++) argv[n] = (char *)args[n - 1];
        argv[n] = NULL;
        execv(argv[0], argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void add_doc(ret_store *s, const char *uri, const char *const *texts, size_t n)
{
    ret_doc d = {.uri = uri, .sha256 = SHA, .size = 10};
    ret_chunk_in c[4];
    int64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t len = (int64_t)strlen(texts[i]);
        c[i] = (ret_chunk_in){.text = texts[i], .char_start = at, .char_end = at + len};
        at += len;
    }
    assert_int_equal(ret_store_doc_replace(s, &d, c, n, NULL), LODE_OK);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/lode-test-eval-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->db, sizeof f->db, "%s/t.db", f->dir);
    snprintf(f->file, sizeof f->file, "%s/q.jsonl", f->dir);
    snprintf(f->out, sizeof f->out, "%s/out", f->dir);
    snprintf(f->err, sizeof f->err, "%s/err", f->dir);
    ret_store *s = NULL;
    char err[256];
    if (ret_store_open(f->db, 0, &s, err, sizeof err)) return -1;
    static const char *const alpha[] = {"zebra grazing in the open field near the river bank"};
    static const char *const beta[] = {"zebra zebra zebra stripes", "zebra zebra herd"};
    static const char *const gamma[] = {"quartz crystal lattice"};
    static const char *const delta[] = {"orchid petals bloom in spring"};
    add_doc(s, "/docs/alpha.txt", alpha, 1);
    add_doc(s, "/docs/beta.txt", beta, 2);
    add_doc(s, "/docs/gamma.txt", gamma, 1);
    add_doc(s, "/docs/sub/delta.txt", delta, 1);
    ret_store_close(s);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    unlink(f->db);
    char p[160];
    snprintf(p, sizeof p, "%s-wal", f->db);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", f->db);
    unlink(p);
    unlink(f->file);
    unlink(f->out);
    unlink(f->err);
    rmdir(f->dir);
    free(f);
    return 0;
}

static int have_binary(void)
{
    if (access(lode_bin(), X_OK) == 0) return 1;
    print_message("no %s (build it first: make)\n", lode_bin());
    return 0;
}

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_true(json_is_number(v));
    return json_number_value(v);
}

static void test_metrics(void **state)
{
    fixture *f = *state;
    if (!have_binary()) skip();
    write_file(
        f->file,
        /* doc ranks for "zebra": beta (two chunks, counted once), then alpha */
        "{\"id\": \"q1\", \"query\": \"zebra\", \"relevant\": [\"alpha.txt\"]}\n"
        "{\"id\": \"q2\", \"query\": \"quartz lattice\", \"relevant\": "
        "[\"x.txt|/docs/gamma.txt\"]}\n"
        "\n"
        /* one of two relevant documents found */
        "{\"id\": \"q3\", \"query\": \"orchid\", \"relevant\": [\"delta.txt\", \"alpha.txt\"]}\n"
        /* chunk ranks: beta 1, beta 2, alpha 3; case and spaces ignored */
        "{\"id\": \"q4\", \"query\": \"zebra\", \"answers\": [\"  ZEBRA   Grazing \"]}\n"
        "{\"id\": 5, \"query\": \"petals\", \"relevant\": [\"sub/delta.txt\"], \"x\": 1}\n"
        /* a suffix must start after a '/' */
        "{\"id\": \"q6\", \"query\": \"petals\", \"relevant\": [\"elta.txt\"]}\n");
    const char *args[] = {"eval",    "retrieval", "--db",  f->db, "--mode",
                          "lexical", "--json",    f->file, NULL};
    int rc = run_lode(args, f->out, f->err);
    if (rc) print_message("stderr: %s\n", read_all(f->err));
    assert_int_equal(rc, 0);
    assert_non_null(strstr(read_all(f->err), ":7: warning: no document of the store matches "
                                             "'elta.txt'"));
    json_error_t je;
    json_t *root = json_loads(read_all(f->out), 0, &je);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "queries")), 6);
    json_t *modes = json_object_get(root, "modes");
    assert_int_equal(json_array_size(modes), 1);
    json_t *m = json_array_get(modes, 0);
    assert_string_equal(json_string_value(json_object_get(m, "mode")), "lexical");
    json_t *per = json_object_get(m, "per_query");
    assert_int_equal(json_array_size(per), 6);
    static const int ranks[6] = {2, 1, 1, 3, 1, 0};
    static const char *const ids[6] = {"q1", "q2", "q3", "q4", "5", "q6"};
    for (size_t i = 0; i < 6; i++) {
        json_t *q = json_array_get(per, i);
        assert_string_equal(json_string_value(json_object_get(q, "id")), ids[i]);
        assert_int_equal(json_integer_value(json_object_get(q, "rank")), ranks[i]);
    }
    assert_int_equal(json_integer_value(json_object_get(json_array_get(per, 3), "line")), 5);
    double l3 = log2(3.0);
    assert_float_equal(num(m, "recall@1"), 2.5 / 6, 1e-6);
    assert_float_equal(num(m, "recall@5"), 4.5 / 6, 1e-6);
    assert_float_equal(num(m, "recall@10"), 4.5 / 6, 1e-6);
    assert_float_equal(num(m, "mrr@10"), (0.5 + 1 + 1 + 1.0 / 3 + 1) / 6, 1e-6);
    assert_float_equal(num(m, "ndcg@10"), (1 / l3 + 1 + 1 / (1 + 1 / l3) + 0.5 + 1) / 6, 1e-6);
    json_decref(root);

    /* the table form carries the same numbers */
    const char *targs[] = {"eval", "retrieval", "--db", f->db, "-v", f->file, NULL};
    assert_int_equal(run_lode(targs, f->out, f->err), 0);
    const char *t = read_all(f->out);
    assert_non_null(strstr(t, "| lexical | 0.417 | 0.750 | 0.750 | 0.639 | 0.624 |"));
    assert_non_null(strstr(t, "q6 (line 7): petals"));
    assert_non_null(strstr(read_all(f->err), "judging lexical search only"));
}

static void test_bad_input(void **state)
{
    fixture *f = *state;
    if (!have_binary()) skip();
    write_file(f->file, "{\"query\": \"zebra\", \"relevant\": [\"alpha.txt\"]}\n"
                        "{\"relevant\": [\"alpha.txt\"]}\n");
    const char *args[] = {"eval", "retrieval", "--db", f->db, f->file, NULL};
    assert_int_equal(run_lode(args, f->out, f->err), 2);
    assert_non_null(strstr(read_all(f->err), "q.jsonl:2: \"query\" must be"));

    write_file(f->file, "{\"query\": \"zebra\"}\n");
    assert_int_equal(run_lode(args, f->out, f->err), 2);
    assert_non_null(strstr(read_all(f->err), ":1: needs \"relevant\""));

    write_file(f->file, "{\"query\": \"zebra\", \"answers\": [\"   \"]}\n");
    assert_int_equal(run_lode(args, f->out, f->err), 2);

    write_file(f->file, "{\"query\": \"zebra\", \"relevant\": [\"a\"] \n");
    assert_int_equal(run_lode(args, f->out, f->err), 2);
    assert_non_null(strstr(read_all(f->err), "q.jsonl:1: column"));

    write_file(f->file, "\n\n");
    assert_int_equal(run_lode(args, f->out, f->err), 2);

    write_file(f->file, "{\"query\": \"zebra\", \"relevant\": [\"alpha.txt\"]}\n");
    const char *mode[] = {"eval", "retrieval", "--db", f->db, "--mode", "psychic", f->file, NULL};
    assert_int_equal(run_lode(mode, f->out, f->err), 2);
    /* the store has no vectors: dense search cannot run */
    const char *dense[] = {"eval", "retrieval", "--db", f->db, "--mode", "dense", f->file, NULL};
    assert_int_equal(run_lode(dense, f->out, f->err), 1);
    const char *rrf[] = {"eval", "retrieval", "--db", f->db, "--rrf-k", "-3", f->file, NULL};
    assert_int_equal(run_lode(rrf, f->out, f->err), 2);
    const char *fuse[] = {"eval", "retrieval", "--db", f->db, "--fuse", "page", f->file, NULL};
    assert_int_equal(run_lode(fuse, f->out, f->err), 2);
    const char *depth[] = {"eval", "retrieval", "--db", f->db, "--depth", "0", f->file, NULL};
    assert_int_equal(run_lode(depth, f->out, f->err), 2);
    const char *nodb[] = {"eval", "retrieval", "--db", "/nonexistent/x.db", f->file, NULL};
    assert_int_equal(run_lode(nodb, f->out, f->err), 1);
    const char *nofile[] = {"eval", "retrieval", "--db", f->db, "/nonexistent/q.jsonl", NULL};
    assert_int_equal(run_lode(nofile, f->out, f->err), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
