/* test_server.c: `lode serve` end to end. Each test starts the real binary on an
 * ephemeral loopback port (--port 0; the port is read from its first line, then /health is
 * polled), talks to it with libcurl or raw sockets, and stops it with a signal, checking
 * that it exits 0. Covers every route, the error objects and statuses, limits, API keys,
 * the request log, graceful shutdown, and (with the default model present) generation,
 * streaming, cancellation and the official `openai` Python client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/bert.h"
#include "retrieval/store.h"

#define MODEL_PATH "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define EMBED_PATH "models/all-MiniLM-L6-v2"

/* ---- the server process ------------------------------------------------------------- */

typedef struct server {
    pid_t pid;
    int port;
    char dir[64];  /* temporary directory: store, log, key file */
    char log[128]; /* the server's stderr (request log) */
    char db[128];
} server;

static const char *build_dir(void)
{
    const char *b = getenv("LODE_BUILD");
    return b && *b ? b : "build";
}

static int have_model(void)
{
    return access(MODEL_PATH, R_OK) == 0;
}

static int have_embed_model(void)
{
    return access(EMBED_PATH "/model.safetensors", R_OK) == 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void make_dir(server *s)
{
    snprintf(s->dir, sizeof s->dir, "/tmp/lode-test-server-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->log, sizeof s->log, "%s/serve.log", s->dir);
    snprintf(s->db, sizeof s->db, "%s/lode.db", s->dir);
}

/* Starts build/lode serve with extra arguments (NULL-terminated) on port 0 and waits until
 * /health answers. s->dir must be made first (make_dir). */
static void start_args(server *s, const char **extra)
{
    char lode[256];
    snprintf(lode, sizeof lode, "%s/lode", build_dir());
    const char *argv[48];
    int n = 0;
    argv[n++] = lode;
    argv[n++] = "serve";
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "--db";
    argv[n++] = s->db;
    argv[n++] = "--shutdown-grace";
    argv[n++] = "5";
    int has_model = 0, has_embed = 0;
    for (int i = 0; extra && extra[i] && n < 44; i++) {
        if (!strcmp(extra[i], "--model")) has_model = 1;
        if (!strcmp(extra[i], "--embed-model")) has_embed = 1;
        argv[n++] = extra[i];
    }
    if (!has_model) argv[n++] = "--no-model"; /* routes without generation start faster */
    if (!has_embed) argv[n++] = "--no-embed-model";
    argv[n] = NULL;
    int out[2];
    assert_int_equal(pipe(out), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test that dies takes its server with it */
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(out[1], 1);
        if (fd >= 0) dup2(fd, 2);
        close(out[0]);
        execv(lode, (char **)argv);
        _exit(127);
    }
    close(out[1]);
    s->pid = pid;
    /* The first line says the port: "lode serve: listening on http://127.0.0.1:PORT". */
    char line[256];
    size_t len = 0;
    double t0 = now_s();
    while (len < sizeof line - 1 && now_s() - t0 < 60) {
        struct pollfd p = {out[0], POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) continue;
        ssize_t r = read(out[0], line + len, 1);
        if (r <= 0) break;
        if (line[len] == '\n') break;
        len += (size_t)r;
    }
    line[len] = 0;
    close(out[0]);
    const char *colon = strstr(line, "http://") ? strchr(strstr(line, "http://") + 7, ':') : NULL;
    if (!strstr(line, "listening on") || !colon) {
        fprintf(stderr, "server did not start; first line: '%s'\n", line);
        char cmd[200];
        snprintf(cmd, sizeof cmd, "cat %s >&2", s->log);
        if (system(cmd)) {
        }
        fail();
    }
    s->port = atoi(colon + 1);
    assert_true(s->port > 0);
}

static void start(server *s, ...)
{
    va_list ap;
    const char *extra[40];
    int n = 0;
    va_start(ap, s);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 39) extra[n++] = a;
    va_end(ap);
    extra[n] = NULL;
    make_dir(s);
    start_args(s, extra);
}

/* Sends sig and waits for the exit; returns the exit status (or 128+signal). */
static int stop_sig(server *s, int sig, double timeout_s)
{
    kill(s->pid, sig);
    double t0 = now_s();
    int status = 0;
    for (;;) {
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid) break;
        if (now_s() - t0 > timeout_s) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
            fprintf(stderr, "server did not stop within %.0fs\n", timeout_s);
            return -1;
        }
        usleep(10000);
    }
    s->pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void cleanup(server *s)
{
    if (s->pid) stop_sig(s, SIGKILL, 5);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
    if (system(cmd)) {
    }
}

/* Stops the server gracefully, checks exit 0, removes its files. */
static void stop(server *s)
{
    assert_int_equal(stop_sig(s, SIGTERM, 30), 0);
    cleanup(s);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    size_t got = fread(p, 1, (size_t)n, f);
    p[got] = 0;
    fclose(f);
    return p;
}

/* ---- HTTP with libcurl -------------------------------------------------------------- */

typedef struct resp {
    long status;
    char *body;
    size_t len;
    char headers[4096];
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

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    size_t have = strlen(r->headers);
    size_t add = sz * n;
    if (have + add < sizeof r->headers) {
        memcpy(r->headers + have, p, add);
        r->headers[have + add] = 0;
    }
    return sz * n;
}

/* One request. body NULL: no body. auth NULL: no Authorization header. */
static resp http(server *s, const char *method, const char *path, const char *body,
                 const char *auth)
{
    resp r = {0};
    r.body = strdup("");
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s->port, path);
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Content-Type: application/json");
    char ah[256];
    if (auth) {
        snprintf(ah, sizeof ah, "Authorization: Bearer %s", auth);
        h = curl_slist_append(h, ah);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    if (!strcmp(method, "HEAD")) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) fprintf(stderr, "%s %s: %s\n", method, path, curl_easy_strerror(rc));
    assert_int_equal(rc, CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return r;
}

static json_t *json_of(const resp *r)
{
    json_error_t e;
    json_t *v = json_loads(r->body, 0, &e);
    if (!v) fprintf(stderr, "not JSON (%s): %s\n", e.text, r->body);
    assert_non_null(v);
    return v;
}

/* Checks an OpenAI error object: status, that message contains msg_part (may be NULL),
 * param (NULL: JSON null) and code (NULL: not checked). */
static void expect_error(resp *r, long status, const char *msg_part, const char *param,
                         const char *code)
{
    if (r->status != status) fprintf(stderr, "want %ld, got %ld: %s\n", status, r->status, r->body);
    assert_int_equal(r->status, status);
    json_t *v = json_of(r);
    json_t *e = json_object_get(v, "error");
    assert_true(json_is_object(e));
    const char *m = json_string_value(json_object_get(e, "message"));
    assert_non_null(m);
    assert_non_null(json_string_value(json_object_get(e, "type")));
    if (msg_part && !strstr(m, msg_part)) fprintf(stderr, "message '%s' lacks '%s'\n", m, msg_part);
    if (msg_part) assert_non_null(strstr(m, msg_part));
    json_t *p = json_object_get(e, "param");
    assert_non_null(p);
    if (param)
        assert_string_equal(json_string_value(p), param);
    else
        assert_true(json_is_null(p));
    assert_non_null(json_object_get(e, "code"));
    if (code) assert_string_equal(json_string_value(json_object_get(e, "code")), code);
    json_decref(v);
}

static void resp_free(resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* ---- raw sockets, for requests curl would not send (partial, garbage) ---------------- */

static int raw_connect(server *s)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)s->port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void raw_send(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return; /* the server may close early; the caller checks the answer */
        p += w;
        n -= (size_t)w;
    }
}

/* Reads until the peer closes or timeout; returns what came (malloc'd). */
static char *raw_read_all(int fd, double timeout_s)
{
    size_t cap = 65536, len = 0;
    char *b = malloc(cap);
    double t0 = now_s();
    while (now_s() - t0 < timeout_s && len < cap - 1) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t r = recv(fd, b + len, cap - 1 - len, 0);
        if (r <= 0) break;
        len += (size_t)r;
    }
    b[len] = 0;
    return b;
}

/* Waits until GET /metrics holds the text (e.g. a counter at a value), up to timeout. The
 * tests give 30 s: it returns as soon as the text is there, and a loaded machine (the
 * sanitizer build beside every other test on two cores) can take seconds to get there. */
static int metrics_has(server *s, const char *text, double timeout_s)
{
    double t0 = now_s();
    do {
        resp r = http(s, "GET", "/metrics", NULL, NULL);
        int ok = r.status == 200 && strstr(r.body, text) != NULL;
        resp_free(&r);
        if (ok) return 1;
        usleep(50000);
    } while (now_s() - t0 < timeout_s);
    return 0;
}

/* ---- tests: routes without generation ----------------------------------------------- */

static void test_health_models_metrics(void **state)
{
    server s;
    start(&s, "--quiet", NULL);
    resp r = http(&s, "GET", "/health", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "application/json"));
    json_t *v = json_of(&r);
    assert_string_equal(json_string_value(json_object_get(v, "status")), "ok");
    assert_true(json_is_true(json_object_get(v, "store")));
    json_decref(v);
    resp_free(&r);

    r = http(&s, "HEAD", "/health", NULL, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    r = http(&s, "GET", "/v1/models", NULL, NULL);
    assert_int_equal(r.status, 200);
    v = json_of(&r);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "list");
    assert_true(json_is_array(json_object_get(v, "data")));
    json_decref(v);
    resp_free(&r);

    r = http(&s, "GET", "/v1/models/no-such-model", NULL, NULL);
    expect_error(&r, 404, "no-such-model", "model", "model_not_found");
    resp_free(&r);

    /* A request is counted once its response is complete, which the client may see a
     * moment before the server's bookkeeping ends: poll. */
    assert_true(
        metrics_has(&s, "lode_http_requests_total{route=\"/health\",status=\"200\"} 2", 30));
    assert_true(metrics_has(
        &s, "lode_http_requests_total{route=\"/v1/models/{id}\",status=\"404\"} 1", 30));
    assert_true(metrics_has(
        &s, "lode_http_request_duration_seconds_bucket{route=\"/v1/models\",le=\"+Inf\"} 1", 5));
    assert_true(metrics_has(&s, "lode_http_requests_in_flight 1\n", 30));
    r = http(&s, "GET", "/metrics", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "text/plain"));
    assert_non_null(strstr(r.body, "lode_tokens_generated_total "));
    assert_non_null(strstr(r.body, "lode_generation_tokens_per_second "));
    assert_non_null(strstr(r.body, "lode_store_documents 0"));
    assert_non_null(strstr(r.body, "lode_store_chunks 0"));
    resp_free(&r);
    stop(&s);
}

static void test_routing_errors(void **state)
{
    server s;
    start(&s, "--quiet", NULL);
    resp r = http(&s, "GET", "/v2/nothing", NULL, NULL);
    expect_error(&r, 404, "/v2/nothing", NULL, "unknown_url");
    resp_free(&r);
    r = http(&s, "DELETE", "/v1/models", NULL, NULL);
    expect_error(&r, 405, "DELETE", NULL, "method_not_allowed");
    assert_non_null(strstr(r.headers, "Allow: GET, HEAD"));
    resp_free(&r);
    r = http(&s, "GET", "/v1/chat/completions", NULL, NULL);
    expect_error(&r, 405, NULL, NULL, "method_not_allowed");
    assert_non_null(strstr(r.headers, "Allow: POST"));
    resp_free(&r);
    r = http(&s, "PUT", "/v1/documents", "{}", NULL);
    expect_error(&r, 405, NULL, NULL, NULL);
    assert_non_null(strstr(r.headers, "Allow: GET, HEAD, POST"));
    resp_free(&r);
    r = http(&s, "POST", "/v1/documents/3", "{}", NULL);
    expect_error(&r, 405, NULL, NULL, NULL);
    assert_non_null(strstr(r.headers, "Allow: GET, HEAD, DELETE"));
    resp_free(&r);
    stop(&s);
}

