/*
 * cmd_ask.c: `lode ask`, a question answered from the store with citations. In-process it
 * runs the answer path of orchestrate/ask.h on the local store and model, streaming the
 * answer to the terminal, then prints the passages the answer cited; with --server URL it
 * asks a running `lode serve` through POST /v1/ask (libcurl), streaming the same way.
 * Every question answered in-process is logged in the store (view v_questions).
 */
#include "cli/cli.h"
#include "common/lode.h"
#include "engine/engine.h"
#include "orchestrate/ask.h"
#include "retrieval/dense.h"
#include "retrieval/store.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lode ask [OPTIONS] [--] QUESTION...\n\n"
            "Answers QUESTION from the store: retrieves the best passages, asks the model to\n"
            "answer from them citing [n], streams the answer, then lists the passages it\n"
            "cited. Each answer is logged in the store (SELECT * FROM v_questions).\n\n"
            "options:\n"
            "  -k N              passages to retrieve (default %d, at most %d)\n"
            "  --mode MODE       retrieval: hybrid, dense or lexical (default: hybrid when\n"
            "                    the store has vectors, else lexical)\n"
            "  --uri GLOB        only documents whose URI matches GLOB (SQLite GLOB)\n"
            "  --type TYPE       only documents of this media type (text/html, or text/)\n"
            "  --max-tokens N    the answer's length limit in tokens (default %d)\n"
            "  --json            print one JSON document (answer, citations, timings)\n"
            "  --store PATH      the store (default $LODE_DB or ./lode.db; also --db)\n"
            "  --model PATH      generation model, GGUF (default $LODE_MODEL or\n"
            "                    " ENG_DEFAULT_MODEL ")\n"
            "  --embed-model PATH\n"
            "                    the embedding model's folder (default: the store's)\n"
            "  --threads N       CPU threads of the engine (default: all)\n"
            "  --server URL      ask a running `lode serve` at URL instead (e.g.\n"
            "                    http://127.0.0.1:8080); key from --api-key or $LODE_API_KEY\n"
            "  --api-key KEY     the server's API key\n"
            "  --show-prompt     print the prompt given to the model (in-process only)\n"
            "  --no-log          do not log the question in the store\n"
            "  -h, --help        this text\n\n"
            "example:\n"
            "  lode ask \"What does VACUUM do?\"\n\n"
            "Exit status: 0 answered, 1 failed, 2 usage error.\n",
            ORC_DEFAULT_K, ORC_MAX_K, ORC_DEFAULT_MAX_TOKENS);
}

/* ---- printing ---------------------------------------------------------------------- */
typedef struct out_state {
    int tty;
    int wrote; /* answer text was printed */
    char last; /* the last byte printed */
} out_state;

static void put_delta(void *user, const char *text, size_t len)
{
    out_state *o = user;
    if (!len) return;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    o->wrote = 1;
    o->last = text[len - 1];
}

