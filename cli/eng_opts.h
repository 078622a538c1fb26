/*
 * eng_opts.h: the options `lode generate` and `lode chat` share (model, backend,
 * threads, context, sampling), parsed the same way in both.
 */
#ifndef LODE_CLI_ENG_OPTS_H
#define LODE_CLI_ENG_OPTS_H

#include <stdint.h>

#include "engine/engine.h"

typedef struct cli_eng_opts {
    const char *model;
    eng_model_opts mo;
    eng_sampling sampling;
    int seed_set;
    int n_predict; /* -n; <= 0: until the end of the turn */
    const char *stop[16];
    int n_stop;
} cli_eng_opts;

/* Defaults: the default model, llama.cpp's sampling defaults (temperature 0.8, top-k 40,
 * top-p 0.95, min-p 0.05), a seed from the clock. */
void cli_eng_opts_init(cli_eng_opts *o);

/* Consumes the option at argv[*i] (and its value) if it is a shared one: returns 1 when
 * taken, 0 when not an engine option, -1 on a bad value (message printed). */
int cli_eng_opts_parse(cli_eng_opts *o, int argc, char **argv, int *i);

/* The help lines of the shared options. */
extern const char cli_eng_opts_help[];

/* Loads the model with the options; prints the error and returns NULL on failure. */
eng_model *cli_eng_load(const cli_eng_opts *o);

#endif
