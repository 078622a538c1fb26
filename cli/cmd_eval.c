/*
 * cmd_eval.c: `lode eval retrieval FILE.jsonl`, the retrieval quality of a store on a set
 * of questions whose answers are known: recall at 1, 5 and k, MRR@k and nDCG@k, one row
 * per search mode (lexical, dense, hybrid, each through ret_hybrid_search as `lode
 * search` runs it), so a change to chunking, ranking or fusion is judged by numbers.
 *
 * Each line of the file is a JSON object: "query" (the question), and either "relevant"
 * (the documents that answer it: source URIs, or path suffixes such as "lang_vacuum.html"
 * that match a URI ending in "/lang_vacuum.html"; "a.html|b.html" is one entry that either
 * page satisfies, for pages that say the same) or "answers" (strings of which one must
 * occur in a retrieved chunk; case and runs of whitespace do not matter). "id" names the
 * query in reports; other fields are ignored.
 *
 * With "relevant", the ranking judged is the documents of the hits in order of their best
 * chunk (chunks of a document already seen are skipped), so a document is counted once:
 * recall@c is the share of the relevant entries found among the first c documents, MRR
 * is 1/rank of the first relevant document, nDCG gains 1 for each relevant entry at its
 * first rank. With "answers", the ranking is the chunks themselves and there is one
 * target: recall@c is 1 when a chunk among the first c holds an answer, nDCG is
 * 1/log2(1 + rank of the first such chunk).
 */
#include "cli/cli.h"
#include "common/lode.h"
#include "retrieval/dense.h"
#include "retrieval/evalset.h"
#include "retrieval/hybrid.h"
#include "retrieval/search.h"
#include "retrieval/store.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE_BYTES (1 << 20)
#define MAX_QUERIES    100000
#define DOC_DEPTH      5 /* chunks fetched per document wanted, to fill k documents */
#define N_CUTS         3 /* recall cut-offs: 1, 5, k */

typedef struct eval_set {
    ret_evalq *q;
    size_t n, cap;
} eval_set;

/* One query's outcome in one mode. */
typedef struct eval_result {
    double recall[N_CUTS];
    double rr, ndcg, ms;
    int first_rank; /* 1-based rank of the first relevant item, 0 when none in k */
} eval_result;

/* The search modes judged, in table order. */
static const ret_mode MODES[] = {RET_MODE_LEXICAL, RET_MODE_DENSE, RET_MODE_HYBRID};
#define N_MODES 3

/* Fusion and model settings passed to every search. */
typedef struct eval_opts {
    double rrf_k, w_lexical, w_dense;
    ret_fuse_unit fuse;
    int depth; /* candidates per list; 0: ret_hybrid_search's default */
    const char *embed_model;
} eval_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lode eval retrieval [OPTIONS] FILE.jsonl\n\n"
            "Runs each question of FILE.jsonl against the store and reports recall@1, @5 and\n"
            "@k, MRR@k and nDCG@k per search mode, with the median and p99 search time.\n"
            "Each line of FILE is a JSON object:\n"
            "  {\"id\": \"q1\", \"query\": \"how do I shrink the database file\",\n"
            "   \"relevant\": [\"lang_vacuum.html\"]}\n"
            "\"relevant\" lists the documents that answer it (a source URI, or a path suffix\n"
            "matching URIs that end in /SUFFIX; \"a.html|b.html\": either one will do);\n"
            "instead, \"answers\" lists strings of which one must occur in a retrieved chunk\n"
            "(case and spacing ignored).\n\n"
            "options:\n"
            "  --mode MODE    lexical, dense, hybrid or all (default all: lexical, and dense\n"
            "                 and hybrid when the store has vectors)\n"
            "  -k N           depth of the ranking judged (default 10, 5..100)\n"
            "  --fuse UNIT    hybrid: fuse per document (default) or per chunk\n"
            "  --depth N      candidates taken from each list (default: the search's,\n"
            "                 max(4 x 5k, 200) chunks fusing)\n"
            "  --rrf-k X      hybrid: the k of reciprocal rank fusion (default %g)\n"
            "  --w-lexical X, --w-dense X\n"
            "                 hybrid: the weights of the two lists (default %g and %g)\n"
            "  --embed-model PATH\n"
            "                 the embedding model's folder (default: the store's)\n"
            "  --json         one JSON document with every mode's metrics and per-query ranks\n"
            "  -v, --verbose  list each query whose answer is not in the first k, per mode\n"
            "  --db PATH      the store (default $LODE_DB or ./lode.db)\n"
            "  -h, --help     this text\n\n"
            "Exit status: 0 when every query ran, 1 when the store or a search failed,\n"
            "2 for a usage error or a malformed FILE (the message names the line).\n",
            RET_RRF_K_DEFAULT, RET_W_LEXICAL_DEFAULT, RET_W_DENSE_DEFAULT);
}