static const char *jget(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static double jnum(json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

/* The sources and timings after the streamed answer, from the answer's JSON. */
static void print_sources(json_t *ans, int tty)
{
    const char *dim = tty ? "\x1b[2m" : "", *bold = tty ? "\x1b[1m" : "",
               *off = tty ? "\x1b[0m" : "";
    json_t *cit = json_object_get(ans, "citations"), *pas = json_object_get(ans, "passages");
    size_t i;
    json_t *c;
    const char *finish = jget(ans, "finish_reason");
    if (!strcmp(finish, "length")) printf("%s[the answer reached its token limit]%s\n", dim, off);
    if (json_array_size(cit)) {
        printf("\n%sSources%s\n", bold, off);
        json_array_foreach(cit, i, c)
        {
            const char *title = jget(c, "title"), *hp = jget(c, "heading_path");
            if (!strcmp(hp, title)) hp = "";
            printf("  [%d] %s%s%s%s\n", (int)json_integer_value(json_object_get(c, "n")),
                   *title ? title : jget(c, "uri"), *hp ? " > " : "", hp, off);
            printf("      %s%s  (chunk %lld, score %.2f)%s\n", dim, jget(c, "uri"),
                   (long long)json_integer_value(json_object_get(c, "chunk_id")), jnum(c, "score"),
                   off);
        }
    } else if (json_array_size(pas) && strcmp(finish, "no_passages")) {
        printf("\n%sThe answer cites no passage. The passages it was given:%s\n", bold, off);
        json_array_foreach(pas, i, c)
        {
            int n = (int)json_integer_value(json_object_get(c, "n"));
            if (!n) continue;
            const char *title = jget(c, "title"), *hp = jget(c, "heading_path");
            if (!strcmp(hp, title)) hp = "";
            printf("  [%d] %s%s%s  %s(%s)%s\n", n, *title ? title : jget(c, "uri"),
                   *hp ? " > " : "", hp, dim, jget(c, "uri"), off);
        }
    }
    fflush(stdout); /* the timings go to stderr, after everything above */
    json_t *t = json_object_get(ans, "timings"), *u = json_object_get(ans, "usage");
    double dec = jnum(t, "decode_ms");
    long long gen = (long long)json_integer_value(json_object_get(u, "completion_tokens"));
    fprintf(stderr,
            "%sretrieve %.1f ms, prompt %.1f ms (%lld tokens), prefill %.0f ms, decode %.0f ms "
            "(%lld tokens%s%.1f tok/s), total %.0f ms%s\n",
            dim, jnum(t, "retrieve_ms"), jnum(t, "prompt_ms"),
            (long long)json_integer_value(json_object_get(u, "prompt_tokens")),
            jnum(t, "prefill_ms"), dec, gen, ", ",
            dec > 0 && gen > 1 ? (double)(gen - 1) / (dec / 1e3) : 0.0, jnum(t, "total_ms"), off);
}

/* ---- in-process -------------------------------------------------------------------- */
typedef struct ask_args {
    const char *question;
    orc_opts o;
    const char *mode;
    int json, show_prompt, no_log, threads;
    const char *db, *model, *embed_model, *server, *api_key;
} ask_args;

static int ask_local(const ask_args *x)
{
    int rc = CLI_FAILED;
    ret_store *s = NULL;
    ret_dense *d = NULL;
    eng_model *m = NULL;
    orc_answer *a = NULL;
    json_t *j = NULL;
    char err[1024];
    if (access(x->db, F_OK) != 0) {
        fprintf(stderr, "lode ask: no store at %s (run `lode ingest --db %s PATH...` first)\n",
                x->db, x->db);
        return CLI_FAILED;
    }
    if (ret_store_open(x->db, 0, &s, err, sizeof err)) {
        fprintf(stderr, "lode ask: cannot open the store '%s': %s\n", x->db, err);
        goto out;
    }
    eng_model_opts mo = {0};
    mo.n_threads = x->threads;
    const char *path = x->model ? x->model : eng_default_model_path();
    if (eng_model_load(path, &mo, &m, err, sizeof err)) {
        fprintf(stderr, "lode ask: cannot load the model '%s': %s\n", path, err);
        goto out;
    }
    if (x->o.mode != ORC_MODE_LEXICAL) {
        /* the store's dense side, for hybrid (the default when the store has vectors) */
        ret_dense_opts dopts = {.model_path = x->embed_model, .n_threads = x->threads};
        lode_status ds = ret_dense_open(s, &dopts, &d, err, sizeof err);
        if (ds && x->o.mode != ORC_MODE_AUTO) {
            fprintf(stderr, "lode ask: %s retrieval: %s\n", orc_mode_name(x->o.mode), err);
            rc = ds == LODE_ERR_INVALID || ds == LODE_ERR_NOTFOUND ? CLI_USAGE : CLI_FAILED;
            goto out;
        }
        if (ds && ds != LODE_ERR_NOTFOUND)
            fprintf(stderr, "lode ask: %s; retrieving lexically\n", err);
    }
    lode_status st = orc_prepare(s, d, m, x->question, &x->o, &a, err, sizeof err);
    if (st) {
        fprintf(stderr, "lode ask: %s\n", err);
        rc = st == LODE_ERR_INVALID || st == LODE_ERR_UNSUPPORTED ? CLI_USAGE : CLI_FAILED;
        goto out;
    }
    if (x->show_prompt) fprintf(stderr, "---- prompt ----\n%s\n---- answer ----\n", a->prompt_text);
    out_state os = {.tty = cli_is_tty(1)};
    st = orc_run(a, x->json ? NULL : put_delta, &os);
    if (st) {
        fprintf(stderr, "%slode ask: generation failed: %s\n", os.wrote ? "\n" : "", eng_errmsg(m));
        goto out;
    }
    if (!x->no_log && (st = orc_log(s, a, NULL)))
        fprintf(stderr, "lode ask: the question was not logged: %s\n", ret_store_errmsg(s));
    if (!(j = orc_answer_json(a, 1))) {
        fprintf(stderr, "lode ask: out of memory\n");
        goto out;
    }
    if (x->json) {
        json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
    } else {
        if (os.wrote && os.last != '\n') putchar('\n');
        print_sources(j, os.tty);
    }
    rc = fflush(stdout) == 0 ? CLI_OK : CLI_FAILED;
out:
    json_decref(j);
    orc_answer_free(a);
    eng_model_free(m);
    ret_dense_close(d);
    ret_store_close(s);
    return rc;
}

/* ---- through a server -------------------------------------------------------------- */
typedef struct remote {
    lode_buf body; /* the whole body (not streaming), or the SSE bytes not yet parsed */
    int stream;
    out_state os;
    json_t *final; /* the last event with the citations */
    json_t *error; /* an error event */
    int done;      /* data: [DONE] seen */
    int bad;       /* an event that was not JSON */
} remote;

static void sse_event(remote *r, const char *data, size_t len)
{
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        r->done = 1;
        return;
    }
    json_t *v = json_loadb(data, len, 0, NULL);
    if (!v) {
        r->bad = 1;
        return;
    }
    json_t *e = json_object_get(v, "error");
    const char *obj = jget(v, "object");
    if (e) {
        json_decref(r->error);
        r->error = json_incref(v);
    } else if (!strcmp(obj, "ask.delta")) {
        const char *d = jget(v, "delta");
        put_delta(&r->os, d, strlen(d));
    } else if (!strcmp(obj, "ask.answer")) {
        json_decref(r->final);
        r->final = json_incref(v);
    }
    json_decref(v);
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    remote *r = ud;
    if (lode_buf_append(&r->body, p, sz * n)) return 0;
    if (!r->stream) return sz * n;
    /* events are "data: ...\n\n" */
    for (;;) {
        char *end = r->body.data ? strstr(r->body.data, "\n\n") : NULL;
        if (!end) break;
        size_t ev = (size_t)(end - r->body.data);
        if (ev >= 6 && !memcmp(r->body.data, "data: ", 6)) sse_event(r, r->body.data + 6, ev - 6);
        size_t rest = r->body.len - ev - 2;
        memmove(r->body.data, end + 2, rest + 1);
        r->body.len = rest;
    }
    return sz * n;
}

static void print_error_json(json_t *v, long status)
{
    json_t *e = json_object_get(v, "error");
    const char *m = json_string_value(json_object_get(e, "message"));
    fprintf(stderr, "lode ask: the server answered %ld: %s\n", status, m ? m : "(no message)");
}

static int ask_remote(const ask_args *x)
{
    int rc = CLI_FAILED;
    remote r = {.body = LODE_BUF_INIT};
    r.body.max = (size_t)64 << 20;
    r.stream = !x->json;
    r.os.tty = cli_is_tty(1);
    CURL *c = NULL;
    struct curl_slist *h = NULL;
    char *body = NULL;
    json_t *req = json_pack("{s:s, s:i, s:s, s:b}", "question", x->question, "k",
                            x->o.k ? x->o.k : ORC_DEFAULT_K, "mode", x->mode ? x->mode : "auto",
                            "stream", r.stream);
    if (req && x->o.max_tokens)
        json_object_set_new(req, "max_tokens", json_integer(x->o.max_tokens));
    if (req && (x->o.uri || x->o.media_type)) {
        json_t *f = json_object();
        if (f && x->o.uri) json_object_set_new(f, "uri", json_string(x->o.uri));
        if (f && x->o.media_type)
            json_object_set_new(f, "media_type", json_string(x->o.media_type));
        json_object_set_new(req, "filters", f);
    }
    if (!req || !(body = json_dumps(req, JSON_COMPACT))) {
        fprintf(stderr, "lode ask: the question is not valid UTF-8\n");
        rc = CLI_USAGE;
        goto out;
    }
    char url[2048];
    size_t ul = strlen(x->server);
    while (ul && x->server[ul - 1] == '/') ul--;
    snprintf(url, sizeof url, "%.*s/v1/ask", (int)ul, x->server);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(c = curl_easy_init())) {
        fprintf(stderr, "lode ask: cannot start libcurl\n");
        goto out;
    }
    h = curl_slist_append(h, "Content-Type: application/json");
    char auth[1024];
    if (x->api_key && *x->api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", x->api_key);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode cr = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (cr != CURLE_OK) {
        fprintf(stderr, "%slode ask: %s: %s\n", r.os.wrote ? "\n" : "", url,
                curl_easy_strerror(cr));
        goto out;
    }
    if (status != 200 || !r.stream) {
        /* a plain JSON body: the answer (--json) or an error object */
        json_t *v = json_loadb(r.body.data ? r.body.data : "", r.body.len, 0, NULL);
        if (!v) {
            fprintf(stderr, "lode ask: the server answered %ld with a body that is not JSON\n",
                    status);
        } else if (status != 200) {
            print_error_json(v, status);
        } else {
            json_dumpf(v, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
            fputc('\n', stdout);
            rc = CLI_OK;
        }
        json_decref(v);
        goto out;
    }
    if (r.os.wrote && r.os.last != '\n') putchar('\n');
    if (r.error) {
        print_error_json(r.error, status);
    } else if (!r.final || !r.done || r.bad) {
        fprintf(stderr, "lode ask: the server's stream ended early\n");
    } else {
        print_sources(r.final, r.os.tty);
        rc = CLI_OK;
    }
out:
    json_decref(r.final);
    json_decref(r.error);
    lode_buf_free(&r.body);
    curl_slist_free_all(h);
    if (c) curl_easy_cleanup(c);
    free(body);
    json_decref(req);
    return rc;
}

/* ---- the command ------------------------------------------------------------------- */
static int cmd_ask(int argc, char **argv)
{
    enum {
        OPT_MODE = 256,
        OPT_JSON,
        OPT_STORE,
        OPT_MODEL,
        OPT_SERVER,
        OPT_KEY,
        OPT_MAXTOK,
        OPT_URI,
        OPT_THREADS,
        OPT_PROMPT,
        OPT_NOLOG,
        OPT_EMBED,
        OPT_TYPE
    };
    static const struct option longopts[] = {
        {"mode", required_argument, NULL, OPT_MODE},
        {"json", no_argument, NULL, OPT_JSON},
        {"store", required_argument, NULL, OPT_STORE},
        {"db", required_argument, NULL, OPT_STORE},
        {"model", required_argument, NULL, OPT_MODEL},
        {"server", required_argument, NULL, OPT_SERVER},
        {"api-key", required_argument, NULL, OPT_KEY},
        {"max-tokens", required_argument, NULL, OPT_MAXTOK},
        {"uri", required_argument, NULL, OPT_URI},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"show-prompt", no_argument, NULL, OPT_PROMPT},
        {"no-log", no_argument, NULL, OPT_NOLOG},
        {"embed-model", required_argument, NULL, OPT_EMBED},
        {"type", required_argument, NULL, OPT_TYPE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    ask_args x = {0};
    x.db = cli_default_db();
    x.api_key = getenv("LODE_API_KEY");
    int c, rc = CLI_USAGE;
    lode_buf q = LODE_BUF_INIT;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "k:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'k':
            if (cli_parse_int(optarg, 1, ORC_MAX_K, &x.o.k)) {
                fprintf(stderr, "lode ask: -k wants a number from 1 to %d, not '%s'\n", ORC_MAX_K,
                        optarg);
                goto out;
            }
            break;
        case OPT_MODE:
            if (orc_mode_parse(optarg, &x.o.mode)) {
                fprintf(stderr, "lode ask: --mode is hybrid, dense, lexical or auto, not '%s'\n",
                        optarg);
                goto out;
            }
            x.mode = optarg;
            break;
        case OPT_JSON:
            x.json = 1;
            break;
        case OPT_STORE:
            x.db = optarg;
            break;
        case OPT_MODEL:
            x.model = optarg;
            break;
        case OPT_SERVER:
            x.server = optarg;
            break;
        case OPT_KEY:
            x.api_key = optarg;
            break;
        case OPT_MAXTOK:
            if (cli_parse_int(optarg, 1, 1 << 20, &x.o.max_tokens)) {
                fprintf(stderr, "lode ask: --max-tokens wants a positive number, not '%s'\n",
                        optarg);
                goto out;
            }
            break;
        case OPT_URI:
            x.o.uri = optarg;
            break;
        case OPT_THREADS:
            if (cli_parse_int(optarg, 1, 1024, &x.threads)) {
                fprintf(stderr, "lode ask: --threads must be 1..1024\n");
                goto out;
            }
            break;
        case OPT_EMBED:
            x.embed_model = optarg;
            break;
        case OPT_TYPE:
            x.o.media_type = optarg;
            break;
        case OPT_PROMPT:
            x.show_prompt = 1;
            break;
        case OPT_NOLOG:
            x.no_log = 1;
            break;
        case 'h':
            usage(stdout);
            rc = CLI_OK;
            goto out;
        default:
            fprintf(stderr, "lode ask: unknown option or missing value: %s\n", argv[optind - 1]);
            fprintf(stderr, "(`lode ask --help` lists the options; put -- before a question "
                            "that starts with '-')\n");
            goto out;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "lode ask: no question given\n\n");
        usage(stderr);
        goto out;
    }
    for (int i = optind; i < argc; i++)
        if ((i > optind && lode_buf_putc(&q, ' ')) || lode_buf_puts(&q, argv[i])) {
            fprintf(stderr, "lode ask: out of memory\n");
            rc = CLI_FAILED;
            goto out;
        }
    x.question = q.data;
    rc = x.server ? ask_remote(&x) : ask_local(&x);
out:
    lode_buf_free(&q);
    return rc;
}

LODE_CLI_COMMAND(ask, "ask", "answer a question from the store, with citations", cmd_ask)
