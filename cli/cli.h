/*
 * cli.h: the `lode` command's subcommand registry. Each cli/eng_*.c or cli/cmd_*.c file
 * registers its subcommands with LODE_CLI_COMMAND, so adding a command touches no shared
 * table. A command returns the process exit status: 0 ok, 1 the work failed (partly),
 * 2 usage error.
 */
#ifndef LODE_CLI_H
#define LODE_CLI_H

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
/* True when stdout/stderr is a terminal (progress bars, colours). */
int cli_is_tty(int fd);

#endif
