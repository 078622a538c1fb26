/* eng_opts.c: parsing of the engine options shared by `lode generate` and `lode chat`. */
#include "cli/eng_opts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char cli_eng_opts_help[] =
    "  -m, --model PATH       GGUF model (default $LODE_MODEL or " ENG_DEFAULT_MODEL ")\n"
    "  -n, --n-predict N      most tokens to generate (default: until the model ends its turn)\n"
    "  --temp T               temperature (0 = greedy; default 0.8)\n"
    "  --top-k K              (default 40; 0 = off)\n"
    "  --top-p P              (default 0.95; 1 = off)\n"
    "  --min-p P              (default 0.05; 0 = off)\n"
    "  --repeat-penalty R     (default 1 = off)\n"
    "  --repeat-last-n N      tokens the penalties look back over (default 64)\n"
    "  --presence-penalty P   --frequency-penalty P   (default 0)\n"
    "  --seed S               sampling seed (default: from the clock)\n"
    "  --stop TEXT            stop when TEXT appears (repeatable, up to 16)\n"
    "  -t, --threads N        CPU threads (default: all)\n"
    "  -c, --ctx N            context window in tokens (default min(trained, 4096))\n"
    "  --batch N              prompt tokens per step (default 512)\n"
    "  --backend NAME         cpu, cuda or auto (default auto)\n";

void cli_eng_opts_init(cli_eng_opts *o)
{
    memset(o, 0, sizeof *o);
    o->model = eng_default_model_path();
    eng_sampling_default(&o->sampling);
    o->sampling.temperature = 0.8f;
    o->sampling.top_k = 40;
    o->sampling.top_p = 0.95f;
    o->sampling.min_p = 0.05f;
    o->sampling.seed = (uint64_t)lode_now_ns();
}

static int num_f(const char *opt, const char *s, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v != v) {
        fprintf(stderr, "lode: %s: '%s' is not a number\n", opt, s);
        return -1;
    }
    *out = (float)v;
    return 1;
}

static int num_i(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "lode: %s: '%s' is not an integer in [%ld, %ld]\n", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 1;
}

int cli_eng_opts_parse(cli_eng_opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    static const char *const with_value[] = {"-m",
                                             "--model",
                                             "-n",
                                             "--n-predict",
                                             "--temp",
                                             "--top-k",
                                             "--top-p",
                                             "--min-p",
                                             "--repeat-penalty",
                                             "--repeat-last-n",
                                             "--seed",
                                             "--presence-penalty",
                                             "--frequency-penalty",
                                             "--stop",
                                             "-t",
                                             "--threads",
                                             "-c",
                                             "--ctx",
                                             "--batch",
                                             "--backend"};
    int known = 0;
    for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++)
        if (!strcmp(a, with_value[k])) known = 1;
    if (!known) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "lode: %s needs a value\n", a);
        return -1;
    }
    const char *v = argv[++*i];
    long n;
    if (!strcmp(a, "-m") || !strcmp(a, "--model"))
        o->model = v;
    else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
        if (num_i(a, v, -1, 1 << 24, &n) < 0) return -1;
        o->n_predict = (int)n;
    } else if (!strcmp(a, "--temp"))
        return num_f(a, v, &o->sampling.temperature);
    else if (!strcmp(a, "--top-k")) {
        if (num_i(a, v, 0, 1 << 24, &n) < 0) return -1;
        o->sampling.top_k = (int)n;
    } else if (!strcmp(a, "--top-p"))
        return num_f(a, v, &o->sampling.top_p);
    else if (!strcmp(a, "--min-p"))
        return num_f(a, v, &o->sampling.min_p);
    else if (!strcmp(a, "--repeat-penalty"))
        return num_f(a, v, &o->sampling.repeat_penalty);
    else if (!strcmp(a, "--presence-penalty"))
        return num_f(a, v, &o->sampling.presence_penalty);
    else if (!strcmp(a, "--frequency-penalty"))
        return num_f(a, v, &o->sampling.frequency_penalty);
    else if (!strcmp(a, "--repeat-last-n")) {
        if (num_i(a, v, 0, 1 << 20, &n) < 0) return -1;
        o->sampling.repeat_last_n = (int)n;
    } else if (!strcmp(a, "--seed")) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (errno || end == v || *end) {
            fprintf(stderr, "lode: --seed: '%s' is not an unsigned integer\n", v);
            return -1;
        }
        o->sampling.seed = s;
        o->seed_set = 1;
    } else if (!strcmp(a, "--stop")) {
        if (o->n_stop >= 16 || !*v) {
            fprintf(stderr, "lode: --stop: at most 16 non-empty stop strings\n");
            return -1;
        }
        o->stop[o->n_stop++] = v;
    } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
        if (num_i(a, v, 1, 1024, &n) < 0) return -1;
        o->mo.n_threads = (int)n;
    } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
        if (num_i(a, v, 16, 1 << 20, &n) < 0) return -1;
        o->mo.n_ctx = (int)n;
    } else if (!strcmp(a, "--batch")) {
        if (num_i(a, v, 1, 4096, &n) < 0) return -1;
        o->mo.n_batch = (int)n;
    } else if (!strcmp(a, "--backend"))
        o->mo.backend = v;
    return 1;
}

eng_model *cli_eng_load(const cli_eng_opts *o)
{
    char err[512];
    eng_model *m = NULL;
    lode_status st = eng_model_load(o->model, &o->mo, &m, err, sizeof err);
    if (st) {
        fprintf(stderr, "lode: cannot load model: %s\n", err[0] ? err : lode_strerror(st));
        if (st == LODE_ERR_IO) fprintf(stderr, "lode: run `make model` or pass --model PATH\n");
        return NULL;
    }
    return m;
}
