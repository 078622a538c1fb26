/*
 * eng_bench.c: `lode bench`, the engine's speed on a named model shape with random weights
 * of a chosen type (no file needed): prefill tokens/s at given prompt lengths, decode
 * tokens/s at given batch sizes, and the decode's achieved weight-read bandwidth against the
 * device-to-device copy bandwidth measured in the same run. Times come from CUDA events
 * (decode) or a synchronized host clock (prefill), after a warm-up, as medians of --reps runs.
 */
#include "cli/cli.h"
#include "cli/eng_shapes.h"
#include "common/lode.h"
#include "engine/backend_cuda.h"
#include "kernels/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if LODE_CUDA
#include "kernels/cuda/cuda_kernels.h"
#endif

static int parse_type(const char *s)
{
    for (int t = 0; t < LODE_DTYPE_MAX; t++)
        if (lode_dtype_block_elems(t) && !strcmp(lode_dtype_name(t), s)) return t;
    if (!strcmp(s, "q4_k")) return LODE_Q4_K;
    if (!strcmp(s, "q6_k")) return LODE_Q6_K;
    return -1;
}

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > 1 << 20) return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

__attribute__((unused)) static float median(float *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_f);
    return n % 2 ? v[n / 2] : 0.5f * (v[n / 2 - 1] + v[n / 2]);
}

#if LODE_CUDA
static void print_prof(void *arg, const char *op, int count, float ms)
{
    const char *tag = arg;
    printf("PROFILE %s %-36s x%-3d %8.3f ms\n", tag, op, count, ms);
}
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lode bench [--shape smollm2-135m|llama3.2-1b|llama3-8b] [--type bf16|f16|q4_0|"
            "q4_1|q8_0|q4_K|q6_K]\n"
            "                  [--prefill 512,2048] [--batch 1,16] [--steps 128] [--reps 5]\n"
            "                  [--prompt 128] [--profile] [--backend cuda] [--json FILE]\n"
            "       lode bench --model FILE.gguf [...]   the same on a model file\n"
            "       lode bench --model FILE.gguf --generate IDS [--steps N] [--logits-out FILE]\n"
            "                  greedy tokens after the ids, and each chosen token's logits (f32)\n"
            "Random weights of the shape and type, on the GPU; prints prefill and decode tokens/s\n"
            "and the decode's weight-read GB/s against the measured device copy bandwidth;\n"
            "--profile adds the time of each op of one eager decode step and of the longest "
            "prefill.\n");
}

#if LODE_CUDA
/* Device-to-device copy bandwidth (bytes read + written per second), 1 GiB buffers. */
static double copy_bandwidth(void)
{
    const size_t n = (size_t)1 << 30;
    void *a = NULL, *b = NULL, *e0 = NULL, *e1 = NULL;
    double bw = 0;
    float ms[7];
    if (krn_cuda_malloc(&a, n) || krn_cuda_malloc(&b, n) || krn_cuda_event_create(&e0) ||
        krn_cuda_event_create(&e1))
        goto out;
    krn_cuda_memset(a, 1, n, NULL);
    for (int i = 0; i < 3; i++) krn_cuda_d2d(b, a, n, NULL);
    for (int r = 0; r < 7; r++) {
        krn_cuda_event_record(e0, NULL);
        for (int i = 0; i < 10; i++) krn_cuda_d2d(b, a, n, NULL);
        krn_cuda_event_record(e1, NULL);
        if (krn_cuda_event_ms(e0, e1, &ms[r])) goto out;
    }
    bw = 2.0 * n * 10 / (median(ms, 7) * 1e-3);
out:
    krn_cuda_free(a);
    krn_cuda_free(b);
    krn_cuda_event_destroy(e0);
    krn_cuda_event_destroy(e1);
    return bw;
}
#endif

