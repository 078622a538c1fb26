/*
 * test_sampler.c: sampling on hand-made logits (greedy, seeds, top-k/top-p/min-p sets,
 * penalties, logprobs, no allocation per token), the stop-string matcher on text split
 * at every place, and the per-request stop logic on a small vocabulary.
 * lode-test: engine
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "engine/sampler.h"
#include "engine/tokenizer.h"

static eng_sampler *make(float temp, int top_k, float top_p, float min_p, int32_t n, uint64_t seed)
{
    eng_sampler_params p;
    eng_sampler_params_default(&p);
    p.temperature = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.seed = seed;
    eng_sampler *s = NULL;
    assert_int_equal(eng_sampler_create(&p, n, &s), LODE_OK);
    return s;
}

/* logits whose softmax is exactly probs (up to float rounding) */
static void from_probs(const double *probs, float *logits, int n)
{
    for (int i = 0; i < n; i++) logits[i] = (float)log(probs[i]);
}

static void test_greedy_and_logprobs(void **state)
{
    (void)state;
    float l[6] = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, NAN};
    eng_sampler_params p;
    eng_sampler_params_default(&p);
    p.temperature = 0;
    p.n_logprobs = 3;
    eng_sampler *s = NULL;
    assert_int_equal(eng_sampler_create(&p, 6, &s), LODE_OK);
    eng_sample_result r;
    assert_int_equal(eng_sampler_sample(s, l, &r), 1); /* tie 1/3: the lower id */
    double z = exp(0.5) + exp(3.0) + exp(-1.0) + exp(3.0) + exp(2.0);
    assert_float_equal(r.logprob, 3.0 - log(z), 1e-5);
    assert_int_equal(r.n_top, 3);
    assert_int_equal(r.top[0].token, 1);
    assert_int_equal(r.top[1].token, 3);
    assert_int_equal(r.top[2].token, 4);
    assert_float_equal(r.top[2].logprob, 2.0 - log(z), 1e-5);
    eng_token_logprob top[2];
    assert_float_equal(eng_logprobs(l, 6, 2, top, 2), -1.0 - log(z), 1e-5);
    assert_int_equal(top[0].token, 1);
    eng_sampler_destroy(s);

    /* all -inf: a token and -inf, no crash */
    float ninf[3] = {-INFINITY, -INFINITY, -INFINITY};
    s = make(0.7f, 0, 1.0f, 0, 3, 1);
    eng_token t = eng_sampler_sample(s, ninf, &r);
    assert_true(t >= 0 && t < 3);
    assert_true(isinf(r.logprob));
    eng_sampler_destroy(s);
}

/* Over a vocabulary-sized array (the vectorized exp path), logprobs agree with a double
 * precision reference; NaN and -inf entries count as probability 0. */
static void test_logprobs_large(void **state)
{
    (void)state;
    enum { N = 10007 };
    float *l = malloc(N * sizeof *l);
    uint32_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 1664525u + 1013904223u;
        l[i] = (float)(x >> 8) / (float)(1u << 24) * 30.0f - 20.0f;
    }
    l[17] = NAN;
    l[18] = -INFINITY;
    l[19] = -1e30f;
    double mx = -1e300, z = 0;
    for (int i = 0; i < N; i++)
        if (i < 17 || i > 19) mx = l[i] > mx ? l[i] : mx;
    for (int i = 0; i < N; i++)
        if (i < 17 || i > 19) z += exp(l[i] - mx);
    double lse = mx + log(z), worst = 0;
    for (int t = 0; t < N; t += 97) {
        if (t >= 17 && t <= 19) continue;
        double d = fabs(eng_logprobs(l, N, t, NULL, 0) - (l[t] - lse));
        worst = d > worst ? d : worst;
    }
    printf("largest logprob difference to double precision: %g\n", worst);
    assert_true(worst < 1e-4);
    assert_true(isinf(eng_logprobs(l, N, 18, NULL, 0)));
    assert_true(isinf(eng_logprobs(l, N, 17, NULL, 0)));
    free(l);
}

