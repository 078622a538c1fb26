/* test_embed.c: the BERT sentence encoder against sentence-transformers: each of the
 * fixture sentences (tests/data/minilm/) must embed to a vector with cosine >= 0.999 to
 * the reference, with one or two threads, in one big batch or many small ones; embedding
 * allocates nothing after loading; bad model folders are refused with a status.
 * lode-test: engine */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/lode.h"
#include "engine/bert.h"

#define MODEL   "models/all-MiniLM-L6-v2"
#define FIXTURE "tests/data/minilm/"
#define MAX_N   128

typedef struct fixture {
    int n, dim;
    char *text[MAX_N];
    float *ref; /* (n, dim) */
} fixture;

static int load_fixture(fixture *f)
{
    memset(f, 0, sizeof *f);
    FILE *m = fopen(FIXTURE "meta.txt", "r");
    if (!m) return -1;
    int msl;
    if (fscanf(m, "%d %d %d", &f->n, &f->dim, &msl) != 3 || f->n > MAX_N) {
        fclose(m);
        return -1;
    }
    fclose(m);
    FILE *s = fopen(FIXTURE "sentences.txt", "r");
    static char line[65536];
    for (int i = 0; i < f->n && fgets(line, sizeof line, s); i++) {
        line[strcspn(line, "\n")] = 0;
        f->text[i] = strdup(line);
    }
    fclose(s);
    f->ref = malloc((size_t)f->n * (size_t)f->dim * sizeof(float));
    FILE *v = fopen(FIXTURE "vectors.f32", "rb");
    size_t got = fread(f->ref, sizeof(float), (size_t)f->n * (size_t)f->dim, v);
    fclose(v);
    return got == (size_t)f->n * (size_t)f->dim ? 0 : -1;
}

static void free_fixture(fixture *f)
{
    for (int i = 0; i < f->n; i++) free(f->text[i]);
    free(f->ref);
}

static int have_model(void)
{
    if (access(MODEL "/model.safetensors", R_OK) == 0) return 1;
    printf("skipping: %s absent (run `make model`)\n", MODEL);
    return 0;
}

static double cosine(const float *a, const float *b, int d)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < d; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / sqrt(aa * bb);
}

/* Embeds the fixture with the options and checks every vector against the reference;
 * returns the smallest cosine. */
static double check_against_reference(const eng_bert_opts *o, float *out)
{
    fixture f;
    assert_int_equal(load_fixture(&f), 0);
    assert_true(f.n >= 50);
    char err[256];
    eng_bert *m = NULL;
    if (eng_bert_load(MODEL, o, &m, err, sizeof err) != LODE_OK) fail_msg("load: %s", err);
    assert_int_equal(eng_bert_dim(m), f.dim);
    assert_int_equal(eng_bert_max_seq_len(m), 256);
    assert_string_equal(eng_bert_name(m), "all-MiniLM-L6-v2");
    lode_alloc_stats a, b;
    lode_alloc_get_stats(&a);
    if (eng_bert_embed(m, (const char *const *)f.text, NULL, (size_t)f.n, out) != LODE_OK)
        fail_msg("embed: %s", eng_bert_errmsg(m));
    lode_alloc_get_stats(&b);
    assert_int_equal(b.total_allocs, a.total_allocs); /* nothing allocated per batch */
    double worst = 1;
    int bad = 0;
    for (int i = 0; i < f.n; i++) {
        double c = cosine(out + (size_t)i * f.dim, f.ref + (size_t)i * f.dim, f.dim);
        const float *v = out + (size_t)i * f.dim;
        double nn = 0;
        for (int k = 0; k < f.dim; k++) nn += (double)v[k] * v[k];
        if (fabs(nn - 1) > 1e-4) fail_msg("vector %d not normalized (|v|^2 = %f)", i, nn);
        if (c < worst) worst = c;
        if (c < 0.999) {
            fprintf(stderr, "sentence %d: cosine %.6f: %s\n", i, c, f.text[i]);
            bad++;
        }
    }
    eng_bert_destroy(m);
    free_fixture(&f);
    assert_int_equal(bad, 0);
    return worst;
}

static void test_reference_one_thread(void **state)
{
    if (!have_model()) skip();
    static float out[MAX_N * 384];
    eng_bert_opts o = {1, 0, 0};
    double worst = check_against_reference(&o, out);
    printf("1 thread, one batch: worst cosine %.7f (1 - cos = %.1e)\n", worst, 1 - worst);
}