static void test_request_validation(void **state)
{
    server s;
    start(&s, "--quiet", NULL);
    static const struct {
        const char *path, *body, *msg, *param;
    } cases[] = {
        /* malformed JSON: the position is in the message */
        {"/v1/chat/completions", "{\"model\": \"m\",\n \"messages\": [}", "line 2, column", NULL},
        {"/v1/chat/completions", "", "malformed JSON", NULL},
        {"/v1/completions", "{\"model\":\"m\",\"prompt\":\"x\"} trailing", "byte", NULL},
        {"/v1/chat/completions", "[1,2]", "must be a JSON object", NULL},
        /* missing fields */
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         "missing required parameter 'model'", "model"},
        {"/v1/chat/completions", "{\"model\":\"m\"}", "'messages'", "messages"},
        {"/v1/chat/completions", "{\"model\":\"m\",\"messages\":[]}", "at least one", "messages"},
        {"/v1/chat/completions", "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}",
         "messages[0].content", "messages[0].content"},
        {"/v1/completions", "{\"model\":\"m\"}", "'prompt'", "prompt"},
        /* wrong types and ranges */
        {"/v1/chat/completions", "{\"model\":5,\"messages\":[]}", "must be a string", "model"},
        {"/v1/chat/completions",
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":"
         "\"9\"}",
         "must be an integer, got string", "max_tokens"},
        {"/v1/chat/completions",
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":"
         "7}",
         "between 0 and 2", "temperature"},
        {"/v1/chat/completions",
         "{\"model\":\"m\",\"messages\":[{\"role\":\"wizard\",\"content\":\"hi\"}]}", "wizard",
         "messages[0].role"},
        {"/v1/chat/completions",
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":[1]}",
         "must be a string", "stop[0]"},
        {"/v1/chat/completions",
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":"
         "\"yes\"}",
         "boolean", "stream"},
        {"/v1/chat/completions",
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":0}",
         "between 1 and 16", "n"},
        {"/v1/completions", "{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":9}", "between 0 and 5",
         "logprobs"},
        {"/v1/completions", "{\"model\":\"m\",\"prompt\":\"x\",\"echo\":true}", "not supported",
         "echo"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        resp r = http(&s, "POST", cases[i].path, cases[i].body, NULL);
        expect_error(&r, 400, cases[i].msg, cases[i].param, NULL);
        resp_free(&r);
    }
    /* A malformed body's error has code invalid_json and the position of the fault. */
    resp r = http(&s, "POST", "/v1/chat/completions", "{\"model\": tru}", NULL);
    expect_error(&r, 400, "line 1, column", NULL, "invalid_json");
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=x&k=0", NULL, NULL);
    expect_error(&r, 400, "'k'", "k", NULL);
    resp_free(&r);
    r = http(&s, "GET", "/v1/documents?limit=abc", NULL, NULL);
    expect_error(&r, 400, "'limit'", "limit", NULL);
    resp_free(&r);
    r = http(&s, "GET", "/health", NULL, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    stop(&s);
}