static void test_seed_determinism(void **state)
{
    (void)state;
    enum { N = 1000, STEPS = 200 };
    float *l = malloc(N * sizeof *l);
    for (int i = 0; i < N; i++) l[i] = (float)((i * 2654435761u) % 1000u) / 250.0f;
    eng_token a[STEPS], b[STEPS], c[STEPS];
    eng_sampler *s1 = make(1.0f, 0, 1.0f, 0, N, 42), *s2 = make(1.0f, 0, 1.0f, 0, N, 42);
    eng_sampler *s3 = make(1.0f, 0, 1.0f, 0, N, 43);
    for (int i = 0; i < STEPS; i++) {
        a[i] = eng_sampler_sample(s1, l, NULL);
        b[i] = eng_sampler_sample(s2, l, NULL);
        c[i] = eng_sampler_sample(s3, l, NULL);
    }
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    /* reset restarts the same sequence */
    eng_sampler_reset(s1);
    for (int i = 0; i < STEPS; i++) b[i] = eng_sampler_sample(s1, l, NULL);
    assert_memory_equal(a, b, sizeof a);
    /* the PRNG is lode's own, so the draws of a seed are the same on every machine */
    printf("seed 42 draws: %d %d %d %d\n", a[0], a[1], a[2], a[3]);
    eng_token known[4] = {84, 378, 681, 925};
    assert_memory_equal(a, known, sizeof known);
    eng_sampler_destroy(s1);
    eng_sampler_destroy(s2);
    eng_sampler_destroy(s3);
    free(l);
}

/* Samples many times; returns how often each id came. */
static void histogram(eng_sampler *s, const float *l, int n, int draws, int *hist)
{
    memset(hist, 0, sizeof(int) * (size_t)n);
    for (int i = 0; i < draws; i++) {
        eng_token t = eng_sampler_sample(s, l, NULL);
        assert_true(t >= 0 && t < n);
        hist[t]++;
    }
}

static void test_top_k(void **state)
{
    (void)state;
    float l[8] = {1.0f, 5.0f, 2.0f, 4.5f, 0.0f, 4.0f, 3.0f, -2.0f};
    int h[8];
    eng_sampler *s = make(1.0f, 3, 1.0f, 0, 8, 3);
    histogram(s, l, 8, 3000, h);
    for (int i = 0; i < 8; i++) {
        if (i == 1 || i == 3 || i == 5)
            assert_true(h[i] > 0);
        else
            assert_int_equal(h[i], 0);
    }
    /* proportions follow the softmax of the three: e^5 : e^4.5 : e^4 */
    double z = exp(5.0) + exp(4.5) + exp(4.0);
    assert_true(fabs(h[1] / 3000.0 - exp(5.0) / z) < 0.04);
    eng_sampler_destroy(s);
}

static void test_top_p_small(void **state)
{
    (void)state;
    double pr[5] = {0.05, 0.5, 0.15, 0.3, 0.0001};
    float l[5];
    from_probs(pr, l, 5);
    int h[5];
    eng_sampler *s = make(1.0f, 0, 0.75f, 0, 5, 9);
    histogram(s, l, 5, 2000, h);
    assert_true(h[1] > 0 && h[3] > 0);
    assert_int_equal(h[0] + h[2] + h[4], 0);
    eng_sampler_destroy(s);
    s = make(1.0f, 0, 0.9f, 0, 5, 9); /* 0.5 + 0.3 + 0.15 crosses 0.9 */
    histogram(s, l, 5, 4000, h);
    assert_true(h[1] > 0 && h[3] > 0 && h[2] > 0);
    assert_int_equal(h[0] + h[4], 0);
    eng_sampler_destroy(s);
}

static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* A vocabulary-sized case: the nucleus is found without sorting everything. */
static void test_top_p_large(void **state)
{
    (void)state;
    enum { N = 50000 };
    float *l = malloc(N * sizeof *l), *sorted = malloc(N * sizeof *l);
    srand(11);
    for (int i = 0; i < N; i++) l[i] = (float)rand() / RAND_MAX * 12.0f;
    memcpy(sorted, l, N * sizeof *l);
    qsort(sorted, N, sizeof *l, cmp_desc);
    double z = 0;
    for (int i = 0; i < N; i++) z += exp((double)sorted[i] - sorted[0]);
    double cum = 0;
    float thr = 0;
    for (int i = 0; i < N; i++) {
        cum += exp((double)sorted[i] - sorted[0]) / z;
        if (cum >= 0.5) {
            thr = sorted[i];
            printf("nucleus of p=0.5: %d tokens\n", i + 1);
            break;
        }
    }
    eng_sampler *s = make(1.0f, 0, 0.5f, 0, N, 5);
    int below = 0;
    for (int i = 0; i < 500; i++) {
        eng_token t = eng_sampler_sample(s, l, NULL);
        below += l[t] < thr;
    }
    assert_int_equal(below, 0);
    eng_sampler_destroy(s);
    free(l);
    free(sorted);
}

