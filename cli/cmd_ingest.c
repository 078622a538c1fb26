/*
 * cmd_ingest.c: `lode ingest PATH...`, loading files and directories into the store.
 * One line per file that failed (or was repaired) on stderr, a progress bar on a
 * terminal, and a summary line (or a JSON object with --json) at the end. Exit status 0
 * when every file was fine, 1 when any failed or the store gave up, 2 on a usage error.
 */
#include "cli/cli.h"
#include "common/lode.h"
#include "common/progress.h"
#include "engine/bert.h"
#include "ingest/run.h"
#include "retrieval/dense.h"

#include <errno.h>
#include <limits.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static volatile int interrupted;

static void on_signal(int sig)
{
    interrupted = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lode ingest [OPTIONS] PATH...\n\n"
            "Loads text (.txt), Markdown (.md), HTML (.html) and PDF (.pdf) files, and\n"
            "directories of them (recursively), into the store. Unchanged files are skipped;\n"
            "changed ones replaced.\n\n"
            "  --db PATH            the store (default $LODE_DB or ./lode.db)\n"
            "  --include GLOB       in directories, take only files matching GLOB (repeatable)\n"
            "  --exclude GLOB       skip files and directories matching GLOB (repeatable)\n"
            "  --prune              delete documents under PATHs whose files are gone\n"
            "  --max-size BYTES     refuse larger files (K, M, G suffixes; default 32M)\n"
            "  --chunk-tokens N     target chunk size in tokens (default %d)\n"
            "  --overlap N          tokens shared by consecutive chunks (default %d)\n"
            "  --rehash             hash every file, even when size and mtime are unchanged\n"
            "  --threads N          loader threads (default: CPU count)\n"
            "  --embed-model PATH   embed chunks with this BERT-family model folder (default: the\n"
            "                       store's model, else %s); a model other than the\n"
            "                       store's re-embeds every chunk\n"
            "  --lexical-only       no embeddings: BM25 search only (fast)\n"
            "  --index-approx N     vectors at which the FAISS index turns approximate\n"
            "                       (default %d; -1: always exact); kept in the store\n"
            "  --index-factory S    FAISS factory string of the approximate index\n"
            "                       (default HNSW32,Flat; e.g. IVF256,Flat); kept in the store\n"
            "  --quiet              no progress bar and no summary (errors still print)\n"
            "  --json               print the summary as JSON on stdout\n",
            ING_CHUNK_TARGET_DEFAULT, ING_CHUNK_OVERLAP_DEFAULT, RET_DEFAULT_EMBED_MODEL,
            RET_DEFAULT_APPROX_THRESHOLD);
}

typedef struct cli_ctx {
    lode_progress *bar;
    lode_progress *ebar; /* the embedding phase's, in chunks */
    lode_progress_mode mode;
    json_t *errors; /* with --json: [{path, reason, failed}] */
} cli_ctx;

static void on_message(void *ctx, const char *path, const char *reason, int failed)
{
    cli_ctx *c = ctx;
    lode_progress_printf(c->bar, "lode: ingest: %s: %s%s", path, failed ? "" : "warning: ", reason);
    if (c->errors)
        json_array_append_new(c->errors, json_pack("{s:s, s:s, s:b}", "path", path, "reason",
                                                   reason, "failed", failed));
}

static void on_progress(void *ctx, const ing_run_stats *st)
{
    cli_ctx *c = ctx;
    if (st->embedding) {
        if (!c->ebar) {
            lode_progress_finish(c->bar);
            c->ebar = lode_progress_create(stderr, c->mode, "chunks embedded");
        }
        lode_progress_set_total(c->ebar, st->embed_total, 0);
        lode_progress_update(c->ebar, st->embed_done, 0, st->embed_done == st->embed_total);
        return;
    }
    lode_progress_set_total(c->bar, st->files_total, st->bytes_total);
    lode_progress_update(c->bar, st->files_done, st->bytes_done, st->files_done == st->files_total);
}

/* The embedder of this run: --embed-model, else the store's model, else the default one
 * when it is installed. *bert stays NULL (lexical only, with a note) when no model was
 * asked for and none is found. */
