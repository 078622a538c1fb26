/*
 * cmd_serve.c: `lode serve`, the HTTP API. Loads the model and opens the store named on
 * the command line, lends them to the server, and runs until SIGINT or SIGTERM, then
 * shuts down gracefully (in-flight requests finish or are cancelled) and exits 0.
 */
#include "cli/cli.h"
#include "common/lode.h"
#include "server/server.h"
#include "server/srv_int.h"
#include "engine/bert.h"
#include "engine/engine.h"
#include "retrieval/dense.h"
#include "retrieval/store.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_EMBED "models/all-MiniLM-L6-v2"

/* SIGINT and SIGTERM end the server. They are caught by a handler that writes the signal's
 * number to a pipe the main thread reads, not taken by sigwait: threads that libraries
 * start before main (OpenBLAS under FAISS starts its pool when loaded) have the signals
 * unblocked, and with the default action a signal delivered to one of them would kill the
 * process instead of shutting it down. */
static int stop_pipe[2] = {-1, -1};

static void on_stop_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(stop_pipe[1], &b, 1) < 0) {
    }
    errno = saved;
}

/* Blocks until SIGINT or SIGTERM arrives; returns which. */
static int wait_stop_signal(void)
{
    unsigned char b = 0;
    for (;;) {
        ssize_t r = read(stop_pipe[0], &b, 1);
        if (r == 1) return b;
        if (r < 0 && errno == EINTR) continue;
        return SIGTERM; /* the pipe failed: stop rather than hang */
    }
}

static void serve_usage(FILE *f)
{
    fprintf(
        f,
        "usage: lode serve [OPTIONS]\n\n"
        "Serves the OpenAI-compatible API (/v1/chat/completions, /v1/completions,\n"
        "/v1/models), answers from the store (/v1/ask), search and documents\n"
        "(/v1/search, /v1/documents), /health and /metrics. Stops gracefully on\n"
        "SIGINT or SIGTERM.\n\n"
        "  --db PATH            store (default $LODE_DB or ./lode.db)\n"
        "  --model PATH         generation model, GGUF (default $LODE_MODEL or\n"
        "                       " ENG_DEFAULT_MODEL ")\n"
        "  --no-model           serve without generation (search and documents only)\n"
        "  --embed-model PATH   embedding model folder for /v1/embeddings and dense\n"
        "                       search (default $LODE_EMBED_MODEL or " DEFAULT_EMBED ")\n"
        "  --no-embed-model     serve without embeddings\n"
        "  --embed-queue N      texts waiting for the embedding model, then 429\n"
        "                       (default 16384)\n"
        "  --no-dense           lexical search only, even when the store has vectors\n"
        "  --engine-threads N   CPU threads of the engine (default: all)\n"
        "  --ctx N              context window in tokens (default: the model's, <= 4096)\n"
        "  --backend NAME       cpu, cuda or auto (default auto: cuda when a GPU is present;\n"
        "                       on cuda the server times its matrix kernels for every batch\n"
        "                       size before it listens)\n"
        "  --kv-mb N            KV cache pool in MiB, shared by all requests (default 256;\n"
        "                       on cuda the GPU's free memory after the weights)\n"
        "  --max-seqs N         requests decoding together in one batch (default 64; 256\n"
        "                       on cuda)\n"
        "  --max-queue N        requests waiting beyond those, then 429 (default 256)\n"
        "  --policy NAME        scheduling: fcfs (default), decode-first or mlfq\n"
        "  --no-prefix-cache    do not reuse computed prompt prefixes across requests\n"
        "  --preempt MODE       when KV memory runs out: recompute (default) or swap\n"
        "                       (blocks copied to a host pool and back)\n"
        "  --swap-mb N          host pool for swapped blocks in MiB (default: --kv-mb)\n"
        "  --prefill-slack F    while requests decode, cut each step's prompt chunk so the\n"
        "                       step's predicted time (a cost model fitted to the engine's\n"
        "                       own steps) is at most F times a decode-only step; F >= 1\n"
        "                       (default 1.6 on the CPU backend, off on cuda, where full prompt\n"
        "                       steps keep the output rate of bursts; 0: off, the fixed\n"
        "                       step budget alone)\n"
        "  --host ADDR          address to bind (default 127.0.0.1)\n"
        "  --port N             port (default 8080; 0 picks a free one)\n"
        "  --threads N          HTTP worker threads (default 4)\n"
        "  --api-key KEY        require 'Authorization: Bearer KEY' (also $LODE_API_KEY)\n"
        "  --api-key-file FILE  the same, the key read from FILE's first line\n"
        "  --max-body BYTES     request body limit, K/M/G suffixes (default 8M)\n"
        "  --max-concurrent N   requests served at once, beyond which 429 (default 64)\n"
        "  --fetch-timeout S    limit for fetching a document by URL (default 30)\n"
        "  --shutdown-grace S   seconds in-flight requests may run on after a signal\n"
        "                       before they are cancelled (default 10)\n"
        "  --quiet              no request log (default: one line per request on stderr)\n");
}

