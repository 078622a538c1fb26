/*
 * cmd_search.c: `lode search`, lexical (BM25) search of the store from the command line,
 * as readable hits with highlighted snippets on a terminal or as one JSON document.
 */
#include "cli/cli.h"
#include "common/lode.h"
#include "retrieval/search.h"
#include "retrieval/store.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HL_TTY_OPEN  "\x1b[1;31m"
#define HL_TTY_CLOSE "\x1b[0m"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lode search [OPTIONS] [--] QUERY...\n\n"
            "Searches the store's chunks by BM25 (SQLite FTS5) and prints the best hits with\n"
            "their document, heading path, score and a snippet with the matched terms marked.\n"
            "The words of QUERY are searched as given: punctuation and FTS5 operators in them\n"
            "are plain text, \"double quotes\" keep a phrase together. Chunks with every word\n"
            "come first; chunks with some of the words fill up to N hits.\n\n"
            "options:\n"
            "  -k N           number of hits (default 10, at most %d)\n"
            "  --all          only chunks that contain every word\n"
            "  --any          chunks that contain any word, best first\n"
            "  --raw          QUERY is FTS5 query syntax (AND, OR, NOT, NEAR, prefix*,\n"
            "                 column: filters on text or heading_path), passed through\n"
            "  --json         print one JSON document: {query, k, took_ms, hits: [...]}\n"
            "  --mark OPEN,CLOSE\n"
            "                 snippet markers (default: colour on a terminal, none in a\n"
            "                 pipe, <mark>,</mark> with --json)\n"
            "  --db PATH      the store (default $LODE_DB or ./lode.db)\n"
            "  -h, --help     this text\n\n"
            "examples:\n"
            "  lode search write-ahead log\n"
            "  lode search -k 3 --json '\"virtual table\" module'\n"
            "  lode search --raw 'heading_path: pragma AND journal*'\n\n"
            "Exit status: 0 when the search ran (even with no hits), 1 when it failed,\n"
            "2 for a usage error or an invalid --raw query.\n",
            RET_SEARCH_MAX_K);
}

/* A copy of s (n bytes) with each invalid UTF-8 byte replaced by U+FFFD, for JSON. */
static char *utf8_clean(const char *s, size_t n)
{
    lode_buf b = LODE_BUF_INIT;
    size_t i = 0;
    while (i < n) {
        size_t ok = lode_utf8_valid_prefix(s + i, n - i);
        if (lode_buf_append(&b, s + i, ok)) goto fail;
        i += ok;
        if (i < n) {
            if (lode_buf_puts(&b, "\xef\xbf\xbd")) goto fail;
            i++;
        }
    }
    return lode_buf_take(&b);
fail:
    lode_buf_free(&b);
    return NULL;
}

static json_t *jstr(const char *s)
{
    if (!s) return json_null();
    char *c = utf8_clean(s, strlen(s));
    json_t *j = c ? json_string(c) : NULL;
    lode_free(c);
    return j ? j : json_null();
}

/* Prints text with line breaks and tabs as spaces, so every hit stays one block. */
static void put_flat(const char *s, FILE *f)
{
    for (; *s; s++) fputc(*s == '\n' || *s == '\r' || *s == '\t' ? ' ' : *s, f);
}

static int print_json(const char *query, const ret_search_opts *o, const ret_hits *h,
                      double took_ms)
{
    json_t *root = json_object(), *arr = json_array();
    if (!root || !arr) {
        json_decref(root);
        json_decref(arr);
        return CLI_FAILED;
    }
    json_object_set_new(root, "query", jstr(query));
    json_object_set_new(root, "k", json_integer(o->k));
    json_object_set_new(root, "raw", json_boolean(o->raw));
    json_object_set_new(root, "took_ms", json_real(took_ms));
    for (size_t i = 0; i < h->n; i++) {
        const ret_hit *x = &h->hit[i];
        json_t *j = json_object();
        if (!j) continue;
        json_object_set_new(j, "rank", json_integer((json_int_t)i + 1));
        json_object_set_new(j, "score", json_real(x->score));
        json_object_set_new(j, "all_terms", json_boolean(x->all_terms));
        json_object_set_new(j, "uri", jstr(x->uri));
        json_object_set_new(j, "title", jstr(x->title));
        json_object_set_new(j, "heading_path", jstr(x->heading_path));
        json_object_set_new(j, "snippet", jstr(x->snippet));
        json_object_set_new(j, "document_id", json_integer(x->document_id));
        json_object_set_new(j, "chunk_id", json_integer(x->chunk_id));
        json_object_set_new(j, "char_start", json_integer(x->char_start));
        json_object_set_new(j, "char_end", json_integer(x->char_end));
        json_array_append_new(arr, j);
    }
    json_object_set_new(root, "hits", arr);
    int rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    fputc('\n', stdout);
    json_decref(root);
    return rc == 0 ? CLI_OK : CLI_FAILED;
}