static void test_body_limit(void **state)
{
    server s;
    start(&s, "--quiet", "--max-body", "1K", NULL);
    char big[3000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    /* Decided from Content-Length, before the body is read. */
    resp r = http(&s, "POST", "/v1/chat/completions", big, NULL);
    expect_error(&r, 413, "1024", NULL, "request_too_large");
    resp_free(&r);

    /* A chunked body (no Content-Length) is cut off while it streams in. */
    int fd = raw_connect(&s);
    char req[512];
    snprintf(req, sizeof req,
             "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
             "chunked\r\nConnection: close\r\n"
             "Content-Type: application/json\r\n\r\n");
    raw_send(fd, req, strlen(req));
    for (int i = 0; i < 4; i++) {
        char chunk[700];
        int n = snprintf(chunk, sizeof chunk, "200\r\n");
        memset(chunk + n, 'b', 512);
        n += 512;
        n += snprintf(chunk + n, sizeof chunk - (size_t)n, "\r\n");
        raw_send(fd, chunk, (size_t)n);
    }
    raw_send(fd, "0\r\n\r\n", 5);
    char *ans = raw_read_all(fd, 10);
    close(fd);
    assert_non_null(strstr(ans, "HTTP/1.1 413"));
    assert_non_null(strstr(ans, "request_too_large"));
    free(ans);

    /* Under the limit is fine (the body is then judged on its content). */
    r = http(&s, "POST", "/v1/completions", "{\"model\":\"m\"}", NULL);
    expect_error(&r, 400, NULL, "prompt", NULL);
    resp_free(&r);
    assert_true(metrics_has(&s, "route=\"/v1/completions\",status=\"413\"} 1", 30));
    stop(&s);
}

static void test_api_key(void **state)
{
    server s;
    make_dir(&s);
    char keyfile[160];
    snprintf(keyfile, sizeof keyfile, "%s/key", s.dir);
    FILE *f = fopen(keyfile, "w");
    assert_non_null(f);
    fputs("sk-lode-secret-4711\n", f);
    fclose(f);
    const char *args[] = {"--api-key-file", keyfile, NULL};
    start_args(&s, args);

    resp r = http(&s, "GET", "/v1/models", NULL, NULL);
    expect_error(&r, 401, "API key", NULL, "invalid_api_key");
    assert_non_null(strstr(r.headers, "WWW-Authenticate: Bearer"));
    resp_free(&r);
    r = http(&s, "GET", "/v1/models", NULL, "sk-lode-secret-4712");
    expect_error(&r, 401, NULL, NULL, "invalid_api_key");
    resp_free(&r);
    r = http(&s, "GET", "/v1/models", NULL, "sk-lode-secret");
    expect_error(&r, 401, NULL, NULL, NULL);
    resp_free(&r);
    r = http(&s, "POST", "/v1/chat/completions", "{", NULL);
    expect_error(&r, 401, NULL, NULL, NULL); /* the key is checked before the body */
    resp_free(&r);
    r = http(&s, "GET", "/v1/models", NULL, "sk-lode-secret-4711");
    assert_int_equal(r.status, 200);
    resp_free(&r);
    r = http(&s, "GET", "/health", NULL, NULL); /* stays open */
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_true(metrics_has(&s, "route=\"/v1/models\",status=\"401\"} 3", 30));
    assert_int_equal(stop_sig(&s, SIGTERM, 30), 0);
    /* One log line per request, with method, path, status, bytes and time; no key. */
    char *log = read_file(s.log);
    assert_null(strstr(log, "4711"));
    assert_null(strstr(log, "4712"));
    assert_non_null(strstr(log, "GET /v1/models 401 "));
    assert_non_null(strstr(log, "GET /v1/models 200 "));
    assert_non_null(strstr(log, "GET /health 200 "));
    assert_non_null(strstr(log, "ms\n"));
    free(log);
    cleanup(&s);
}

/* Opens a raw request that holds a concurrency slot: headers and half of the body. */
static int hold_request(server *s, const char *path)
{
    int fd = raw_connect(s);
    char req[256];
    snprintf(
        req, sizeof req,
        "POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        "Content-Length: 20\r\n\r\n{\"model\":",
        path);
    raw_send(fd, req, strlen(req));
    return fd;
}

static void test_concurrency_limit(void **state)
{
    server s;
    start(&s, "--quiet", "--max-concurrent", "1", NULL);
    int fd = hold_request(&s, "/v1/completions");
    /* The held request has its slot once the server has its headers. */
    assert_true(metrics_has(&s, "lode_http_concurrency_used 1", 30));
    resp r = http(&s, "GET", "/v1/models", NULL, NULL);
    expect_error(&r, 429, "too many concurrent requests", NULL, "too_many_requests");
    assert_non_null(strstr(r.headers, "Retry-After: 1"));
    resp_free(&r);
    r = http(&s, "GET", "/health", NULL, NULL); /* health never counts */
    assert_int_equal(r.status, 200);
    resp_free(&r);
    raw_send(fd, " \"m\"}     ", 11); /* completes the body: prompt missing */
    char *ans = raw_read_all(fd, 2);
    close(fd);
    assert_non_null(strstr(ans, "HTTP/1.1 400"));
    free(ans);
    assert_true(metrics_has(&s, "lode_http_concurrency_used 0", 30));
    r = http(&s, "GET", "/v1/models", NULL, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    stop(&s);
}

static void add_doc(ret_store *st, const char *uri, const char *title, const char *text)
{
    ret_doc d = {0};
    d.uri = uri;
    d.title = title;
    d.sha256 = strlen(uri) % 2 ? "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                               : "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    d.size = (int64_t)strlen(text);
    ret_chunk_in c = {0};
    c.text = text;
    c.heading_path = "Guide > Logging";
    c.char_end = (int64_t)strlen(text);
    c.token_count = 10;
    assert_int_equal(ret_store_doc_replace(st, &d, &c, 1, NULL), LODE_OK);
}

static void test_search_and_documents(void **state)
{
    server s;
    make_dir(&s);
    ret_store *st = NULL;
    char err[256];
    assert_int_equal(ret_store_open(s.db, 0, &st, err, sizeof err), LODE_OK);
    add_doc(st, "file:///docs/wal.txt", "Write-ahead log",
            "The write-ahead log lets readers continue while a writer commits.");
    add_doc(st, "file:///docs/vacuum.txt", "Vacuum",
            "VACUUM rebuilds the database file, repacking it into a minimal amount of space.");
    ret_store_close(st);
    const char *args[] = {"--quiet", NULL};
    start_args(&s, args);

    resp r = http(&s, "GET", "/v1/search?q=write-ahead%20readers&k=5", NULL, NULL);
    assert_int_equal(r.status, 200);
    json_t *v = json_of(&r);
    json_t *data = json_object_get(v, "data");
    assert_int_equal(json_array_size(data), 1);
    json_t *h = json_array_get(data, 0);
    assert_string_equal(json_string_value(json_object_get(h, "uri")), "file:///docs/wal.txt");
    assert_string_equal(json_string_value(json_object_get(h, "heading_path")), "Guide > Logging");
    assert_non_null(strstr(json_string_value(json_object_get(h, "snippet")), "[readers]"));
    assert_true(json_real_value(json_object_get(h, "score")) > 0);
    json_decref(v);
    resp_free(&r);
    /* Search syntax in user text is harmless. */
    r = http(&s, "GET", "/v1/search?q=%22unbalanced%20(NEAR%20*%3A", NULL, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    r = http(&s, "GET", "/v1/search", NULL, NULL);
    expect_error(&r, 400, "'q'", "q", NULL);
    resp_free(&r);

    r = http(&s, "GET", "/v1/documents", NULL, NULL);
    assert_int_equal(r.status, 200);
    v = json_of(&r);
    assert_int_equal(json_integer_value(json_object_get(v, "total")), 2);
    data = json_object_get(v, "data");
    assert_int_equal(json_array_size(data), 2);
    json_int_t id = json_integer_value(json_object_get(json_array_get(data, 1), "id"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(data, 1), "title")),
                        "Vacuum");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(data, 1), "chunks")), 1);
    json_decref(v);
    resp_free(&r);
    r = http(&s, "GET", "/v1/documents?limit=1&offset=1", NULL, NULL);
    v = json_of(&r);
    assert_int_equal(json_array_size(json_object_get(v, "data")), 1);
    json_decref(v);
    resp_free(&r);

    char path[64];
    snprintf(path, sizeof path, "/v1/documents/%lld", (long long)id);
    r = http(&s, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    v = json_of(&r);
    assert_string_equal(json_string_value(json_object_get(v, "uri")), "file:///docs/vacuum.txt");
    json_decref(v);
    resp_free(&r);
    r = http(&s, "DELETE", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    v = json_of(&r);
    assert_true(json_is_true(json_object_get(v, "deleted")));
    json_decref(v);
    resp_free(&r);
    r = http(&s, "DELETE", path, NULL, NULL);
    expect_error(&r, 404, NULL, "id", "document_not_found");
    resp_free(&r);
    r = http(&s, "GET", path, NULL, NULL);
    expect_error(&r, 404, NULL, "id", "document_not_found");
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=vacuum", NULL, NULL);
    v = json_of(&r);
    assert_int_equal(json_array_size(json_object_get(v, "data")), 0);
    json_decref(v);
    resp_free(&r);
    assert_true(metrics_has(&s, "lode_store_documents 1\n", 30));

    /* Upload: Markdown through ingest's loader and chunker, headings kept. */
    const char *md = "{\"uri\":\"notes/backup.md\",\"title\":\"Backups\",\"text\":"
                     "\"# Operations\\n\\n## Backup\\n\\nUse the online backup API to copy a "
                     "live database safely.\\n\"}";
    r = http(&s, "POST", "/v1/documents", md, NULL);
    assert_int_equal(r.status, 201);
    v = json_of(&r);
    assert_string_equal(json_string_value(json_object_get(v, "status")), "created");
    assert_string_equal(json_string_value(json_object_get(v, "media_type")), "text/markdown");
    assert_string_equal(json_string_value(json_object_get(v, "title")), "Backups");
    assert_true(json_integer_value(json_object_get(v, "chunks")) >= 1);
    assert_int_equal(strlen(json_string_value(json_object_get(v, "sha256"))), 64);
    json_int_t up = json_integer_value(json_object_get(v, "id"));
    assert_true(up > 0);
    json_decref(v);
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=online%20backup", NULL, NULL);
    v = json_of(&r);
    h = json_array_get(json_object_get(v, "data"), 0);
    assert_non_null(h);
    assert_int_equal(json_integer_value(json_object_get(h, "document_id")), up);
    assert_string_equal(json_string_value(json_object_get(h, "heading_path")),
                        "Operations > Backup");
    json_decref(v);
    resp_free(&r);
    r = http(&s, "POST", "/v1/documents", md, NULL); /* the same again: nothing to do */
    assert_int_equal(r.status, 200);
    v = json_of(&r);
    assert_string_equal(json_string_value(json_object_get(v, "status")), "unchanged");
    assert_int_equal(json_integer_value(json_object_get(v, "id")), up);
    json_decref(v);
    resp_free(&r);
    r = http(&s, "POST", "/v1/documents",
             "{\"uri\":\"notes/backup.md\",\"text\":\"# Operations\\n\\nNew text.\"}", NULL);
    assert_int_equal(r.status, 200);
    v = json_of(&r);
    assert_string_equal(json_string_value(json_object_get(v, "status")), "updated");
    json_decref(v);
    resp_free(&r);
    r = http(&s, "POST", "/v1/documents", "{\"text\":\"Plain words without a name.\"}", NULL);
    assert_int_equal(r.status, 201);
    v = json_of(&r);
    assert_non_null(strstr(json_string_value(json_object_get(v, "uri")), "upload:sha256:"));
    json_decref(v);
    resp_free(&r);
    r = http(&s, "POST", "/v1/documents", "{\"uri\":\"x\"}", NULL);
    expect_error(&r, 400, "'text'", "text", NULL);
    resp_free(&r);
    r = http(&s, "POST", "/v1/documents", "{\"text\":7}", NULL);
    expect_error(&r, 400, "must be a string", "text", NULL);
    resp_free(&r);
    r = http(&s, "POST", "/v1/documents", "{\"text\":\"x\",\"media_type\":\"image/png\"}", NULL);
    expect_error(&r, 400, "media_type", "media_type", NULL);
    resp_free(&r);
    r = http(&s, "POST", "/v1/documents", "{\"text\":", NULL);
    expect_error(&r, 400, "malformed JSON", NULL, "invalid_json");
    resp_free(&r);
    /* a bad escape before bytes that are not UTF-8: the parser's message quotes them */
    r = http(&s, "POST", "/v1/documents", "{\"text\":\"# T\\\xd9\x91\x9d\x90\"}", NULL);
    expect_error(&r, 400, "malformed JSON", NULL, "invalid_json");
    resp_free(&r);
    assert_true(metrics_has(&s, "lode_store_documents 3\n", 30));
    stop(&s);
}

static void test_garbage_input(void **state)
{
    server s;
    start(&s, "--quiet", NULL);
    static const char *const junk[] = {
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls hello\r\n\r\n",
        "GET /health HTTP/9.9\r\n\r\n",
        "GARBAGE\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
        "-5\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
        "99999999999999999999\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
        "10\r\n\r\n{\"a\":\"\xff\xfe\"}",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
        "9\r\n\r\n{\"a\":\"\0\"}",
        "GET /v1/documents/%00%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /v1/search?q=%ff%fe%00&k=99999999999999999999 HTTP/1.1\r\nHost: x\r\nConnection: "
        "close\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        int fd = raw_connect(&s);
        size_t n = strlen(junk[i]);
        if (i == 6) n += 3; /* the body holds a NUL byte */
        raw_send(fd, junk[i], n);
        shutdown(fd, SHUT_WR);
        char *ans = raw_read_all(fd, 3);
        close(fd);
        /* Well-formed HTTP with bad content gets an answer (the 4xx ones a 4xx). */
        if (i >= 5) assert_non_null(strstr(ans, "HTTP/1.1 "));
        if (i == 5 || i == 6 || i == 8) assert_non_null(strstr(ans, "HTTP/1.1 4"));
        free(ans);
    }
    /* An oversized header block. */
    int fd = raw_connect(&s);
    const char *h = "GET /health HTTP/1.1\r\nX-Big: ";
    raw_send(fd, h, strlen(h));
    char filler[8192];
    memset(filler, 'x', sizeof filler);
    for (int i = 0; i < 16; i++) raw_send(fd, filler, sizeof filler);
    raw_send(fd, "\r\n\r\n", 4);
    free(raw_read_all(fd, 3));
    close(fd);
    /* A client that connects and vanishes mid-request. */
    fd = hold_request(&s, "/v1/chat/completions");
    close(fd);
    resp r = http(&s, "GET", "/health", NULL, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    stop(&s);
}

static void test_graceful_shutdown(void **state)
{
    server s;
    start(&s, NULL);
    int fd = hold_request(&s, "/v1/completions");
    assert_true(metrics_has(&s, "lode_http_concurrency_used 1", 30));
    kill(s.pid, SIGTERM);
    usleep(300000);
    /* No new connections are accepted... */
    int nfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)s.port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(connect(nfd, (struct sockaddr *)&a, sizeof a) != 0);
    close(nfd);
    /* ...but the request in flight is answered. */
    raw_send(fd, " \"m\"}     ", 11);
    char *ans = raw_read_all(fd, 5);
    close(fd);
    assert_non_null(strstr(ans, "HTTP/1.1 400"));
    free(ans);
    int status = 0;
    double t0 = now_s();
    while (waitpid(s.pid, &status, WNOHANG) == 0 && now_s() - t0 < 10) usleep(10000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    s.pid = 0;
    char *log = read_file(s.log);
    assert_non_null(strstr(log, "SIGTERM received"));
    assert_non_null(strstr(log, "POST /v1/completions 400"));
    free(log);
    cleanup(&s);
}

static void test_bad_options(void **state)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s/lode serve --port 70000 2>/dev/null", build_dir());
    int rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    snprintf(cmd, sizeof cmd, "%s/lode serve --max-body 12Q 2>/dev/null", build_dir());
    rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    snprintf(cmd, sizeof cmd, "%s/lode serve --api-key-file /nonexistent/key 2>/dev/null",
             build_dir());
    rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    /* The port is taken: a clear failure, exit 1. */
    server s;
    start(&s, "--quiet", NULL);
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    snprintf(cmd, sizeof cmd,
             "%s/lode serve --no-model --db %s --port %s 2>&1 | grep -q 'cannot listen'",
             build_dir(), s.db, port);
    rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
    stop(&s);
}

/* ---- tests: generation on the real model --------------------------------------------- */

#define NEED_MODEL()                                                                               \
    do {                                                                                           \
        if (!have_model()) {                                                                       \
            printf("skipped: %s is missing (make model)\n", MODEL_PATH);                           \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static const char *served_model(server *s)
{
    static char id[128];
    resp r = http(s, "GET", "/v1/models", NULL, NULL);
    assert_int_equal(r.status, 200);
    json_t *v = json_of(&r);
    json_t *d = json_array_get(json_object_get(v, "data"), 0);
    assert_non_null(d);
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(d, "id")));
    json_decref(v);
    resp_free(&r);
    return id;
}

static void test_chat_completion(void **state)
{
    NEED_MODEL();
    server s;
    /* preemption by swap: a host pool, reported in /metrics below */
    start(&s, "--quiet", "--model", MODEL_PATH, "--preempt", "swap", "--swap-mb", "4", NULL);
    const char *model = served_model(&s);
    assert_string_equal(model, "SmolLM2-135M-Instruct.Q4_1");
    char body[512];
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
             "{\"role\":\"user\",\"content\":\"What is the capital of France?\"}],"
             "\"max_tokens\":8,\"temperature\":0}",
             model);
    resp r = http(&s, "POST", "/v1/chat/completions", body, NULL);
    assert_int_equal(r.status, 200);
    json_t *v = json_of(&r);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "chat.completion");
    assert_non_null(strstr(json_string_value(json_object_get(v, "id")), "chatcmpl-"));
    assert_string_equal(json_string_value(json_object_get(v, "model")), model);
    json_t *c0 = json_array_get(json_object_get(v, "choices"), 0);
    json_t *msg = json_object_get(c0, "message");
    assert_string_equal(json_string_value(json_object_get(msg, "role")), "assistant");
    const char *content = json_string_value(json_object_get(msg, "content"));
    assert_non_null(content);
    assert_true(strlen(content) > 0);
    const char *fin = json_string_value(json_object_get(c0, "finish_reason"));
    assert_true(!strcmp(fin, "stop") || !strcmp(fin, "length"));
    json_t *u = json_object_get(v, "usage");
    json_int_t pt = json_integer_value(json_object_get(u, "prompt_tokens"));
    json_int_t ct = json_integer_value(json_object_get(u, "completion_tokens"));
    assert_true(pt > 10);
    assert_true(ct >= 1 && ct <= 8);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), pt + ct);
    char *first = strdup(content);
    json_decref(v);
    resp_free(&r);
    /* Greedy decoding is deterministic: the same request gives the same answer. */
    r = http(&s, "POST", "/v1/chat/completions", body, NULL);
    v = json_of(&r);
    c0 = json_array_get(json_object_get(v, "choices"), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(c0, "message"), "content")), first);
    json_decref(v);
    resp_free(&r);
    free(first);

    /* n = 2 with logprobs: two choices, a logprob <= 0 per generated token. */
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hi.\"}],"
             "\"max_tokens\":4,\"n\":2,\"temperature\":0.9,\"seed\":11,\"logprobs\":true}",
             model);
    r = http(&s, "POST", "/v1/chat/completions", body, NULL);
    assert_int_equal(r.status, 200);
    v = json_of(&r);
    json_t *choices = json_object_get(v, "choices");
    assert_int_equal(json_array_size(choices), 2);
    json_int_t total = 0;
    for (size_t i = 0; i < 2; i++) {
        json_t *c = json_array_get(choices, i);
        assert_int_equal(json_integer_value(json_object_get(c, "index")), (json_int_t)i);
        json_t *lp = json_object_get(json_object_get(c, "logprobs"), "content");
        assert_true(json_array_size(lp) >= 1);
        total += (json_int_t)json_array_size(lp);
        for (size_t k = 0; k < json_array_size(lp); k++) {
            json_t *e = json_array_get(lp, k);
            assert_true(json_is_string(json_object_get(e, "token")));
            assert_true(json_real_value(json_object_get(e, "logprob")) <= 0.0);
            assert_true(json_is_array(json_object_get(e, "bytes")));
        }
    }
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(v, "usage"), "completion_tokens")),
        total);
    json_decref(v);
    resp_free(&r);
    assert_true(metrics_has(&s, "lode_generation_requests_total 4", 30));
    r = http(&s, "GET", "/metrics", NULL, NULL);
    assert_null(strstr(r.body, "lode_tokens_generated_total 0\n"));
    assert_null(strstr(r.body, "lode_generation_tokens_per_second 0.000"));
    /* The engine's state: nothing running or waiting now, a KV pool with blocks and none
     * held, steps taken. */
    assert_non_null(strstr(r.body, "lode_engine_running 0\n"));
    assert_non_null(strstr(r.body, "lode_engine_queue_depth 0\n"));
    assert_non_null(strstr(r.body, "lode_kv_blocks{state=\"used\"} 0\n"));
    assert_non_null(strstr(r.body, "lode_kv_usage_ratio 0.0000\n"));
    const char *kt = strstr(r.body, "lode_kv_blocks{state=\"total\"} ");
    assert_non_null(kt);
    assert_true(atoi(kt + strlen("lode_kv_blocks{state=\"total\"} ")) > 0);
    assert_null(strstr(r.body, "lode_engine_steps_total 0\n"));
    assert_non_null(strstr(r.body, "lode_engine_rejected_total 0\n"));
    /* 4 MiB of host pool in blocks of 30 layers x K, V x 3 heads x 16 tokens x 64 halves */
    assert_non_null(strstr(r.body, "lode_kv_swap_blocks{state=\"total\"} 11\n"));
    assert_non_null(strstr(r.body, "lode_kv_swap_blocks{state=\"used\"} 0\n"));
    assert_non_null(strstr(r.body, "lode_engine_preemptions_total{mode=\"swap\"} "));
    resp_free(&r);
    stop(&s);
}