static lode_status load_embedder(ret_store *s, const char *asked, int threads, eng_bert **bert,
                                 const char **path_out)
{
    static char path[1024];
    ret_embed_info info;
    int have = ret_store_embed_get(s, &info) == LODE_OK;
    struct stat sb;
    if (asked)
        snprintf(path, sizeof path, "%s", asked);
    else if (have && info.path[0])
        snprintf(path, sizeof path, "%s", info.path);
    else if (stat(RET_DEFAULT_EMBED_MODEL, &sb) == 0)
        snprintf(path, sizeof path, "%s", RET_DEFAULT_EMBED_MODEL);
    else {
        fprintf(stderr,
                "lode: ingest: no embedding model at %s (`make model` fetches it): "
                "ingesting lexical-only\n",
                RET_DEFAULT_EMBED_MODEL);
        return LODE_OK;
    }
    char err[512];
    eng_bert_opts bo = {.n_threads = threads};
    lode_status st = eng_bert_load(path, &bo, bert, err, sizeof err);
    if (st) {
        fprintf(stderr, "lode: ingest: cannot load the embedding model %s: %s%s\n", path, err,
                asked ? "" : " (name another with --embed-model, or use --lexical-only)");
        return st;
    }
    char abs[PATH_MAX];
    size_t al = realpath(path, abs) ? strlen(abs) : sizeof path;
    if (al < sizeof path) memcpy(path, abs, al + 1);
    *path_out = path;
    return LODE_OK;
}

/* After a lexical-only run on a store that has an embedding model: says how many chunks
 * now lack a vector. Returns 1 when it printed. */
static int lexical_note(ret_store *s)
{
    ret_embed_info info;
    int64_t missing = 0;
    if (ret_store_embed_get(s, &info) != LODE_OK ||
        ret_store_vector_counts(s, info.model, NULL, &missing) != LODE_OK || missing == 0)
        return 0;
    fprintf(stderr,
            "ingest: lexical only, but the store's other chunks are embedded with %s: %lld "
            "chunks have no vector (dense search misses them until `lode ingest` without "
            "--lexical-only, or `lode doctor --repair`, embeds them)\n",
            info.model, (long long)missing);
    return 1;
}

