/* test_server_ask.c: POST /v1/ask end to end. Starts the real `lode serve` on an
 * ephemeral loopback port over a store the test writes (and over an empty one), with the
 * default model (models/SmolLM2-135M-Instruct.Q4_1.gguf; tests that need it skip when it
 * is missing), and checks with libcurl: a plain answer (citations, passages, timings,
 * usage, the question-log row), the streamed answer (deltas, the final event, [DONE]),
 * every kind of bad input with its error object, the empty store, and a server without a
 * model; and `lode ask`, in-process and through the server (--server). Answers are kept
 * to a few tokens so each test takes seconds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "retrieval/store.h"

#define MODEL_PATH "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define SHA        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

typedef struct server {
    pid_t pid;
    int port;
    char dir[64];
    char log[128];
    char db[128];
} server;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int have_model(void)
{
    return access(MODEL_PATH, R_OK) == 0;
}

#define NEED_MODEL()                                                                               \
    do {                                                                                           \
        if (!have_model()) {                                                                       \
            fprintf(stderr, "skipped: %s is missing (make model fetches it)\n", MODEL_PATH);       \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static void add_doc(ret_store *s, const char *uri, const char *title, const char *heading,
                    const char *text)
{
    ret_doc d = {uri, title, "text/html", SHA, (int64_t)strlen(text), 1};
    ret_chunk_in c = {text, heading, 0, (int64_t)strlen(text), 10};
    assert_int_equal(ret_store_doc_replace(s, &d, &c, 1, NULL), LODE_OK);
}

/* A temporary directory with a store: the small corpus, or empty. */
static void make_store(server *s, int with_docs)
{
    snprintf(s->dir, sizeof s->dir, "/tmp/lode-test-ask-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->log, sizeof s->log, "%s/serve.log", s->dir);
    snprintf(s->db, sizeof s->db, "%s/lode.db", s->dir);
    ret_store *st = NULL;
    char err[256];
    assert_int_equal(ret_store_open(s->db, 0, &st, err, sizeof err), LODE_OK);
    if (with_docs) {
        add_doc(st, "file:///docs/lang_vacuum.html", "VACUUM", "How VACUUM works",
                "The VACUUM command rebuilds the database file, repacking it into a minimal "
                "amount of disk space.");
        add_doc(st, "file:///docs/wal.html", "Write-Ahead Logging", "Overview",
                "In WAL mode, changes are appended to a separate write-ahead log and moved "
                "into the database by a checkpoint.");
        add_doc(st, "file:///docs/foreignkeys.html", "Foreign Keys", "Enabling",
                "Foreign key constraints are enabled with PRAGMA foreign_keys = ON.");
    }
    ret_store_close(st);
}

/* Starts build/lode serve on the store (with the model unless no_model). */
static void start(server *s, int no_model)
{
    const char *b = getenv("LODE_BUILD");
    char lode[256];
    snprintf(lode, sizeof lode, "%s/lode", b && *b ? b : "build");
    const char *argv[] = {lode,
                          "serve",
                          "--port",
                          "0",
                          "--db",
                          s->db,
                          "--engine-threads",
                          "2",
                          "--ctx",
                          "1024",
                          no_model ? "--no-model" : "--model",
                          no_model ? NULL : MODEL_PATH,
                          NULL};
    int out[2];
    assert_int_equal(pipe(out), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(out[1], 1);
        if (fd >= 0) dup2(fd, 2);
        close(out[0]);
        execv(lode, (char **)argv);
        _exit(127);
    }
    close(out[1]);
    s->pid = pid;
    char line[256];
    size_t len = 0;
    double t0 = now_s();
    while (len < sizeof line - 1 && now_s() - t0 < 60) {
        struct pollfd p = {out[0], POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) continue;
        ssize_t r = read(out[0], line + len, 1);
        if (r <= 0 || line[len] == '\n') break;
        len += (size_t)r;
    }
    line[len] = 0;
    close(out[0]);
    const char *h = strstr(line, "http://");
    const char *colon = h ? strchr(h + 7, ':') : NULL;
    if (!colon) fprintf(stderr, "server did not start; first line: '%s'\n", line);
    assert_non_null(colon);
    s->port = atoi(colon + 1);
    assert_true(s->port > 0);
}

static void stop(server *s)
{
    int status = 0;
    kill(s->pid, SIGTERM);
    double t0 = now_s();
    while (waitpid(s->pid, &status, WNOHANG) != s->pid) {
        if (now_s() - t0 > 30) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
            break;
        }
        usleep(10000);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "server exit: %s %d after %.1f s; its log:\n",
                WIFEXITED(status) ? "status" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), now_s() - t0);
        char cat[200];
        snprintf(cat, sizeof cat, "cat '%s' >&2", s->log);
        if (system(cat)) {
        }
    }
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
    if (system(cmd)) {
    }
}