static char *completion_text(server *s, const char *model, const char *prompt, int max_tokens,
                             const char *extra, json_t **out)
{
    char body[1024];
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0%s}", model,
             prompt, max_tokens, extra ? extra : "");
    resp r = http(s, "POST", "/v1/completions", body, NULL);
    if (r.status != 200) fprintf(stderr, "%s\n", r.body);
    assert_int_equal(r.status, 200);
    json_t *v = json_of(&r);
    resp_free(&r);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "text_completion");
    json_t *c0 = json_array_get(json_object_get(v, "choices"), 0);
    char *t = strdup(json_string_value(json_object_get(c0, "text")));
    if (out)
        *out = v;
    else
        json_decref(v);
    return t;
}

static void test_completions_stop_logprobs(void **state)
{
    NEED_MODEL();
    server s;
    start(&s, "--quiet", "--model", MODEL_PATH, NULL);
    const char *model = served_model(&s);
    json_t *v;
    char *full = completion_text(&s, model, "1, 2, 3, 4, 5,", 12, ", \"logprobs\":0", &v);
    json_t *c0 = json_array_get(json_object_get(v, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), "length");
    json_int_t ct =
        json_integer_value(json_object_get(json_object_get(v, "usage"), "completion_tokens"));
    assert_int_equal(ct, 12);
    json_t *lp = json_object_get(c0, "logprobs");
    assert_int_equal(json_array_size(json_object_get(lp, "tokens")), 12);
    assert_int_equal(json_array_size(json_object_get(lp, "token_logprobs")), 12);
    assert_int_equal(json_array_size(json_object_get(lp, "text_offset")), 12);
    json_decref(v);
    /* Stop at the second comma of the greedy continuation: the text ends before it. */
    const char *comma = strchr(full, ',');
    assert_non_null(comma);
    comma = strchr(comma + 1, ',');
    if (comma) {
        char *cut =
            completion_text(&s, model, "1, 2, 3, 4, 5,", 12, ", \"stop\":[\",\", \"zzz\"]", &v);
        const char *first = strchr(full, ',');
        assert_int_equal(strlen(cut), (size_t)(first - full));
        assert_memory_equal(cut, full, strlen(cut));
        c0 = json_array_get(json_object_get(v, "choices"), 0);
        assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), "stop");
        json_decref(v);
        free(cut);
    }
    free(full);
    stop(&s);
}

/* Parses a server-sent-event body: the JSON of every `data:` event, and whether [DONE]
 * came last. */
static json_t *parse_sse(const char *body, int *done_last)
{
    json_t *events = json_array();
    *done_last = 0;
    const char *p = body;
    while ((p = strstr(p, "data: "))) {
        p += 6;
        const char *end = strstr(p, "\n\n");
        assert_non_null(end);
        if (!strncmp(p, "[DONE]", 6)) {
            *done_last = end[2] == 0;
        } else {
            json_error_t e;
            json_t *v = json_loadb(p, (size_t)(end - p), 0, &e);
            if (!v) fprintf(stderr, "bad event: %.*s\n", (int)(end - p), p);
            assert_non_null(v);
            json_array_append_new(events, v);
        }
        p = end + 2;
    }
    return events;
}

static void test_streaming(void **state)
{
    NEED_MODEL();
    server s;
    start(&s, "--quiet", "--model", MODEL_PATH, NULL);
    const char *model = served_model(&s);
    char body[512];
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Name three "
             "colours.\"}],\"max_tokens\":6,\"temperature\":0%%s}",
             model);
    char plain[600], streamed[600];
    snprintf(plain, sizeof plain, body, "");
    snprintf(streamed, sizeof streamed, body,
             ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    resp r = http(&s, "POST", "/v1/chat/completions", plain, NULL);
    json_t *v = json_of(&r);
    const char *want = json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(v, "choices"), 0), "message"), "content"));
    char *expect = strdup(want);
    json_decref(v);
    resp_free(&r);

    r = http(&s, "POST", "/v1/chat/completions", streamed, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "text/event-stream"));
    int done_last;
    json_t *ev = parse_sse(r.body, &done_last);
    assert_true(done_last);
    assert_true(json_array_size(ev) >= 3);
    char text[600] = "";
    int finishes = 0, usage = 0;
    for (size_t i = 0; i < json_array_size(ev); i++) {
        json_t *e = json_array_get(ev, i);
        assert_string_equal(json_string_value(json_object_get(e, "object")),
                            "chat.completion.chunk");
        json_t *ch = json_array_get(json_object_get(e, "choices"), 0);
        if (json_object_get(e, "usage")) {
            usage = 1;
            assert_int_equal(json_array_size(json_object_get(e, "choices")), 0);
            assert_true(i == json_array_size(ev) - 1);
            continue;
        }
        json_t *delta = json_object_get(ch, "delta");
        if (i == 0)
            assert_string_equal(json_string_value(json_object_get(delta, "role")), "assistant");
        const char *piece = json_string_value(json_object_get(delta, "content"));
        if (piece) strncat(text, piece, sizeof text - strlen(text) - 1);
        if (json_is_string(json_object_get(ch, "finish_reason"))) finishes++;
    }
    assert_int_equal(finishes, 1);
    assert_true(usage);
    assert_string_equal(text, expect);
    json_decref(ev);
    resp_free(&r);
    free(expect);

    /* Completions stream too, and stream errors come before the stream starts. */
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"prompt\":\"Hello\",\"max_tokens\":3,\"stream\":true}", model);
    r = http(&s, "POST", "/v1/completions", body, NULL);
    assert_int_equal(r.status, 200);
    ev = parse_sse(r.body, &done_last);
    assert_true(done_last);
    assert_true(json_array_size(ev) >= 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 0), "object")),
                        "text_completion");
    json_decref(ev);
    resp_free(&r);
    stop(&s);
}

static void test_generation_errors(void **state)
{
    NEED_MODEL();
    server s;
    start(&s, "--quiet", "--model", MODEL_PATH, "--ctx", "64", NULL);
    const char *model = served_model(&s);
    resp r =
        http(&s, "POST", "/v1/chat/completions",
             "{\"model\":\"gpt-4\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", NULL);
    expect_error(&r, 404, "gpt-4", "model", "model_not_found");
    resp_free(&r);
    char body[4096];
    int n = snprintf(body, sizeof body, "{\"model\":\"%s\",\"prompt\":\"", model);
    for (int i = 0; i < 100; i++) n += snprintf(body + n, sizeof body - (size_t)n, "word%d ", i);
    snprintf(body + n, sizeof body - (size_t)n, "\",\"max_tokens\":4}");
    r = http(&s, "POST", "/v1/completions", body, NULL);
    expect_error(&r, 400, "maximum context length is 64", "prompt", "context_length_exceeded");
    resp_free(&r);
    /* A prompt that fits but leaves no room for max_tokens is refused the same way. */
    snprintf(body, sizeof body, "{\"model\":\"%s\",\"prompt\":\"Hi\",\"max_tokens\":100}", model);
    r = http(&s, "POST", "/v1/completions", body, NULL);
    expect_error(&r, 400, NULL, "prompt", "context_length_exceeded");
    resp_free(&r);
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
             "\"logprobs\":true,\"top_logprobs\":2}",
             model);
    r = http(&s, "POST", "/v1/chat/completions", body, NULL);
    expect_error(&r, 400, "not supported", "top_logprobs", NULL);
    resp_free(&r);
    /* /v1/ask (tests/test_server_ask.c covers it): its answer budget exceeds this context */
    r = http(&s, "POST", "/v1/ask", "{\"question\":\"hi\"}", NULL);
    expect_error(&r, 400, "context", "max_tokens", "context_length_exceeded");
    resp_free(&r);
    stop(&s);
}

