/*
 * bench_serve.c: a load generator for `lode serve` on libcurl's multi interface. For each
 * concurrency level it keeps that many streaming requests in flight against one endpoint
 * for a fixed time (each client sends its next request as soon as the last one ended),
 * then reports: requests answered, throughput (requests/s and generated tokens/s), time
 * to first token and inter-token latency (p50/p99), whole-request latency, 429 answers
 * (admission control; counted apart, as handled) and errors (any other status, a broken
 * stream, a transfer failure). Requests still running --drain seconds after the level's
 * time are cut (the client disconnects) and counted apart, so a level never runs
 * unbounded on a slow machine; before the next level the server is given time to finish
 * cancelling them (until /metrics shows no request holding a slot). With --pid it also reports the
 * server's CPU time per level, so a run on a loaded machine can be judged by its CPU cost as well
 * as by wall time.
 *
 * A token is one server-sent event that carries text: for /v1/chat/completions a chunk
 * whose delta content is not empty (the first chunk, which only opens the assistant's
 * message, is not a token); for other endpoints any event with a non-empty "content",
 * "text", "delta" or "token" string, except /v1/ask's closing summary (ask.answer). The stream must
 * end with `data: [DONE]` (or an event of type "done") to count as a success.
 *
 * usage: bench_serve --url http://127.0.0.1:PORT --path /v1/chat/completions
 *                    [--concurrency 1,4,16,64] [--seconds 10] [--drain 45] [--max-tokens 16]
 *                    [--model ID] [--key KEY] [--pid SERVER_PID] [--label NAME]
 * Prints one Markdown line per level on stdout.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 256

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A growable array of doubles. */
typedef struct vec {
    double *v;
    size_t n, cap;
} vec;

static void vec_push(vec *a, double x)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->v = realloc(a->v, a->cap * sizeof *a->v);
        if (!a->v) {
            fprintf(stderr, "bench_serve: out of memory\n");
            exit(1);
        }
    }
    a->v[a->n++] = x;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(vec *a, double p)
{
    if (!a->n) return 0;
    qsort(a->v, a->n, sizeof *a->v, cmp_d);
    size_t i = (size_t)(p * (double)(a->n - 1) + 0.5);
    return a->v[i];
}

typedef struct client {
    CURL *h;
    struct curl_slist *hdr;
    double t0, last_tok;
    int tokens;
    int done_seen;
    int finished;    /* the last request ended and no new one was started */
    char line[8192]; /* the event line being assembled */
    size_t line_len;
    int line_over;
} client;

typedef struct level {
    vec ttft, itl, e2e;
    long ok, rejected, errors, tokens, cut;
    char first_error[256];
} level;

static const char *g_path = "/v1/chat/completions";

/* Whether the JSON text of an event carries a non-empty string in one of the keys. */
static int has_text(const char *ev)
{
    static const char *keys[] = {"\"content\":\"", "\"text\":\"", "\"delta\":\"", "\"token\":\""};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const char *p = ev;
        while ((p = strstr(p, keys[k]))) {
            p += strlen(keys[k]);
            if (*p && *p != '"') return 1;
        }
    }
    return 0;
}

static void on_line(client *c, const char *l)
{
    if (strncmp(l, "data:", 5)) {
        if (!strncmp(l, "event:", 6) && strstr(l, "done")) c->done_seen = 1;
        return;
    }
    l += 5;
    while (*l == ' ') l++;
    if (!strcmp(l, "[DONE]")) {
        c->done_seen = 1;
        return;
    }
    if (strstr(l, "\"object\":\"ask.answer\"") || !has_text(l)) return; /* the summary */
    double t = now_s();
    c->tokens++;
    c->last_tok = t;
}

static level *g_level;

static size_t on_data(char *p, size_t sz, size_t n, void *ud)
{
    client *c = ud;
    size_t len = sz * n;
    for (size_t i = 0; i < len; i++) {
        char ch = p[i];
        if (ch == '\n') {
            c->line[c->line_len] = 0;
            if (c->line_len && c->line[c->line_len - 1] == '\r') c->line[c->line_len - 1] = 0;
            double before = c->last_tok;
            int had = c->tokens;
            if (!c->line_over) on_line(c, c->line);
            if (c->tokens > had) {
                if (had == 0)
                    vec_push(&g_level->ttft, c->last_tok - c->t0);
                else
                    vec_push(&g_level->itl, c->last_tok - before);
            }
            c->line_len = 0;
            c->line_over = 0;
        } else if (c->line_len + 1 < sizeof c->line) {
            c->line[c->line_len++] = ch;
        } else {
            c->line_over = 1; /* a very long event: not a token we can read; skipped */
        }
    }
    return len;
}