static void set_free(eval_set *s)
{
    for (size_t i = 0; i < s->n; i++) ret_evalq_free(&s->q[i]);
    lode_free(s->q);
}

/* Reads the question file. Returns CLI_OK, CLI_USAGE (malformed, message printed) or
 * CLI_FAILED (I/O). */
static int read_set(const char *path, eval_set *set)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "lode eval: cannot open %s: %s\n", path, strerror(errno));
        return CLI_FAILED;
    }
    int status = CLI_USAGE, lineno = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        size_t sp = 0;
        while (sp < len && isspace((unsigned char)line[sp])) sp++;
        if (sp == len) continue;
        if (len > MAX_LINE_BYTES) {
            fprintf(stderr, "lode eval: %s:%d: line longer than %d bytes\n", path, lineno,
                    MAX_LINE_BYTES);
            goto out;
        }
        if (set->n == MAX_QUERIES) {
            fprintf(stderr, "lode eval: %s: more than %d queries\n", path, MAX_QUERIES);
            goto out;
        }
        if (set->n == set->cap) {
            size_t nc = set->cap ? set->cap * 2 : 64;
            ret_evalq *nq = lode_realloc(set->q, nc * sizeof *nq);
            if (!nq) {
                fprintf(stderr, "lode eval: out of memory\n");
                status = CLI_FAILED;
                goto out;
            }
            set->q = nq;
            set->cap = nc;
        }
        ret_evalq *q = &set->q[set->n];
        memset(q, 0, sizeof *q);
        q->line = lineno;
        char msg[256];
        if (ret_evalq_parse(line, len, q, msg, sizeof msg)) {
            ret_evalq_free(q);
            fprintf(stderr, "lode eval: %s:%d: %s\n", path, lineno, msg);
            goto out;
        }
        set->n++;
    }
    if (ferror(f)) {
        fprintf(stderr, "lode eval: reading %s: %s\n", path, strerror(errno));
        status = CLI_FAILED;
        goto out;
    }
    if (set->n == 0) {
        fprintf(stderr, "lode eval: %s holds no queries\n", path);
        goto out;
    }
    status = CLI_OK;
out:
    free(line); /* getline's buffer comes from libc */
    fclose(f);
    return status;
}

/* 1 when uri is name (len bytes) or ends in "/" name. */
static int uri_is(const char *uri, const char *name, size_t t)
{
    size_t u = strlen(uri);
    if (u == t) return memcmp(uri, name, t) == 0;
    return u > t && uri[u - t - 1] == '/' && memcmp(uri + u - t, name, t) == 0;
}

/* 1 when uri matches target, or one of its alternatives separated by '|'. */
static int uri_matches(const char *uri, const char *target)
{
    for (;;) {
        const char *bar = strchr(target, '|');
        size_t t = bar ? (size_t)(bar - target) : strlen(target);
        if (t && uri_is(uri, target, t)) return 1;
        if (!bar) return 0;
        target = bar + 1;
    }
}

/* Prints a warning for each relevant entry that matches no document of the store (a typo
 * in the file, or a store built from other files). Returns the number of such entries. */