/* Starts a long streamed completion on a raw socket and reads until the first token. */
static int start_long_stream(server *s, const char *model)
{
    int fd = raw_connect(s);
    char body[256], req[512];
    int bl = snprintf(body, sizeof body,
                      "{\"model\":\"%s\",\"prompt\":\"1, 2, 3, 4,\",\"max_tokens\":1500,"
                      "\"temperature\":0,\"stream\":true}",
                      model);
    int rl = snprintf(req, sizeof req,
                      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      "application/json\r\nContent-Length: %d\r\n\r\n%s",
                      bl, body);
    raw_send(fd, req, (size_t)rl);
    char buf[8192];
    size_t len = 0;
    double t0 = now_s();
    while (now_s() - t0 < 60 && len < sizeof buf - 1) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0) break;
        len += (size_t)n;
        buf[len] = 0;
        if (strstr(buf, "\"text\":\"") && strstr(buf, "data: ")) break;
    }
    if (!strstr(buf, "HTTP/1.1 200") || !strstr(buf, "data: {"))
        fprintf(stderr, "long stream did not start; got: %s\n", buf);
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    assert_non_null(strstr(buf, "data: {"));
    return fd;
}

static void test_cancel_on_disconnect(void **state)
{
    NEED_MODEL();
    server s;
    start(&s, "--quiet", "--model", MODEL_PATH, "--max-concurrent", "1", NULL);
    const char *model = served_model(&s);
    int fd = start_long_stream(&s, model);
    /* While it runs, a second request is over the limit. */
    char body[256];
    snprintf(body, sizeof body, "{\"model\":\"%s\",\"prompt\":\"Hi\",\"max_tokens\":2}", model);
    resp r = http(&s, "POST", "/v1/completions", body, NULL);
    expect_error(&r, 429, NULL, NULL, "too_many_requests");
    resp_free(&r);
    assert_true(metrics_has(&s, "lode_generation_active 1", 30));
    /* The client goes away mid-stream: the generation is cancelled, the slot freed. */
    close(fd);
    assert_true(metrics_has(&s, "lode_generation_cancelled_total 1", 30));
    assert_true(metrics_has(&s, "lode_generation_active 0", 30));
    assert_true(metrics_has(&s, "lode_http_concurrency_used 0", 30));
    r = http(&s, "POST", "/v1/completions", body, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    r = http(&s, "GET", "/health", NULL, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    stop(&s);
}

/* Reads fd until the text arrives or timeout; returns whether it came. */
static int raw_wait_for(int fd, const char *text, double timeout_s)
{
    char buf[16384];
    size_t len = 0;
    double t0 = now_s();
    while (now_s() - t0 < timeout_s) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        if (len == sizeof buf - 1) { /* keep the tail, where the text may start */
            memmove(buf, buf + len / 2, len - len / 2);
            len -= len / 2;
        }
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0) return 0;
        len += (size_t)n;
        buf[len] = 0;
        if (strstr(buf, text)) return 1;
    }
    return 0;
}

/* A stream whose generation waits (queued behind another: one sequence at a time) writes
 * nothing, yet its client leaving is noticed within seconds: keep-alive comments reach the
 * client while it waits, and once its socket is closed the next one fails, which cancels
 * the waiting generation while the other one still runs. */
static void test_keepalive_detects_gone_client(void **state)
{
    NEED_MODEL();
    server s;
    start(&s, "--quiet", "--model", MODEL_PATH, "--max-seqs", "1", NULL);
    const char *model = served_model(&s);
    int running = start_long_stream(&s, model);
    int waiting = raw_connect(&s);
    char body[256], req[512];
    int bl =
        snprintf(body, sizeof body,
                 "{\"model\":\"%s\",\"prompt\":\"Hi\",\"max_tokens\":8,\"stream\":true}", model);
    int rl = snprintf(req, sizeof req,
                      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      "application/json\r\nContent-Length: %d\r\n\r\n%s",
                      bl, body);
    raw_send(waiting, req, (size_t)rl);
    assert_true(metrics_has(&s, "lode_engine_queue_depth 1\n", 30));
    assert_true(raw_wait_for(waiting, ": keep-alive\n\n", 5));
    double t0 = now_s();
    close(waiting);
    /* Cancelled and out of the queue while the first generation still runs. */
    int cancelled = 0;
    while (!cancelled && now_s() - t0 < 5) {
        resp r = http(&s, "GET", "/metrics", NULL, NULL);
        if (strstr(r.body, "lode_generation_cancelled_total 1\n")) {
            cancelled = 1;
            assert_non_null(strstr(r.body, "lode_engine_queue_depth 0\n"));
            assert_non_null(strstr(r.body, "lode_engine_running 1\n"));
            assert_null(strstr(r.body, "lode_http_stream_keepalives_total 0\n"));
        }
        resp_free(&r);
        if (!cancelled) usleep(50000);
    }
    if (!cancelled) fprintf(stderr, "the gone client's generation was not cancelled in 5 s\n");
    assert_true(cancelled);
    fprintf(stderr, "keep-alive: gone client cancelled after %.2fs\n", now_s() - t0);
    close(running);
    assert_true(metrics_has(&s, "lode_generation_cancelled_total 2\n", 30));
    assert_true(metrics_has(&s, "lode_http_concurrency_used 0\n", 30));
    stop(&s);
}