static void test_min_p(void **state)
{
    (void)state;
    double pr[4] = {0.25, 0.6, 0.05, 0.1};
    float l[4];
    from_probs(pr, l, 4);
    int h[4];
    eng_sampler *s = make(1.0f, 0, 1.0f, 0.2f, 4, 1); /* keeps p >= 0.12 */
    histogram(s, l, 4, 2000, h);
    assert_true(h[0] > 0 && h[1] > 0);
    assert_int_equal(h[2] + h[3], 0);
    eng_sampler_destroy(s);
}

static void test_penalties(void **state)
{
    (void)state;
    eng_sampler_params p;
    eng_sampler_params_default(&p);
    p.temperature = 0;
    p.repeat_penalty = 2.0f;
    p.penalty_last_n = 2;
    eng_sampler *s = NULL;
    assert_int_equal(eng_sampler_create(&p, 4, &s), LODE_OK);
    float l[4] = {2.0f, 1.5f, -0.5f, -0.9f};
    eng_sampler_accept(s, 0); /* 2.0 -> 1.0 */
    assert_int_equal(eng_sampler_sample(s, l, NULL), 1);
    /* window now {0, 1}: 1.0 and 0.75 */
    assert_int_equal(eng_sampler_sample(s, l, NULL), 0);
    /* window {1, 0} still; a negative logit is multiplied: -0.5 -> -1.0 below -0.9 */
    eng_sampler_destroy(s);
    float neg[2] = {-0.5f, -0.9f};
    assert_int_equal(eng_sampler_create(&p, 2, &s), LODE_OK);
    eng_sampler_accept(s, 0);
    assert_int_equal(eng_sampler_sample(s, neg, NULL), 1);
    eng_sampler_destroy(s);

    /* frequency: per occurrence; presence: once; window forgets old tokens */
    p.repeat_penalty = 1.0f;
    p.frequency_penalty = 0.4f;
    p.presence_penalty = 0.0f;
    p.penalty_last_n = 3;
    float f[3] = {1.0f, 0.5f, 0.0f};
    assert_int_equal(eng_sampler_create(&p, 3, &s), LODE_OK);
    eng_sampler_accept(s, 0);                            /* 1.0 - 0.4 = 0.6 > 0.5 */
    assert_int_equal(eng_sampler_sample(s, f, NULL), 0); /* now two 0s: 0.2 */
    assert_int_equal(eng_sampler_sample(s, f, NULL), 1); /* window {0,0,1}: 0.2, 0.1, 0 */
    assert_int_equal(eng_sampler_sample(s, f, NULL), 0); /* window {0,1,0}: 0.2 vs 0.1 */
    eng_sampler_accept(s, 2);
    eng_sampler_accept(s, 2);
    eng_sampler_accept(s, 2); /* window {2,2,2}: 0 and 1 are free again, 2 at -1.2 */
    assert_int_equal(eng_sampler_sample(s, f, NULL), 0);
    eng_sampler_destroy(s);

    p.frequency_penalty = 0.0f;
    p.presence_penalty = 0.6f;
    assert_int_equal(eng_sampler_create(&p, 3, &s), LODE_OK);
    eng_sampler_accept(s, 0);
    eng_sampler_accept(s, 0); /* presence counts once: 0.4 < 0.5 */
    assert_int_equal(eng_sampler_sample(s, f, NULL), 1);
    eng_sampler_destroy(s);
}

