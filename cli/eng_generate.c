/*
 * eng_generate.c: `lode generate`, one completion from the engine: streams the text to
 * stdout as it is generated, or with --json prints tokens, logprobs and timings.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/eng_opts.h"
#include "engine/engine.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lode generate -p TEXT [OPTIONS]\n\n"
            "Generates a continuation of TEXT (or, with --chat, the model's answer to it).\n\n"
            "  -p, --prompt TEXT      the prompt (or - to read it from stdin)\n"
            "  --chat                 format the prompt as a user turn with the chat template\n"
            "  --system TEXT          with --chat: a system message first\n"
            "  --json                 print one JSON object: text, tokens, logprobs, timings\n"
            "  --prompt-logprobs      with --json: logprobs of the prompt tokens too\n"
            "  -v, --verbose          timings on stderr\n"
            "%s",
            cli_eng_opts_help);
}

static int stream_token(void *user, int32_t tok, const char *piece, size_t len, float lp)
{
    if (len) {
        fwrite(piece, 1, len, stdout);
        fflush(stdout);
    }
    return 0;
}

static void json_str(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_floats(FILE *f, const float *v, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, "%s%.6g", i ? "," : "", v[i]);
    fputc(']', f);
}

static char *read_all(FILE *in)
{
    lode_buf b = LODE_BUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, in)) > 0)
        if (lode_buf_append(&b, chunk, n) != LODE_OK) {
            lode_buf_free(&b);
            return NULL;
        }
    return lode_buf_take(&b);
}

static int cmd_generate(int argc, char **argv)
{
    cli_eng_opts o;
    cli_eng_opts_init(&o);
    const char *prompt = NULL, *system = NULL;
    int chat = 0, json = 0, prompt_lp = 0, verbose = 0;
    for (int i = 1; i < argc; i++) {
        int r = cli_eng_opts_parse(&o, argc, argv, &i);
        if (r < 0) return CLI_USAGE;
        if (r > 0) continue;
        const char *a = argv[i];
        if ((!strcmp(a, "-p") || !strcmp(a, "--prompt")) && i + 1 < argc)
            prompt = argv[++i];
        else if (!strcmp(a, "--system") && i + 1 < argc)
            system = argv[++i];
        else if (!strcmp(a, "--chat"))
            chat = 1;
        else if (!strcmp(a, "--json"))
            json = 1;
        else if (!strcmp(a, "--prompt-logprobs"))
            prompt_lp = 1;
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose"))
            verbose = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return CLI_OK;
        } else {
            fprintf(stderr, "lode generate: unknown option '%s'\n\n", a);
            usage(stderr);
            return CLI_USAGE;
        }
    }
    if (!prompt) {
        fprintf(stderr, "lode generate: -p TEXT is required\n\n");
        usage(stderr);
        return CLI_USAGE;
    }
    int rc = CLI_FAILED;
    char *stdin_text = NULL;
    int32_t *toks = NULL;
    size_t n_toks = 0;
    lode_buf text = LODE_BUF_INIT;
    eng_output out = {0};
    if (!strcmp(prompt, "-")) {
        if (!(stdin_text = read_all(stdin))) {
            fprintf(stderr, "lode generate: cannot read the prompt from stdin\n");
            return CLI_FAILED;
        }
        prompt = stdin_text;
    }
    eng_model *m = cli_eng_load(&o);
    if (!m) goto out;
    lode_status st;
    if (chat) {
        const char *roles[2] = {"system", "user"}, *contents[2] = {system, prompt};
        st = system ? eng_chat_apply(m, roles, contents, 2, 1, &text)
                    : eng_chat_apply(m, roles + 1, contents + 1, 1, 1, &text);
        if (st) {
            fprintf(stderr, "lode generate: cannot apply the chat template: %s\n",
                    lode_strerror(st));
            goto out;
        }
    } else if ((st = lode_buf_puts(&text, prompt)))
        goto out;
    if ((st = eng_tokenize(m, text.data ? text.data : "", text.len, 1, chat, &toks, &n_toks)) ||
        n_toks == 0) {
        fprintf(stderr, "lode generate: cannot tokenize the prompt: %s\n",
                st ? lode_strerror(st) : "it has no tokens");
        goto out;
    }
    eng_request r = {0};
    r.prompt = toks;
    r.n_prompt = (int)n_toks;
    r.sampling = o.sampling;
    r.max_tokens = o.n_predict;
    r.stop = o.stop;
    r.n_stop = o.n_stop;
    r.want_logprobs = json;
    r.want_prompt_logprobs = json && prompt_lp;
    if (!json) r.on_token = stream_token;
    st = eng_generate(m, &r, &out);
    if (st && st != LODE_ERR_CANCELLED) {
        fprintf(stderr, "\nlode generate: %s\n", eng_errmsg(m));
        goto out;
    }
    eng_model_info info;
    eng_model_info_get(m, &info);
    if (json) {
        printf("{\"model\":");
        json_str(stdout, info.name, strlen(info.name));
        printf(",\"backend\":\"%s\",\"threads\":%d,\"seed\":%llu,\"prompt_tokens\":%d,",
               info.backend, info.n_threads, (unsigned long long)o.sampling.seed, (int)n_toks);
        printf("\"text\":");
        json_str(stdout, out.text ? out.text : "", out.text_len);
        printf(",\"finish\":\"%s\",\"tokens\":[", eng_finish_name(out.finish));
        for (int i = 0; i < out.n_tokens; i++) printf("%s%d", i ? "," : "", out.tokens[i]);
        printf("],\"logprobs\":");
        json_floats(stdout, out.logprobs, out.logprobs ? out.n_tokens : 0);
        if (r.want_prompt_logprobs) {
            printf(",\"prompt_logprobs\":");
            json_floats(stdout, out.prompt_logprobs, out.n_prompt_logprobs);
        }
        const eng_stats *s = &out.stats;
        printf(
            ",\"timings\":{\"prompt_tokens\":%d,\"generated\":%d,\"prefill_ms\":%.3f,"
            "\"decode_ms\":%.3f,\"ttft_ms\":%.3f,\"prefill_tok_s\":%.2f,\"decode_tok_s\":%.2f}}\n",
            s->prompt_tokens, s->generated, s->prefill_ms, s->decode_ms, s->ttft_ms,
            s->prefill_ms > 0 ? s->prompt_tokens * 1000.0 / s->prefill_ms : 0.0,
            s->decode_ms > 0 && s->generated > 1 ? (s->generated - 1) * 1000.0 / s->decode_ms
                                                 : 0.0);
    } else {
        printf("\n");
    }
    if (verbose) {
        const eng_stats *s = &out.stats;
        fprintf(stderr,
                "lode: %d prompt tokens in %.1f ms (%.1f tok/s), %d generated in %.1f ms "
                "(%.1f tok/s), ttft %.1f ms, finish %s\n",
                s->prompt_tokens, s->prefill_ms,
                s->prefill_ms > 0 ? s->prompt_tokens * 1000.0 / s->prefill_ms : 0.0, s->generated,
                s->decode_ms,
                s->decode_ms > 0 && s->generated > 1 ? (s->generated - 1) * 1000.0 / s->decode_ms
                                                     : 0.0,
                s->ttft_ms, eng_finish_name(out.finish));
    }
    rc = CLI_OK;
out:
    eng_output_free(&out);
    lode_free(toks);
    lode_buf_free(&text);
    lode_free(stdin_text);
    eng_model_free(m);
    return rc;
}

LODE_CLI_COMMAND(generate, "generate", "generate text with the embedded engine", cmd_generate)