static char g_body[4096];
static char g_url[512];

static void start_request(CURLM *m, client *c)
{
    curl_easy_reset(c->h);
    curl_easy_setopt(c->h, CURLOPT_URL, g_url);
    curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, g_body);
    curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, c->hdr);
    curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->h, CURLOPT_TIMEOUT, 300L);
    curl_easy_setopt(c->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->h, CURLOPT_PRIVATE, c);
    c->t0 = now_s();
    c->last_tok = c->t0;
    c->tokens = 0;
    c->done_seen = 0;
    c->finished = 0;
    c->line_len = 0;
    c->line_over = 0;
    curl_multi_add_handle(m, c->h);
}

static size_t sink(char *p, size_t sz, size_t n, void *ud)
{
    char *buf = ud;
    size_t len = strlen(buf), add = sz * n;
    if (len + add >= 65536) add = 65535 - len;
    memcpy(buf + len, p, add);
    buf[len + add] = 0;
    return sz * n;
}

/* Waits (up to timeout_s) until the server holds no request slot, so the requests a
 * level cut, which the server is still cancelling, do not count against the next one. */
static void wait_idle(const char *base, const char *auth, double timeout_s)
{
    char url[600];
    snprintf(url, sizeof url, "%s/metrics", base);
    static char buf[65536];
    double t0 = now_s();
    while (now_s() - t0 < timeout_s) {
        buf[0] = 0;
        CURL *h = curl_easy_init();
        struct curl_slist *hd = auth ? curl_slist_append(NULL, auth) : NULL;
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, (void *)buf);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
        CURLcode rc = curl_easy_perform(h);
        curl_slist_free_all(hd);
        curl_easy_cleanup(h);
        if (rc == CURLE_OK && strstr(buf, "\nlode_http_concurrency_used 0\n")) return;
        usleep(200000);
    }
    fprintf(stderr, "bench_serve: the server still had requests running after %.0f s\n", timeout_s);
}

static double proc_cpu_s(long pid)
{
    if (pid <= 0) return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p) return -1;
    unsigned long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
     */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