static void test_no_alloc_per_token(void **state)
{
    (void)state;
    enum { N = 5000 };
    float *l = malloc(N * sizeof *l);
    for (int i = 0; i < N; i++) l[i] = (float)((i * 7919) % 1000) / 100.0f;
    eng_sampler_params p;
    eng_sampler_params_default(&p);
    p.top_k = 0;
    p.top_p = 0.9f;
    p.repeat_penalty = 1.1f;
    p.n_logprobs = 5;
    eng_sampler *s = NULL;
    assert_int_equal(eng_sampler_create(&p, N, &s), LODE_OK);
    lode_alloc_stats a, b;
    lode_alloc_get_stats(&a);
    eng_sample_result r;
    for (int i = 0; i < 100; i++) eng_sampler_sample(s, l, &r);
    lode_alloc_get_stats(&b);
    assert_int_equal(a.total_allocs, b.total_allocs);
    eng_sampler_destroy(s);
    free(l);
}

static void test_bad_params(void **state)
{
    (void)state;
    eng_sampler_params p;
    eng_sampler *s = NULL;
    eng_sampler_params_default(&p);
    p.n_logprobs = ENG_MAX_LOGPROBS + 1;
    assert_int_equal(eng_sampler_create(&p, 10, &s), LODE_ERR_INVALID);
    eng_sampler_params_default(&p);
    p.temperature = NAN;
    assert_int_equal(eng_sampler_create(&p, 10, &s), LODE_ERR_INVALID);
    eng_sampler_params_default(&p);
    assert_int_equal(eng_sampler_create(&p, 0, &s), LODE_ERR_INVALID);
    assert_null(s);
}

/* ---- stop strings ------------------------------------------------------------------ */
/* The reference: the text before the earliest end of any stop string. */
static size_t ref_stop(const char *text, const char *const *stops, int n, int *which)
{
    size_t best = SIZE_MAX, start = 0;
    *which = -1;
    for (int i = 0; i < n; i++) {
        const char *m = strstr(text, stops[i]);
        if (m && (size_t)(m - text) + strlen(stops[i]) < best) {
            best = (size_t)(m - text) + strlen(stops[i]);
            start = (size_t)(m - text);
            *which = i;
        }
    }
    return *which >= 0 ? start : strlen(text);
}

static void run_split(eng_stop *m, const char *text, const size_t *cuts, int ncuts, char *got,
                      size_t *glen, int *hit)
{
    char out[512];
    size_t prev = 0, k;
    *glen = 0;
    *hit = -1;
    eng_stop_reset(m);
    for (int c = 0; c <= ncuts && *hit < 0; c++) {
        size_t end = c < ncuts ? cuts[c] : strlen(text);
        *hit = eng_stop_feed(m, text + prev, end - prev, out, sizeof out, &k);
        memcpy(got + *glen, out, k);
        *glen += k;
        prev = end;
    }
    if (*hit < 0) {
        k = eng_stop_flush(m, out, sizeof out);
        memcpy(got + *glen, out, k);
        *glen += k;
    }
    got[*glen] = 0;
}

static void test_stop_strings(void **state)
{
    (void)state;
    const char *stops[] = {"\n\nUser:", "###", "<end>"};
    eng_stop *m = NULL;
    assert_int_equal(eng_stop_create(stops, 3, &m), LODE_OK);
    /* pieces: the stop string arrives in three parts; its start is held back */
    char out[512];
    size_t k;
    assert_int_equal(eng_stop_feed(m, "Hello\n", 6, out, sizeof out, &k), -1);
    assert_int_equal(k, 5);
    assert_memory_equal(out, "Hello", 5);
    assert_int_equal(eng_stop_feed(m, "\nUs", 3, out, sizeof out, &k), -1);
    assert_int_equal(k, 0);
    assert_int_equal(eng_stop_feed(m, "er: more", 8, out, sizeof out, &k), 0);
    assert_int_equal(k, 0);
    /* a false start is released */
    eng_stop_reset(m);
    assert_int_equal(eng_stop_feed(m, "a\n\nUx", 5, out, sizeof out, &k), -1);
    assert_int_equal(k, 5);

    /* every split of several texts agrees with the reference */
    const char *texts[] = {
        "plain text without any stop",
        "one\n\nUser: two",
        "##a## ### tail",
        "<en<end>d>",
        "\n\n\n\nUser:",
        "#<end>###",
        "almost <end",
    };
    for (size_t t = 0; t < LODE_ARRAY_LEN(texts); t++) {
        const char *x = texts[t];
        size_t n = strlen(x);
        int which;
        size_t want = ref_stop(x, stops, 3, &which);
        char got[512];
        size_t glen;
        int hit;
        for (size_t a = 0; a <= n; a++) {
            for (size_t b = a; b <= n; b++) {
                size_t cuts[2] = {a, b};
                run_split(m, x, cuts, 2, got, &glen, &hit);
                assert_int_equal(hit, which);
                assert_int_equal(glen, want);
                assert_memory_equal(got, x, want);
            }
        }
        /* one byte at a time */
        size_t cuts[64];
        for (size_t i = 0; i < n && i < 64; i++) cuts[i] = i + 1;
        run_split(m, x, cuts, (int)LODE_MIN(n, 64), got, &glen, &hit);
        assert_int_equal(hit, which);
        assert_int_equal(glen, want);
    }
    eng_stop_destroy(m);
    const char *empty[] = {""};
    assert_int_equal(eng_stop_create(empty, 1, &m), LODE_ERR_INVALID);
}

