/*
 * cli.h: the `lode` command's subcommand registry. Each cli/eng_*.c or cli/cmd_*.c file
 * registers its subcommands with LODE_CLI_COMMAND, so adding a command touches no shared
 * table. A command returns the process exit status: 0 ok, 1 the work failed (partly),
 * 2 usage error.
 */
#ifndef LODE_CLI_H
#define LODE_CLI_H

#include <stdint.h>

typedef int (*cli_fn)(int argc, char **argv); /* argv[0] is the subcommand name */

typedef struct cli_command {
    const char *name;
    const char *summary; /* one line for `lode --help` */
    cli_fn fn;
    struct cli_command *next;
} cli_command;

void cli_register(cli_command *cmd);

#define LODE_CLI_COMMAND(ident, name_, summary_, fn_)                                              \
    static cli_command cli_cmd_##ident = {name_, summary_, fn_, 0};                                \
    __attribute__((constructor)) static void cli_register_##ident(void)                            \
    {                                                                                              \
        cli_register(&cli_cmd_##ident);                                                            \
    }

/* Common option helpers. Exit codes for commands. */
enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

/* Default store path: $LODE_DB or ./lode.db. */
const char *cli_default_db(void);
/* Parses a whole decimal integer in [lo, hi] into *out; 0 on success, -1 (out untouched)
 * when s is not one. */
int cli_parse_int(const char *s, int lo, int hi, int *out);
/* Parses a byte size: a number (decimals allowed) with an optional K, M or G suffix
 * (powers of 1024) and an optional B, like 65536, 64K, 1.5MB or 8G. 0 on success with
 * the size in [lo, hi] in *out; -1 (out untouched) otherwise. */
int cli_parse_size(const char *s, uint64_t lo, uint64_t hi, uint64_t *out /* OUT */);
/* True when stdout/stderr is a terminal (progress bars, colours). */
int cli_is_tty(int fd);

#endif
