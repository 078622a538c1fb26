/* main.c: `lode`, one binary with subcommands registered by the cli/ files. */
#include "cli/cli.h"
#include "common/lode.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef LODE_VERSION
#define LODE_VERSION "0.1.0"
#endif

static cli_command *commands;

void cli_register(cli_command *cmd)
{
    /* keep the list sorted by name so --help reads well */
    cli_command **pp = &commands;
    while (*pp && strcmp((*pp)->name, cmd->name) < 0) pp = &(*pp)->next;
    cmd->next = *pp;
    *pp = cmd;
}

const char *cli_default_db(void)
{
    const char *e = getenv("LODE_DB");
    return e && *e ? e : "lode.db";
}

int cli_parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

int cli_parse_size(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0)) return -1;
    switch (*end) {
    case 'k':
    case 'K':
        v *= 1024.0, end++;
        break;
    case 'm':
    case 'M':
        v *= 1024.0 * 1024, end++;
        break;
    case 'g':
    case 'G':
        v *= 1024.0 * 1024 * 1024, end++;
        break;
    default:
        break;
    }
    if (*end == 'B' || *end == 'b') end++;
    if (*end || v > 9e18) return -1;
    uint64_t n = (uint64_t)v;
    if (n < lo || n > hi) return -1;
    *out = n;
    return 0;
}

int cli_is_tty(int fd)
{
    return isatty(fd);
}

static void usage(FILE *f)
{
    fprintf(f,
            "lode %s: retrieval-augmented generation with its own inference engine\n\n"
            "usage: lode COMMAND [OPTIONS] [ARGS]\n\ncommands:\n",
            LODE_VERSION);
    for (cli_command *c = commands; c; c = c->next) fprintf(f, "  %-12s %s\n", c->name, c->summary);
    fprintf(f, "\n`lode COMMAND --help` describes a command's options.\n"
               "Environment: LODE_DB (store, default ./lode.db), LODE_MODEL (generation model),\n"
               "LODE_LOG (error|warn|info|debug).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("lode %s\n", LODE_VERSION);
        return CLI_OK;
    }
    for (cli_command *c = commands; c; c = c->next)
        if (!strcmp(c->name, argv[1])) return c->fn(argc - 1, argv + 1);
    fprintf(stderr, "lode: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return CLI_USAGE;
}