/* ---- per-request stop logic on a small vocabulary ------------------------------------ */
static eng_vocab *small_vocab(void)
{
    const char *toks[] = {"<|im_end|>", "a", "b", "Ġ", "Ġb", "\xc3\xa2", "\xc4\xa0\xc3\xa2"};
    int32_t types[] = {3, 1, 1, 1, 1, 1, 1};
    eng_vocab_desc d;
    eng_vocab_desc_init(&d);
    d.type = ENG_VOCAB_BPE;
    d.pre = "gpt-2";
    d.n_tokens = 7;
    d.tokens = toks;
    d.token_types = types;
    eng_vocab *v = NULL;
    char err[128];
    assert_int_equal(eng_vocab_create(&d, &v, err, sizeof err), LODE_OK);
    return v;
}

static void test_textgen(void **state)
{
    (void)state;
    eng_vocab *v = small_vocab();
    const char *stops[] = {"b b"};
    eng_textgen *g = NULL;
    assert_int_equal(eng_textgen_create(v, stops, 1, 0, 0, &g), LODE_OK);
    size_t cap = eng_textgen_bound(g), n;
    char *out = malloc(cap);
    assert_int_equal(eng_textgen_push(g, 1, out, cap, &n), ENG_STOP_NONE); /* "a" */
    assert_int_equal(n, 1);
    assert_int_equal(eng_textgen_push(g, 2, out, cap, &n), ENG_STOP_NONE); /* "b" held */
    assert_int_equal(n, 0);
    assert_int_equal(eng_textgen_push(g, 4, out, cap, &n), ENG_STOP_STRING); /* " b" */
    assert_int_equal(n, 0);
    assert_int_equal(eng_textgen_stop_index(g), 0);
    eng_textgen_destroy(g);

    /* end of turn: held text is released, the token's own text is not */
    assert_int_equal(eng_textgen_create(v, stops, 1, 0, 0, &g), LODE_OK);
    assert_int_equal(eng_textgen_push(g, 2, out, cap, &n), ENG_STOP_NONE);
    assert_int_equal(n, 0);
    assert_int_equal(eng_textgen_push(g, 0, out, cap, &n), ENG_STOP_EOG);
    assert_int_equal(n, 1);
    assert_memory_equal(out, "b", 1);
    eng_textgen_destroy(g);

    /* token budget; a split UTF-8 sequence (byte 0xE2 alone) becomes U+FFFD at the end */
    assert_int_equal(eng_textgen_create(v, NULL, 0, 2, 0, &g), LODE_OK);
    assert_int_equal(eng_textgen_push(g, 1, out, cap, &n), ENG_STOP_NONE);
    assert_int_equal(eng_textgen_push(g, 6, out, cap, &n), ENG_STOP_MAX_TOKENS); /* " \xe2" */
    assert_int_equal(n, 4);
    assert_memory_equal(out, " \xef\xbf\xbd", 4);
    assert_int_equal(eng_textgen_n_tokens(g), 2);
    eng_textgen_destroy(g);
    free(out);
    eng_vocab_destroy(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_and_logprobs),
        cmocka_unit_test(test_logprobs_large),
        cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_top_p_small),
        cmocka_unit_test(test_top_p_large),
        cmocka_unit_test(test_min_p),
        cmocka_unit_test(test_penalties),
        cmocka_unit_test(test_no_alloc_per_token),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_textgen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
