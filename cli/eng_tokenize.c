/*
 * eng_tokenize.c: `lode tokenize`, the model's tokenizer from the command line: the ids
 * of a text (argument or standard input) and the piece of each, to compare with other
 * implementations and to see what a prompt costs in tokens. Needs only the GGUF's
 * vocabulary, not its weights.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: lode tokenize [--model PATH] [--special] [--no-add-special] [--chat]\n"
               "                     [--ids] [TEXT | -]\n"
               "  Prints the token ids of TEXT (standard input when - or absent), one per line\n"
               "  with its piece, or on one line with --ids.\n"
               "  --model PATH       GGUF file (default $LODE_MODEL or\n"
               "                     models/SmolLM2-135M-Instruct.Q4_1.gguf)\n"
               "  --special          control tokens written in the text (<|im_start|>) become\n"
               "                     tokens\n"
               "  --no-add-special   no BOS/EOS even when the model asks for them\n"
               "  --chat             TEXT is a user message: render it with the model's chat\n"
               "                     template (implies --special)\n");
}

static char *read_all(FILE *f, size_t *len)
{
    lode_buf b = LODE_BUF_INIT;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (lode_buf_append(&b, chunk, n) != LODE_OK) {
            lode_buf_free(&b);
            return NULL;
        }
    *len = b.len;
    return lode_buf_take(&b);
}

/* The piece with control bytes and backslashes escaped, for one line of output. */
static void print_piece(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\\')
            fputs("\\\\", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

static int cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"special", no_argument, 0, 's'},
                                         {"no-add-special", no_argument, 0, 'n'},
                                         {"chat", no_argument, 0, 'c'},
                                         {"ids", no_argument, 0, 'i'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = getenv("LODE_MODEL");
    if (!model || !*model) model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    unsigned flags = ENG_TOK_ADD_SPECIAL;
    int chat = 0, ids_only = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 's':
            flags |= ENG_TOK_PARSE_SPECIAL;
            break;
        case 'n':
            flags &= ~(unsigned)ENG_TOK_ADD_SPECIAL;
            break;
        case 'c':
            chat = 1;
            break;
        case 'i':
            ids_only = 1;
            break;
        case 'h':
            usage(stdout);
            return CLI_OK;
        default:
            usage(stderr);
            return CLI_USAGE;
        }
    }
    if (argc - optind > 1) {
        usage(stderr);
        return CLI_USAGE;
    }
    int rc = CLI_FAILED;
    char err[512];
    eng_gguf *g = NULL;
    eng_vocab *v = NULL;
    char *text = NULL;
    eng_token *ids = NULL;
    lode_buf rendered = LODE_BUF_INIT;
    size_t len = 0, n = 0;
    if (argc - optind == 1 && strcmp(argv[optind], "-") != 0) {
        text = lode_strdup(argv[optind]);
        len = text ? strlen(text) : 0;
    } else {
        text = read_all(stdin, &len);
    }
    if (!text) {
        fprintf(stderr, "lode tokenize: out of memory\n");
        goto out;
    }
    if (eng_gguf_open(model, &g, err, sizeof err) != LODE_OK ||
        eng_vocab_from_gguf(g, &v, err, sizeof err) != LODE_OK) {
        fprintf(stderr, "lode tokenize: %s: %s\n", model, err);
        goto out;
    }
    if (chat) {
        const char *tmpl = NULL;
        eng_chat_template t;
        (void)eng_gguf_get_str(g, "tokenizer.chat_template", &tmpl, NULL);
        if (eng_chat_template_init(&t, tmpl, false, err, sizeof err) != LODE_OK) {
            fprintf(stderr, "lode tokenize: %s\n", err);
            goto out;
        }
        eng_chat_msg m = {"user", text};
        if (eng_chat_render(&t, &m, 1, true, &rendered) != LODE_OK) {
            fprintf(stderr, "lode tokenize: cannot render the chat template\n");
            goto out;
        }
        lode_free(text);
        len = rendered.len;
        text = lode_buf_take(&rendered);
        flags |= ENG_TOK_PARSE_SPECIAL;
    }
    if (eng_tok_encode_alloc(v, text, len, flags, &ids, &n) != LODE_OK) {
        fprintf(stderr, "lode tokenize: out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids_only) {
            printf(i ? " %d" : "%d", ids[i]);
            continue;
        }
        size_t pl;
        const char *p = eng_tok_piece(v, ids[i], ENG_TOK_RENDER_SPECIAL, &pl);
        printf("%d\t", ids[i]);
        print_piece(p, pl);
        putchar('\n');
    }
    if (ids_only) putchar('\n');
    fprintf(stderr, "%zu tokens\n", n);
    rc = CLI_OK;
out:
    lode_free(ids);
    lode_free(text);
    lode_buf_free(&rendered);
    eng_vocab_destroy(v);
    eng_gguf_close(g);
    return rc;
}

LODE_CLI_COMMAND(tokenize, "tokenize", "token ids and pieces of a text with the model's tokenizer",
                 cmd_tokenize)
