/*
 * cmd_search.c: `lode search`, hybrid (BM25 + dense, fused by reciprocal rank), dense or
 * lexical search of the store from the command line, through ret_hybrid_search, as
 * readable hits with highlighted snippets on a terminal or as one JSON document. --raw
 * passes FTS5 syntax to the lexical search directly.
 */
#include "cli/cli.h"
#include "common/lode.h"
#include "retrieval/dense.h"
#include "retrieval/hybrid.h"
#include "retrieval/search.h"
#include "retrieval/store.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HL_TTY_OPEN  "\x1b[1;31m"
#define HL_TTY_CLOSE "\x1b[0m"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: lode search [OPTIONS] [--] QUERY...\n\n"
        "Searches the store's chunks and prints the best hits with their document,\n"
        "heading path, score and a snippet. Hybrid search (the default when the store has\n"
        "vectors) fuses BM25 (SQLite FTS5) and dense (embedding) results by reciprocal rank\n"
        "fusion; dense search finds paraphrases that share no word with the query.\n"
        "The words of QUERY are searched as given: punctuation and FTS5 operators in them\n"
        "are plain text, \"double quotes\" keep a phrase together.\n\n"
        "options:\n"
        "  -k N           number of hits (default 10, at most %d)\n"
        "  --mode M       lexical, dense or hybrid (default: hybrid when the store has\n"
        "                 vectors, else lexical)\n"
        "  --path GLOB    only documents whose path matches GLOB (e.g. '*/lang_*')\n"
        "  --type TYPE    only documents of this media type (text/html), or of a family\n"
        "                 (text/)\n"
        "  --after DATE   only documents modified at or after DATE (YYYY-MM-DD[THH:MM:SS], UTC)\n"
        "  --before DATE  only documents modified before DATE\n"
        "  --fuse UNIT    hybrid: fuse the two lists per document (default: a document\n"
        "                 ranks by its best chunk, and the hits give each document's best\n"
        "                 chunk first) or per chunk\n"
        "  --rrf-k K      reciprocal rank fusion constant (default 60)\n"
        "  --weights L,D  weights of the lexical and dense lists in the fusion (default 1,6)\n"
        "  --mmr LAMBDA   diversify by maximal marginal relevance, LAMBDA in (0,1): lower\n"
        "                 is more diverse\n"
        "  --depth N      candidates taken from each list (default: hybrid max(4k, 200),\n"
        "                 MMR over one list max(4k, 50))\n"
        "  --embed-model PATH\n"
        "                 the embedding model's folder (default: the one the store was\n"
        "                 embedded with)\n"
        "  --all          lexical: only chunks that contain every word\n"
        "  --any          lexical: chunks that contain any word, best first\n"
        "  --raw          QUERY is FTS5 query syntax (AND, OR, NOT, NEAR, prefix*,\n"
        "                 column: filters on text or heading_path); lexical only\n"
        "  --json         print one JSON document: {query, mode, k, took_ms, hits: [...]}\n"
        "  --mark OPEN,CLOSE\n"
        "                 snippet markers (default: colour on a terminal, none in a\n"
        "                 pipe, <mark>,</mark> with --json)\n"
        "  --db PATH      the store (default $LODE_DB or ./lode.db)\n"
        "  -h, --help     this text\n\n"
        "examples:\n"
        "  lode search write-ahead log\n"
        "  lode search --mode dense 'how do I make the database file smaller'\n"
        "  lode search -k 3 --json --path '*/lang_*' '\"virtual table\" module'\n"
        "  lode search --raw 'heading_path: pragma AND journal*'\n\n"
        "Exit status: 0 when the search ran (even with no hits), 1 when it failed,\n"
        "2 for a usage error or an invalid --raw query.\n",
        RET_SEARCH_MAX_K);
}

static json_t *jstr(const char *s)
{
    if (!s) return json_null();
    char *c = lode_utf8_clean(s, strlen(s));
    json_t *j = c ? json_string(c) : NULL;
    lode_free(c);
    return j ? j : json_null();
}

/* Prints text with line breaks and tabs as spaces, so every hit stays one block. */
static void put_flat(const char *s, FILE *f)
{
    for (; *s; s++) fputc(*s == '\n' || *s == '\r' || *s == '\t' ? ' ' : *s, f);
}