int main(int argc, char **argv)
{
    const char *base = NULL, *model = "SmolLM2-135M-Instruct.Q4_1", *key = NULL;
    const char *levels = "1,4,16,64", *label = NULL;
    double seconds = 10, drain = 45;
    int max_tokens = 16;
    long pid = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "bench_serve: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--url"))
            base = v;
        else if (!strcmp(a, "--path"))
            g_path = v;
        else if (!strcmp(a, "--concurrency"))
            levels = v;
        else if (!strcmp(a, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(a, "--drain"))
            drain = atof(v);
        else if (!strcmp(a, "--max-tokens"))
            max_tokens = atoi(v);
        else if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--key"))
            key = v;
        else if (!strcmp(a, "--pid"))
            pid = atol(v);
        else if (!strcmp(a, "--label"))
            label = v;
        else {
            fprintf(stderr, "bench_serve: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (!base || seconds <= 0 || max_tokens < 1) {
        fprintf(stderr, "usage: bench_serve --url BASE [--path P] [--concurrency 1,4,16,64] "
                        "[--seconds S] [--max-tokens N] [--model ID] [--key KEY] [--pid PID]\n");
        return 2;
    }
    snprintf(g_url, sizeof g_url, "%s%s", base, g_path);
    if (strstr(g_path, "/chat/completions"))
        snprintf(g_body, sizeof g_body,
                 "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Explain in "
                 "one sentence what a write-ahead log is.\"}],\"max_tokens\":%d,"
                 "\"temperature\":0.7,\"stream\":true}",
                 model, max_tokens);
    else if (strstr(g_path, "/completions"))
        snprintf(g_body, sizeof g_body,
                 "{\"model\":\"%s\",\"prompt\":\"A write-ahead log is\",\"max_tokens\":%d,"
                 "\"stream\":true}",
                 model, max_tokens);
    else /* /v1/ask */
        snprintf(g_body, sizeof g_body,
                 "{\"question\":\"What does the write-ahead log do?\",\"k\":2,"
                 "\"max_tokens\":%d,\"stream\":true}",
                 max_tokens);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char auth[300];
    if (key) snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);

    const char *p = levels;
    while (*p) {
        wait_idle(base, key ? auth : NULL, 120);
        int n = atoi(p);
        while (*p && *p != ',') p++;
        if (*p == ',') p++;
        if (n < 1 || n > MAX_CLIENTS) continue;
        level lv;
        memset(&lv, 0, sizeof lv);
        g_level = &lv;
        client *cl = calloc((size_t)n, sizeof *cl);
        CURLM *m = curl_multi_init();
        curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)n);
        for (int i = 0; i < n; i++) {
            cl[i].h = curl_easy_init();
            cl[i].hdr = curl_slist_append(NULL, "Content-Type: application/json");
            if (key) cl[i].hdr = curl_slist_append(cl[i].hdr, auth);
            start_request(m, &cl[i]);
        }
        double cpu0 = proc_cpu_s(pid), t0 = now_s(), until = t0 + seconds;
        int running = n;
        while (running > 0) {
            curl_multi_perform(m, &running);
            CURLMsg *msg;
            int left;
            while ((msg = curl_multi_info_read(m, &left))) {
                if (msg->msg != CURLMSG_DONE) continue;
                client *c;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
                long status = 0;
                curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &status);
                double t = now_s();
                if (msg->data.result == CURLE_OK && status == 200 && c->done_seen) {
                    lv.ok++;
                    lv.tokens += c->tokens;
                    vec_push(&lv.e2e, t - c->t0);
                } else if (msg->data.result == CURLE_OK && status == 429) {
                    lv.rejected++;
                } else {
                    if (!lv.errors)
                        snprintf(lv.first_error, sizeof lv.first_error, "%s, HTTP %ld%s",
                                 curl_easy_strerror(msg->data.result), status,
                                 c->done_seen ? "" : ", stream without [DONE]");
                    lv.errors++;
                }
                curl_multi_remove_handle(m, c->h);
                c->finished = 1;
                if (t < until) {
                    if (status == 429) usleep(20000); /* as a client honouring Retry-After */
                    start_request(m, c);
                    running++;
                }
            }
            if (running > 0 && now_s() > until + drain) {
                /* the level's time and its drain are over: cut what is still running (the
                 * server sees a disconnect and cancels it) */
                for (int i = 0; i < n; i++)
                    if (curl_multi_remove_handle(m, cl[i].h) == CURLM_OK && cl[i].t0 > 0 &&
                        cl[i].t0 < until + drain && !cl[i].finished)
                        lv.cut++;
                break;
            }
            if (running > 0) curl_multi_poll(m, NULL, 0, 50, NULL);
        }
        double wall = now_s() - t0, cpu1 = proc_cpu_s(pid);
        printf("| %s | %d | %.1f | %ld | %.2f | %.1f | %.0f / %.0f | %.0f / %.0f | %.2f / %.2f | "
               "%ld | %ld | %ld |",
               label ? label : g_path, n, wall, lv.ok, (double)lv.ok / wall,
               (double)lv.tokens / wall, pct(&lv.ttft, 0.5) * 1e3, pct(&lv.ttft, 0.99) * 1e3,
               pct(&lv.itl, 0.5) * 1e3, pct(&lv.itl, 0.99) * 1e3, pct(&lv.e2e, 0.5),
               pct(&lv.e2e, 0.99), lv.rejected, lv.errors, lv.cut);
        if (cpu0 >= 0 && cpu1 >= 0)
            printf(" %.1f |", cpu1 - cpu0);
        else
            printf(" - |");
        if (lv.errors) printf(" first error: %s", lv.first_error);
        printf("\n");
        fflush(stdout);
        for (int i = 0; i < n; i++) {
            curl_easy_cleanup(cl[i].h);
            curl_slist_free_all(cl[i].hdr);
        }
        curl_multi_cleanup(m);
        free(cl);
        free(lv.ttft.v);
        free(lv.itl.v);
        free(lv.e2e.v);
    }
    curl_global_cleanup();
    return 0;
}