typedef struct resp {
    long status;
    char *body;
    size_t len;
} resp;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    char *nb = realloc(r->body, r->len + sz * n + 1);
    if (!nb) return 0;
    r->body = nb;
    memcpy(r->body + r->len, p, sz * n);
    r->len += sz * n;
    r->body[r->len] = 0;
    return sz * n;
}

static resp post(server *s, const char *body)
{
    resp r = {0, strdup(""), 0};
    CURL *c = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/ask", s->port);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return r;
}

static json_t *json_of(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);
    if (!v) fprintf(stderr, "not JSON (%s): %s\n", e.text, text);
    assert_non_null(v);
    return v;
}

static void expect_error(server *s, const char *body, long status, const char *param,
                         const char *msg_part)
{
    resp r = post(s, body);
    if (r.status != status)
        fprintf(stderr, "%s: want %ld, got %ld: %s\n", body, status, r.status, r.body);
    assert_int_equal(r.status, status);
    json_t *v = json_of(r.body);
    json_t *e = json_object_get(v, "error");
    assert_true(json_is_object(e));
    const char *m = json_string_value(json_object_get(e, "message"));
    assert_non_null(m);
    if (msg_part && !strstr(m, msg_part)) fprintf(stderr, "'%s' lacks '%s'\n", m, msg_part);
    if (msg_part) assert_non_null(strstr(m, msg_part));
    json_t *p = json_object_get(e, "param");
    if (param)
        assert_string_equal(json_string_value(p), param);
    else
        assert_true(json_is_null(p));
    json_decref(v);
    free(r.body);
}

/* The number of rows of the question log with this question, waiting up to 10 s for the
 * server to write it (it logs when the request ends). */