static int print_json(const char *query, const ret_query *q, int raw, const ret_results *r)
{
    json_t *root = json_object(), *arr = json_array();
    if (!root || !arr) {
        json_decref(root);
        json_decref(arr);
        return CLI_FAILED;
    }
    json_object_set_new(root, "query", jstr(query));
    json_object_set_new(root, "mode", json_string(ret_mode_name(r->mode)));
    json_object_set_new(root, "k", json_integer(q->k));
    json_object_set_new(root, "raw", json_boolean(raw));
    if (r->note[0]) json_object_set_new(root, "note", json_string(r->note));
    json_object_set_new(root, "took_ms", json_real(r->took_ms));
    json_object_set_new(root, "embed_ms", json_real(r->embed_ms));
    for (size_t i = 0; i < r->n; i++) {
        const ret_result *x = &r->r[i];
        json_t *j = json_object();
        if (!j) continue;
        json_object_set_new(j, "rank", json_integer((json_int_t)i + 1));
        json_object_set_new(j, "score", json_real(x->score));
        json_object_set_new(j, "lexical_rank", json_integer(x->lexical_rank));
        json_object_set_new(j, "dense_rank", json_integer(x->dense_rank));
        if (x->lexical_rank) json_object_set_new(j, "lexical_score", json_real(x->lexical_score));
        if (x->dense_rank) json_object_set_new(j, "dense_score", json_real(x->dense_score));
        json_object_set_new(j, "uri", jstr(x->uri));
        json_object_set_new(j, "title", jstr(x->title));
        json_object_set_new(j, "heading_path", jstr(x->heading_path));
        json_object_set_new(j, "media_type", jstr(x->media_type));
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

static void print_human(const ret_results *r, int tty)
{
    const char *dim = tty ? "\x1b[2m" : "", *bold = tty ? "\x1b[1m" : "",
               *off = tty ? "\x1b[0m" : "";
    for (size_t i = 0; i < r->n; i++) {
        const ret_result *x = &r->r[i];
        printf("%s%2zu. ", bold, i + 1);
        put_flat(*x->title ? x->title : x->uri, stdout);
        printf("%s  %s(%.*f", off, dim, r->mode == RET_MODE_HYBRID ? 4 : 2, x->score);
        if (r->mode == RET_MODE_HYBRID) {
            if (x->lexical_rank) printf(", lexical #%d", x->lexical_rank);
            if (x->dense_rank) printf(", dense #%d", x->dense_rank);
        }
        printf(")%s\n", off);
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

/* Lexical hits of a --raw search as results, for printing. */
static ret_results *results_of_hits(const ret_hits *h)
{
    ret_results *r = lode_calloc(1, sizeof *r);
    if (!r || !(r->r = lode_calloc(h->n ? h->n : 1, sizeof *r->r))) {
        lode_free(r);
        return NULL;
    }
    r->mode = RET_MODE_LEXICAL;
    for (size_t i = 0; i < h->n; i++, r->n++) {
        const ret_hit *x = &h->hit[i];
        ret_result *y = &r->r[i];
        y->chunk_id = x->chunk_id;
        y->document_id = x->document_id;
        y->score = y->lexical_score = x->score;
        y->lexical_rank = (int)i + 1;
        y->uri = lode_strdup(x->uri);
        y->title = lode_strdup(x->title);
        y->heading_path = lode_strdup(x->heading_path);
        y->snippet = lode_strdup(x->snippet);
        y->media_type = lode_strdup("");
        y->text = lode_strdup("");
        y->char_start = x->char_start;
        y->char_end = x->char_end;
        if (!y->uri || !y->title || !y->heading_path || !y->snippet || !y->media_type || !y->text) {
            r->n++;
            ret_results_free(r);
            return NULL;
        }
    }
    return r;
}

/* Parses YYYY-MM-DD[THH:MM[:SS]] (UTC) into ns since the epoch. */
static int parse_date(const char *s, int64_t *ns)
{
    struct tm tm = {0};
    const char *end = strptime(s, "%Y-%m-%d", &tm);
    if (!end) return -1;
    if (*end == 'T' || *end == ' ') {
        const char *e2 = strptime(end + 1, "%H:%M:%S", &tm);
        if (!e2) e2 = strptime(end + 1, "%H:%M", &tm);
        if (!e2) return -1;
        end = e2;
    }
    if (*end) return -1;
    time_t t = timegm(&tm);
    *ns = (int64_t)t * 1000000000;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (!*s || *end) return -1;
    *out = v;
    return 0;
}

static int cmd_search(int argc, char **argv)
{
    enum {
        OPT_JSON = 256,
        OPT_RAW,
        OPT_DB,
        OPT_ALL,
        OPT_ANY,
        OPT_MARK,
        OPT_MODE,
        OPT_PATH,
        OPT_TYPE,
        OPT_AFTER,
        OPT_BEFORE,
        OPT_RRF,
        OPT_WEIGHTS,
        OPT_MMR,
        OPT_DEPTH,
        OPT_EMBED,
        OPT_FUSE,
    };
    static const struct option longopts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"raw", no_argument, NULL, OPT_RAW},
        {"db", required_argument, NULL, OPT_DB},
        {"all", no_argument, NULL, OPT_ALL},
        {"any", no_argument, NULL, OPT_ANY},
        {"mark", required_argument, NULL, OPT_MARK},
        {"mode", required_argument, NULL, OPT_MODE},
        {"path", required_argument, NULL, OPT_PATH},
        {"type", required_argument, NULL, OPT_TYPE},
        {"after", required_argument, NULL, OPT_AFTER},
        {"before", required_argument, NULL, OPT_BEFORE},
        {"rrf-k", required_argument, NULL, OPT_RRF},
        {"weights", required_argument, NULL, OPT_WEIGHTS},
        {"mmr", required_argument, NULL, OPT_MMR},
        {"depth", required_argument, NULL, OPT_DEPTH},
        {"embed-model", required_argument, NULL, OPT_EMBED},
        {"fuse", required_argument, NULL, OPT_FUSE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    ret_query q = {.k = 10};
    const char *db = cli_default_db(), *mark = NULL, *embed_model = NULL;
    int json = 0, raw = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "k:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'k':
        case OPT_DEPTH: {
            char *end = NULL;
            long k = strtol(optarg, &end, 10);
            if (!*optarg || *end || k < 1 || k > RET_SEARCH_MAX_K) {
                fprintf(stderr, "lode search: %s wants a number from 1 to %d, not '%s'\n",
                        c == 'k' ? "-k" : "--depth", RET_SEARCH_MAX_K, optarg);
                return CLI_USAGE;
            }
            if (c == 'k')
                q.k = (int)k;
            else
                q.depth = (int)k;
            break;
        }
        case OPT_JSON:
            json = 1;
            break;
        case OPT_RAW:
            raw = 1;
            break;
        case OPT_DB:
            db = optarg;
            break;
        case OPT_ALL:
            q.match = RET_MATCH_ALL;
            break;
        case OPT_ANY:
            q.match = RET_MATCH_ANY;
            break;
        case OPT_MARK:
            mark = optarg;
            break;
        case OPT_MODE: {
            int m = ret_mode_parse(optarg);
            if (m < 0) {
                fprintf(stderr, "lode search: --mode is lexical, dense or hybrid, not '%s'\n",
                        optarg);
                return CLI_USAGE;
            }
            q.mode = (ret_mode)m;
            break;
        }
        case OPT_PATH:
            q.filter.path_glob = optarg;
            break;
        case OPT_TYPE:
            q.filter.media_type = optarg;
            break;
        case OPT_AFTER:
        case OPT_BEFORE: {
            int64_t ns = 0;
            if (parse_date(optarg, &ns)) {
                fprintf(stderr, "lode search: %s wants YYYY-MM-DD[THH:MM[:SS]], not '%s'\n",
                        c == OPT_AFTER ? "--after" : "--before", optarg);
                return CLI_USAGE;
            }
            if (c == OPT_AFTER)
                q.filter.modified_after_ns = ns ? ns : 1;
            else
                q.filter.modified_before_ns = ns ? ns : 1;
            break;
        }
        case OPT_FUSE: {
            int f = ret_fuse_parse(optarg);
            if (f < 0) {
                fprintf(stderr, "lode search: --fuse wants document or chunk, not '%s'\n", optarg);
                return CLI_USAGE;
            }
            q.fuse = (ret_fuse_unit)f;
            break;
        }
        case OPT_RRF:
            if (parse_double(optarg, &q.rrf_k) || !(q.rrf_k > 0)) {
                fprintf(stderr, "lode search: --rrf-k wants a number > 0, not '%s'\n", optarg);
                return CLI_USAGE;
            }
            break;
        case OPT_WEIGHTS: {
            char *end = NULL;
            q.w_lexical = strtod(optarg, &end);
            if (end == optarg || *end != ',' || parse_double(end + 1, &q.w_dense) ||
                q.w_lexical < 0 || q.w_dense < 0 || q.w_lexical + q.w_dense <= 0) {
                fprintf(stderr,
                        "lode search: --weights wants LEXICAL,DENSE (two numbers >= 0, not both "
                        "0), not '%s'\n",
                        optarg);
                return CLI_USAGE;
            }
            break;
        }
        case OPT_MMR:
            if (parse_double(optarg, &q.mmr_lambda) || !(q.mmr_lambda > 0 && q.mmr_lambda <= 1)) {
                fprintf(stderr, "lode search: --mmr wants a lambda in (0, 1], not '%s'\n", optarg);
                return CLI_USAGE;
            }
            break;
        case OPT_EMBED:
            embed_model = optarg;
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
    if (raw && (q.mode == RET_MODE_DENSE || q.mode == RET_MODE_HYBRID)) {
        fprintf(stderr, "lode search: --raw is FTS5 syntax, for lexical search only\n");
        return CLI_USAGE;
    }

    int status = CLI_FAILED;
    lode_buf query = LODE_BUF_INIT;
    char *mark_open = NULL;
    ret_store *s = NULL;
    ret_dense *d = NULL;
    ret_hits *h = NULL;
    ret_results *r = NULL;
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
        q.hl_open = mark_open;
        q.hl_close = comma + 1;
    } else if (json) {
        q.hl_open = "<mark>", q.hl_close = "</mark>";
    } else {
        q.hl_open = tty ? HL_TTY_OPEN : "", q.hl_close = tty ? HL_TTY_CLOSE : "";
    }
    q.ellipsis = "\xe2\x80\xa6";
    q.text = query.data;

    char err[1024];
    lode_status st =
        ret_store_open(db, RET_STORE_READONLY | RET_STORE_UPGRADE, &s, err, sizeof err);
    if (st) {
        fprintf(stderr, "lode search: %s\n", err);
        goto out;
    }
    if (raw) {
        ret_search_opts o = {.k = q.k,
                             .raw = 1,
                             .hl_open = q.hl_open,
                             .hl_close = q.hl_close,
                             .ellipsis = q.ellipsis,
                             .filter = ret_filter_empty(&q.filter) ? NULL : &q.filter};
        double t0 = lode_now_s();
        st = ret_search_bm25(s, query.data, &o, &h);
        if (!st && !(r = results_of_hits(h))) st = LODE_ERR_NOMEM;
        if (r) r->took_ms = (lode_now_s() - t0) * 1e3;
    } else {
        if (q.mode != RET_MODE_LEXICAL) {
            ret_dense_opts dopts = {.model_path = embed_model};
            lode_status ds = ret_dense_open(s, &dopts, &d, err, sizeof err);
            if (ds && q.mode != RET_MODE_AUTO) {
                fprintf(stderr, "lode search: %s search: %s\n", ret_mode_name(q.mode), err);
                status = ds == LODE_ERR_INVALID ? CLI_USAGE : CLI_FAILED;
                goto out;
            }
            if (ds) fprintf(stderr, "lode search: %s; searching lexically\n", err);
        }
        st = ret_hybrid_search(s, d, &q, &r);
        if (!st && r->note[0] && d) fprintf(stderr, "lode search: %s\n", r->note);
    }
    if (st) {
        fprintf(stderr, "lode search: %s\n", ret_store_errmsg(s));
        status = st == LODE_ERR_INVALID || st == LODE_ERR_UTF8 ? CLI_USAGE : CLI_FAILED;
        goto out;
    }
    if (json) {
        status = print_json(query.data, &q, raw, r);
    } else {
        if (r->n == 0) fprintf(stderr, "lode search: no chunk matches '%s'\n", query.data);
        print_human(r, tty);
        status = CLI_OK;
    }
    if (fflush(stdout) != 0) status = CLI_FAILED;
out:
    ret_results_free(r);
    ret_hits_free(h);
    ret_dense_close(d);
    ret_store_close(s);
    lode_free(mark_open);
    lode_buf_free(&query);
    return status;
}

LODE_CLI_COMMAND(search, "search", "search the store's chunks (hybrid BM25 + dense, or either)",
                 cmd_search)