static void test_shutdown_cancels_generation(void **state)
{
    NEED_MODEL();
    server s;
    make_dir(&s);
    const char *args[] = {"--quiet", "--model", MODEL_PATH, "--shutdown-grace", "1", NULL};
    start_args(&s, args);
    const char *model = served_model(&s);
    int fd = start_long_stream(&s, model);
    kill(s.pid, SIGTERM);
    /* The stream ends properly: a finish chunk, then [DONE]; the server exits 0. */
    char *rest = raw_read_all(fd, 30);
    close(fd);
    assert_non_null(strstr(rest, "\"finish_reason\":\"cancelled\""));
    assert_non_null(strstr(rest, "data: [DONE]"));
    free(rest);
    int status = 0;
    double t0 = now_s();
    while (waitpid(s.pid, &status, WNOHANG) == 0 && now_s() - t0 < 30) usleep(10000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    s.pid = 0;
    cleanup(&s);
}

/* ---- tests: embeddings, uploads, URL fetches, search modes --------------------------- */

#define NEED_EMBED_MODEL()                                                                         \
    do {                                                                                           \
        if (!have_embed_model()) {                                                                 \
            printf("skipped: %s is missing (make model)\n", EMBED_PATH);                           \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* The vector of data[i] of an embeddings answer (float or base64) into out; returns dim. */
static int embedding_of(json_t *v, size_t i, float *out, int cap)
{
    json_t *e = json_object_get(json_array_get(json_object_get(v, "data"), i), "embedding");
    if (json_is_array(e)) {
        int n = (int)json_array_size(e);
        assert_true(n <= cap);
        for (int k = 0; k < n; k++) out[k] = (float)json_real_value(json_array_get(e, (size_t)k));
        return n;
    }
    assert_true(json_is_string(e));
    /* base64 of little-endian float32 */
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = json_string_value(e);
    unsigned char *raw = malloc(strlen(p));
    size_t nb = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; *p && *p != '='; p++) {
        const char *q = strchr(al, *p);
        assert_non_null(q);
        acc = (acc << 6) | (uint32_t)(q - al);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            raw[nb++] = (unsigned char)(acc >> bits);
        }
    }
    assert_int_equal(nb % 4, 0);
    int n = (int)(nb / 4);
    assert_true(n <= cap);
    for (int k = 0; k < n; k++) {
        uint32_t u = (uint32_t)raw[4 * k] | (uint32_t)raw[4 * k + 1] << 8 |
                     (uint32_t)raw[4 * k + 2] << 16 | (uint32_t)raw[4 * k + 3] << 24;
        memcpy(&out[k], &u, 4);
    }
    free(raw);
    return n;
}

static double dot(const float *a, const float *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Embeddings and chat at once on one server: the encoder batches run on the generation
 * model's scheduler thread, which shares its time between them. Both kinds of request
 * progress (the embeddings are answered while the chats still generate), every vector
 * is bitwise what the encoder gives for those texts alone, and beyond the embedding
 * queue's bound a request is answered 429, never anything else. */
static void test_embeddings_beside_chat(void **state)
{
    NEED_MODEL();
    NEED_EMBED_MODEL();
    server s;
    start(&s, "--quiet", "--model", MODEL_PATH, "--embed-model", EMBED_PATH, "--embed-queue", "16",
          "--engine-threads", "2", NULL);
    const char *model = served_model(&s);
    enum { N_CHAT = 3, N_EMB = 10, PER = 3 };
    static char texts[N_EMB][PER][96];
    for (int i = 0; i < N_EMB; i++)
        for (int k = 0; k < PER; k++)
            snprintf(texts[i][k], sizeof texts[i][k], "%s number %d of request %d",
                     k % 2 ? "The write-ahead log keeps pages" : "A kitten rested on a rug",
                     k * 7 + i, i);
    /* the references, one request's texts per direct call */
    char err[256];
    eng_bert_opts bo = {1, 0, 0};
    eng_bert *bert = NULL;
    assert_int_equal(eng_bert_load(EMBED_PATH, &bo, &bert, err, sizeof err), LODE_OK);
    static float ref[N_EMB][PER * 384];
    for (int i = 0; i < N_EMB; i++) {
        const char *t[PER];
        for (int k = 0; k < PER; k++) t[k] = texts[i][k];
        assert_int_equal(eng_bert_embed(bert, t, NULL, PER, ref[i]), LODE_OK);
    }
    eng_bert_destroy(bert);

    CURLM *multi = curl_multi_init();
    enum { N = N_CHAT + N_EMB };
    CURL *easy[N];
    resp rs[N];
    char bodies[N][1024], url_chat[96], url_emb[96];
    double t_done[N];
    snprintf(url_chat, sizeof url_chat, "http://127.0.0.1:%d/v1/chat/completions", s.port);
    snprintf(url_emb, sizeof url_emb, "http://127.0.0.1:%d/v1/embeddings", s.port);
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    for (int i = 0; i < N; i++) {
        memset(&rs[i], 0, sizeof rs[i]);
        rs[i].body = strdup("");
        if (i < N_CHAT)
            snprintf(bodies[i], sizeof bodies[i],
                     "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Tell a "
                     "long story about lighthouse %d.\"}],\"max_tokens\":64,\"temperature\":0}",
                     model, i);
        else {
            int e = i - N_CHAT;
            snprintf(bodies[i], sizeof bodies[i],
                     "{\"model\":\"all-MiniLM-L6-v2\",\"encoding_format\":\"base64\","
                     "\"input\":[\"%s\",\"%s\",\"%s\"]}",
                     texts[e][0], texts[e][1], texts[e][2]);
        }
        easy[i] = curl_easy_init();
        curl_easy_setopt(easy[i], CURLOPT_URL, i < N_CHAT ? url_chat : url_emb);
        curl_easy_setopt(easy[i], CURLOPT_HTTPHEADER, hd);
        curl_easy_setopt(easy[i], CURLOPT_POSTFIELDS, bodies[i]);
        curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(easy[i], CURLOPT_WRITEDATA, &rs[i]);
        curl_easy_setopt(easy[i], CURLOPT_PRIVATE, (char *)&rs[i]);
        curl_multi_add_handle(multi, easy[i]);
        /* the chats first, so that generation is under way when the embeddings come */
        if (i == N_CHAT - 1) {
            int r0;
            for (int k = 0; k < 5; k++) {
                curl_multi_perform(multi, &r0);
                curl_multi_poll(multi, NULL, 0, 100, NULL);
            }
        }
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int running = 1;
    while (running) {
        curl_multi_perform(multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left)))
            if (msg->msg == CURLMSG_DONE) {
                struct timespec t1;
                clock_gettime(CLOCK_MONOTONIC, &t1);
                for (int i = 0; i < N; i++)
                    if (easy[i] == msg->easy_handle)
                        t_done[i] = (double)(t1.tv_sec - t0.tv_sec) +
                                    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
            }
        if (running) curl_multi_poll(multi, NULL, 0, 200, NULL);
    }
    double last_chat = 0, last_emb = 0;
    int ok = 0, busy = 0;
    for (int i = 0; i < N; i++) {
        curl_easy_getinfo(easy[i], CURLINFO_RESPONSE_CODE, &rs[i].status);
        if (i < N_CHAT) {
            assert_int_equal(rs[i].status, 200);
            json_t *v = json_of(&rs[i]);
            assert_true(json_integer_value(
                            json_object_get(json_object_get(v, "usage"), "completion_tokens")) > 0);
            json_decref(v);
            last_chat = LODE_MAX(last_chat, t_done[i]);
        } else if (rs[i].status == 429) {
            busy++;
        } else {
            assert_int_equal(rs[i].status, 200);
            json_t *v = json_of(&rs[i]);
            float got[384];
            for (int k = 0; k < PER; k++) {
                assert_int_equal(embedding_of(v, (size_t)k, got, 384), 384);
                assert_memory_equal(got, ref[i - N_CHAT] + k * 384, sizeof got);
            }
            json_decref(v);
            last_emb = LODE_MAX(last_emb, t_done[i]);
            ok++;
        }
        curl_multi_remove_handle(multi, easy[i]);
        curl_easy_cleanup(easy[i]);
        resp_free(&rs[i]);
    }
    curl_multi_cleanup(multi);
    curl_slist_free_all(hd);
    printf("%d embedding requests answered (%d refused with 429) by %.2f s; chats done at "
           "%.2f s\n",
           ok, busy, last_emb, last_chat);
    assert_true(ok >= 1);
    /* the embeddings did not wait for the generation to end */
    assert_true(last_emb < last_chat);
    char line[64];
    snprintf(line, sizeof line, "lode_embed_rejected_total %d\n", busy);
    assert_true(metrics_has(&s, line, 30));
    assert_true(metrics_has(&s, "lode_embed_shared_scheduler 1\n", 30));
    /* a request larger than the whole queue is a client error, not a 429 */
    char big[2048] = "{\"model\":\"all-MiniLM-L6-v2\",\"input\":[\"a\"";
    for (int k = 1; k < 17; k++) strcat(big, ",\"a\"");
    strcat(big, "]}");
    resp r = http(&s, "POST", "/v1/embeddings", big, NULL);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    stop(&s);
}

static void test_embeddings(void **state)
{
    NEED_EMBED_MODEL();
    server s;
    start(&s, "--quiet", "--embed-model", EMBED_PATH, "--api-key", "sk-e", NULL);
    float a[1024], b[1024], c2[1024], d[1024];

    resp r = http(&s, "GET", "/v1/models", NULL, "sk-e");
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"all-MiniLM-L6-v2\""));
    resp_free(&r);

    /* One string: one unit vector of the model's width, usage counts its tokens. */
    r = http(&s, "POST", "/v1/embeddings",
             "{\"model\":\"all-MiniLM-L6-v2\",\"input\":\"The write-ahead log\"}", "sk-e");
    assert_int_equal(r.status, 200);
    json_t *v = json_of(&r);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "list");
    assert_string_equal(json_string_value(json_object_get(v, "model")), "all-MiniLM-L6-v2");
    json_t *item = json_array_get(json_object_get(v, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(item, "object")), "embedding");
    assert_int_equal(json_integer_value(json_object_get(item, "index")), 0);
    int dim = embedding_of(v, 0, a, 1024);
    assert_int_equal(dim, 384);
    assert_true(fabs(dot(a, a, dim) - 1.0) < 1e-4);
    json_t *u = json_object_get(v, "usage");
    /* [CLS] the write - ahead log [SEP] */
    assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), 7);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 7);
    json_decref(v);
    resp_free(&r);

    /* An array: one vector per text in order; the same text gives the same vector whether
     * alone or batched; related texts are closer than unrelated ones; base64 carries the
     * same floats. */
    r = http(&s, "POST", "/v1/embeddings",
             "{\"model\":\"all-MiniLM-L6-v2\",\"input\":[\"A cat sat on the mat.\","
             "\"The write-ahead log\",\"A kitten rested on the rug.\"],"
             "\"encoding_format\":\"base64\"}",
             "sk-e");
    assert_int_equal(r.status, 200);
    v = json_of(&r);
    assert_int_equal(json_array_size(json_object_get(v, "data")), 3);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(json_integer_value(json_object_get(
                             json_array_get(json_object_get(v, "data"), i), "index")),
                         (json_int_t)i);
    assert_int_equal(embedding_of(v, 0, b, 1024), dim);
    assert_int_equal(embedding_of(v, 1, c2, 1024), dim);
    assert_int_equal(embedding_of(v, 2, d, 1024), dim);
    assert_true(dot(a, c2, dim) > 0.9999);
    assert_true(dot(b, d, dim) > dot(b, c2, dim) + 0.2);
    json_decref(v);
    resp_free(&r);

    /* Concurrent requests (batched together by the queue) each get their own answer. */
    CURLM *multi = curl_multi_init();
    CURL *easy[8];
    resp rs[8];
    struct curl_slist *hd = curl_slist_append(NULL, "Authorization: Bearer sk-e");
    char bodies[8][160], url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/embeddings", s.port);
    for (int i = 0; i < 8; i++) {
        memset(&rs[i], 0, sizeof rs[i]);
        rs[i].body = strdup("");
        snprintf(bodies[i], sizeof bodies[i],
                 "{\"model\":\"all-MiniLM-L6-v2\",\"input\":[\"%s\",\"filler %d\"]}",
                 i % 2 ? "The write-ahead log" : "A cat sat on the mat.", i);
        easy[i] = curl_easy_init();
        curl_easy_setopt(easy[i], CURLOPT_URL, url);
        curl_easy_setopt(easy[i], CURLOPT_HTTPHEADER, hd);
        curl_easy_setopt(easy[i], CURLOPT_POSTFIELDS, bodies[i]);
        curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(easy[i], CURLOPT_WRITEDATA, &rs[i]);
        curl_multi_add_handle(multi, easy[i]);
    }
    int running = 1;
    while (running) {
        curl_multi_perform(multi, &running);
        if (running) curl_multi_poll(multi, NULL, 0, 200, NULL);
    }
    for (int i = 0; i < 8; i++) {
        curl_easy_getinfo(easy[i], CURLINFO_RESPONSE_CODE, &rs[i].status);
        assert_int_equal(rs[i].status, 200);
        v = json_of(&rs[i]);
        assert_int_equal(embedding_of(v, 0, d, 1024), dim);
        assert_true(dot(d, i % 2 ? c2 : b, dim) > 0.9999);
        json_decref(v);
        curl_multi_remove_handle(multi, easy[i]);
        curl_easy_cleanup(easy[i]);
        resp_free(&rs[i]);
    }
    curl_multi_cleanup(multi);
    curl_slist_free_all(hd);
    assert_true(metrics_has(&s, "lode_embed_texts_total 20\n", 30));

    /* Errors. */
    static const struct {
        const char *body, *msg, *param, *code;
        long status;
    } bad[] = {
        {"{\"model\":\"all-MiniLM-L6-v2\"}", "'input'", "input", NULL, 400},
        {"{\"input\":\"x\"}", "'model'", "model", NULL, 400},
        {"{\"model\":\"all-MiniLM-L6-v2\",\"input\":\"\"}", "empty", "input", NULL, 400},
        {"{\"model\":\"all-MiniLM-L6-v2\",\"input\":[]}", "empty", "input", NULL, 400},
        {"{\"model\":\"all-MiniLM-L6-v2\",\"input\":[\"a\",5]}", "string", "input[1]", NULL, 400},
        {"{\"model\":\"all-MiniLM-L6-v2\",\"input\":{}}", "string", "input", NULL, 400},
        {"{\"model\":\"all-MiniLM-L6-v2\",\"input\":[[1,2]]}", "token arrays", "input[0]",
         "unsupported_parameter", 400},
        {"{\"model\":\"all-MiniLM-L6-v2\",\"input\":[1,2]}", "token arrays", "input",
         "unsupported_parameter", 400},
        {"{\"model\":\"all-MiniLM-L6-v2\",\"input\":\"x\",\"encoding_format\":\"hex\"}",
         "encoding_format", "encoding_format", NULL, 400},
        {"{\"model\":\"all-MiniLM-L6-v2\",\"input\":\"x\",\"dimensions\":64}", "'dimensions'",
         "dimensions", "unsupported_parameter", 400},
        {"{\"model\":\"text-embedding-3-small\",\"input\":\"x\"}", "does not exist", "model",
         "model_not_found", 404},
        {"{\"model\":", "malformed JSON", NULL, "invalid_json", 400},
        {"[1]", "JSON object", NULL, NULL, 400},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = http(&s, "POST", "/v1/embeddings", bad[i].body, "sk-e");
        expect_error(&r, bad[i].status, bad[i].msg, bad[i].param, bad[i].code);
        resp_free(&r);
    }
    /* 2049 inputs: over the API's limit. */
    size_t cap = 2049 * 4 + 64;
    char *big = malloc(cap);
    size_t n = (size_t)snprintf(big, cap, "{\"model\":\"all-MiniLM-L6-v2\",\"input\":[");
    for (int i = 0; i < 2049; i++) n += (size_t)snprintf(big + n, cap - n, "%s\"a\"", i ? "," : "");
    snprintf(big + n, cap - n, "]}");
    r = http(&s, "POST", "/v1/embeddings", big, "sk-e");
    expect_error(&r, 400, "at most 2048", "input", NULL);
    resp_free(&r);
    free(big);
    r = http(&s, "POST", "/v1/embeddings", "{\"model\":\"all-MiniLM-L6-v2\",\"input\":\"x\"}",
             NULL);
    expect_error(&r, 401, "API key", NULL, "invalid_api_key");
    resp_free(&r);
    r = http(&s, "GET", "/v1/embeddings", NULL, "sk-e");
    expect_error(&r, 405, NULL, NULL, "method_not_allowed");
    resp_free(&r);
    stop(&s);

    /* Without an embedding model: 503, and /v1/models does not list one. */
    start(&s, "--quiet", NULL);
    r = http(&s, "POST", "/v1/embeddings", "{\"model\":\"all-MiniLM-L6-v2\",\"input\":\"x\"}",
             NULL);
    expect_error(&r, 503, "--embed-model", NULL, "no_embedding_model");
    resp_free(&r);
    r = http(&s, "GET", "/v1/models", NULL, NULL);
    assert_null(strstr(r.body, "MiniLM"));
    resp_free(&r);
    stop(&s);
}

/* A multipart/form-data POST of parts (name, value, filename or NULL, type or NULL). */
typedef struct part {
    const char *name, *data, *filename, *type;
    size_t len; /* 0: strlen(data) */
} part;