static int cmd_ingest(int argc, char **argv)
{
    enum {
        O_DB = 256,
        O_INCLUDE,
        O_EXCLUDE,
        O_PRUNE,
        O_MAXSIZE,
        O_CHUNK,
        O_OVERLAP,
        O_REHASH,
        O_THREADS,
        O_QUIET,
        O_JSON,
        O_EMBED,
        O_LEXICAL,
        O_APPROX,
        O_FACTORY,
        O_HELP
    };
    static const struct option longopts[] = {
        {"db", required_argument, 0, O_DB},
        {"include", required_argument, 0, O_INCLUDE},
        {"exclude", required_argument, 0, O_EXCLUDE},
        {"prune", no_argument, 0, O_PRUNE},
        {"max-size", required_argument, 0, O_MAXSIZE},
        {"chunk-tokens", required_argument, 0, O_CHUNK},
        {"overlap", required_argument, 0, O_OVERLAP},
        {"rehash", no_argument, 0, O_REHASH},
        {"threads", required_argument, 0, O_THREADS},
        {"quiet", no_argument, 0, O_QUIET},
        {"json", no_argument, 0, O_JSON},
        {"embed-model", required_argument, 0, O_EMBED},
        {"lexical-only", no_argument, 0, O_LEXICAL},
        {"index-approx", required_argument, 0, O_APPROX},
        {"index-factory", required_argument, 0, O_FACTORY},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    const char *db = cli_default_db();
    const char **inc = lode_calloc((size_t)argc + 1, sizeof *inc);
    const char **exc = lode_calloc((size_t)argc + 1, sizeof *exc);
    ing_run_opts o = {0};
    int quiet = 0, json = 0, lexical_only = 0, rc = CLI_USAGE, c;
    const char *embed_model = NULL, *factory = NULL;
    int64_t approx = 0;
    cli_ctx ctx = {0};
    ret_store *s = NULL;
    eng_bert *bert = NULL;
    if (!inc || !exc) {
        fprintf(stderr, "lode: ingest: out of memory\n");
        rc = CLI_FAILED;
        goto out;
    }
    o.chunk.target_tokens = ING_CHUNK_TARGET_DEFAULT;
    o.chunk.overlap_tokens = ING_CHUNK_OVERLAP_DEFAULT;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
        switch (c) {
        case O_DB:
            db = optarg;
            break;
        case O_INCLUDE:
            inc[o.n_includes++] = optarg;
            break;
        case O_EXCLUDE:
            exc[o.n_excludes++] = optarg;
            break;
        case O_PRUNE:
            o.prune = 1;
            break;
        case O_REHASH:
            o.rehash = 1;
            break;
        case O_MAXSIZE: {
            uint64_t size;
            if (cli_parse_size(optarg, 1, INT64_MAX, &size)) {
                fprintf(stderr, "lode: ingest: --max-size: not a size: %s\n", optarg);
                goto out;
            }
            o.max_size = (int64_t)size;
            break;
        }
        case O_CHUNK:
            if (cli_parse_int(optarg, 8, 1 << 20, &o.chunk.target_tokens)) {
                fprintf(stderr, "lode: ingest: --chunk-tokens: want 8..1048576: %s\n", optarg);
                goto out;
            }
            break;
        case O_OVERLAP:
            if (cli_parse_int(optarg, 0, 1 << 19, &o.chunk.overlap_tokens)) {
                fprintf(stderr, "lode: ingest: --overlap: want 0 or more: %s\n", optarg);
                goto out;
            }
            break;
        case O_THREADS:
            if (cli_parse_int(optarg, 1, 64, &o.threads)) {
                fprintf(stderr, "lode: ingest: --threads: want 1..64: %s\n", optarg);
                goto out;
            }
            break;
        case 'q':
        case O_QUIET:
            quiet = 1;
            break;
        case O_JSON:
            json = 1;
            break;
        case O_EMBED:
            embed_model = optarg;
            break;
        case O_LEXICAL:
            lexical_only = 1;
            break;
        case O_APPROX: {
            char *end = NULL;
            approx = strtoll(optarg, &end, 10);
            if (!*optarg || *end || approx == 0 || approx < -1) {
                fprintf(stderr, "lode: ingest: --index-approx: want a count > 0, or -1: %s\n",
                        optarg);
                goto out;
            }
            break;
        }
        case O_FACTORY:
            if (!*optarg || strlen(optarg) >= 120) {
                fprintf(stderr, "lode: ingest: --index-factory: want a FAISS factory string\n");
                goto out;
            }
            factory = optarg;
            break;
        case 'h':
        case O_HELP:
            usage(stdout);
            rc = CLI_OK;
            goto out;
        default:
            fprintf(stderr, "lode: ingest: unknown option '%s'\n\n", argv[optind - 1]);
            usage(stderr);
            goto out;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "lode: ingest: no PATH given\n\n");
        usage(stderr);
        goto out;
    }
    if (lexical_only && embed_model) {
        fprintf(stderr, "lode: ingest: --embed-model and --lexical-only exclude each other\n");
        goto out;
    }
    if (o.chunk.overlap_tokens >= o.chunk.target_tokens) {
        fprintf(stderr, "lode: ingest: --overlap must be smaller than --chunk-tokens\n");
        goto out;
    }
    o.includes = inc;
    o.excludes = exc;
    rc = CLI_FAILED;
    char err[512];
    lode_status st = ret_store_open(db, 0, &s, err, sizeof err);
    if (st) {
        fprintf(stderr, "lode: ingest: cannot open store %s: %s\n", db, err);
        goto out;
    }
    if (!lexical_only && (st = load_embedder(s, embed_model, o.threads, &bert, &o.embed_path)))
        goto out;
    o.embedder = bert;
    if ((approx || factory) && (st = ret_store_index_kind_set(s, approx, factory))) {
        fprintf(stderr, "lode: ingest: %s\n", ret_store_errmsg(s));
        goto out;
    }
    ctx.mode = quiet || json ? LODE_PROGRESS_OFF : LODE_PROGRESS_AUTO;
    ctx.bar = lode_progress_create(stderr, ctx.mode, "files");
    if (json) ctx.errors = json_array();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    o.cancel = &interrupted;
    o.on_message = on_message;
    o.on_progress = on_progress;
    o.ctx = &ctx;
    ing_run_stats S;
    st = ing_run(s, (const char *const *)argv + optind, (size_t)(argc - optind), &o, &S);
    lode_progress_finish(ctx.bar);
    lode_progress_finish(ctx.ebar);
    if (st) fprintf(stderr, "lode: ingest: %s: %s\n", lode_strerror(st), ret_store_errmsg(s));
    LODE_INFO("ingest: %.2f s: writer %.2f s in the store (%.2f s CPU), %.2f s waiting for "
              "loaders",
              S.seconds, S.write_seconds, S.write_cpu_seconds, S.wait_seconds);
    if (S.interrupted) fprintf(stderr, "lode: ingest: interrupted; what was written is kept\n");
    double mb = (double)S.bytes_read / 1e6;
    double rate = S.seconds > 0 ? mb / S.seconds : 0;
    if (json) {
        json_t *j = json_pack(
            "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, "
            "s:b, s:s, s:I, s:f, s:s, s:o}",
            "files_seen", (json_int_t)S.files_seen, "files_added", (json_int_t)S.files_added,
            "files_updated", (json_int_t)S.files_updated, "files_unchanged",
            (json_int_t)S.files_unchanged, "files_failed", (json_int_t)S.files_failed,
            "files_pruned", (json_int_t)S.files_pruned, "files_repaired",
            (json_int_t)S.files_repaired, "files_ignored", (json_int_t)S.files_ignored, "chunks",
            (json_int_t)S.chunks, "bytes", (json_int_t)S.bytes_read, "mb", mb, "seconds", S.seconds,
            "mb_per_s", rate, "interrupted", S.interrupted, "status", st ? lode_strerror(st) : "ok",
            "chunks_embedded", (json_int_t)S.chunks_embedded, "embed_seconds", S.embed_seconds,
            "embed_model", bert ? eng_bert_name(bert) : "", "errors", ctx.errors);
        ctx.errors = NULL;
        if (j) {
            json_dumpf(j, stdout, JSON_COMPACT);
            fputc('\n', stdout);
            json_decref(j);
        }
    } else if (!quiet) {
        fprintf(stderr,
                "ingest: %lld files seen, %lld added, %lld updated, %lld unchanged, %lld failed, "
                "%lld pruned; %lld chunks, %.1f MB in %.2f s (%.1f MB/s)\n",
                (long long)S.files_seen, (long long)S.files_added, (long long)S.files_updated,
                (long long)S.files_unchanged, (long long)S.files_failed, (long long)S.files_pruned,
                (long long)S.chunks, mb, S.seconds, rate);
        if (bert)
            fprintf(stderr, "ingest: %lld chunks embedded with %s in %.2f s (%.1f chunks/s)\n",
                    (long long)S.chunks_embedded, eng_bert_name(bert), S.embed_seconds,
                    S.embed_seconds > 0 ? (double)S.chunks_embedded / S.embed_seconds : 0.0);
        else if (!lexical_note(s))
            fprintf(stderr, "ingest: lexical only (no embeddings): `lode search` uses BM25\n");
    }
    rc = st || S.files_failed || S.interrupted ? CLI_FAILED : CLI_OK;
out:
    json_decref(ctx.errors);
    lode_progress_destroy(ctx.bar);
    lode_progress_destroy(ctx.ebar);
    ret_store_close(s);
    eng_bert_destroy(bert);
    lode_free(inc);
    lode_free(exc);
    return rc;
}

LODE_CLI_COMMAND(ingest, "ingest", "load files and directories (txt, md, html, pdf) into the store",
                 cmd_ingest)