static void test_reference_two_threads_small_batches(void **state)
{
    if (!have_model()) skip();
    static float out[MAX_N * 384], out1[MAX_N * 384];
    eng_bert_opts o1 = {1, 0, 0};
    check_against_reference(&o1, out1);
    /* 256-token batches: the long text fills one alone, the rest split across many */
    eng_bert_opts o = {2, 0, 256};
    double worst = check_against_reference(&o, out);
    printf("2 threads, 256-token batches: worst cosine %.7f (1 - cos = %.1e)\n", worst, 1 - worst);
    /* batching and threads change nothing beyond float reassociation */
    for (int i = 0; i < 60 * 384; i++)
        if (fabsf(out[i] - out1[i]) > 1e-5f) fail_msg("element %d: %g vs %g", i, out[i], out1[i]);
}

static void test_tokenize_and_truncate(void **state)
{
    if (!have_model()) skip();
    char err[256];
    eng_bert *m = NULL;
    eng_bert_opts o = {1, 16, 0};
    assert_int_equal(eng_bert_load(MODEL "/model.safetensors", &o, &m, err, sizeof err), LODE_OK);
    assert_int_equal(eng_bert_max_seq_len(m), 16);
    int32_t ids[64];
    int n = 0;
    const char *t = "Hello, World! This sentence is longer than sixteen word pieces, surely.";
    assert_int_equal(eng_bert_tokenize(m, t, strlen(t), ids, 64, &n), LODE_OK);
    assert_int_equal(n, 16);
    assert_int_equal(ids[0], 101);
    assert_int_equal(ids[1], 7592); /* hello */
    assert_int_equal(ids[2], 1010); /* , */
    assert_int_equal(ids[15], 102);
    /* an empty list and empty texts are fine */
    float v[2 * 384];
    assert_int_equal(eng_bert_embed(m, NULL, NULL, 0, v), LODE_OK);
    const char *texts[2] = {"", NULL};
    size_t lens[2] = {0, 0};
    assert_int_equal(eng_bert_embed(m, texts, lens, 2, v), LODE_OK);
    for (int i = 0; i < 384; i++) assert_true(v[i] == v[384 + i]);
    eng_bert_destroy(m);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_bad_models(void **state)
{
    char err[256];
    eng_bert *m = NULL;
    assert_int_equal(eng_bert_load("/nonexistent/model", NULL, &m, err, sizeof err), LODE_ERR_IO);
    assert_null(m);
    char dir[] = "/tmp/lode-bert-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[256];
    /* no config.json */
    assert_int_equal(eng_bert_load(dir, NULL, &m, err, sizeof err), LODE_ERR_IO);
    /* an unsupported activation */
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_file(p, "{\"model_type\":\"bert\",\"hidden_act\":\"relu\",\"hidden_size\":8}");
    assert_int_equal(eng_bert_load(dir, NULL, &m, err, sizeof err), LODE_ERR_UNSUPPORTED);
    /* sizes out of range */
    write_file(p, "{\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":3,"
                  "\"intermediate_size\":16,\"max_position_embeddings\":8,\"vocab_size\":8}");
    assert_int_equal(eng_bert_load(dir, NULL, &m, err, sizeof err), LODE_ERR_FORMAT);
    /* valid config, but the weights file is not safetensors */
    write_file(p, "{\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
                  "\"intermediate_size\":16,\"max_position_embeddings\":8,\"vocab_size\":8}");
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_file(p, "not a safetensors file");
    assert_int_equal(eng_bert_load(dir, NULL, &m, err, sizeof err), LODE_ERR_FORMAT);
    assert_non_null(strstr(err, "safetensors"));
    /* bad JSON in an optional file is an error too, not silently ignored */
    snprintf(p, sizeof p, "%s/sentence_bert_config.json", dir);
    write_file(p, "{\"max_seq_length\": 12,}");
    assert_int_equal(eng_bert_load(dir, NULL, &m, err, sizeof err), LODE_ERR_FORMAT);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    rmdir(dir);
    assert_null(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_one_thread),
        cmocka_unit_test(test_reference_two_threads_small_batches),
        cmocka_unit_test(test_tokenize_and_truncate),
        cmocka_unit_test(test_bad_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