static int bench(int argc, char **argv)
{
    const char *shape_name = "smollm2-135m", *type_name = "q4_1", *json = NULL, *backend = "cuda";
    int prefill[8] = {512, 2048}, np = 2, batch[8] = {1, 16}, nb = 2, steps = 128, reps = 5;
    int prompt = 128, profile = 0;
    const char *model_path = NULL, *gen_ids = NULL, *logits_out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return CLI_OK;
        }
        if (!strcmp(a, "--profile")) {
            profile = 1;
            continue;
        }
        if (!v) {
            usage(stderr);
            return CLI_USAGE;
        }
        i++;
        if (!strcmp(a, "--shape"))
            shape_name = v;
        else if (!strcmp(a, "--type"))
            type_name = v;
        else if (!strcmp(a, "--json"))
            json = v;
        else if (!strcmp(a, "--backend"))
            backend = v;
        else if (!strcmp(a, "--prefill"))
            np = parse_list(v, prefill, 8);
        else if (!strcmp(a, "--batch"))
            nb = parse_list(v, batch, 8);
        else if (!strcmp(a, "--steps"))
            steps = atoi(v);
        else if (!strcmp(a, "--reps"))
            reps = atoi(v);
        else if (!strcmp(a, "--prompt"))
            prompt = atoi(v);
        else if (!strcmp(a, "--model"))
            model_path = v;
        else if (!strcmp(a, "--generate"))
            gen_ids = v;
        else if (!strcmp(a, "--logits-out"))
            logits_out = v;
        else {
            usage(stderr);
            return CLI_USAGE;
        }
    }
    const eng_shape *sh = eng_shape_find(shape_name);
    int type = parse_type(type_name);
    if (model_path) sh = &eng_shapes[0]; /* sizes come from the file */
    if (!sh || type < 0 || np < 0 || nb < 0 || steps <= 0 || steps > 4096 || reps <= 0 ||
        reps > 100 || prompt <= 0 || prompt > 4096) {
        fprintf(stderr, "bench: bad shape, type or numbers\n");
        usage(stderr);
        return CLI_USAGE;
    }
    for (int i = 0; i < nb; i++)
        if (batch[i] > 16) {
            fprintf(stderr, "bench: batch at most 16\n");
            return CLI_USAGE;
        }
    if (strcmp(backend, "cuda")) {
        fprintf(stderr, "bench: only --backend cuda is measured here\n");
        return CLI_USAGE;
    }
#if !LODE_CUDA
    (void)json;
    (void)gen_ids;
    (void)logits_out;
    (void)profile;
    fprintf(stderr, "bench: %s\n", eng_cuda_errmsg(NULL));
    return CLI_FAILED;
