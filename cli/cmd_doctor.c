/*
 * cmd_doctor.c: `lode doctor`, the store's consistency checks (retrieval/doctor.h): one
 * line per check, and with --repair the fixes. Exit status 0 when the store is consistent
 * (after repair, with --repair), 1 when a problem is left, 2 on a usage error.
 */
#include "cli/cli.h"
#include "common/lode.h"
#include "retrieval/doctor.h"
#include "retrieval/store.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: lode doctor [--repair] [--db PATH] [--embed-model PATH] [--json]\n\n"
               "Checks the store: SQLite's integrity_check, the full-text index against the\n"
               "chunks, the vectors against the chunks and the store's embedding model, and the\n"
               "FAISS index file beside the store against the change log and the vectors.\n"
               "Notes are work left to do (chunks not embedded yet, an index file behind the\n"
               "change log); problems are inconsistencies.\n\n"
               "  --repair             fix what was found: rebuild the full-text index, delete\n"
               "                       stray vectors, embed missing ones, catch up or rebuild\n"
               "                       the index file\n"
               "  --embed-model PATH   the model for embedding missing vectors (default: the\n"
               "                       store's)\n"
               "  --json               one JSON object: {problems, notes, repaired, lines}\n"
               "  --db PATH            the store (default $LODE_DB or ./lode.db)\n\n"
               "Exit status: 0 consistent (after repairs with --repair), 1 problems remain,\n"
               "2 usage error.\n");
}

typedef struct out_ctx {
    json_t *lines;
    int tty;
} out_ctx;

static void on_line(void *ctx, int kind, const char *check, const char *msg)
{
    out_ctx *c = ctx;
    static const char *const word[] = {"ok", "note", "PROBLEM", "repaired"};
    const char *w = kind >= 0 && kind < 4 ? word[kind] : "?";
    if (c->lines) {
        json_array_append_new(c->lines,
                              json_pack("{s:s, s:s, s:s}", "kind", w, "check", check, "msg", msg));
        return;
    }
    const char *on = "", *off = "";
    if (c->tty && kind == RET_DOCTOR_PROBLEM) on = "\x1b[1;31m", off = "\x1b[0m";
    if (c->tty && kind == RET_DOCTOR_REPAIRED) on = "\x1b[1;32m", off = "\x1b[0m";
    printf("%s%-8s%s %-7s %s\n", on, w, off, check, msg);
}

static int cmd_doctor(int argc, char **argv)
{
    enum { O_DB = 256, O_REPAIR, O_EMBED, O_JSON };
    static const struct option longopts[] = {
        {"db", required_argument, NULL, O_DB},
        {"repair", no_argument, NULL, O_REPAIR},
        {"embed-model", required_argument, NULL, O_EMBED},
        {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *db = cli_default_db();
    ret_doctor_opts o = {0};
    int json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_DB:
            db = optarg;
            break;
        case O_REPAIR:
            o.repair = 1;
            break;
        case O_EMBED:
            o.model_path = optarg;
            break;
        case O_JSON:
            json = 1;
            break;
        case 'h':
            usage(stdout);
            return CLI_OK;
        default:
            fprintf(stderr, "lode doctor: unknown option or missing value: %s\n", argv[optind - 1]);
            return CLI_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "lode doctor: unexpected argument '%s'\n", argv[optind]);
        return CLI_USAGE;
    }
    char err[1024];
    ret_store *s = NULL;
    /* read-write even to check: FTS5's integrity-check is an INSERT (it changes nothing) */
    lode_status st = ret_store_open(db, 0, &s, err, sizeof err);
    if (st) {
        fprintf(stderr, "lode doctor: %s\n", err);
        return CLI_FAILED;
    }
    out_ctx oc = {json ? json_array() : NULL, cli_is_tty(1)};
    o.on_line = on_line;
    o.ctx = &oc;
    ret_doctor_report rep;
    st = ret_doctor_run(s, &o, &rep);
    int rc = CLI_OK;
    if (st) {
        fprintf(stderr, "lode doctor: the checks stopped: %s\n", ret_store_errmsg(s));
        rc = CLI_FAILED;
    }
    int left = o.repair ? rep.unrepaired : rep.problems;
    if (left) rc = CLI_FAILED;
    if (json) {
        json_t *j = json_pack("{s:s, s:i, s:i, s:i, s:i, s:b, s:o}", "db", db, "problems",
                              rep.problems, "notes", rep.notes, "repaired", rep.repaired,
                              "unrepaired", left, "clean", !st && !left, "lines", oc.lines);
        oc.lines = NULL;
        if (j) {
            json_dumpf(j, stdout, JSON_INDENT(2));
            fputc('\n', stdout);
            json_decref(j);
        }
    } else if (!st) {
        printf("%s: %d problem%s, %d note%s%s", db, rep.problems, rep.problems == 1 ? "" : "s",
               rep.notes, rep.notes == 1 ? "" : "s", o.repair ? "" : "\n");
        if (o.repair) printf("; %d repaired, %d left\n", rep.repaired, left);
    }
    json_decref(oc.lines);
    ret_store_close(s);
    return rc;
}

LODE_CLI_COMMAND(doctor, "doctor", "check (and --repair) the store's and index's consistency",
                 cmd_doctor)