static int logged(server *s, const char *question, int want)
{
    int n = -1;
    double t0 = now_s();
    do {
        sqlite3 *db = NULL;
        sqlite3_stmt *q = NULL;
        if (sqlite3_open_v2(s->db, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
            sqlite3_prepare_v2(db, "SELECT count(*) FROM v_questions WHERE question = ?1", -1, &q,
                               NULL) == SQLITE_OK) {
            sqlite3_bind_text(q, 1, question, -1, SQLITE_STATIC);
            if (sqlite3_step(q) == SQLITE_ROW) n = sqlite3_column_int(q, 0);
        }
        sqlite3_finalize(q);
        sqlite3_close(db);
        if (n == want) break;
        usleep(50000);
    } while (now_s() - t0 < 10);
    return n;
}

static void check_answer(json_t *v, const char *finish_want)
{
    assert_string_equal(json_string_value(json_object_get(v, "object")), "ask.answer");
    assert_true(json_is_string(json_object_get(v, "answer")));
    assert_true(json_is_array(json_object_get(v, "citations")));
    json_t *t = json_object_get(v, "timings");
    const char *stages[] = {"retrieve_ms", "prompt_ms", "prefill_ms", "decode_ms", "total_ms"};
    for (size_t i = 0; i < 5; i++) {
        json_t *x = json_object_get(t, stages[i]);
        assert_true(json_is_number(x));
        assert_true(json_number_value(x) >= 0);
    }
    if (finish_want)
        assert_string_equal(json_string_value(json_object_get(v, "finish_reason")), finish_want);
    /* every citation names a passage of the prompt and the details of its chunk */
    json_t *pas = json_object_get(v, "passages"), *c;
    size_t i;
    json_array_foreach(json_object_get(v, "citations"), i, c)
    {
        int n = (int)json_integer_value(json_object_get(c, "n"));
        assert_true(n >= 1 && (size_t)n <= json_array_size(pas));
        json_t *p = json_array_get(pas, (size_t)n - 1);
        assert_true(json_is_true(json_object_get(p, "cited")));
        assert_int_equal(json_integer_value(json_object_get(c, "chunk_id")),
                         json_integer_value(json_object_get(p, "chunk_id")));
        assert_true(json_is_string(json_object_get(c, "snippet")));
        assert_true(json_is_string(json_object_get(c, "heading_path")));
    }
}

/* Runs `lode ask ARGS` (a shell-quoted string); returns its stdout (malloc'd) and its
 * exit status in *rc. */
static char *run_ask(const char *args, int *rc)
{
    const char *b = getenv("LODE_BUILD");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/lode ask --threads 2 %s 2>/dev/null", b && *b ? b : "build",
             args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    size_t got;
    while (len < cap - 1 && (got = fread(out + len, 1, cap - 1 - len, p)) > 0) len += got;
    out[len] = 0;
    int st = pclose(p);
    *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_ask_plain_and_stream(void **state)
{
    NEED_MODEL();
    server s;
    make_store(&s, 1);
    start(&s, 0);

    resp r = post(&s, "{\"question\": \"What does the VACUUM command do?\", \"k\": 2, "
                      "\"max_tokens\": 6}");
    if (r.status != 200) fprintf(stderr, "%s\n", r.body);
    assert_int_equal(r.status, 200);
    json_t *v = json_of(r.body);
    check_answer(v, NULL);
    json_t *pas = json_object_get(v, "passages");
    assert_true(json_array_size(pas) >= 1 && json_array_size(pas) <= 2);
    json_t *p0 = json_array_get(pas, 0);
    assert_string_equal(json_string_value(json_object_get(p0, "uri")),
                        "file:///docs/lang_vacuum.html");
    assert_string_equal(json_string_value(json_object_get(p0, "heading_path")), "How VACUUM works");
    assert_int_equal(json_integer_value(json_object_get(p0, "n")), 1);
    json_t *u = json_object_get(v, "usage");
    assert_true(json_integer_value(json_object_get(u, "prompt_tokens")) > 20);
    assert_true(json_integer_value(json_object_get(u, "completion_tokens")) <= 6);
    json_decref(v);
    free(r.body);
    assert_int_equal(logged(&s, "What does the VACUUM command do?", 1), 1);

    /* streamed: deltas, then the answer with citations and timings, then [DONE] */
    r = post(&s, "{\"question\": \"How is WAL mode checkpointed?\", \"k\": 2, \"max_tokens\": 6, "
                 "\"stream\": true, \"filters\": {\"uri\": \"*/wal.html\"}}");
    assert_int_equal(r.status, 200);
    char deltas[4096] = "";
    json_t *final = NULL;
    int done = 0, after_done = 0, n_delta = 0;
    for (char *ev = r.body; ev && *ev;) {
        char *end = strstr(ev, "\n\n");
        assert_non_null(end);
        *end = 0;
        if (ev[0] == ':') { /* a keep-alive comment while the answer waits for the engine */
            ev = end + 2;
            continue;
        }
        assert_memory_equal(ev, "data: ", 6);
        if (done) after_done = 1;
        if (!strcmp(ev + 6, "[DONE]")) {
            done = 1;
        } else {
            json_t *e = json_of(ev + 6);
            const char *obj = json_string_value(json_object_get(e, "object"));
            assert_non_null(obj);
            if (!strcmp(obj, "ask.delta")) {
                assert_null(final);
                strncat(deltas, json_string_value(json_object_get(e, "delta")),
                        sizeof deltas - strlen(deltas) - 1);
                n_delta++;
                json_decref(e);
            } else {
                assert_string_equal(obj, "ask.answer");
                final = e;
            }
        }
        ev = end + 2;
    }
    assert_true(done && !after_done);
    assert_true(n_delta >= 1);
    assert_non_null(final);
    check_answer(final, NULL);
    assert_string_equal(json_string_value(json_object_get(final, "answer")), deltas);
    pas = json_object_get(final, "passages");
    assert_int_equal(json_array_size(pas), 1); /* the filter keeps one document */
    assert_string_equal(json_string_value(json_object_get(json_array_get(pas, 0), "uri")),
                        "file:///docs/wal.html");
    json_decref(final);
    free(r.body);
    assert_int_equal(logged(&s, "How is WAL mode checkpointed?", 1), 1);

    /* lode ask --server: the streamed answer, then the sources (or the passages given) */
    char args[512];
    int rc = -1;
    snprintf(args, sizeof args,
             "--server http://127.0.0.1:%d/ -k 2 --max-tokens 4 'What does VACUUM do?'", s.port);
    char *out = run_ask(args, &rc);
    if (rc != 0) fprintf(stderr, "lode ask --server: %d\n%s\n", rc, out);
    assert_int_equal(rc, 0);
    assert_true(strstr(out, "Sources\n") || strstr(out, "passages it was given"));
    assert_non_null(strstr(out, "file:///docs/lang_vacuum.html"));
    free(out);
    assert_int_equal(logged(&s, "What does VACUUM do?", 1), 1);
    snprintf(args, sizeof args, "--server http://127.0.0.1:%d --mode fuzzy x", s.port);
    free(run_ask(args, &rc));
    assert_int_equal(rc, 2);
    stop(&s);
}

static void test_ask_bad_input(void **state)
{
    NEED_MODEL();
    server s;
    make_store(&s, 1);
    start(&s, 0);
    expect_error(&s, "{\"question\": ", 400, NULL, "not valid JSON");
    expect_error(&s, "[1, 2]", 400, NULL, "JSON object");
    expect_error(&s, "{}", 400, "question", NULL);
    expect_error(&s, "{\"question\": 7}", 400, "question", NULL);
    expect_error(&s, "{\"question\": \"  \"}", 400, "question", "empty");
    expect_error(&s, "{\"question\": \"vacuum\", \"k\": 0}", 400, "k", NULL);
    expect_error(&s, "{\"question\": \"vacuum\", \"k\": \"3\"}", 400, "k", NULL);
    expect_error(&s, "{\"question\": \"vacuum\", \"max_tokens\": -1}", 400, "max_tokens", NULL);
    expect_error(&s, "{\"question\": \"vacuum\", \"stream\": \"yes\"}", 400, "stream", NULL);
    expect_error(&s, "{\"question\": \"vacuum\", \"mode\": \"fuzzy\"}", 400, "mode", "fuzzy");
    expect_error(&s, "{\"question\": \"vacuum\", \"mode\": \"dense\"}", 400, "mode",
                 "not available");
    expect_error(&s, "{\"question\": \"vacuum\", \"filters\": {\"date\": 1}}", 400, "filters.date",
                 "unknown filter");
    expect_error(&s, "{\"question\": \"vacuum\", \"filters\": {\"uri\": 5}}", 400, "filters.uri",
                 NULL);
    expect_error(&s, "{\"question\": \"vacuum\", \"model\": \"gpt-4\"}", 404, "model", "gpt-4");
    expect_error(&s, "{\"question\": \"vacuum\", \"max_tokens\": 1024}", 400, "max_tokens",
                 "context");
    /* nothing of that was logged */
    assert_int_equal(logged(&s, "vacuum", 0), 0);
    stop(&s);
}

static void test_ask_empty_store(void **state)
{
    NEED_MODEL();
    server s;
    make_store(&s, 0);
    start(&s, 0);
    resp r = post(&s, "{\"question\": \"What does VACUUM do?\"}");
    assert_int_equal(r.status, 200);
    json_t *v = json_of(r.body);
    check_answer(v, "no_passages");
    assert_int_equal(json_array_size(json_object_get(v, "citations")), 0);
    assert_int_equal(json_array_size(json_object_get(v, "passages")), 0);
    assert_non_null(strstr(json_string_value(json_object_get(v, "answer")), "found nothing"));
    json_decref(v);
    free(r.body);
    /* the same streamed: the answer as one delta, the final event, [DONE] */
    r = post(&s, "{\"question\": \"What does VACUUM do?\", \"stream\": true}");
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"ask.delta\""));
    assert_non_null(strstr(r.body, "\"no_passages\""));
    assert_non_null(strstr(r.body, "data: [DONE]\n\n"));
    free(r.body);
    assert_int_equal(logged(&s, "What does VACUUM do?", 2), 2);
    stop(&s);
}

