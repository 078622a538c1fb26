/* test_cuda_synth.c: `lode synth` writes GGUF files the engine reads back: metadata, tensor
 * shapes and types, a tokenizer that round-trips text, and (--hf) safetensors holding the
 * same weights with Q/K rows in HF's order; and on a GPU, the fused CUDA decoder
 * (eng_cuda_forward) against the CPU backend's forward pass on the same synthetic GGUF, and
 * the engine's serving scheduler on the GPU (eng_cuda_step): a sequence alone against the same
 * sequence batched with 31 others, with and without prefix-cache hits and preemption. Runs the lode
 * binary of the build
 * ($LODE_BUILD).
 * lode-test: engine */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/lode.h"
#include "engine/backend.h"
#include "engine/backend_cuda.h"
#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "kernels/quant.h"

static char dir[64];

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/lode-synth-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int synth(const char *args)
{
    const char *b = getenv("LODE_BUILD");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s/lode synth %s > /dev/null", b && *b ? b : "build", args);
    return system(cmd);
}

static void test_gguf_and_tokenizer(void **state)
{
    char path[128], args[256], err[256];
    snprintf(path, sizeof path, "%s/t.gguf", dir);
    snprintf(args, sizeof args, "--shape tiny --type q8_0 --seed 3 -o %s", path);
    assert_int_equal(synth(args), 0);
    eng_gguf *g = NULL;
    assert_int_equal(eng_gguf_open(path, &g, err, sizeof err), LODE_OK);
    const char *arch = NULL;
    uint32_t n = 0;
    assert_int_equal(eng_gguf_get_str(g, "general.architecture", &arch, NULL), LODE_OK);
    assert_string_equal(arch, "llama");
    assert_int_equal(eng_gguf_get_u32(g, "llama.block_count", &n), LODE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(eng_gguf_n_tensors(g), 3 + 2 * 9);
    const eng_gguf_tensor *t = eng_gguf_find_tensor(g, "blk.1.ffn_down.weight");
    assert_non_null(t);
    assert_int_equal(t->type, LODE_Q8_0);
    assert_int_equal(t->ne[0], 256);
    assert_int_equal(t->ne[1], 64);
    assert_int_equal(t->nbytes, 64 * lode_dtype_row_bytes(LODE_Q8_0, 256));
    t = eng_gguf_find_tensor(g, "blk.0.attn_norm.weight");
    assert_non_null(t);
    assert_int_equal(t->type, LODE_F32);
    float f = ((const float *)t->data)[5];
    assert_true(f > 0.85f && f < 1.15f);

    eng_vocab *v = NULL;
    assert_int_equal(eng_vocab_from_gguf(g, &v, err, sizeof err), LODE_OK);
    assert_int_equal(eng_vocab_n_tokens(v), 512);
    assert_int_equal(eng_vocab_eot(v), 511);
    const char *text = "Hello, world! <|im_start|>user\n\xc3\xa9t\xc3\xa9 123";
    eng_token *ids = NULL;
    size_t nid = 0;
    assert_int_equal(eng_tok_encode_alloc(v, text, strlen(text), ENG_TOK_PARSE_SPECIAL, &ids, &nid),
                     LODE_OK);
    assert_true(nid > 3);
    int saw_special = 0;
    for (size_t i = 0; i < nid; i++) saw_special |= ids[i] == 510;
    assert_true(saw_special);
    lode_buf out = LODE_BUF_INIT;
    assert_int_equal(eng_tok_decode(v, ids, nid, ENG_TOK_RENDER_SPECIAL, &out), LODE_OK);
    assert_string_equal(out.data, text);
    lode_buf_free(&out);
    lode_free(ids);
    eng_vocab_destroy(v);
    eng_gguf_close(g);
}

/* safetensors: the entry `name`'s data (bf16 rows) from the file, malloc'd */
static uint16_t *st_tensor(const char *path, const char *name, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint64_t hl = 0;
    if (!f || fread(&hl, 8, 1, f) != 1) return NULL;
    char *h = calloc(1, hl + 1);
    if (fread(h, 1, hl, f) != hl) return NULL;
    char key[128];
    snprintf(key, sizeof key, "\"%s\"", name);
    char *p = strstr(h, key);
    unsigned long long b = 0, e = 0;
    if (!p || !(p = strstr(p, "data_offsets")) ||
        sscanf(p, "data_offsets\":[%llu,%llu]", &b, &e) != 2)
        return NULL;
    uint16_t *d = malloc(e - b);
    fseek(f, (long)(8 + hl + b), SEEK_SET);
    if (fread(d, 1, e - b, f) != e - b) return NULL;
    fclose(f);
    free(h);
    *n = (e - b) / 2;
    return d;
}

static void test_hf_export(void **state)
{
    char path[128], hf[128], st[160], args[320], err[256];
    snprintf(path, sizeof path, "%s/b.gguf", dir);
    snprintf(hf, sizeof hf, "%s/hf", dir);
    snprintf(args, sizeof args, "--shape tiny --type bf16 --seed 5 -o %s --hf %s", path, hf);
    assert_int_equal(synth(args), 0);
    snprintf(st, sizeof st, "%s/model.safetensors", hf);
    eng_gguf *g = NULL;
    assert_int_equal(eng_gguf_open(path, &g, err, sizeof err), LODE_OK);
    const int hd = 16, D = 64;
    const char *pairs[][2] = {{"blk.1.attn_q.weight", "model.layers.1.self_attn.q_proj.weight"},
                              {"blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight"},
                              {"blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight"},
                              {"blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"}};
    for (size_t k = 0; k < 4; k++) {
        const eng_gguf_tensor *t = eng_gguf_find_tensor(g, pairs[k][0]);
        assert_non_null(t);
        size_t n = 0;
        uint16_t *d = st_tensor(st, pairs[k][1], &n);
        assert_non_null(d);
        assert_int_equal(n, t->n_elems);
        const uint16_t *gd = t->data;
        int permuted = k < 2;
        int64_t cols = (int64_t)t->ne[0], rows = (int64_t)t->ne[1];
        for (int64_t r = 0; r < rows; r++) {
            int64_t gr = r;
            if (permuted) {
                int64_t h = r / hd, w = r % hd, j = w / (hd / 2), i = w % (hd / 2);
                gr = h * hd + 2 * i + j;
            }
            assert_memory_equal(d + r * cols, gd + gr * cols, (size_t)cols * 2);
        }
        if (permuted) assert_true(memcmp(d + cols, gd + cols, (size_t)cols * 2) != 0);
        free(d);
    }
    (void)D;
    eng_gguf_close(g);
}

static double rel_l2f(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (a[i] != a[i]) return 1e30;
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

/* The gap between the largest and second largest of v, relative to the largest |v|. */
static double top_gap(const float *v, int n)
{
    float a = -1e30f, b = -1e30f, m = 0.f;
    for (int i = 0; i < n; i++) {
        if (v[i] > a)
            b = a, a = v[i];
        else if (v[i] > b)
            b = v[i];
        m = fabsf(v[i]) > m ? fabsf(v[i]) : m;
    }
    return m > 0 ? (a - b) / m : 0;
}

/* CUDA decoder against the CPU backend on one synthetic file: a 24-token prompt (logits of
 * rows 20..23, which takes the CUDA path's row-by-row split), then 16 decode steps fed the
 * CPU's greedy choice. Bounds: relative L2 error of each logits row, and the same argmax
 * wherever the CPU's top two are apart by more than the error. */
static void cuda_vs_cpu(const char *type, double bound, int persist)
{
    /* the batch-1 decode of these short sequences takes krn_cuda_attn_o where the device has
     * clusters (test_cuda asserts that on Hopper), never with LODE_CUDA_ATTN_O=0 */
    const char *aoe = getenv("LODE_CUDA_ATTN_O");
    const int ao_off = aoe && !strcmp(aoe, "0");
    char path[128], args[256], err[256];
    snprintf(path, sizeof path, "%s/c_%s.gguf", dir, type);
    snprintf(args, sizeof args, "--shape small --type %s --seed 11 -o %s", type, path);
    assert_int_equal(synth(args), 0);
    eng_gguf *g = NULL;
    assert_int_equal(eng_gguf_open(path, &g, err, sizeof err), LODE_OK);
    assert_true(eng_cuda_gguf_supported(g));
    eng_backend *be = NULL;
    eng_backend_opts bo = {1, 0};
    assert_int_equal(eng_backend_create("cpu", &bo, &be, err, sizeof err), LODE_OK);
    eng_llama *llm = NULL;
    if (eng_llama_load(g, be, &llm, err, sizeof err)) fail_msg("%s", err);
    const int V = llm->hp.n_vocab, CTX = 128, NB = CTX / ENG_KV_BLOCK, NP = 24, NO = 4, ND = 16;
    eng_runtime *rt = NULL;
    assert_int_equal(eng_runtime_create(llm, 64, NO, NB, &rt, err, sizeof err), LODE_OK);
    eng_cuda_model *gm = NULL;
    if (eng_cuda_model_from_gguf(path, CTX, 1, 64, 0, &gm, err, sizeof err)) fail_msg("%s", err);
    /* LODE_CUDA_PERSIST=1 asks for the persistent layers kernel at batch 1: it takes the
     * quantized layouts with one scale array (q8_0, q4_0, q4_1; not bf16, nor q6_K, whose f16
     * K rows are a separate matrix); the cluster layer kernel (2) takes the 4-bit layouts */
    const int q4 = !strcmp(type, "q4_0") || !strcmp(type, "q4_1");
    if (persist == 2)
        assert_int_equal(eng_cuda_model_persistent(gm), q4 ? 2 : 0);
    else
        assert_int_equal(eng_cuda_model_persistent(gm), q4 || !strcmp(type, "q8_0") ? persist : 0);

    int32_t bt[8], tok[64], pos[64], outr[4];
    for (int i = 0; i < NB; i++) bt[i] = i;
    for (int i = 0; i < NP; i++) tok[i] = (int32_t)((i * 37 + 5) % V), pos[i] = i;
    for (int i = 0; i < NO; i++) outr[i] = NP - NO + i;
    float *lc = malloc((size_t)NO * V * 4), *lg = malloc((size_t)NO * V * 4);
    eng_batch_seq sq = {0, NP, 0, bt, NB, NP};
    eng_batch b = {NP, tok, pos, 1, &sq, NO, outr};
    assert_int_equal(eng_runtime_forward(rt, &b, lc, err, sizeof err), LODE_OK);
    for (size_t i = 0; i < (size_t)NO * V; i++) lg[i] = NAN;
    if (eng_cuda_forward(gm, 0, tok, NP, 0, NO, NP - NO, lg))
        fail_msg("cuda forward: %s", eng_cuda_errmsg(gm));
    double worst = 0;
    int same = 0, steps = 0, close_calls = 0;
    for (int r = 0; r < NO; r++) {
        double e = rel_l2f(lg + (size_t)r * V, lc + (size_t)r * V, (size_t)V);
        worst = e > worst ? e : worst;
        int a = argmax(lc + (size_t)r * V, V), c = argmax(lg + (size_t)r * V, V);
        same += a == c;
        close_calls += a != c && top_gap(lc + (size_t)r * V, V) < 2 * e;
        steps++;
    }
    int32_t next = argmax(lc + (size_t)(NO - 1) * V, V);
    for (int s = 0; s < ND; s++) {
        int32_t p = NP + s, o = 0;
        eng_batch_seq sd = {0, 1, p, bt, NB, NP};
        eng_batch bd = {1, &next, &p, 1, &sd, 1, &o};
        assert_int_equal(eng_runtime_forward(rt, &bd, lc, err, sizeof err), LODE_OK);
        for (int i = 0; i < V; i++) lg[i] = NAN;
        if (eng_cuda_forward(gm, 0, &next, 1, p, 1, 0, lg))
            fail_msg("cuda decode: %s", eng_cuda_errmsg(gm));
        double e = rel_l2f(lg, lc, (size_t)V);
        worst = e > worst ? e : worst;
        int a = argmax(lc, V), c = argmax(lg, V);
        same += a == c;
        close_calls += a != c && top_gap(lc, V) < 2 * e;
        steps++;
        next = a;
    }
    const int kpath = eng_cuda_model_persistent(gm);
    if (ao_off) assert_int_equal(eng_cuda_model_attn_o(gm), 0);
    const int ao = kpath == 0 && eng_cuda_model_attn_o(gm);
    const char *kv = getenv("LODE_CUDA_CLUSTER_KVCAP");
    printf("cuda vs cpu backend, %s%s%s: max relative L2 error of logits %.2e (bound %.0e), "
           "argmax equal on %d/%d rows (%d differing rows within the error)\n",
           type,
           kpath == 1   ? " (persistent layers kernel)"
           : kpath == 2 ? " (cluster layer kernel"
           : ao && getenv("LODE_CUDA_ATTN_O_MAX")
               ? " (attention + o kernel to LODE_CUDA_ATTN_O_MAX tokens, split kernels after)"
           : ao ? " (attention + o kernel)"
                : "",
           kpath == 2
               ? (kv ? ", keys and values of one cache block a block in shared memory)" : ")")
               : "",
           worst, bound, same, steps, close_calls);
    assert_true(worst < bound);
    assert_int_equal(same + close_calls, steps);
    free(lc);
    free(lg);
    eng_cuda_model_destroy(gm);
    eng_runtime_destroy(rt);
    eng_llama_free(llm);
    eng_backend_destroy(be);
}

static void test_cuda_vs_cpu_backend(void **state)
{
    if (!eng_cuda_available()) {
        printf("no CUDA GPU (or a build without CUDA): CUDA against CPU backend skipped\n");
        skip();
    }
    /* the CPU backend quantizes activations to 8 bits for quantized weights, the CUDA GEMV
     * too (per 32 values), and both accumulate in f32; float weights differ by summation
     * order and the f16 KV cache of the CUDA side */
    setenv("LODE_CUDA_CLUSTER", "0", 1);
    /* the five kernels a layer with the split attention and the o GEMV at every length */
    setenv("LODE_CUDA_ATTN_O", "0", 1);
    setenv("LODE_CUDA_PERSIST", "0", 1);
    cuda_vs_cpu("bf16", 1e-2, 0);
    cuda_vs_cpu("q8_0", 3e-2, 0);
    cuda_vs_cpu("q4_0", 3e-2, 0);
    cuda_vs_cpu("q4_1", 3e-2, 0);
    cuda_vs_cpu("q6_K", 3e-2, 0);
    unsetenv("LODE_CUDA_ATTN_O");
    for (int persist = 0; persist < 2; persist++) {
        setenv("LODE_CUDA_PERSIST", persist ? "1" : "0", 1);
        cuda_vs_cpu("bf16", 1e-2, persist);
        cuda_vs_cpu("q8_0", 3e-2, persist);
        cuda_vs_cpu("q4_0", 3e-2, persist);
        cuda_vs_cpu("q4_1", 3e-2, persist);
        cuda_vs_cpu("q6_K", 3e-2, persist);
    }
    /* the cluster layer kernel (LODE_CUDA_CLUSTER=1, where it fits), with the cached keys and
     * values in shared memory and, past one cache block a block, read from global memory */
    setenv("LODE_CUDA_PERSIST", "0", 1);
    setenv("LODE_CUDA_CLUSTER", "1", 1);
    cuda_vs_cpu("q4_0", 3e-2, 2);
    cuda_vs_cpu("q4_1", 3e-2, 2);
    cuda_vs_cpu("q8_0", 3e-2, 2);
    setenv("LODE_CUDA_CLUSTER_KVCAP", "1", 1);
    cuda_vs_cpu("q4_1", 3e-2, 2);
    unsetenv("LODE_CUDA_CLUSTER_KVCAP");
    /* the five kernels again, with the attention + o kernel only up to 30 tokens: the decode
     * steps cross from its graph to the split kernels' at token 30 of 40 */
    setenv("LODE_CUDA_CLUSTER", "0", 1);
    setenv("LODE_CUDA_ATTN_O_MAX", "30", 1);
    cuda_vs_cpu("bf16", 1e-2, 0);
    cuda_vs_cpu("q4_0", 3e-2, 0);
    unsetenv("LODE_CUDA_ATTN_O_MAX");
    unsetenv("LODE_CUDA_CLUSTER");
    unsetenv("LODE_CUDA_PERSIST");
}

/* ---- the serving scheduler on the GPU -------------------------------------------------- */

#define SV_N   32 /* sequences */
#define SV_GEN 24 /* greedy tokens each */

typedef struct sv_out {
    int32_t tok[SV_GEN];
    float lp[SV_GEN];
    int n;
} sv_out;

typedef struct sv_job {
    eng_model *m;
    const int32_t *prompt;
    int n_prompt;
    sv_out *out;
    lode_status st;
} sv_job;

static void sv_prompt(int i, int32_t *p, int *n)
{
    /* 32 lengths from 9 to 226; the first 16 share a 48-token head (three KV blocks) */
    *n = 9 + 7 * i;
    for (int k = 0; k < *n; k++) {
        int head = i < 16 && k < 48;
        p[k] = (int32_t)(head ? (k * 131 + 7) % 500 : (i * 977 + k * 61 + 3) % 500);
    }
}

static void *sv_run(void *arg)
{
    sv_job *j = arg;
    eng_request r;
    memset(&r, 0, sizeof r);
    r.prompt = j->prompt;
    r.n_prompt = j->n_prompt;
    eng_sampling_default(&r.sampling);
    r.max_tokens = SV_GEN;
    r.want_logprobs = 1;
    eng_output o;
    memset(&o, 0, sizeof o);
    j->st = eng_generate(j->m, &r, &o);
    j->out->n = o.n_tokens < SV_GEN ? o.n_tokens : SV_GEN;
    for (int i = 0; i < j->out->n; i++) {
        j->out->tok[i] = o.tokens[i];
        j->out->lp[i] = o.logprobs[i];
    }
    eng_output_free(&o);
    return NULL;
}

/* Runs the SV_N requests one at a time (batched == 0) or all at once. */
static void sv_all(eng_model *m, int batched, sv_out *out)
{
    static int32_t prompts[SV_N][256];
    sv_job jobs[SV_N];
    pthread_t th[SV_N];
    for (int i = 0; i < SV_N; i++) {
        int n;
        sv_prompt(i, prompts[i], &n);
        jobs[i] = (sv_job){m, prompts[i], n, &out[i], LODE_OK};
        if (!batched)
            sv_run(&jobs[i]);
        else
            assert_int_equal(pthread_create(&th[i], NULL, sv_run, &jobs[i]), 0);
    }
    for (int i = 0; i < SV_N; i++) {
        if (batched) pthread_join(th[i], NULL);
        assert_int_equal(jobs[i].st, LODE_OK);
    }
}

/* Tolerance: a batched step runs its matrices on tensor cores with bf16 activations, a
 * sequence alone decodes on the f32-activation GEMVs, so logits differ by about 1e-2
 * relative. Greedy tokens must agree until a step whose two choices were a near tie: where
 * the alone and batched runs first pick different tokens, their chosen tokens' logprobs
 * differ by at most SV_TIE nats. Positions after such a divergence are not compared (the
 * contexts differ). Top-1 agreement (positions equal before the first divergence, over all
 * positions) is reported and must be at least 0.75. */
#define SV_TIE 0.15

static void sv_compare(const char *what, const sv_out *a, const sv_out *b)
{
    int same = 0, total = 0, div = 0;
    double worst_gap = 0, worst_lp = 0;
    for (int i = 0; i < SV_N; i++) {
        total += a[i].n;
        int k = 0;
        while (k < a[i].n && k < b[i].n && a[i].tok[k] == b[i].tok[k]) {
            double d = fabs(a[i].lp[k] - b[i].lp[k]);
            worst_lp = d > worst_lp ? d : worst_lp;
            k++;
        }
        same += k;
        if (k < a[i].n) {
            div++;
            double gap = k < b[i].n ? fabs(a[i].lp[k] - b[i].lp[k]) : 1e9;
            worst_gap = gap > worst_gap ? gap : worst_gap;
            if (gap > SV_TIE)
                printf("  sequence %d: diverges at token %d (%d vs %d) with logprobs %.4f vs "
                       "%.4f: not a near tie\n",
                       i, k, a[i].tok[k], k < b[i].n ? b[i].tok[k] : -1, a[i].lp[k],
                       k < b[i].n ? b[i].lp[k] : 0.f);
        }
    }
    printf("serving on the GPU, %s: top-1 agreement with each sequence alone %d/%d (%.3f); %d "
           "of %d sequences diverge, at near ties within %.3f nats (tolerance %.2f); max "
           "logprob difference of agreeing tokens %.2e\n",
           what, same, total, (double)same / total, div, SV_N, worst_gap, SV_TIE, worst_lp);
    assert_true(worst_gap <= SV_TIE);
    assert_true(same >= 0.75 * total);
}

static void test_cuda_serving(void **state)
{
    if (!eng_cuda_available()) {
        printf("no CUDA GPU (or a build without CUDA): GPU serving (batched against alone) "
               "skipped\n");
        skip();
    }
    char path[128], args[256], err[256];
    snprintf(path, sizeof path, "%s/serve.gguf", dir);
    snprintf(args, sizeof args, "--shape small --type bf16 --seed 5 -o %s", path);
    assert_int_equal(synth(args), 0);
    static sv_out alone[SV_N], bat[SV_N];
    eng_model_opts o;
    memset(&o, 0, sizeof o);
    o.backend = "cuda";
    o.n_ctx = 512;
    o.no_prefix_cache = 1;
    eng_model *m = NULL;
    if (eng_model_load(path, &o, &m, err, sizeof err)) fail_msg("%s", err);
    eng_model_info info;
    eng_model_info_get(m, &info);
    assert_string_equal(info.backend, "cuda");
    eng_serving_stats ss;
    eng_serving_stats_get(m, &ss);
    printf("GPU KV pool sized from free memory: %d blocks of %d tokens, %.1f MiB\n",
           ss.kv_blocks_total, ss.kv_block_tokens, (double)ss.kv_bytes / (1 << 20));
    assert_true(ss.kv_blocks_total > 1000 && ss.kv_bytes > 0);
    sv_all(m, 0, alone);
    sv_all(m, 1, bat);
    sv_compare("no prefix cache", alone, bat);
    eng_model_free(m);

    /* prefix cache: a first batched round publishes every prompt's full blocks, the second
     * finds them; from here on the step GEMMs are chosen while loading (lode serve's way; the
     * run above chose each decode size's at its first step) */
    o.no_prefix_cache = 0;
    o.tune_at_load = 1;
    if (eng_model_load(path, &o, &m, err, sizeof err)) fail_msg("%s", err);
    sv_all(m, 1, bat);
    memset(bat, 0, sizeof bat);
    sv_all(m, 1, bat);
    eng_serving_stats_get(m, &ss);
    printf("prefix cache: %llu of %llu prompt tokens found\n",
           (unsigned long long)ss.prefix_hit_tokens, (unsigned long long)ss.prefix_lookup_tokens);
    assert_true(ss.prefix_hit_tokens > 1000);
    sv_compare("prefix-cache hits", alone, bat);
    eng_model_free(m);

    /* preemption: a pool of 64 blocks for sequences needing about 300 */
    o.kv_mb = 1;
    if (eng_model_load(path, &o, &m, err, sizeof err)) fail_msg("%s", err);
    eng_serving_stats_get(m, &ss);
    assert_int_equal(ss.kv_blocks_total, 64);
    memset(bat, 0, sizeof bat);
    sv_all(m, 1, bat);
    eng_serving_stats_get(m, &ss);
    printf("preemption: %llu preemptions with a pool of %d blocks\n",
           (unsigned long long)ss.preemptions, ss.kv_blocks_total);
    assert_true(ss.preemptions > 0);
    sv_compare("preemption and prefix cache", alone, bat);
    eng_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_and_tokenizer),
        cmocka_unit_test(test_hf_export),
        cmocka_unit_test(test_cuda_vs_cpu_backend),
        cmocka_unit_test(test_cuda_serving),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
