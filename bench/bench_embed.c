/*
 * bench_embed.c: embedding throughput of lode's BERT encoder (engine/bert.h) on a file of
 * chunks (one a line), at the given thread counts, and the GEMM behind it against the
 * row-dot krn_matmul on the encoder's largest projection (f32 packed, and 16-bit VNNI where
 * the CPU has it). Prints markdown table rows;
 * bench/bench_retrieval.sh runs it beside sentence-transformers on the same chunks.
 *
 *   bench_embed MODEL_DIR CHUNKS_FILE THREADS...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/lode.h"
#include "common/threadpool.h"
#include "engine/bert.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/kernels.h"

#define MAX_CHUNKS 100000

/* CPU seconds used by every thread of the process so far. */
static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Best of 2 runs: chunks per wall second; *cpu_rate gets chunks per CPU second of that
 * run (the fair figure on a shared machine: it does not count time other processes had). */
static double embed_rate(const char *model, int threads, char **texts, size_t n, double *tok_s,
                         double *cpu_rate)
{
    char err[256];
    eng_bert *m = NULL;
    eng_bert_opts o = {threads, 0, 0};
    if (eng_bert_load(model, &o, &m, err, sizeof err) != LODE_OK) {
        fprintf(stderr, "bench_embed: %s\n", err);
        exit(1);
    }
    float *out = malloc(n * (size_t)eng_bert_dim(m) * sizeof *out);
    size_t warm = n < 16 ? n : 16;
    eng_bert_embed(m, (const char *const *)texts, NULL, warm, out); /* warm-up */
    double best = 0;
    *cpu_rate = 0;
    for (int rep = 0; rep < 2; rep++) {
        double t0 = lode_now_s(), c0 = cpu_s();
        if (eng_bert_embed(m, (const char *const *)texts, NULL, n, out) != LODE_OK) {
            fprintf(stderr, "bench_embed: %s\n", eng_bert_errmsg(m));
            exit(1);
        }
        double r = (double)n / (lode_now_s() - t0), rc = (double)n / (cpu_s() - c0);
        if (r > best) best = r;
        if (rc > *cpu_rate) *cpu_rate = rc;
    }
    long toks = 0;
    int32_t ids[1024];
    for (size_t i = 0; i < n; i++) {
        int k = 0;
        eng_bert_tokenize(m, texts[i], strlen(texts[i]), ids, 1024, &k);
        toks += k;
    }
    *tok_s = best * (double)toks / (double)n;
    free(out);
    eng_bert_destroy(m);
    return best;
}

static void gemm_compare(int threads)
{
    const size_t M = 2048, N = 1536, K = 384;
    float *W = malloc(N * K * sizeof *W), *X = malloc(M * K * sizeof *X);
    float *Y = malloc(M * N * sizeof *Y);
    for (size_t i = 0; i < N * K; i++) W[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    for (size_t i = 0; i < M * K; i++) X[i] = (float)((i * 40503u) % 1000) / 1000.0f - 0.5f;
    lode_pool *pool = NULL;
    lode_pool_create(threads, &pool);
    krn_packed P;
    krn_pack(W, N, K, -1, &P);
    double flop = 2.0 * (double)M * (double)N * (double)K, best_p = 1e9, best_d = 1e9;
    for (int r = 0; r < 3; r++) {
        double t0 = lode_now_s();
        krn_gemm_packed(pool, &P, X, K, M, Y, N, NULL);
        double t1 = lode_now_s();
        krn_matmul(pool, LODE_F32, W, N, K, X, K, M, Y, N, NULL, 0);
        double t2 = lode_now_s();
        if (t1 - t0 < best_p) best_p = t1 - t0;
        if (t2 - t1 < best_d) best_d = t2 - t1;
    }
    printf(
        "| f32 %zux%zux%zu, %d thread%s | packed GEMM (%s) %.1f GFLOP/s | krn_matmul %.1f GFLOP/s "
        "| %.2fx |\n",
        M, N, K, threads, threads > 1 ? "s" : "",
        P.isa == 2 ? "avx512"
        : P.isa    ? "avx2"
                   : "C",
        flop / best_p / 1e9, flop / best_d / 1e9, best_d / best_p);
    krn_packed_q16 Q;
    if (krn_pack_q16(W, N, K, &Q) == LODE_OK) {
        void *scratch = lode_aligned_alloc(64, krn_gemm_q16_scratch(M, K));
        double best_q = 1e9;
        for (int r = 0; r < 3 && scratch; r++) {
            double t0 = lode_now_s();
            krn_gemm_q16(pool, &Q, X, K, M, Y, N, NULL, scratch);
            if (lode_now_s() - t0 < best_q) best_q = lode_now_s() - t0;
        }
        printf("| q16 %zux%zux%zu, %d thread%s | 16-bit VNNI GEMM %.1f GOP/s | krn_matmul %.1f "
               "GFLOP/s | %.2fx |\n",
               M, N, K, threads, threads > 1 ? "s" : "", flop / best_q / 1e9, flop / best_d / 1e9,
               best_d / best_q);
        lode_aligned_free(scratch);
        krn_packed_q16_free(&Q);
    }
    krn_packed_free(&P);
    lode_pool_destroy(pool);
    free(W);
    free(X);
    free(Y);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_embed MODEL_DIR CHUNKS_FILE THREADS...\n");
        return 2;
    }
    FILE *f = fopen(argv[2], "r");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    static char line[1 << 16];
    char **texts = malloc(MAX_CHUNKS * sizeof *texts);
    size_t n = 0;
    while (n < MAX_CHUNKS && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        texts[n++] = strdup(line);
    }
    fclose(f);
    for (int a = 3; a < argc; a++) {
        int th = atoi(argv[a]);
        double tok_s = 0, cpu_rate = 0, r = embed_rate(argv[1], th, texts, n, &tok_s, &cpu_rate);
        printf("| lode | %d | %.1f | %.1f | %.0f |\n", th, r, cpu_rate, tok_s);
    }
    for (int a = 3; a < argc; a++) gemm_compare(atoi(argv[a]));
    for (size_t i = 0; i < n; i++) free(texts[i]);
    free(texts);
    return 0;
}