static size_t check_targets(ret_store *s, const eval_set *set, const char *path)
{
    sqlite3 *db = ret_store_sqlite(s);
    sqlite3_stmt *st = NULL;
    size_t missing = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT 1 FROM documents WHERE uri = ?1 OR (length(uri) > length(?1) "
                           "AND substr(uri, -length(?1) - 1) = '/' || ?1) LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
        return 0;
    for (size_t i = 0; i < set->n; i++) {
        const ret_evalq *q = &set->q[i];
        for (size_t t = 0; !q->by_answer && t < q->n_targets; t++) {
            int found = 0;
            for (const char *a = q->targets[t]; a && !found;) {
                const char *bar = strchr(a, '|');
                sqlite3_reset(st);
                sqlite3_bind_text(st, 1, a, bar ? (int)(bar - a) : -1, SQLITE_TRANSIENT);
                found = sqlite3_step(st) == SQLITE_ROW;
                a = bar ? bar + 1 : NULL;
            }
            if (!found) {
                fprintf(stderr,
                        "lode eval: %s:%d: warning: no document of the store matches '%s'\n", path,
                        q->line, q->targets[t]);
                missing++;
            }
        }
    }
    sqlite3_finalize(st);
    return missing;
}

static double dcg_at(int rank)
{
    return 1.0 / log2((double)rank + 1.0);
}

/* Judges one query's hits. cuts[] are the recall cut-offs, the last being k. */
static void judge(const ret_evalq *q, const ret_results *h, int k, const int *cuts, eval_result *r)
{
    memset(r->recall, 0, sizeof r->recall);
    r->rr = r->ndcg = 0;
    r->first_rank = 0;
    if (q->by_answer) {
        for (size_t i = 0; i < h->n && (int)i < k; i++) {
            char *t = ret_eval_normalize(h->r[i].text ? h->r[i].text : "");
            int hit = 0;
            for (size_t a = 0; t && !hit && a < q->n_targets; a++)
                hit = strstr(t, q->targets[a]) != NULL;
            lode_free(t);
            if (hit) {
                r->first_rank = (int)i + 1;
                break;
            }
        }
        if (r->first_rank) {
            for (int c = 0; c < N_CUTS; c++) r->recall[c] = r->first_rank <= cuts[c] ? 1.0 : 0.0;
            r->rr = 1.0 / r->first_rank;
            r->ndcg = dcg_at(r->first_rank);
        }
        return;
    }
    /* documents in order of their best chunk; each relevant entry counts once */
    int64_t seen[RET_SEARCH_MAX_K];
    unsigned char found[RET_EVAL_MAX_TARGETS] = {0};
    size_t n_seen = 0, n_found = 0;
    int rank = 0;
    double dcg = 0;
    for (size_t i = 0; i < h->n && rank < k; i++) {
        const ret_result *x = &h->r[i];
        int dup = 0;
        for (size_t j = 0; j < n_seen && !dup; j++) dup = seen[j] == x->document_id;
        if (dup) continue;
        seen[n_seen++] = x->document_id;
        rank++;
        int gain = 0;
        for (size_t t = 0; t < q->n_targets; t++)
            if (!found[t] && uri_matches(x->uri, q->targets[t])) {
                found[t] = 1;
                n_found++;
                gain = 1;
            }
        if (!gain) continue;
        if (!r->first_rank) r->first_rank = rank;
        dcg += dcg_at(rank);
        for (int c = 0; c < N_CUTS; c++)
            if (rank <= cuts[c]) r->recall[c] = (double)n_found / (double)q->n_targets;
    }
    double ideal = 0;
    for (int i = 1; i <= (int)LODE_MIN(q->n_targets, (size_t)k); i++) ideal += dcg_at(i);
    r->rr = r->first_rank ? 1.0 / r->first_rank : 0;
    r->ndcg = ideal > 0 ? dcg / ideal : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct mode_summary {
    const char *name;
    double recall[N_CUTS], mrr, ndcg, p50_ms, p99_ms;
    eval_result *per_query; /* (n queries) */
} mode_summary;

/* Runs every query of set in one mode. Returns LODE_OK or the failing search's status. */
static lode_status run_mode(ret_store *s, ret_dense *d, ret_mode mode, const eval_opts *eo,
                            const eval_set *set, int k, const int *cuts, mode_summary *sum)
{
    lode_status st = LODE_OK;
    double *ms = lode_malloc(set->n * sizeof *ms);
    sum->name = ret_mode_name(mode);
    sum->per_query = lode_calloc(set->n, sizeof *sum->per_query);
    if (!ms || !sum->per_query) {
        st = LODE_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < set->n; i++) {
        const ret_evalq *q = &set->q[i];
        ret_query rq = {.text = q->query,
                        .k = q->by_answer ? k : LODE_MIN(k * DOC_DEPTH, RET_SEARCH_MAX_K),
                        .mode = mode,
                        .fuse = eo->fuse,
                        .depth = eo->depth,
                        .rrf_k = eo->rrf_k,
                        .w_lexical = eo->w_lexical,
                        .w_dense = eo->w_dense};
        ret_results *h = NULL;
        double t0 = lode_now_s();
        st = ret_hybrid_search(s, d, &rq, &h);
        ms[i] = (lode_now_s() - t0) * 1e3;
        if (st) {
            fprintf(stderr, "lode eval: %s search of '%s' failed: %s\n", sum->name, q->query,
                    ret_store_errmsg(s));
            goto out;
        }
        eval_result *r = &sum->per_query[i];
        judge(q, h, k, cuts, r);
        r->ms = ms[i];
        ret_results_free(h);
        for (int c = 0; c < N_CUTS; c++) sum->recall[c] += r->recall[c];
        sum->mrr += r->rr;
        sum->ndcg += r->ndcg;
    }
    for (int c = 0; c < N_CUTS; c++) sum->recall[c] /= (double)set->n;
    sum->mrr /= (double)set->n;
    sum->ndcg /= (double)set->n;
    qsort(ms, set->n, sizeof *ms, cmp_double);
    sum->p50_ms = ms[(set->n - 1) / 2];
    sum->p99_ms = ms[(size_t)((double)(set->n - 1) * 0.99 + 0.5)];
out:
    lode_free(ms);
    return st;
}

static void print_table(const char *file, const eval_set *set, const mode_summary *sums,
                        size_t n_modes, int k, const int *cuts, int verbose)
{
    size_t n_doc = 0;
    for (size_t i = 0; i < set->n; i++) n_doc += !set->q[i].by_answer;
    printf("%zu queries from %s (%zu judged by document, %zu by answer string)\n\n", set->n, file,
           n_doc, set->n - n_doc);
    printf("| mode | R@%d | R@%d | R@%d | MRR@%d | nDCG@%d | p50 ms | p99 ms |\n", cuts[0], cuts[1],
           cuts[2], k, k);
    printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (size_t m = 0; m < n_modes; m++) {
        const mode_summary *s = &sums[m];
        printf("| %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.1f | %.1f |\n", s->name, s->recall[0],
               s->recall[1], s->recall[2], s->mrr, s->ndcg, s->p50_ms, s->p99_ms);
    }
    if (!verbose) return;
    for (size_t m = 0; m < n_modes; m++) {
        printf("\n%s: not in the first %d:\n", sums[m].name, k);
        for (size_t i = 0; i < set->n; i++)
            if (!sums[m].per_query[i].first_rank)
                printf("  %s (line %d): %s\n", *set->q[i].id ? set->q[i].id : "-", set->q[i].line,
                       set->q[i].query);
    }
}

static int print_json(const char *file, const eval_set *set, const mode_summary *sums,
                      size_t n_modes, int k, const int *cuts)
{
    json_t *root = json_object(), *modes = json_array();
    if (!root || !modes) {
        json_decref(root);
        json_decref(modes);
        return CLI_FAILED;
    }
    json_object_set_new(root, "file", json_string(file));
    json_object_set_new(root, "queries", json_integer((json_int_t)set->n));
    json_object_set_new(root, "k", json_integer(k));
    for (size_t m = 0; m < n_modes; m++) {
        const mode_summary *s = &sums[m];
        json_t *j = json_object(), *per = json_array();
        char key[32];
        for (int c = 0; c < N_CUTS; c++) {
            snprintf(key, sizeof key, "recall@%d", cuts[c]);
            json_object_set_new(j, key, json_real(s->recall[c]));
        }
        snprintf(key, sizeof key, "mrr@%d", k);
        json_object_set_new(j, key, json_real(s->mrr));
        snprintf(key, sizeof key, "ndcg@%d", k);
        json_object_set_new(j, key, json_real(s->ndcg));
        json_object_set_new(j, "mode", json_string(s->name));
        json_object_set_new(j, "p50_ms", json_real(s->p50_ms));
        json_object_set_new(j, "p99_ms", json_real(s->p99_ms));
        for (size_t i = 0; i < set->n; i++) {
            json_t *q = json_object();
            json_object_set_new(q, "id", json_string(set->q[i].id));
            json_object_set_new(q, "line", json_integer(set->q[i].line));
            json_object_set_new(q, "rank", json_integer(s->per_query[i].first_rank));
            json_object_set_new(q, "recall@k", json_real(s->per_query[i].recall[N_CUTS - 1]));
            json_object_set_new(q, "ndcg", json_real(s->per_query[i].ndcg));
            json_object_set_new(q, "ms", json_real(s->per_query[i].ms));
            json_array_append_new(per, q);
        }
        json_object_set_new(j, "per_query", per);
        json_array_append_new(modes, j);
    }
    json_object_set_new(root, "modes", modes);
    int rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    fputc('\n', stdout);
    json_decref(root);
    return rc == 0 ? CLI_OK : CLI_FAILED;
}

/* A number option's value, or -1 with a message for one that is not a number >= 0. */
static double num_arg(const char *name, const char *v)
{
    char *end = NULL;
    double x = strtod(v, &end);
    if (!*v || *end || !(x >= 0) || x > 1e6) {
        fprintf(stderr, "lode eval: --%s wants a number >= 0, not '%s'\n", name, v);
        return -1;
    }
    return x;
}

static int eval_retrieval(int argc, char **argv)
{
    enum {
        OPT_JSON = 256,
        OPT_DB,
        OPT_MODE,
        OPT_RRF,
        OPT_WL,
        OPT_WD,
        OPT_EMBED,
        OPT_FUSE,
        OPT_DEPTH
    };
    static const struct option longopts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"db", required_argument, NULL, OPT_DB},
        {"mode", required_argument, NULL, OPT_MODE},
        {"rrf-k", required_argument, NULL, OPT_RRF},
        {"w-lexical", required_argument, NULL, OPT_WL},
        {"w-dense", required_argument, NULL, OPT_WD},
        {"embed-model", required_argument, NULL, OPT_EMBED},
        {"fuse", required_argument, NULL, OPT_FUSE},
        {"depth", required_argument, NULL, OPT_DEPTH},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *db = cli_default_db(), *mode = "all";
    eval_opts eo = {.w_lexical = RET_W_LEXICAL_DEFAULT, .w_dense = RET_W_DENSE_DEFAULT};
    int json = 0, verbose = 0, k = 10, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "k:vh", longopts, NULL)) != -1) {
        switch (c) {
        case 'k': {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 5 || v > 100) {
                fprintf(stderr, "lode eval: -k wants a number from 5 to 100, not '%s'\n", optarg);
                return CLI_USAGE;
            }
            k = (int)v;
            break;
        }
        case OPT_JSON:
            json = 1;
            break;
        case OPT_DB:
            db = optarg;
            break;
        case OPT_MODE:
            mode = optarg;
            break;
        case OPT_RRF:
            if ((eo.rrf_k = num_arg("rrf-k", optarg)) < 0) return CLI_USAGE;
            break;
        case OPT_WL:
            if ((eo.w_lexical = num_arg("w-lexical", optarg)) < 0) return CLI_USAGE;
            break;
        case OPT_WD:
            if ((eo.w_dense = num_arg("w-dense", optarg)) < 0) return CLI_USAGE;
            break;
        case OPT_EMBED:
            eo.embed_model = optarg;
            break;
        case OPT_FUSE: {
            int f = ret_fuse_parse(optarg);
            if (f < 0) {
                fprintf(stderr, "lode eval: --fuse wants document or chunk, not '%s'\n", optarg);
                return CLI_USAGE;
            }
            eo.fuse = (ret_fuse_unit)f;
            break;
        }
        case OPT_DEPTH: {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > RET_SEARCH_MAX_K) {
                fprintf(stderr, "lode eval: --depth wants a number from 1 to %d, not '%s'\n",
                        RET_SEARCH_MAX_K, optarg);
                return CLI_USAGE;
            }
            eo.depth = (int)v;
            break;
        }
        case 'v':
            verbose = 1;
            break;
        case 'h':
            usage(stdout);
            return CLI_OK;
        default:
            fprintf(stderr, "lode eval: unknown option or missing value: %s\n", argv[optind - 1]);
            return CLI_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "lode eval retrieval: give one question file\n\n");
        usage(stderr);
        return CLI_USAGE;
    }
    int all = !strcmp(mode, "all"), one = all ? -1 : ret_mode_parse(mode);
    if (!all && (one != RET_MODE_LEXICAL && one != RET_MODE_DENSE && one != RET_MODE_HYBRID)) {
        fprintf(stderr, "lode eval: unknown --mode '%s' (lexical, dense, hybrid or all)\n", mode);
        return CLI_USAGE;
    }
    const int cuts[N_CUTS] = {1, 5, k};
    const char *file = argv[optind];
    eval_set set = {0};
    mode_summary sums[N_MODES];
    memset(sums, 0, sizeof sums);
    ret_store *s = NULL;
    ret_dense *d = NULL;
    int status = read_set(file, &set);
    if (status != CLI_OK) goto out;
    status = CLI_FAILED;
    char err[1024];
    if (ret_store_open(db, RET_STORE_READONLY | RET_STORE_UPGRADE, &s, err, sizeof err)) {
        fprintf(stderr, "lode eval: %s\n", err);
        goto out;
    }
    if (all || one != RET_MODE_LEXICAL) {
        ret_dense_opts dopts = {.model_path = eo.embed_model, .no_save = 1};
        lode_status ds = ret_dense_open(s, &dopts, &d, err, sizeof err);
        if (ds && !all) {
            fprintf(stderr, "lode eval: %s search: %s\n", mode, err);
            goto out;
        }
        if (ds) fprintf(stderr, "lode eval: %s; judging lexical search only\n", err);
    }
    check_targets(s, &set, file);
    size_t n_run = 0;
    for (size_t m = 0; m < N_MODES; m++) {
        if (!all && (int)MODES[m] != one) continue;
        if (MODES[m] != RET_MODE_LEXICAL && !d) continue;
        if (run_mode(s, d, MODES[m], &eo, &set, k, cuts, &sums[n_run++])) goto out;
    }
    status = json ? print_json(file, &set, sums, n_run, k, cuts)
                  : (print_table(file, &set, sums, n_run, k, cuts, verbose), CLI_OK);
    if (fflush(stdout) != 0) status = CLI_FAILED;
out:
    for (size_t m = 0; m < N_MODES; m++) lode_free(sums[m].per_query);
    ret_dense_close(d);
    ret_store_close(s);
    set_free(&set);
    return status;
}

static int cmd_eval(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "retrieval")) return eval_retrieval(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return CLI_OK;
    }
    fprintf(stderr, "lode eval: %s '%s'; `lode eval retrieval FILE.jsonl` is the one evaluation\n",
            argc >= 2 ? "unknown evaluation" : "which evaluation?", argc >= 2 ? argv[1] : "");
    return CLI_USAGE;
}

LODE_CLI_COMMAND(eval, "eval", "measure retrieval quality on questions with known answers",
                 cmd_eval)