static void print_human(const ret_hits *h, int tty)
{
    const char *dim = tty ? "\x1b[2m" : "", *bold = tty ? "\x1b[1m" : "",
               *off = tty ? "\x1b[0m" : "";
    for (size_t i = 0; i < h->n; i++) {
        const ret_hit *x = &h->hit[i];
        printf("%s%2zu. ", bold, i + 1);
        put_flat(*x->title ? x->title : x->uri, stdout);
        printf("%s  %s(%.2f%s)%s\n", off, dim, x->score, x->all_terms ? "" : ", partial", off);
        if (*x->title && strcmp(x->title, x->uri)) {
            printf("    %s", dim);
            put_flat(x->uri, stdout);
            printf("%s\n", off);
        }
        if (*x->heading_path) {
            printf("    > ");
            put_flat(x->heading_path, stdout);
            putchar('\n');
        }
        printf("    ");
        put_flat(x->snippet, stdout);
        printf("\n\n");
    }
}

static int cmd_search(int argc, char **argv)
{
    enum { OPT_JSON = 256, OPT_RAW, OPT_DB, OPT_ALL, OPT_ANY, OPT_MARK };
    static const struct option longopts[] = {
        {"json", no_argument, NULL, OPT_JSON},   {"raw", no_argument, NULL, OPT_RAW},
        {"db", required_argument, NULL, OPT_DB}, {"all", no_argument, NULL, OPT_ALL},
        {"any", no_argument, NULL, OPT_ANY},     {"mark", required_argument, NULL, OPT_MARK},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    ret_search_opts o = {.k = 10};
    const char *db = cli_default_db(), *mark = NULL;
    int json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "k:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'k': {
            char *end = NULL;
            long k = strtol(optarg, &end, 10);
            if (!*optarg || *end || k < 1 || k > RET_SEARCH_MAX_K) {
                fprintf(stderr, "lode search: -k wants a number from 1 to %d, not '%s'\n",
                        RET_SEARCH_MAX_K, optarg);
                return CLI_USAGE;
            }
            o.k = (int)k;
            break;
        }
        case OPT_JSON:
            json = 1;
            break;
        case OPT_RAW:
            o.raw = 1;
            break;
        case OPT_DB:
            db = optarg;
            break;
        case OPT_ALL:
            o.mode = RET_MATCH_ALL;
            break;
        case OPT_ANY:
            o.mode = RET_MATCH_ANY;
            break;
        case OPT_MARK:
            mark = optarg;
            break;
        case 'h':
            usage(stdout);
            return CLI_OK;
        default:
            fprintf(stderr, "lode search: unknown option or missing value: %s\n", argv[optind - 1]);
            fprintf(stderr, "(`lode search --help` lists the options; put -- before a query "
                            "that starts with '-')\n");
            return CLI_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "lode search: no query given\n\n");
        usage(stderr);
        return CLI_USAGE;
    }

    int status = CLI_FAILED;
    lode_buf query = LODE_BUF_INIT;
    char *mark_open = NULL;
    ret_store *s = NULL;
    ret_hits *h = NULL;
    for (int i = optind; i < argc; i++)
        if ((i > optind && lode_buf_putc(&query, ' ')) || lode_buf_puts(&query, argv[i])) {
            fprintf(stderr, "lode search: out of memory\n");
            goto out;
        }
    int tty = !json && cli_is_tty(1);
    if (mark) {
        const char *comma = strchr(mark, ',');
        if (!comma) {
            fprintf(stderr, "lode search: --mark wants OPEN,CLOSE (e.g. --mark '<b>,</b>')\n");
            status = CLI_USAGE;
            goto out;
        }
        mark_open = lode_strndup(mark, (size_t)(comma - mark));
        o.hl_open = mark_open;
        o.hl_close = comma + 1;
    } else if (json) {
        o.hl_open = "<mark>", o.hl_close = "</mark>";
    } else {
        o.hl_open = tty ? HL_TTY_OPEN : "", o.hl_close = tty ? HL_TTY_CLOSE : "";
    }
    o.ellipsis = "\xe2\x80\xa6";

    char err[512];
    lode_status st =
        ret_store_open(db, RET_STORE_READONLY | RET_STORE_UPGRADE, &s, err, sizeof err);
    if (st) {
        fprintf(stderr, "lode search: %s\n", err);
        goto out;
    }
    double t0 = lode_now_s();
    st = ret_search_bm25(s, query.data, &o, &h);
    double took_ms = (lode_now_s() - t0) * 1e3;
    if (st) {
        fprintf(stderr, "lode search: %s\n", ret_store_errmsg(s));
        status = st == LODE_ERR_INVALID || st == LODE_ERR_UTF8 ? CLI_USAGE : CLI_FAILED;
        goto out;
    }
    if (json) {
        status = print_json(query.data, &o, h, took_ms);
    } else {
        if (h->n == 0) fprintf(stderr, "lode search: no chunk matches '%s'\n", query.data);
        print_human(h, tty);
        status = CLI_OK;
    }
    if (fflush(stdout) != 0) status = CLI_FAILED;
out:
    ret_hits_free(h);
    ret_store_close(s);
    lode_free(mark_open);
    lode_buf_free(&query);
    return status;
}

LODE_CLI_COMMAND(search, "search", "search the store's chunks (BM25 over FTS5)", cmd_search)