static resp post_form(server *s, const char *path, const part *parts, int n, const char *auth)
{
    resp r = {0};
    r.body = strdup("");
    CURL *c = curl_easy_init();
    curl_mime *m = curl_mime_init(c);
    for (int i = 0; i < n; i++) {
        curl_mimepart *p = curl_mime_addpart(m);
        curl_mime_name(p, parts[i].name);
        curl_mime_data(p, parts[i].data, parts[i].len ? parts[i].len : strlen(parts[i].data));
        if (parts[i].filename) curl_mime_filename(p, parts[i].filename);
        if (parts[i].type) curl_mime_type(p, parts[i].type);
    }
    char url[256], ah[128];
    struct curl_slist *h = NULL;
    if (auth) {
        snprintf(ah, sizeof ah, "Authorization: Bearer %s", auth);
        h = curl_slist_append(h, ah);
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s->port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_MIMEPOST, m);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_mime_free(m);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return r;
}

static void expect_doc(resp *r, long status, const char *uri, const char *media, const char *what)
{
    if (r->status != status) fprintf(stderr, "want %ld, got %ld: %s\n", status, r->status, r->body);
    assert_int_equal(r->status, status);
    json_t *v = json_of(r);
    assert_string_equal(json_string_value(json_object_get(v, "uri")), uri);
    if (media) assert_string_equal(json_string_value(json_object_get(v, "media_type")), media);
    assert_string_equal(json_string_value(json_object_get(v, "status")), what);
    json_decref(v);
}

static void test_document_uploads(void **state)
{
    server s;
    start(&s, "--quiet", "--api-key", "sk-d", NULL);
    const char *md = "# Backups\n\nThe online backup API copies a live database.\n";

    /* A file: the name and the kind come from its file name; a part type of
     * application/octet-stream (what browsers send for unknown files) decides nothing. */
    part p1[] = {{"file", md, "ops/backup.md", "application/octet-stream", 0}};
    resp r = post_form(&s, "/v1/documents", p1, 1, "sk-d");
    expect_doc(&r, 201, "ops/backup.md", "text/markdown", "created");
    resp_free(&r);
    r = post_form(&s, "/v1/documents", p1, 1, "sk-d");
    expect_doc(&r, 200, "ops/backup.md", NULL, "unchanged");
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=online%20backup&mode=bm25", NULL, "sk-d");
    assert_int_equal(r.status, 200);
    json_t *v = json_of(&r);
    json_t *h = json_array_get(json_object_get(v, "data"), 0);
    assert_non_null(h);
    assert_string_equal(json_string_value(json_object_get(h, "uri")), "ops/backup.md");
    assert_string_equal(json_string_value(json_object_get(h, "title")), "Backups");
    assert_string_equal(json_string_value(json_object_get(v, "mode")), "lexical");
    json_decref(v);
    resp_free(&r);

    /* Fields name, title and media_type override; the part's own text type counts. */
    part p2[] = {{"file", "<p>Checkpoints move pages.</p>", "page.txt", NULL, 0},
                 {"name", "kb/checkpoint", NULL, NULL, 0},
                 {"title", "Checkpoints", NULL, NULL, 0},
                 {"media_type", "text/html", NULL, NULL, 0}};
    r = post_form(&s, "/v1/documents", p2, 4, "sk-d");
    expect_doc(&r, 201, "kb/checkpoint", "text/html", "created");
    v = json_of(&r);
    assert_string_equal(json_string_value(json_object_get(v, "title")), "Checkpoints");
    json_decref(v);
    resp_free(&r);
    part p3[] = {{"file", "plain words about vacuum", "v.bin", "text/plain", 0}};
    r = post_form(&s, "/v1/documents", p3, 1, "sk-d");
    expect_doc(&r, 201, "v.bin", "text/plain", "created");
    resp_free(&r);

    /* Multipart errors. */
    part nofile[] = {{"name", "x", NULL, NULL, 0}};
    r = post_form(&s, "/v1/documents", nofile, 1, "sk-d");
    expect_error(&r, 400, "'file'", "file", NULL);
    resp_free(&r);
    part empty[] = {{"file", "", "e.txt", NULL, 0}};
    r = post_form(&s, "/v1/documents", empty, 1, "sk-d");
    expect_error(&r, 400, "empty", "file", NULL);
    resp_free(&r);
    static const char elf[] = "\x7f"
                              "ELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0";
    part bin[] = {{"file", elf, "a.out", NULL, sizeof elf - 1}};
    r = post_form(&s, "/v1/documents", bin, 1, "sk-d");
    expect_error(&r, 415, "not text", NULL, "unsupported_media_type");
    resp_free(&r);
    part png[] = {{"file", "x", "x.png", "image/png", 0}};
    r = post_form(&s, "/v1/documents", png, 1, "sk-d");
    expect_error(&r, 415, "image/png", "file", "unsupported_media_type");
    resp_free(&r);
    part badmt[] = {{"file", "x", "x.txt", NULL, 0},
                    {"media_type", "application/pdf", NULL, NULL, 0}};
    r = post_form(&s, "/v1/documents", badmt, 2, "sk-d");
    expect_error(&r, 400, "media_type", "media_type", NULL);
    resp_free(&r);
    r = post_form(&s, "/v1/documents", p1, 1, NULL);
    expect_error(&r, 401, "API key", NULL, "invalid_api_key");
    resp_free(&r);
    /* A truncated multipart body (raw, since curl would not send one). */
    int fd = raw_connect(&s);
    const char *req = "POST /v1/documents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-d\r\n"
                      "Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 60\r\n"
                      "Connection: close\r\n\r\n"
                      "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a";
    raw_send(fd, req, strlen(req));
    char *ans = raw_read_all(fd, 10);
    close(fd);
    assert_non_null(strstr(ans, "HTTP/1.1 400"));
    free(ans);
    r = http(&s, "POST", "/v1/documents", "{\"text\":\"x\",\"url\":\"http://a/\"}", "sk-d");
    expect_error(&r, 400, "not both", "url", NULL);
    resp_free(&r);
    r = http(&s, "POST", "/v1/documents", "{\"name\":\"a\",\"uri\":\"b\",\"text\":\"x\"}", "sk-d");
    expect_error(&r, 400, "not both", "uri", NULL);
    resp_free(&r);

    /* Search modes and matching. */
    r = http(&s, "GET", "/v1/search?q=online%20vacuum&match=all", NULL, "sk-d");
    v = json_of(&r);
    assert_int_equal(json_array_size(json_object_get(v, "data")), 0);
    json_decref(v);
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=online%20vacuum&match=any", NULL, "sk-d");
    v = json_of(&r);
    assert_int_equal(json_array_size(json_object_get(v, "data")), 2);
    json_decref(v);
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=x&mode=fuzzy", NULL, "sk-d");
    expect_error(&r, 400, "'mode'", "mode", NULL);
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=x&mode=dense", NULL, "sk-d");
    expect_error(&r, 400, NULL, "mode", "dense_unavailable");
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=x&match=some", NULL, "sk-d");
    expect_error(&r, 400, "'match'", "match", NULL);
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=x&k=0", NULL, "sk-d");
    expect_error(&r, 400, "'k'", "k", NULL);
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=x", NULL, NULL);
    expect_error(&r, 401, "API key", NULL, "invalid_api_key");
    resp_free(&r);
    r = http(&s, "DELETE", "/v1/documents/1", NULL, NULL);
    expect_error(&r, 401, "API key", NULL, "invalid_api_key");
    resp_free(&r);

    /* The store's size in /metrics: 3 documents, their source bytes, the file. */
    char want[96];
    snprintf(want, sizeof want, "lode_store_source_bytes %zu\n",
             strlen(md) + strlen("<p>Checkpoints move pages.</p>") +
                 strlen("plain words about vacuum"));
    assert_true(metrics_has(&s, want, 30));
    assert_true(metrics_has(&s, "lode_store_documents 3\n", 30));
    assert_true(metrics_has(&s, "lode_store_bytes ", 30));
    stop(&s);
}

static void test_document_url(void **state)
{
    server s;
    /* A listener that accepts (the kernel does) and never answers: the fetch times out. */
    int silent = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    socklen_t al = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(silent, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(silent, 4), 0);
    getsockname(silent, (struct sockaddr *)&a, &al);

    start(&s, "--quiet", "--fetch-timeout", "1", "--max-body", "64K", NULL);
    /* The server fetches from itself: /metrics is text/plain. */
    char body[256], url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", s.port);
    snprintf(body, sizeof body, "{\"url\":\"%s\"}", url);
    resp r = http(&s, "POST", "/v1/documents", body, NULL);
    expect_doc(&r, 201, url, "text/plain", "created");
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=lode_http_requests_total", NULL, NULL);
    assert_non_null(strstr(r.body, url));
    resp_free(&r);
    snprintf(body, sizeof body, "{\"url\":\"%s\",\"name\":\"m\",\"media_type\":\"text/markdown\"}",
             url);
    r = http(&s, "POST", "/v1/documents", body, NULL);
    expect_doc(&r, 201, "m", "text/markdown", "created");
    resp_free(&r);

    static const struct {
        const char *path, *msg, *code;
        long status;
    } bad[] = {
        {"/health", "application/json", "unsupported_media_type", 415},
        {"/nowhere", "HTTP 404", "url_fetch_failed", 400},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(body, sizeof body, "{\"url\":\"http://127.0.0.1:%d%s\"}", s.port, bad[i].path);
        r = http(&s, "POST", "/v1/documents", body, NULL);
        expect_error(&r, bad[i].status, bad[i].msg, "url", bad[i].code);
        resp_free(&r);
    }
    snprintf(body, sizeof body, "{\"url\":\"http://127.0.0.1:%d/x\"}", ntohs(a.sin_port));
    double t0 = now_s();
    r = http(&s, "POST", "/v1/documents", body, NULL);
    expect_error(&r, 504, "longer than 1 s", "url", "url_fetch_timeout");
    assert_true(now_s() - t0 < 5);
    resp_free(&r);
    close(silent);
    r = http(&s, "POST", "/v1/documents", "{\"url\":\"http://127.0.0.1:1/x\"}", NULL);
    expect_error(&r, 400, "cannot fetch", "url", "url_fetch_failed");
    resp_free(&r);
    r = http(&s, "POST", "/v1/documents", "{\"url\":\"file:///etc/passwd\"}", NULL);
    expect_error(&r, 400, "http", "url", "invalid_url");
    resp_free(&r);
    stop(&s);

    /* Over the size limit: /metrics of a server with a tiny body limit. */
    start(&s, "--quiet", "--max-body", "1K", NULL);
    snprintf(body, sizeof body, "{\"url\":\"http://127.0.0.1:%d/metrics\"}", s.port);
    r = http(&s, "POST", "/v1/documents", body, NULL);
    expect_error(&r, 413, "over the limit", "url", "url_content_too_large");
    resp_free(&r);
    stop(&s);
}

/* A store ingested with embeddings: dense and hybrid search over HTTP, and uploads that
 * get their vectors in the same transaction as their chunks. */
