/*
 * bench_engine.c: lode's engine on the CPU, measured the way bench_engine_llamacpp.py
 * measures llama.cpp: a prompt of N token ids evaluated in one step (prefill), the first
 * token chosen by argmax (time to first token), then D single-token steps with argmax
 * (decode). Best of R repetitions; peak RSS of the process at the end.
 *
 *   bench_engine MODEL THREADS IDS_FILE [DECODE=128] [REPS=3]
 *
 * IDS_FILE holds the prompt's token ids, whitespace-separated. Prints one line:
 *   lode THREADS PREFILL_TOK_S DECODE_TOK_S TTFT_MS PEAK_RSS_MB
 *
 *   bench_engine --prompt-ids MODEL N
 *
 * prints the first N token ids of a fixed English text (the benchmark's prompt).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/lode.h"
#include "engine/backend.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "kernels/cpu/kernels.h"

static const char text[] =
    "The river wound through the valley, past farms and orchards, old stone bridges and "
    "the mills that once ground the grain of three villages. In spring the water rose with "
    "snow from the mountains; in late summer it slowed to a clear, shallow stream where "
    "children caught small fish and herons stood motionless in the reeds. Travellers who "
    "followed its banks would reach the market town by evening, where merchants sold wool, "
    "cheese, copper pots and books printed in the capital. ";

static int prompt_ids(const char *model, int n)
{
    char err[512];
    eng_gguf *g = NULL;
    eng_vocab *v = NULL;
    if (eng_gguf_open(model, &g, err, sizeof err) || eng_vocab_from_gguf(g, &v, err, sizeof err)) {
        fprintf(stderr, "bench_engine: %s\n", err);
        return 1;
    }
    lode_buf b = LODE_BUF_INIT;
    for (int i = 0; i < 1 + n / 64; i++) lode_buf_puts(&b, text);
    eng_token *ids = NULL;
    size_t k = 0;
    if (eng_tok_encode_alloc(v, b.data, b.len, 0, &ids, &k) || (int)k < n) {
        fprintf(stderr, "bench_engine: cannot make a prompt of %d tokens\n", n);
        return 1;
    }
    for (int i = 0; i < n; i++) printf("%d%c", ids[i], i + 1 < n ? ' ' : '\n');
    lode_free(ids);
    lode_buf_free(&b);
    eng_vocab_destroy(v);
    eng_gguf_close(g);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--prompt-ids")) return prompt_ids(argv[2], atoi(argv[3]));
    if (argc < 4) {
        fprintf(stderr, "usage: bench_engine MODEL THREADS IDS_FILE [DECODE] [REPS]\n");
        return 2;
    }
    int threads = atoi(argv[2]);
    int n_decode = argc > 4 ? atoi(argv[4]) : 128;
    int reps = argc > 5 ? atoi(argv[5]) : 3;
    static int32_t ids[4096];
    int n = 0;
    FILE *f = fopen(argv[3], "r");
    if (!f) {
        perror(argv[3]);
        return 1;
    }
    while (n < 4096 && fscanf(f, "%d", &ids[n]) == 1) n++;
    fclose(f);
    char err[512];
    eng_gguf *g = NULL;
    eng_backend *be = NULL;
    eng_llama *m = NULL;
    eng_runtime *rt = NULL;
    eng_backend_opts bo = {threads, 0};
    int n_ctx = n + n_decode + 16;
    int n_blocks = (n_ctx + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK;
    if (eng_gguf_open(argv[1], &g, err, sizeof err) ||
        eng_backend_create("cpu", &bo, &be, err, sizeof err) ||
        eng_llama_load(g, be, &m, err, sizeof err) ||
        eng_runtime_create(m, n, 1, n_blocks, &rt, err, sizeof err)) {
        fprintf(stderr, "bench_engine: %s\n", err);
        return 1;
    }
    int32_t *table = lode_malloc((size_t)n_blocks * sizeof *table);
    int32_t *pos = lode_malloc((size_t)n_ctx * sizeof *pos);
    float *logits = lode_malloc((size_t)m->hp.n_vocab * sizeof *logits);
    for (int i = 0; i < n_blocks; i++) table[i] = i;
    for (int i = 0; i < n_ctx; i++) pos[i] = i;
    double best_prefill = 1e30, best_decode = 1e30, best_ttft = 1e30;
    for (int r = 0; r < reps; r++) {
        int32_t last = n - 1, zero = 0;
        eng_batch_seq s = {0, n, 0, table, n_blocks, 0};
        eng_batch b = {n, ids, pos, 1, &s, 1, &last};
        int64_t t0 = lode_now_ns();
        if (eng_runtime_forward(rt, &b, logits, err, sizeof err)) {
            fprintf(stderr, "bench_engine: %s\n", err);
            return 1;
        }
        int64_t t1 = lode_now_ns();
        int32_t tok = (int32_t)krn_argmax(logits, (size_t)m->hp.n_vocab);
        int64_t t2 = lode_now_ns();
        for (int i = 0; i < n_decode; i++) {
            eng_batch_seq s1 = {0, 1, n + i, table, n_blocks, 0};
            eng_batch b1 = {1, &tok, &pos[n + i], 1, &s1, 1, &zero};
            if (eng_runtime_forward(rt, &b1, logits, err, sizeof err)) {
                fprintf(stderr, "bench_engine: %s\n", err);
                return 1;
            }
            tok = (int32_t)krn_argmax(logits, (size_t)m->hp.n_vocab);
        }
        int64_t t3 = lode_now_ns();
        if ((t1 - t0) / 1e9 < best_prefill) best_prefill = (double)(t1 - t0) / 1e9;
        if ((t2 - t0) / 1e6 < best_ttft) best_ttft = (double)(t2 - t0) / 1e6;
        if ((t3 - t2) / 1e9 < best_decode) best_decode = (double)(t3 - t2) / 1e9;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("lode %d %.1f %.1f %.1f %.1f\n", eng_backend_cpu_threads(be), n / best_prefill,
           n_decode / best_decode, best_ttft, ru.ru_maxrss / 1024.0);
    lode_free(table);
    lode_free(pos);
    lode_free(logits);
    eng_runtime_destroy(rt);
    eng_llama_free(m);
    eng_backend_destroy(be);
    return 0;
}