#else
    if (!eng_cuda_available()) {
        fprintf(stderr, "bench: no CUDA GPU\n");
        return CLI_FAILED;
    }
    krn_cuda_devinfo di;
    if (krn_cuda_device_info(0, &di)) {
        fprintf(stderr, "bench: %s\n", krn_cuda_errmsg());
        return CLI_FAILED;
    }
    double copy_bw = copy_bandwidth();
    int maxp = prompt + 16, maxb = 1;
    for (int i = 0; i < np; i++) maxp = LODE_MAX(maxp, prefill[i]);
    for (int i = 0; i < nb; i++) maxb = LODE_MAX(maxb, batch[i]);
    int32_t gen[4096];
    int ngen = gen_ids ? parse_list(gen_ids, gen, 4096) : 0;
    if (gen_ids && ngen <= 0) {
        fprintf(stderr, "bench: --generate wants token ids a,b,c\n");
        return CLI_USAGE;
    }
    int max_ctx = LODE_MAX(maxp + 1, prompt + steps + 8) + 16 + ngen;
    eng_cuda_config c = {sh->n_layer,
                         sh->dim,
                         sh->n_head,
                         sh->n_kv_head,
                         sh->dim / sh->n_head,
                         sh->ff,
                         sh->vocab,
                         1e-5f,
                         sh->theta,
                         NULL,
                         sh->tied,
                         max_ctx,
                         maxb,
                         maxp,
                         0,
                         0,
                         0,
                         0,
                         0};
    eng_cuda_model *m = NULL;
    int rc = CLI_FAILED;
    FILE *jf = NULL;
    int32_t *toks = NULL, *out = NULL;
    float *times = NULL;
    lode_status st;
    if (model_path) {
        char err[512];
        if ((st = eng_cuda_model_from_gguf(model_path, max_ctx, maxb, maxp, 0, &m, err,
                                           sizeof err))) {
            fprintf(stderr, "bench: %s\n", err);
            goto done;
        }
        c = *eng_cuda_model_config(m);
    } else {
        if ((st = eng_cuda_model_create(&c, 0, &m))) {
            fprintf(stderr, "bench: %s\n", eng_cuda_errmsg(NULL));
            goto done;
        }
        if ((st = eng_cuda_model_random(m, type, 1))) {
            fprintf(stderr, "bench: %s\n", eng_cuda_errmsg(m));
            goto done;
        }
    }
    if (gen_ids) {
        /* greedy generation from the given ids; logits of every chosen token to a file */
        FILE *lf = logits_out ? fopen(logits_out, "wb") : NULL;
        float *lg = lode_malloc(sizeof(float) * (size_t)c.vocab);
        int32_t t = 0;
        if (!lg || (logits_out && !lf)) {
            fprintf(stderr, "bench: cannot write %s\n", logits_out ? logits_out : "");
            if (lf) fclose(lf);
            lode_free(lg);
            goto done;
        }
        st = eng_cuda_prefill(m, 0, gen, ngen, NULL, &t, lg);
        printf("GENERATED");
        for (int s2 = 0; !st && s2 < steps; s2++) {
            printf(" %d", t);
            if (lf && fwrite(lg, sizeof(float), (size_t)c.vocab, lf) != (size_t)c.vocab)
                st = LODE_ERR_IO;
            if (s2 + 1 < steps && !st && !(st = eng_cuda_decode(m, 1, NULL)))
                st = eng_cuda_read_tokens(m, 1, &t, lg);
        }
        printf("\n");
        if (lf) fclose(lf);
        lode_free(lg);
        if (st) {
            fprintf(stderr, "bench: %s\n", eng_cuda_errmsg(m));
            goto done;
        }
        rc = CLI_OK;
        goto done;
    }
    size_t wbytes = eng_cuda_model_weight_bytes(m);
    if (model_path) sh = NULL;
    const char *sname = sh ? sh->name : model_path;
    printf("bench: %s %s on %s (%d SMs): weights %.3f GB, device copy %.0f GB/s\n", sname,
           lode_dtype_name(type), di.name, di.sm_count, wbytes / 1e9, copy_bw / 1e9);
    if (json && !(jf = fopen(json, "a"))) {
        fprintf(stderr, "bench: cannot open %s\n", json);
        goto done;
    }
    toks = lode_malloc(sizeof(int32_t) * (size_t)maxp);
    out = lode_malloc(sizeof(int32_t) * (size_t)steps * maxb);
    times = lode_malloc(sizeof(float) * (size_t)reps);
    if (!toks || !out || !times) goto done;
    for (int i = 0; i < maxp; i++) toks[i] = (int32_t)((i * 7919u + 13u) % (unsigned)c.vocab);

    for (int pi = 0; pi < np; pi++) {
        int L = prefill[pi];
        for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
            eng_cuda_seq_reset(m, 0);
            int64_t t0 = lode_now_ns();
            if ((st = eng_cuda_prefill(m, 0, toks, L, NULL, NULL, NULL))) {
                fprintf(stderr, "bench: %s\n", eng_cuda_errmsg(m));
                goto done;
            }
            if (r >= 0) times[r] = (float)((lode_now_ns() - t0) / 1e6);
        }
        float ms = median(times, reps);
        printf("RESULT %s %s prefill%d tok_s %.1f ms %.2f\n", sname, lode_dtype_name(type), L,
               L / (ms * 1e-3), ms);
        if (profile && pi == np - 1) {
            char tag[64];
            snprintf(tag, sizeof tag, "%s/%s/prefill%d", sname, lode_dtype_name(type), L);
            eng_cuda_seq_reset(m, 0);
            if ((st = eng_cuda_profile_prefill(m, 0, toks, L, print_prof, tag)))
                fprintf(stderr, "bench: profile: %s\n", eng_cuda_errmsg(m));
        }
        if (jf)
            fprintf(
                jf,
                "{\"gpu\":\"%s\",\"shape\":\"%s\",\"type\":\"%s\",\"metric\":\"prefill\",\"n\":%d,"
                "\"tok_s\":%.1f,\"ms\":%.3f}\n",
                di.name, sname, lode_dtype_name(type), L, L / (ms * 1e-3), ms);
    }
    for (int bi = 0; bi < nb; bi++) {
        int B = batch[bi];
        for (int r = -1; r < reps; r++) {
            for (int b = 0; b < B; b++) {
                eng_cuda_seq_reset(m, b);
                if ((st = eng_cuda_prefill(m, b, toks + b, prompt, NULL, NULL, NULL))) {
                    fprintf(stderr, "bench: %s\n", eng_cuda_errmsg(m));
                    goto done;
                }
            }
            if (r < 0) { /* warm-up: captures the graph */
                for (int s = 0; s < 4; s++)
                    if ((st = eng_cuda_decode(m, B, NULL))) break;
                if (!st) st = eng_cuda_sync(m);
                if (st) {
                    fprintf(stderr, "bench: %s\n", eng_cuda_errmsg(m));
                    goto done;
                }
                continue;
            }
            eng_cuda_mark(m);
            for (int s = 0; s < steps && !st; s++) st = eng_cuda_decode(m, B, NULL);
            eng_cuda_mark(m);
            if (st || (st = eng_cuda_elapsed_ms(m, &times[r]))) {
                fprintf(stderr, "bench: %s\n", eng_cuda_errmsg(m));
                goto done;
            }
            if ((st = eng_cuda_read_tokens(m, steps, out, NULL))) {
                fprintf(stderr, "bench: %s\n", eng_cuda_errmsg(m));
                goto done;
            }
        }
        if (profile) {
            char tag[64];
            snprintf(tag, sizeof tag, "%s/%s/b%d", sname, lode_dtype_name(type), B);
            if ((st = eng_cuda_profile(m, B, print_prof, tag)))
                fprintf(stderr, "bench: profile: %s\n", eng_cuda_errmsg(m));
        }
        float ms = median(times, reps);
        double step_s = ms * 1e-3 / steps, gbs = wbytes / step_s / 1e9;
        printf("RESULT %s %s decode_b%d tok_s %.1f ms_step %.4f weight_GBps %.0f copy_frac %.3f "
               "(first tokens %d %d %d)\n",
               sname, lode_dtype_name(type), B, B / step_s, step_s * 1e3, gbs, gbs * 1e9 / copy_bw,
               out[0], out[B], out[2 * B]);
        if (jf)
            fprintf(jf,
                    "{\"gpu\":\"%s\",\"shape\":\"%s\",\"type\":\"%s\",\"metric\":\"decode\","
                    "\"batch\":%d,"
                    "\"tok_s\":%.1f,\"ms_step\":%.4f,\"weight_GBps\":%.1f,\"copy_GBps\":%.1f,"
                    "\"copy_frac\":%.4f,\"weights_GB\":%.4f}\n",
                    di.name, sname, lode_dtype_name(type), B, B / step_s, step_s * 1e3, gbs,
                    copy_bw / 1e9, gbs * 1e9 / copy_bw, wbytes / 1e9);
    }
    rc = CLI_OK;
done:
    if (jf) fclose(jf);
    lode_free(toks);
    lode_free(out);
    lode_free(times);
    eng_cuda_model_destroy(m);
    return rc;
#endif
}

LODE_CLI_COMMAND(bench, "bench", "engine speed on a model shape with random weights (GPU)", bench)