static void test_search_dense(void **state)
{
    NEED_EMBED_MODEL();
    server s;
    make_dir(&s);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/docs && printf '# Vacuum\\n\\nVACUUM rebuilds the database file into a "
             "minimal amount of space.\\n' >%s/docs/vacuum.md && printf '# WAL\\n\\nThe "
             "write-ahead log lets readers continue while a writer commits.\\n' >%s/docs/wal.md "
             "&& %s/lode ingest --embed-model %s --db %s %s/docs >/dev/null 2>&1",
             s.dir, s.dir, s.dir, build_dir(), EMBED_PATH, s.db, s.dir);
    assert_int_equal(system(cmd), 0);
    const char *args[] = {"--quiet", NULL};
    start_args(&s, args);

    /* No word in common with the document: only dense search finds it. */
    resp r = http(&s, "GET", "/v1/search?q=shrinking%20the%20file&mode=dense&k=1", NULL, NULL);
    assert_int_equal(r.status, 200);
    json_t *v = json_of(&r);
    assert_string_equal(json_string_value(json_object_get(v, "mode")), "dense");
    json_t *h = json_array_get(json_object_get(v, "data"), 0);
    assert_non_null(strstr(json_string_value(json_object_get(h, "uri")), "vacuum.md"));
    assert_int_equal(json_integer_value(json_object_get(h, "dense_rank")), 1);
    assert_true(json_real_value(json_object_get(h, "dense_score")) > 0.2);
    json_decref(v);
    resp_free(&r);
    /* auto is hybrid on a store with vectors: both ranks of a lexical match are given. */
    r = http(&s, "GET", "/v1/search?q=readers%20writer&k=1", NULL, NULL);
    v = json_of(&r);
    assert_string_equal(json_string_value(json_object_get(v, "mode")), "hybrid");
    h = json_array_get(json_object_get(v, "data"), 0);
    assert_non_null(strstr(json_string_value(json_object_get(h, "uri")), "wal.md"));
    assert_int_equal(json_integer_value(json_object_get(h, "lexical_rank")), 1);
    assert_int_equal(json_integer_value(json_object_get(h, "dense_rank")), 1);
    json_decref(v);
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=readers&mode=lexical&path=*vacuum*", NULL, NULL);
    v = json_of(&r);
    assert_int_equal(json_array_size(json_object_get(v, "data")), 0);
    json_decref(v);
    resp_free(&r);

    /* An upload is embedded: dense search finds it by meaning at once; deleted, it is gone. */
    r = http(&s, "POST", "/v1/documents",
             "{\"name\":\"fox\",\"text\":\"Foxes are small omnivorous mammals of the dog "
             "family.\"}",
             NULL);
    assert_int_equal(r.status, 201);
    v = json_of(&r);
    assert_true(json_is_true(json_object_get(v, "embedded")));
    json_int_t id = json_integer_value(json_object_get(v, "id"));
    json_decref(v);
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=canine%20animals&mode=dense&k=1", NULL, NULL);
    v = json_of(&r);
    h = json_array_get(json_object_get(v, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(h, "uri")), "fox");
    json_decref(v);
    resp_free(&r);
    char path[64];
    snprintf(path, sizeof path, "/v1/documents/%lld", (long long)id);
    r = http(&s, "DELETE", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=canine%20animals&mode=dense&k=3", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "\"fox\""));
    resp_free(&r);
    assert_int_equal(stop_sig(&s, SIGTERM, 30), 0);

    /* The same store with --no-dense: lexical only, dense asked for is refused. */
    const char *nd[] = {"--quiet", "--no-dense", NULL};
    start_args(&s, nd);
    r = http(&s, "GET", "/v1/search?q=readers", NULL, NULL);
    v = json_of(&r);
    assert_string_equal(json_string_value(json_object_get(v, "mode")), "lexical");
    json_decref(v);
    resp_free(&r);
    r = http(&s, "GET", "/v1/search?q=readers&mode=hybrid", NULL, NULL);
    expect_error(&r, 400, NULL, "mode", "dense_unavailable");
    resp_free(&r);
    stop(&s);
}

typedef struct upload_arg {
    server *s;
    const char *body;
    resp r;
    double t_done;
} upload_arg;

static void *upload_thread(void *p)
{
    upload_arg *a = p;
    a->r = http(a->s, "POST", "/v1/documents", a->body, NULL);
    a->t_done = now_s();
    return NULL;
}

/* With a generation model and an embedding model of the store's kind, a search's query
 * and an upload's chunks are embedded by the embedding queue on the model's scheduler
 * thread (counted in lode_embed_texts_total; a search that embedded on its own would
 * not count), and outside the store lock: a search made while a long upload is being
 * embedded is answered before that upload is. */
static void test_store_embeds_through_queue(void **state)
{
    NEED_MODEL();
    NEED_EMBED_MODEL();
    server s;
    make_dir(&s);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/docs && printf '# Vacuum\\n\\nVACUUM rebuilds the database file into a "
             "minimal amount of space.\\n' >%s/docs/vacuum.md && %s/lode ingest --embed-model %s "
             "--db %s %s/docs >/dev/null 2>&1",
             s.dir, s.dir, build_dir(), EMBED_PATH, s.db, s.dir);
    assert_int_equal(system(cmd), 0);
    const char *args[] = {"--quiet",  "--model",          MODEL_PATH, "--embed-model",
                          EMBED_PATH, "--engine-threads", "2",        NULL};
    start_args(&s, args);
    assert_true(metrics_has(&s, "lode_embed_shared_scheduler 1\n", 30));
    resp r = http(&s, "GET", "/v1/search?q=shrinking%20the%20file&mode=dense&k=1", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "vacuum.md"));
    resp_free(&r);
    assert_true(metrics_has(&s, "lode_embed_texts_total 1\n", 30));

    /* a document of 48 sections of about 150 words: one chunk each */
    lode_buf text = LODE_BUF_INIT;
    for (int i = 0; i < 48; i++) {
        char h[64];
        snprintf(h, sizeof h, "# Section %d\\n\\n", i);
        assert_int_equal(lode_buf_puts(&text, h), LODE_OK);
        for (int k = 0; k < 10; k++)
            assert_int_equal(lode_buf_puts(&text, "Lighthouse keepers trimmed the wicks, wound the "
                                                  "clockwork and logged the passing ships. "),
                             LODE_OK);
        assert_int_equal(lode_buf_puts(&text, "\\n\\n"), LODE_OK);
    }
    lode_buf body = LODE_BUF_INIT;
    assert_int_equal(lode_buf_puts(&body, "{\"name\":\"keepers\",\"text\":\""), LODE_OK);
    assert_int_equal(lode_buf_puts(&body, text.data), LODE_OK);
    assert_int_equal(lode_buf_puts(&body, "\"}"), LODE_OK);
    upload_arg up = {&s, body.data, {0}, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, upload_thread, &up), 0);
    /* the upload's job is in the embedding queue; how many texts the encoder had done then
     * says how much of the upload was left when the search came */
    long long done_before = -1;
    double t0 = now_s();
    while (done_before < 0 && now_s() - t0 < 60) {
        r = http(&s, "GET", "/metrics", NULL, NULL);
        const char *t = r.status == 200 ? strstr(r.body, "\nlode_embed_texts_total ") : NULL;
        if (t && strstr(r.body, "\nlode_embed_queue_depth 1\n"))
            done_before = strtoll(t + strlen("\nlode_embed_texts_total "), NULL, 10) - 1;
        resp_free(&r);
        if (done_before < 0) usleep(20000);
    }
    assert_true(done_before >= 0);
    r = http(&s, "GET", "/v1/search?q=shrinking%20the%20file&mode=dense&k=1", NULL, NULL);
    double t_search = now_s();
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "vacuum.md"));
    resp_free(&r);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(up.r.status, 201);
    json_t *v = json_of(&up.r);
    assert_true(json_is_true(json_object_get(v, "embedded")));
    json_int_t chunks = json_integer_value(json_object_get(v, "chunks"));
    assert_true(chunks >= 48);
    json_decref(v);
    resp_free(&up.r);
    printf("search answered %.2f s before the upload of %lld chunks (%lld embedded when it "
           "was asked)\n",
           up.t_done - t_search, (long long)chunks, done_before);
    /* The search waits for the batch the encoder is running, at most 1024 tokens (about five
     * of these chunks), then goes first. Where the poll saw the queue so late (a loaded
     * machine) that the upload was on its last batches, the order is a race and says nothing. */
    if (chunks - done_before > 12)
        assert_true(t_search < up.t_done);
    else
        printf("order not checked: only %lld chunks were left to embed\n",
               (long long)(chunks - done_before));
    char line[64];
    snprintf(line, sizeof line, "lode_embed_texts_total %lld\n", (long long)chunks + 2);
    assert_true(metrics_has(&s, line, 30));
    /* a question's dense retrieval embeds through the queue too */
    r = http(&s, "POST", "/v1/ask",
             "{\"question\":\"How is the file made smaller?\",\"mode\":\"dense\",\"k\":1,"
             "\"max_tokens\":2}",
             NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "vacuum.md"));
    resp_free(&r);
    snprintf(line, sizeof line, "lode_embed_texts_total %lld\n", (long long)chunks + 3);
    assert_true(metrics_has(&s, line, 30));
    lode_buf_free(&text);
    lode_buf_free(&body);
    stop(&s);
}

static void test_openai_client(void **state)
{
    NEED_MODEL();
    const char *venv = ".cache/venv-openai"; /* set up by `make deps` (scripts/deps.sh) */
    char cmd[512];
    /* the package's files, not an import: importing it costs seconds on a loaded box */
    snprintf(cmd, sizeof cmd,
             "test -x %s/bin/python && ls %s/lib/python3*/site-packages/openai/__init__.py "
             ">/dev/null 2>&1",
             venv, venv);
    if (system(cmd) != 0) {
        printf("skipped: no openai client in %s (`make deps` installs it)\n", venv);
        skip();
    }
    server s;
    make_dir(&s);
    const char *args[] = {"--model",   MODEL_PATH,      "--api-key",
                          "sk-compat", "--embed-model", have_embed_model() ? EMBED_PATH : "",
                          NULL};
    if (!have_embed_model()) args[4] = NULL; /* the script then reports embeddings skipped */
    start_args(&s, args);
    snprintf(cmd, sizeof cmd,
             "%s/bin/python scripts/openai-compat.py http://127.0.0.1:%d/v1 sk-compat %s", venv,
             s.port, have_embed_model() ? "all-MiniLM-L6-v2" : "");
    int rc = system(cmd);
    assert_true(WIFEXITED(rc));
    assert_int_equal(WEXITSTATUS(rc), 0);
    stop(&s);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_ALL);
    if (getenv("LODE_TEST_FILTER")) cmocka_set_test_filter(getenv("LODE_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_models_metrics),
        cmocka_unit_test(test_routing_errors),
        cmocka_unit_test(test_request_validation),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_api_key),
        cmocka_unit_test(test_concurrency_limit),
        cmocka_unit_test(test_search_and_documents),
        cmocka_unit_test(test_garbage_input),
        cmocka_unit_test(test_graceful_shutdown),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_chat_completion),
        cmocka_unit_test(test_completions_stop_logprobs),
        cmocka_unit_test(test_streaming),
        cmocka_unit_test(test_generation_errors),
        cmocka_unit_test(test_cancel_on_disconnect),
        cmocka_unit_test(test_keepalive_detects_gone_client),
        cmocka_unit_test(test_shutdown_cancels_generation),
        cmocka_unit_test(test_embeddings),
        cmocka_unit_test(test_embeddings_beside_chat),
        cmocka_unit_test(test_document_uploads),
        cmocka_unit_test(test_document_url),
        cmocka_unit_test(test_search_dense),
        cmocka_unit_test(test_store_embeds_through_queue),
        cmocka_unit_test(test_openai_client),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