/* lode ask in-process: JSON output, the log, and its errors. */
static void test_ask_cli(void **state)
{
    NEED_MODEL();
    server s;
    make_store(&s, 1);
    char args[512];
    int rc = -1;
    snprintf(args, sizeof args, "--store %s --max-tokens 4 --json 'How are foreign keys enabled?'",
             s.db);
    char *out = run_ask(args, &rc);
    assert_int_equal(rc, 0);
    json_t *v = json_of(out);
    check_answer(v, NULL);
    json_t *p0 = json_array_get(json_object_get(v, "passages"), 0);
    assert_string_equal(json_string_value(json_object_get(p0, "uri")),
                        "file:///docs/foreignkeys.html");
    json_decref(v);
    free(out);
    assert_int_equal(logged(&s, "How are foreign keys enabled?", 1), 1);
    /* --no-log leaves no row; a missing store and a bad option fail with their codes */
    snprintf(args, sizeof args, "--db %s --max-tokens 2 --no-log 'How are foreign keys enabled?'",
             s.db);
    free(run_ask(args, &rc));
    assert_int_equal(rc, 0);
    assert_int_equal(logged(&s, "How are foreign keys enabled?", 1), 1);
    snprintf(args, sizeof args, "--store %s/none.db x", s.dir);
    free(run_ask(args, &rc));
    assert_int_equal(rc, 1);
    free(run_ask("-k 0 x", &rc));
    assert_int_equal(rc, 2);
    free(run_ask("", &rc));
    assert_int_equal(rc, 2);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s.dir);
    if (system(cmd)) {
    }
}

static void test_ask_without_model(void **state)
{
    server s;
    make_store(&s, 1);
    start(&s, 1);
    expect_error(&s, "{\"question\": \"vacuum\"}", 503, NULL, "generation model");
    stop(&s);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ask_plain_and_stream), cmocka_unit_test(test_ask_bad_input),
        cmocka_unit_test(test_ask_empty_store),      cmocka_unit_test(test_ask_cli),
        cmocka_unit_test(test_ask_without_model),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
