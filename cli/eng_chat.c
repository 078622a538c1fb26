/*
 * eng_chat.c: `lode chat`, an interactive conversation with the model: each line on
 * stdin is a user turn, the answer streams to stdout. The history is rendered with the
 * model's chat template every turn; when it no longer fits the context window the
 * oldest turns are dropped. /reset forgets the history, /quit (or EOF) ends. Works with
 * piped stdin (no prompts are printed then).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/eng_opts.h"
#include "engine/engine.h"

#define MAX_TURNS 512

typedef struct history {
    const char *role[MAX_TURNS + 1];
    char *content[MAX_TURNS + 1];
    int n;
} history;

static void history_drop(history *h, int k)
{
    for (int i = 0; i < k && i < h->n; i++) lode_free(h->content[i]);
    if (k > h->n) k = h->n;
    memmove(h->role, h->role + k, (size_t)(h->n - k) * sizeof *h->role);
    memmove(h->content, h->content + k, (size_t)(h->n - k) * sizeof *h->content);
    h->n -= k;
}

static lode_status history_add(history *h, const char *role, const char *text, size_t len)
{
    if (h->n >= MAX_TURNS) history_drop(h, 2);
    char *c = lode_strndup(text, len);
    if (!c) return LODE_ERR_NOMEM;
    h->role[h->n] = role;
    h->content[h->n++] = c;
    return LODE_OK;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lode chat [OPTIONS]\n\n"
            "Talks with the model: type a message and press enter; /reset forgets the\n"
            "conversation, /quit or end of input leaves.\n\n"
            "  --system TEXT          a system message for the conversation\n"
            "  -v, --verbose          timings on stderr after each answer\n"
            "%s",
            cli_eng_opts_help);
}

typedef struct reply {
    lode_buf text;
} reply;

static int on_token(void *user, int32_t tok, const char *piece, size_t len, float lp)
{
    reply *r = user;
    if (len) {
        fwrite(piece, 1, len, stdout);
        fflush(stdout);
        lode_buf_append(&r->text, piece, len);
    }
    return 0;
}

/* Renders the system message plus history turns [first, n) with the generation prompt
 * and tokenizes them. */
static lode_status render(eng_model *m, const char *system, const history *h, int first,
                          int32_t **toks, size_t *n_toks)
{
    const char *roles[MAX_TURNS + 2];
    const char *contents[MAX_TURNS + 2];
    size_t n = 0;
    if (system) {
        roles[n] = "system";
        contents[n++] = system;
    }
    for (int i = first; i < h->n; i++) {
        roles[n] = h->role[i];
        contents[n++] = h->content[i];
    }
    lode_buf text = LODE_BUF_INIT;
    lode_status st = eng_chat_apply(m, roles, contents, n, 1, &text);
    if (st == LODE_OK)
        st = eng_tokenize(m, text.data ? text.data : "", text.len, 1, 1, toks, n_toks);
    lode_buf_free(&text);
    return st;
}

static int cmd_chat(int argc, char **argv)
{
    cli_eng_opts o;
    cli_eng_opts_init(&o);
    const char *system = NULL;
    int verbose = 0;
    for (int i = 1; i < argc; i++) {
        int r = cli_eng_opts_parse(&o, argc, argv, &i);
        if (r < 0) return CLI_USAGE;
        if (r > 0) continue;
        if (!strcmp(argv[i], "--system") && i + 1 < argc)
            system = argv[++i];
        else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
            verbose = 1;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return CLI_OK;
        } else {
            fprintf(stderr, "lode chat: unknown option '%s'\n\n", argv[i]);
            usage(stderr);
            return CLI_USAGE;
        }
    }
    eng_model *m = cli_eng_load(&o);
    if (!m) return CLI_FAILED;
    eng_model_info info;
    eng_model_info_get(m, &info);
    int tty = cli_is_tty(0);
    if (tty)
        fprintf(stderr, "lode chat: %s (%s, %d threads, context %d). /reset, /quit.\n", info.name,
                info.backend, info.n_threads, info.n_ctx);
    /* room kept for the answer when trimming the history */
    int answer_room = o.n_predict > 0 ? o.n_predict : LODE_MAX(info.n_ctx / 4, 64);
    if (answer_room > info.n_ctx / 2) answer_room = info.n_ctx / 2;
    history h = {0};
    char *line = NULL;
    size_t line_cap = 0;
    int rc = CLI_OK;
    for (;;) {
        if (tty) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        ssize_t len = getline(&line, &line_cap, stdin);
        if (len < 0) break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
        if (!strcmp(line, "/reset")) {
            history_drop(&h, h.n);
            if (tty) fprintf(stderr, "(conversation cleared)\n");
            continue;
        }
        if (history_add(&h, "user", line, (size_t)len) != LODE_OK) {
            rc = CLI_FAILED;
            break;
        }
        int32_t *toks = NULL;
        size_t n_toks = 0;
        int first = 0;
        lode_status st;
        for (;;) {
            st = render(m, system, &h, first, &toks, &n_toks);
            if (st || (int)n_toks + answer_room <= info.n_ctx || first >= h.n - 1) break;
            lode_free(toks);
            toks = NULL;
            first += 2; /* drop the oldest user/assistant pair */
            if (first > h.n - 1) first = h.n - 1;
        }
        if (st == LODE_OK && (int)n_toks >= info.n_ctx) {
            fprintf(stderr, "lode chat: the message is too long for the context (%zu tokens)\n",
                    n_toks);
            lode_free(toks);
            history_drop(&h, h.n); /* what is left cannot be answered */
            continue;
        }
        if (st) {
            fprintf(stderr, "lode chat: cannot format the conversation: %s\n", lode_strerror(st));
            lode_free(toks);
            rc = CLI_FAILED;
            break;
        }
        if (first > 0) history_drop(&h, first);
        reply rp = {LODE_BUF_INIT};
        eng_request r = {0};
        r.prompt = toks;
        r.n_prompt = (int)n_toks;
        r.sampling = o.sampling;
        r.max_tokens =
            LODE_MIN(o.n_predict > 0 ? o.n_predict : info.n_ctx, info.n_ctx - (int)n_toks);
        r.stop = o.stop;
        r.n_stop = o.n_stop;
        r.on_token = on_token;
        r.user = &rp;
        eng_output out;
        st = eng_generate(m, &r, &out);
        fputc('\n', stdout);
        fflush(stdout);
        if (verbose)
            fprintf(stderr, "(%d prompt tokens, %d generated, %.1f tok/s, ttft %.0f ms, %s)\n",
                    out.stats.prompt_tokens, out.stats.generated,
                    out.stats.decode_ms > 0 && out.stats.generated > 1
                        ? (out.stats.generated - 1) * 1000.0 / out.stats.decode_ms
                        : 0.0,
                    out.stats.ttft_ms, eng_finish_name(out.finish));
        eng_output_free(&out);
        lode_free(toks);
        if (st && st != LODE_ERR_CANCELLED) {
            fprintf(stderr, "lode chat: %s\n", eng_errmsg(m));
            lode_buf_free(&rp.text);
            rc = CLI_FAILED;
            break;
        }
        st = history_add(&h, "assistant", rp.text.data ? rp.text.data : "", rp.text.len);
        lode_buf_free(&rp.text);
        if (st) {
            rc = CLI_FAILED;
            break;
        }
    }
    free(line);
    history_drop(&h, h.n);
    eng_model_free(m);
    return rc;
}

LODE_CLI_COMMAND(chat, "chat", "talk with the model interactively", cmd_chat)