/* Reads the first line of a key file, without its line ending. */
static char *read_key_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char line[1024];
    char *key = NULL;
    if (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ')) n--;
        key = lode_strndup(line, n);
    }
    fclose(f);
    return key;
}

enum {
    OPT_DB = 1000,
    OPT_MODEL,
    OPT_HOST,
    OPT_PORT,
    OPT_THREADS,
    OPT_KEY,
    OPT_KEYFILE,
    OPT_MAXBODY,
    OPT_MAXCONC,
    OPT_GRACE,
    OPT_QUIET,
    OPT_NOMODEL,
    OPT_ETHREADS,
    OPT_CTX,
    OPT_EMBED,
    OPT_NOEMBED,
    OPT_FETCHTO,
    OPT_NODENSE,
    OPT_KVMB,
    OPT_MAXSEQS,
    OPT_MAXQUEUE,
    OPT_POLICY,
    OPT_NOPREFIX,
    OPT_PREEMPT,
    OPT_SWAPMB,
    OPT_EMBEDQ,
    OPT_BACKEND,
    OPT_SLACK
};

static int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {{"db", required_argument, 0, OPT_DB},
                                         {"model", required_argument, 0, OPT_MODEL},
                                         {"host", required_argument, 0, OPT_HOST},
                                         {"port", required_argument, 0, OPT_PORT},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {"api-key", required_argument, 0, OPT_KEY},
                                         {"api-key-file", required_argument, 0, OPT_KEYFILE},
                                         {"max-body", required_argument, 0, OPT_MAXBODY},
                                         {"max-concurrent", required_argument, 0, OPT_MAXCONC},
                                         {"shutdown-grace", required_argument, 0, OPT_GRACE},
                                         {"quiet", no_argument, 0, OPT_QUIET},
                                         {"no-model", no_argument, 0, OPT_NOMODEL},
                                         {"engine-threads", required_argument, 0, OPT_ETHREADS},
                                         {"ctx", required_argument, 0, OPT_CTX},
                                         {"embed-model", required_argument, 0, OPT_EMBED},
                                         {"no-embed-model", no_argument, 0, OPT_NOEMBED},
                                         {"fetch-timeout", required_argument, 0, OPT_FETCHTO},
                                         {"no-dense", no_argument, 0, OPT_NODENSE},
                                         {"kv-mb", required_argument, 0, OPT_KVMB},
                                         {"max-seqs", required_argument, 0, OPT_MAXSEQS},
                                         {"max-queue", required_argument, 0, OPT_MAXQUEUE},
                                         {"policy", required_argument, 0, OPT_POLICY},
                                         {"no-prefix-cache", no_argument, 0, OPT_NOPREFIX},
                                         {"preempt", required_argument, 0, OPT_PREEMPT},
                                         {"swap-mb", required_argument, 0, OPT_SWAPMB},
                                         {"embed-queue", required_argument, 0, OPT_EMBEDQ},
                                         {"backend", required_argument, 0, OPT_BACKEND},
                                         {"prefill-slack", required_argument, 0, OPT_SLACK},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    srv_config cfg = {0};
    struct srv_backends be = {0};
    const char *db = cli_default_db(), *model = NULL, *key_file = NULL;
    int no_model = 0, no_embed = 0, no_dense = 0;
    const char *embed = NULL;
    eng_model_opts mopts = {0};
    /* a server chooses its GPU step kernels while loading, not in its first requests */
    mopts.tune_at_load = 1;
    char model_id[128] = "";
    char *key = NULL;
    const char *env_key = getenv("LODE_API_KEY");
    int rc = CLI_USAGE, o;
    srv_server *srv = NULL;
    cfg.port = 8080;
    cfg.shutdown_grace_s = 10;
    cfg.backends = &be;
    optind = 1;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case OPT_DB:
            db = optarg;
            break;
        case OPT_MODEL:
            model = optarg;
            break;
        case OPT_HOST:
            cfg.host = optarg;
            break;
        case OPT_PORT:
            if (cli_parse_int(optarg, 0, 65535, &cfg.port)) {
                fprintf(stderr, "lode serve: --port must be 0..65535\n");
                goto out;
            }
            break;
        case OPT_THREADS:
            if (cli_parse_int(optarg, 1, 1024, &cfg.threads)) {
                fprintf(stderr, "lode serve: --threads must be 1..1024\n");
                goto out;
            }
            break;
        case OPT_KEY:
            lode_free(key);
            key = lode_strdup(optarg);
            break;
        case OPT_KEYFILE:
            key_file = optarg;
            break;
        case OPT_MAXBODY: {
            uint64_t size;
            if (cli_parse_size(optarg, 1, (uint64_t)1 << 40, &size)) {
                fprintf(stderr, "lode serve: --max-body wants a size like 65536, 64K or 8M\n");
                goto out;
            }
            cfg.max_body = (size_t)size;
            break;
        }
        case OPT_MAXCONC:
            if (cli_parse_int(optarg, 1, 100000, &cfg.max_concurrent)) {
                fprintf(stderr, "lode serve: --max-concurrent must be 1..100000\n");
                goto out;
            }
            break;
        case OPT_GRACE:
            if (cli_parse_int(optarg, 0, 3600, &cfg.shutdown_grace_s)) {
                fprintf(stderr, "lode serve: --shutdown-grace must be 0..3600 seconds\n");
                goto out;
            }
            break;
        case OPT_QUIET:
            cfg.quiet = 1;
            break;
        case OPT_NOMODEL:
            no_model = 1;
            break;
        case OPT_EMBED:
            embed = optarg;
            break;
        case OPT_NOEMBED:
            no_embed = 1;
            break;
        case OPT_NODENSE:
            no_dense = 1;
            break;
        case OPT_FETCHTO:
            if (cli_parse_int(optarg, 1, 3600, &cfg.fetch_timeout_s)) {
                fprintf(stderr, "lode serve: --fetch-timeout must be 1..3600 seconds\n");
                goto out;
            }
            break;
        case OPT_ETHREADS:
            if (cli_parse_int(optarg, 1, 1024, &mopts.n_threads)) {
                fprintf(stderr, "lode serve: --engine-threads must be 1..1024\n");
                goto out;
            }
            break;
        case OPT_KVMB:
            if (cli_parse_int(optarg, 1, 1 << 20, &mopts.kv_mb)) {
                fprintf(stderr, "lode serve: --kv-mb must be 1..1048576\n");
                return CLI_USAGE;
            }
            break;
        case OPT_MAXSEQS:
            if (cli_parse_int(optarg, 1, 4096, &mopts.max_seqs)) {
                fprintf(stderr, "lode serve: --max-seqs must be 1..4096\n");
                return CLI_USAGE;
            }
            break;
        case OPT_MAXQUEUE:
            if (cli_parse_int(optarg, 1, 1 << 20, &mopts.max_queue)) {
                fprintf(stderr, "lode serve: --max-queue must be 1..1048576\n");
                return CLI_USAGE;
            }
            break;
        case OPT_POLICY:
            if (eng_policy_parse(optarg, &mopts.policy)) {
                fprintf(stderr, "lode serve: --policy must be fcfs, decode-first or mlfq\n");
                return CLI_USAGE;
            }
            break;
        case OPT_NOPREFIX:
            mopts.no_prefix_cache = 1;
            break;
        case OPT_PREEMPT:
            if (eng_preempt_parse(optarg, &mopts.preempt)) {
                fprintf(stderr, "lode serve: --preempt must be recompute or swap\n");
                return CLI_USAGE;
            }
            break;
        case OPT_EMBEDQ:
            if (cli_parse_int(optarg, 1, 1 << 24, &be.embed_max_queue)) {
                fprintf(stderr, "lode serve: --embed-queue must be 1..16777216\n");
                return CLI_USAGE;
            }
            break;
        case OPT_BACKEND:
            if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda") && strcmp(optarg, "auto")) {
                fprintf(stderr, "lode serve: --backend must be cpu, cuda or auto\n");
                return CLI_USAGE;
            }
            mopts.backend = optarg;
            break;
        case OPT_SLACK: {
            char *end;
            double f = strtod(optarg, &end);
            if (end == optarg || *end || !(f == 0 || (f >= 1 && f <= 100))) {
                fprintf(stderr, "lode serve: --prefill-slack must be 0 or 1..100\n");
                return CLI_USAGE;
            }
            mopts.prefill_slack = f == 0 ? -1 : f;
            break;
        }
        case OPT_SWAPMB:
            if (cli_parse_int(optarg, 1, 1 << 20, &mopts.swap_mb)) {
                fprintf(stderr, "lode serve: --swap-mb must be 1..1048576\n");
                return CLI_USAGE;
            }
            break;
        case OPT_CTX:
            if (cli_parse_int(optarg, 16, 1 << 20, &mopts.n_ctx)) {
                fprintf(stderr, "lode serve: --ctx must be 16..1048576\n");
                goto out;
            }
            break;
        case 'h':
            serve_usage(stdout);
            rc = CLI_OK;
            goto out;
        default:
            serve_usage(stderr);
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "lode serve: unexpected argument '%s'\n", argv[optind]);
        goto out;
    }
    if (key_file) {
        lode_free(key);
        if (!(key = read_key_file(key_file)) || !*key) {
            fprintf(stderr, "lode serve: cannot read an API key from '%s'\n", key_file);
            goto out;
        }
    } else if (!key && env_key && *env_key) {
        key = lode_strdup(env_key);
    }
    cfg.api_key = key;

    /* The stop signals are blocked while the threads of the server and the engine start, so
     * that they inherit the mask and are never interrupted; the main thread unblocks them
     * once everything runs and waits for the handler's byte (see on_stop_signal). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (pipe(stop_pipe) != 0) {
        fprintf(stderr, "lode serve: cannot create a pipe: %s\n", strerror(errno));
        rc = CLI_FAILED;
        goto out;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    rc = CLI_FAILED;
    char err[1024];
    if (ret_store_open(db, 0, &be.store, err, sizeof err)) {
        fprintf(stderr, "lode serve: cannot open the store '%s': %s\n", db, err);
        goto out;
    }
    if (!no_model) {
        /* The default model is optional (the server then only searches); a named one
         * must load. */
        const char *path = model ? model : eng_default_model_path();
        struct stat sb;
        if (!model && !getenv("LODE_MODEL") && stat(path, &sb) != 0) {
            fprintf(stderr, "lode serve: no model at %s; serving without generation\n", path);
        } else if (eng_model_load(path, &mopts, &be.model, err, sizeof err)) {
            fprintf(stderr, "lode serve: cannot load the model '%s': %s\n", path, err);
            goto out;
        } else {
            const char *base = strrchr(path, '/');
            base = base ? base + 1 : path;
            size_t n = strlen(base);
            if (n > 5 && !strcmp(base + n - 5, ".gguf")) n -= 5;
            snprintf(model_id, sizeof model_id, "%.*s", (int)n, base);
            be.model_id = model_id;
            be.created = stat(path, &sb) == 0 ? (int64_t)sb.st_mtime : 0;
        }
    }
    if (!no_embed) {
        /* As with the generation model: the default is optional, a named one must load. */
        const char *env = getenv("LODE_EMBED_MODEL");
        const char *path = embed ? embed : env && *env ? env : DEFAULT_EMBED;
        struct stat sb;
        eng_bert_opts bo = {.n_threads = mopts.n_threads};
        if (!embed && !(env && *env) && stat(path, &sb) != 0) {
            fprintf(stderr, "lode serve: no embedding model at %s; serving without embeddings\n",
                    path);
        } else if (eng_bert_load(path, &bo, &be.embedder, err, sizeof err)) {
            fprintf(stderr, "lode serve: cannot load the embedding model '%s': %s\n", path, err);
            goto out;
        } else {
            be.embed_model_id = eng_bert_name(be.embedder);
            be.embed_created = stat(path, &sb) == 0 ? (int64_t)sb.st_mtime : 0;
        }
    }
    if (!no_dense) {
        /* Dense and hybrid search when the store was ingested with embeddings: its own
         * embedder (the store's model), used under the server's store lock. */
        ret_embed_info ei;
        ret_dense_opts dop = {.n_threads = mopts.n_threads};
        if (ret_store_embed_get(be.store, &ei) == LODE_OK &&
            ret_dense_open(be.store, &dop, &be.dense, err, sizeof err))
            fprintf(stderr, "lode serve: dense search is off: %s\n", err);
    }
    srv = srv_create(&cfg, err, sizeof err);
    if (!srv) {
        fprintf(stderr, "lode serve: %s\n", err);
        goto out;
    }
    printf("lode serve: listening on http://%s:%d%s%s%s%s%s\n",
           cfg.host && *cfg.host ? cfg.host : "127.0.0.1", srv_port(srv),
           be.model_id ? ", model " : "", be.model_id ? be.model_id : "",
           be.embed_model_id ? ", embeddings " : "", be.embed_model_id ? be.embed_model_id : "",
           key ? " (API key required)" : "");
    fflush(stdout);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    int sig = wait_stop_signal();
    fprintf(stderr, "lode serve: %s received, shutting down\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM");
    srv_shutdown(srv);
    /* The engine goes first: its last callbacks may still touch the server. */
    eng_model_free(be.model);
    be.model = NULL;
    fprintf(stderr, "lode serve: stopped\n");
    rc = CLI_OK;
out:
    srv_destroy(srv);
    for (int i = 0; i < 2; i++)
        if (stop_pipe[i] >= 0) close(stop_pipe[i]);
    eng_model_free(be.model);
    eng_bert_destroy(be.embedder);
    ret_dense_close(be.dense);
    ret_store_close(be.store);
    lode_free(key);
    return rc;
}

LODE_CLI_COMMAND(serve, "serve", "serve the HTTP API (OpenAI-compatible, search, documents)",
                 cmd_serve)
