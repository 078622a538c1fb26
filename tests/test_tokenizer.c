/*
 * test_tokenizer.c: the tokenizer against llama.cpp's token ids (tests/data/smollm2/
 * tokens.json, made by scripts/make-fixtures.sh) on the real SmolLM2 vocabulary, round
 * trips, the streaming decoder on split and invalid UTF-8, and small vocabularies built
 * from arrays (BPE merge order, SentencePiece scores and byte fallback).
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

#include "engine/chat.h"
#include "engine/ejson.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

#define FIXTURES "tests/data/smollm2/tokens.json"

static const char *model_path(void)
{
    const char *p = getenv("LODE_MODEL");
    return p && *p ? p : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

/* The SmolLM2 vocabulary, or NULL (the test is skipped) when the model is absent. */
static eng_vocab *load_vocab(void)
{
    eng_gguf *g = NULL;
    eng_vocab *v = NULL;
    char err[256];
    FILE *f = fopen(model_path(), "rb");
    if (!f) {
        printf("model %s not present (run `make model`); skipping\n", model_path());
        return NULL;
    }
    fclose(f);
    assert_int_equal(eng_gguf_open(model_path(), &g, err, sizeof err), LODE_OK);
    lode_status st = eng_vocab_from_gguf(g, &v, err, sizeof err);
    if (st != LODE_OK) printf("vocab: %s\n", err);
    assert_int_equal(st, LODE_OK);
    eng_gguf_close(g);
    return v;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

static size_t unhex(const char *h, char *out)
{
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned b;
        sscanf(h + 2 * i, "%2x", &b);
        out[i] = (char)b;
    }
    return n;
}

/* Every fixture case: same ids as llama.cpp. Prints each mismatch. */
static void test_fixture_ids(void **state)
{
    (void)state;
    eng_vocab *v = load_vocab();
    if (!v) skip();
    size_t len;
    char *txt = read_file(FIXTURES, &len);
    eng_json_doc *doc = NULL;
    char err[256];
    assert_int_equal(eng_json_parse(txt, len, &doc, err, sizeof err), LODE_OK);
    const eng_json *cases = eng_json_get(eng_json_root(doc), "cases");
    assert_non_null(cases);
    int n_cases = 0, bad = 0, n_texts_special = 0;
    eng_token ids[4096];
    char raw[8192];
    for (const eng_json *c = cases->child; c; c = c->next) {
        const char *name = eng_json_get_str(c, "name", "?");
        size_t rn = unhex(eng_json_get_str(c, "text_hex", ""), raw);
        unsigned flags = (eng_json_get_bool(c, "add_special", 0) ? ENG_TOK_ADD_SPECIAL : 0) |
                         (eng_json_get_bool(c, "parse_special", 0) ? ENG_TOK_PARSE_SPECIAL : 0);
        const eng_json *want = eng_json_get(c, "ids");
        assert_non_null(want);
        size_t n = 0;
        assert_int_equal(eng_tok_encode(v, raw, rn, flags, ids, 4096, &n), LODE_OK);
        int ok = n == want->len;
        size_t k = 0;
        for (const eng_json *w = want->child; ok && w; w = w->next, k++)
            ok = ids[k] == (eng_token)w->i;
        if (!ok) {
            bad++;
            printf("MISMATCH %s (flags %u): got", name, flags);
            for (size_t i = 0; i < n && i < 40; i++) printf(" %d", ids[i]);
            printf("\n  want");
            for (const eng_json *w = want->child; w; w = w->next) printf(" %d", (int)w->i);
            printf("\n");
        }
        if ((flags & ENG_TOK_PARSE_SPECIAL) && strstr(name, "special")) n_texts_special++;
        n_cases++;
    }
    printf("%d fixture cases, %d mismatches\n", n_cases, bad);
    assert_true(n_cases >= 120); /* >= 30 texts x 4 flag combinations */
    assert_true(n_texts_special > 0);
    assert_int_equal(bad, 0);
    eng_json_free(doc);
    free(txt);
    eng_vocab_destroy(v);
}

/* decode(encode(x)) == x for every valid-UTF-8 fixture text, with and without special
 * tokens parsed (then rendered). */
static void test_round_trip(void **state)
{
    (void)state;
    eng_vocab *v = load_vocab();
    if (!v) skip();
    size_t len;
    char *txt = read_file(FIXTURES, &len);
    eng_json_doc *doc = NULL;
    char err[256];
    assert_int_equal(eng_json_parse(txt, len, &doc, err, sizeof err), LODE_OK);
    int n = 0;
    for (const eng_json *c = eng_json_get(eng_json_root(doc), "cases")->child; c; c = c->next) {
        const eng_json *t = eng_json_get(c, "text");
        if (!t || eng_json_get_bool(c, "add_special", 0)) continue;
        unsigned flags = eng_json_get_bool(c, "parse_special", 0) ? ENG_TOK_PARSE_SPECIAL : 0;
        eng_token *ids = NULL;
        size_t ni = 0;
        assert_int_equal(eng_tok_encode_alloc(v, t->str, t->len, flags, &ids, &ni), LODE_OK);
        lode_buf b = LODE_BUF_INIT;
        assert_int_equal(eng_tok_decode(v, ids, ni, ENG_TOK_RENDER_SPECIAL, &b), LODE_OK);
        assert_int_equal(b.len, t->len);
        assert_memory_equal(b.data, t->str, t->len);
        /* the streaming decoder gives the same text, in valid pieces */
        eng_detok d;
        eng_detok_init(&d, v, ENG_TOK_RENDER_SPECIAL);
        size_t cap = eng_detok_bound(v);
        char *chunk = malloc(cap);
        lode_buf s = LODE_BUF_INIT;
        for (size_t i = 0; i < ni; i++) {
            size_t k = eng_detok_push(&d, ids[i], chunk, cap);
            assert_int_equal(lode_utf8_valid_prefix(chunk, k), k);
            assert_int_equal(lode_buf_append(&s, chunk, k), LODE_OK);
        }
        assert_int_equal(eng_detok_flush(&d, chunk, cap), 0);
        assert_int_equal(s.len, t->len);
        if (s.len) assert_memory_equal(s.data, t->str, t->len);
        free(chunk);
        lode_buf_free(&s);
        lode_buf_free(&b);
        lode_free(ids);
        n++;
    }
    assert_true(n >= 60);
    eng_json_free(doc);
    free(txt);
    eng_vocab_destroy(v);
}

/* An emoji ZWJ sequence whose bytes are split across tokens comes out of the streaming
 * decoder only whole. */
static void test_stream_split_emoji(void **state)
{
    (void)state;
    eng_vocab *v = load_vocab();
    if (!v) skip();
    const char *text = "family: 👨\u200d👩\u200d👧\u200d👦 ok";
    eng_token *ids = NULL;
    size_t n = 0;
    assert_int_equal(eng_tok_encode_alloc(v, text, strlen(text), 0, &ids, &n), LODE_OK);
    int split = 0;
    for (size_t i = 0; i < n; i++) {
        size_t pl;
        const char *p = eng_tok_piece(v, ids[i], 0, &pl);
        if (lode_utf8_valid_prefix(p, pl) != pl) split++;
    }
    assert_true(split > 0); /* else this test would prove nothing */
    eng_detok d;
    eng_detok_init(&d, v, 0);
    char out[256];
    lode_buf s = LODE_BUF_INIT;
    int empty_pushes = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = eng_detok_push(&d, ids[i], out, sizeof out);
        empty_pushes += k == 0;
        assert_int_equal(lode_utf8_valid_prefix(out, k), k);
        lode_buf_append(&s, out, k);
    }
    assert_true(empty_pushes > 0);
    assert_string_equal(s.data, text);
    lode_buf_free(&s);
    lode_free(ids);
    eng_vocab_destroy(v);
}

/* Invalid bytes: encoding never fails, and the streaming decoder turns what cannot be
 * UTF-8 into U+FFFD. */
static void test_invalid_utf8(void **state)
{
    (void)state;
    eng_vocab *v = load_vocab();
    if (!v) skip();
    const char bad[] = "a\xff\xfe b \xc3 \xe2\x82 \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\x80 end\xe6";
    eng_token *ids = NULL;
    size_t n = 0;
    assert_int_equal(eng_tok_encode_alloc(v, bad, sizeof bad - 1, 0, &ids, &n), LODE_OK);
    assert_true(n > 0);
    eng_detok d;
    eng_detok_init(&d, v, 0);
    char out[256];
    lode_buf s = LODE_BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        size_t k = eng_detok_push(&d, ids[i], out, sizeof out);
        assert_int_equal(lode_utf8_valid_prefix(out, k), k);
        lode_buf_append(&s, out, k);
    }
    assert_int_equal(eng_detok_flush(&d, out, sizeof out), 0);
    assert_int_equal(lode_utf8_valid_prefix(s.data, s.len), s.len);
    assert_non_null(memmem(s.data, s.len, "a\xef\xbf\xbd\xef\xbf\xbd b", 8));
    assert_non_null(memmem(s.data, s.len, "end\xef\xbf\xbd", 6));
    /* as llama.cpp reads it: a byte that starts no complete sequence is U+FFFD, while
     * surrogates, code points past U+10FFFF and overlongs pass (re-encoded) */
#define R "\xef\xbf\xbd"
    const char want[] = "a" R R " b " R " " R R " \xed\xa0\x80 \xf4\x90\x80\x80 \x00 end" R;
#undef R
    lode_buf raw = LODE_BUF_INIT;
    eng_tok_decode(v, ids, n, 0, &raw);
    assert_int_equal(raw.len, sizeof want - 1);
    assert_memory_equal(raw.data, want, sizeof want - 1);
    /* a lone lead byte at the end of a stream becomes U+FFFD on flush */
    eng_token lead = eng_vocab_find(v, "\xc3\xa6", 2); /* byte 0xE6 in the byte-level alphabet */
    assert_true(lead >= 0);
    assert_int_equal(eng_detok_push(&d, lead, out, sizeof out), 0);
    assert_int_equal(eng_detok_flush(&d, out, sizeof out), 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);
    lode_buf_free(&raw);
    lode_buf_free(&s);
    lode_free(ids);
    eng_vocab_destroy(v);
}

static void test_vocab_queries(void **state)
{
    (void)state;
    eng_vocab *v = load_vocab();
    if (!v) skip();
    assert_int_equal(eng_vocab_kind(v), ENG_VOCAB_BPE);
    assert_int_equal(eng_vocab_n_tokens(v), 49152);
    assert_false(eng_vocab_adds_bos(v));
    eng_token im_end = eng_vocab_find(v, "<|im_end|>", 10);
    assert_int_equal(im_end, 2);
    assert_true(eng_vocab_is_eog(v, im_end));
    assert_true(eng_vocab_is_eog(v, eng_vocab_find(v, "<|endoftext|>", 13)));
    assert_false(eng_vocab_is_eog(v, eng_vocab_find(v, "<|im_start|>", 12)));
    assert_false(eng_vocab_is_eog(v, eng_vocab_find(v, "the", 3)));
    assert_int_equal(eng_vocab_token_type(v, 1), ENG_TOKTYPE_CONTROL);
    size_t l;
    eng_tok_piece(v, im_end, 0, &l);
    assert_int_equal(l, 0); /* control tokens are silent unless rendered */
    const char *p = eng_tok_piece(v, im_end, ENG_TOK_RENDER_SPECIAL, &l);
    assert_int_equal(l, 10);
    assert_memory_equal(p, "<|im_end|>", 10);
    /* a too small output array: RANGE and the count needed */
    eng_token few[2];
    size_t need = 0;
    assert_int_equal(eng_tok_encode(v, "Hello, world!", 13, 0, few, 2, &need), LODE_ERR_RANGE);
    assert_int_equal(need, 4);
    eng_vocab_destroy(v);
}

/* Allocation failures inside encode are reported, never a crash or a leak. */
static void test_encode_nomem(void **state)
{
    (void)state;
    eng_vocab *v = load_vocab();
    if (!v) skip();
    const char *text = "<|im_start|>user\nHello 123 wörld 日本 😀<|im_end|>";
    lode_alloc_stats before, after;
    lode_alloc_get_stats(&before);
    int failures = 0;
    for (int k = 1; k < 40; k++) {
        eng_token ids[128];
        size_t n;
        lode_alloc_fail_after(k);
        lode_status st = eng_tok_encode(v, text, strlen(text), ENG_TOK_PARSE_SPECIAL, ids, 128, &n);
        lode_alloc_fail_after(0);
        if (st != LODE_OK) {
            assert_int_equal(st, LODE_ERR_NOMEM);
            failures++;
        }
    }
    lode_alloc_get_stats(&after);
    assert_true(failures > 0);
    assert_int_equal(after.live_blocks, before.live_blocks);
    eng_vocab_destroy(v);
}

/* ---- small vocabularies from arrays ----------------------------------------------------- */
/* BPE: the lowest merge rank applies first, and a merge's result can merge again. */
static void test_bpe_arrays(void **state)
{
    (void)state;
    const char *toks[] = {"a", "b", "c", "Ġ", "ab", "bc", "abc", "Ġa", "<|end|>"};
    int32_t types[] = {1, 1, 1, 1, 1, 1, 1, 1, 3};
    const char *m1[] = {"a b", "ab c", "Ġ a"};
    const char *m2[] = {"b c", "a b", "ab c", "Ġ a"};
    eng_vocab_desc d;
    eng_vocab_desc_init(&d);
    d.type = ENG_VOCAB_BPE;
    d.pre = "gpt-2";
    d.n_tokens = 9;
    d.tokens = toks;
    d.token_types = types;
    d.merges = m1;
    d.n_merges = 3;
    eng_vocab *v = NULL;
    char err[128];
    assert_int_equal(eng_vocab_create(&d, &v, err, sizeof err), LODE_OK);
    eng_token ids[16];
    size_t n;
    assert_int_equal(eng_tok_encode(v, "abc a", 5, 0, ids, 16, &n), LODE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 6); /* abc */
    assert_int_equal(ids[1], 7); /* Ġa */
    /* special token parsed only when asked */
    assert_int_equal(eng_tok_encode(v, "a<|end|>", 8, ENG_TOK_PARSE_SPECIAL, ids, 16, &n), LODE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[1], 8);
    assert_true(eng_vocab_is_eog(v, 8)); /* "<|end|>" is an end-of-generation text */
    eng_vocab_destroy(v);

    d.merges = m2; /* "b c" first: a + bc, and "a bc" is no merge */
    d.n_merges = 4;
    assert_int_equal(eng_vocab_create(&d, &v, err, sizeof err), LODE_OK);
    assert_int_equal(eng_tok_encode(v, "abc", 3, 0, ids, 16, &n), LODE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 0);
    assert_int_equal(ids[1], 5);
    eng_vocab_destroy(v);

    d.pre = "no-such-pre";
    assert_int_equal(eng_vocab_create(&d, &v, err, sizeof err), LODE_ERR_UNSUPPORTED);
    assert_null(v);
    assert_non_null(strstr(err, "no-such-pre"));
}

/* SentencePiece: highest score first, prefix space, byte fallback, BOS. */
static void test_spm_arrays(void **state)
{
    (void)state;
    const char *toks[256 + 16];
    float scores[256 + 16];
    int32_t types[256 + 16];
    char bytes[256][8];
    int n = 0;
    toks[n] = "<unk>", scores[n] = 0, types[n++] = 2;
    toks[n] = "<s>", scores[n] = 0, types[n++] = 3;
    toks[n] = "</s>", scores[n] = 0, types[n++] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        toks[n] = bytes[b], scores[n] = 0, types[n++] = 6;
    }
    const char *words[] = {"▁", "h", "e", "l", "o", "▁h", "he", "ll", "lo", "llo", "▁he"};
    float wsc[] = {-5, -6, -6, -6, -6, -1, -2, -0.5f, -3, -0.7f, -1.5f};
    int first = n;
    for (int i = 0; i < 11; i++) toks[n] = words[i], scores[n] = wsc[i], types[n++] = 1;
    eng_vocab_desc d;
    eng_vocab_desc_init(&d);
    d.type = ENG_VOCAB_SPM;
    d.n_tokens = n;
    d.tokens = toks;
    d.scores = scores;
    d.token_types = types;
    eng_vocab *v = NULL;
    char err[128];
    assert_int_equal(eng_vocab_create(&d, &v, err, sizeof err), LODE_OK);
    eng_token ids[16];
    size_t k;
    assert_int_equal(eng_tok_encode(v, "hello", 5, ENG_TOK_ADD_SPECIAL, ids, 16, &k), LODE_OK);
    assert_int_equal(k, 3);
    assert_int_equal(ids[0], 1);          /* <s> */
    assert_int_equal(ids[1], first + 10); /* ▁he */
    assert_int_equal(ids[2], first + 9);  /* llo */
    assert_int_equal(eng_tok_encode(v, "hi\n", 3, 0, ids, 16, &k), LODE_OK);
    assert_int_equal(k, 3);
    assert_int_equal(ids[0], first + 5); /* ▁h */
    assert_int_equal(ids[1], 3 + 'i');   /* <0x69> */
    assert_int_equal(ids[2], 3 + '\n');  /* <0x0A> */
    lode_buf b = LODE_BUF_INIT;
    assert_int_equal(eng_tok_decode(v, ids, k, ENG_TOK_STRIP_LEADING, &b), LODE_OK);
    assert_string_equal(b.data, "hi\n");
    lode_buf_free(&b);
    /* a multi-byte character absent from the vocabulary: its bytes, then whole on decode */
    assert_int_equal(eng_tok_encode(v, "é", 2, 0, ids, 16, &k), LODE_OK);
    assert_int_equal(k, 3); /* ▁ (alone, no merge), <0xC3>, <0xA9> */
    eng_detok dt;
    eng_detok_init(&dt, v, ENG_TOK_STRIP_LEADING);
    char out[64];
    assert_int_equal(eng_detok_push(&dt, ids[0], out, sizeof out), 0);
    assert_int_equal(eng_detok_push(&dt, ids[1], out, sizeof out), 0);
    assert_int_equal(eng_detok_push(&dt, ids[2], out, sizeof out), 2);
    assert_memory_equal(out, "é", 2);
    eng_vocab_destroy(v);
}

/* The SentencePiece tokenizer against llama.cpp on a synthetic vocabulary
 * (tests/data/spm/spm.json: vocabulary and ids, made by scripts/make-fixtures.sh). */
static void test_spm_fixture(void **state)
{
    (void)state;
    size_t len;
    char *txt = read_file("tests/data/spm/spm.json", &len);
    eng_json_doc *doc = NULL;
    char err[256];
    assert_int_equal(eng_json_parse(txt, len, &doc, err, sizeof err), LODE_OK);
    const eng_json *root = eng_json_root(doc);
    const eng_json *jt = eng_json_get(root, "tokens"), *js = eng_json_get(root, "scores");
    const eng_json *jy = eng_json_get(root, "token_types");
    assert_true(jt && js && jy && jt->len == js->len && jt->len == jy->len);
    size_t n = jt->len;
    const char **toks = malloc(n * sizeof *toks);
    size_t *lens = malloc(n * sizeof *lens);
    float *scores = malloc(n * sizeof *scores);
    int32_t *types = malloc(n * sizeof *types);
    size_t i = 0;
    for (const eng_json *a = jt->child, *b = js->child, *c = jy->child; a;
         a = a->next, b = b->next, c = c->next, i++) {
        toks[i] = a->str;
        lens[i] = a->len;
        scores[i] = (float)b->d;
        types[i] = (int32_t)c->i;
    }
    eng_vocab_desc d;
    eng_vocab_desc_init(&d);
    d.type = ENG_VOCAB_SPM;
    d.n_tokens = (int32_t)n;
    d.tokens = toks;
    d.token_lens = lens;
    d.scores = scores;
    d.token_types = types;
    d.bos = (eng_token)eng_json_get_int(root, "bos", -1);
    d.eos = (eng_token)eng_json_get_int(root, "eos", -1);
    d.unk = (eng_token)eng_json_get_int(root, "unk", -1);
    d.add_bos = eng_json_get_bool(root, "add_bos_token", 1);
    eng_vocab *v = NULL;
    assert_int_equal(eng_vocab_create(&d, &v, err, sizeof err), LODE_OK);
    int n_cases = 0, bad = 0;
    eng_token ids[4096];
    char raw[8192];
    for (const eng_json *c = eng_json_get(root, "cases")->child; c; c = c->next) {
        size_t rn = unhex(eng_json_get_str(c, "text_hex", ""), raw);
        unsigned flags = (eng_json_get_bool(c, "add_special", 0) ? ENG_TOK_ADD_SPECIAL : 0) |
                         (eng_json_get_bool(c, "parse_special", 0) ? ENG_TOK_PARSE_SPECIAL : 0);
        const eng_json *want = eng_json_get(c, "ids");
        size_t k = 0;
        assert_int_equal(eng_tok_encode(v, raw, rn, flags, ids, 4096, &k), LODE_OK);
        int ok = k == want->len;
        size_t j = 0;
        for (const eng_json *w = want->child; ok && w; w = w->next, j++)
            ok = ids[j] == (eng_token)w->i;
        if (!ok) {
            bad++;
            printf("SPM MISMATCH %s (flags %u): got", eng_json_get_str(c, "name", "?"), flags);
            for (size_t q = 0; q < k && q < 40; q++) printf(" %d", ids[q]);
            printf("\n  want");
            for (const eng_json *w = want->child; w; w = w->next) printf(" %d", (int)w->i);
            printf("\n");
        }
        /* valid UTF-8 of plain and byte tokens comes back whole (prefix space stripped);
         * after a user-defined token SPM adds a space of its own */
        const eng_json *t = eng_json_get(c, "text");
        int plain = 1;
        for (size_t q = 0; q < k; q++) {
            eng_token_type ty = eng_vocab_token_type(v, ids[q]);
            plain &= ty == ENG_TOKTYPE_NORMAL || ty == ENG_TOKTYPE_BYTE;
        }
        if (ok && t && flags == 0 && plain) {
            lode_buf b = LODE_BUF_INIT;
            assert_int_equal(eng_tok_decode(v, ids, k, ENG_TOK_STRIP_LEADING, &b), LODE_OK);
            assert_int_equal(b.len, t->len);
            assert_memory_equal(b.data, t->str, t->len);
            lode_buf_free(&b);
        }
        n_cases++;
    }
    printf("%d SPM fixture cases, %d mismatches\n", n_cases, bad);
    assert_true(n_cases >= 120);
    assert_int_equal(bad, 0);
    eng_vocab_destroy(v);
    free(toks);
    free(lens);
    free(scores);
    free(types);
    eng_json_free(doc);
    free(txt);
}

/* Runs the cases of a fixture array on v; returns the number of mismatches (printed). */
static int run_cases(const eng_vocab *v, const eng_json *cases, const char *label, int *n_cases)
{
    int bad = 0;
    static eng_token ids[4096];
    static char raw[8192];
    for (const eng_json *c = cases->child; c; c = c->next) {
        size_t rn = unhex(eng_json_get_str(c, "text_hex", ""), raw);
        unsigned flags = (eng_json_get_bool(c, "add_special", 0) ? ENG_TOK_ADD_SPECIAL : 0) |
                         (eng_json_get_bool(c, "parse_special", 0) ? ENG_TOK_PARSE_SPECIAL : 0);
        const eng_json *want = eng_json_get(c, "ids");
        size_t k = 0;
        assert_int_equal(eng_tok_encode(v, raw, rn, flags, ids, 4096, &k), LODE_OK);
        int ok = k == want->len;
        size_t j = 0;
        for (const eng_json *w = want->child; ok && w; w = w->next, j++)
            ok = ids[j] == (eng_token)w->i;
        if (!ok) {
            bad++;
            printf("%s MISMATCH %s (flags %u): got", label, eng_json_get_str(c, "name", "?"),
                   flags);
            for (size_t q = 0; q < k && q < 40; q++) printf(" %d", ids[q]);
            printf("\n  want");
            for (const eng_json *w = want->child; w; w = w->next) printf(" %d", (int)w->i);
            printf("\n");
        }
        (*n_cases)++;
    }
    return bad;
}

/* The BPE pre-tokenizers other than SmolLM2's against llama.cpp, on a synthetic
 * vocabulary (tests/data/bpe/bpe.json, made by scripts/make-fixtures.sh). */
static void test_bpe_pre_fixtures(void **state)
{
    (void)state;
    size_t len;
    char *txt = read_file("tests/data/bpe/bpe.json", &len);
    eng_json_doc *doc = NULL;
    char err[256];
    assert_int_equal(eng_json_parse(txt, len, &doc, err, sizeof err), LODE_OK);
    const eng_json *root = eng_json_root(doc);
    const eng_json *jt = eng_json_get(root, "tokens"), *jy = eng_json_get(root, "token_types");
    const eng_json *jm = eng_json_get(root, "merges");
    assert_true(jt && jy && jm && jt->len == jy->len);
    const char **toks = malloc(jt->len * sizeof *toks);
    size_t *lens = malloc(jt->len * sizeof *lens);
    int32_t *types = malloc(jt->len * sizeof *types);
    const char **merges = malloc(jm->len * sizeof *merges);
    size_t i = 0;
    for (const eng_json *a = jt->child, *c = jy->child; a; a = a->next, c = c->next, i++) {
        toks[i] = a->str;
        lens[i] = a->len;
        types[i] = (int32_t)c->i;
    }
    i = 0;
    for (const eng_json *a = jm->child; a; a = a->next) merges[i++] = a->str;
    int n_pres = 0, n_cases = 0, bad = 0;
    for (const eng_json *pre = eng_json_get(root, "pres")->child; pre; pre = pre->next) {
        eng_vocab_desc d;
        eng_vocab_desc_init(&d);
        d.type = ENG_VOCAB_BPE;
        d.pre = pre->key;
        d.n_tokens = (int32_t)jt->len;
        d.tokens = toks;
        d.token_lens = lens;
        d.token_types = types;
        d.n_merges = (int32_t)jm->len;
        d.merges = merges;
        d.bos = (eng_token)eng_json_get_int(root, "bos", -1);
        d.eos = (eng_token)eng_json_get_int(root, "eos", -1);
        eng_vocab *v = NULL;
        assert_int_equal(eng_vocab_create(&d, &v, err, sizeof err), LODE_OK);
        bad += run_cases(v, pre, pre->key, &n_cases);
        eng_vocab_destroy(v);
        n_pres++;
    }
    printf("%d pre-tokenizers, %d cases, %d mismatches\n", n_pres, n_cases, bad);
    assert_true(n_pres >= 5);
    assert_int_equal(bad, 0);
    free(toks);
    free(lens);
    free(types);
    free(merges);
    eng_json_free(doc);
    free(txt);
}

/* The prompts of greedy.json and logits.json: the chat ones rendered with the GGUF's own
 * template by lode's chat module, then tokenized, give llama.cpp's prompt ids; the greedy
 * continuations decode to llama.cpp's text. */
static void test_prompts_and_texts(void **state)
{
    (void)state;
    eng_vocab *v = load_vocab();
    if (!v) skip();
    eng_gguf *g = NULL;
    char err[256];
    assert_int_equal(eng_gguf_open(model_path(), &g, err, sizeof err), LODE_OK);
    const char *tmpl = NULL;
    assert_int_equal(eng_gguf_get_str(g, "tokenizer.chat_template", &tmpl, NULL), LODE_OK);
    eng_chat_template t;
    assert_int_equal(eng_chat_template_init(&t, tmpl, false, err, sizeof err), LODE_OK);
    const char *files[] = {"tests/data/smollm2/greedy.json", "tests/data/smollm2/logits.json"};
    int n_chat = 0, n_text = 0;
    for (int f = 0; f < 2; f++) {
        size_t len;
        char *txt = read_file(files[f], &len);
        eng_json_doc *doc = NULL;
        assert_int_equal(eng_json_parse(txt, len, &doc, err, sizeof err), LODE_OK);
        for (const eng_json *c = eng_json_get(eng_json_root(doc), "cases")->child; c; c = c->next) {
            const eng_json *prompt = eng_json_get(c, "prompt");
            assert_non_null(prompt);
            if (strcmp(eng_json_get_str(c, "kind", ""), "chat") == 0) {
                /* the user message is what follows "user\n" up to the end of its turn */
                const char *u = strstr(prompt->str, "<|im_start|>user\n");
                assert_non_null(u);
                u += strlen("<|im_start|>user\n");
                const char *e = strstr(u, "<|im_end|>");
                assert_non_null(e);
                char *msg = lode_strndup(u, (size_t)(e - u));
                eng_chat_msg m = {"user", msg};
                lode_buf b = LODE_BUF_INIT;
                assert_int_equal(eng_chat_render(&t, &m, 1, true, &b), LODE_OK);
                assert_string_equal(b.data, prompt->str);
                lode_buf_free(&b);
                lode_free(msg);
                n_chat++;
            }
            eng_token *ids = NULL;
            size_t n = 0;
            assert_int_equal(eng_tok_encode_alloc(v, prompt->str, prompt->len,
                                                  ENG_TOK_ADD_SPECIAL | ENG_TOK_PARSE_SPECIAL, &ids,
                                                  &n),
                             LODE_OK);
            const eng_json *want = eng_json_get(c, "prompt_ids");
            assert_int_equal(n, want->len);
            size_t k = 0;
            for (const eng_json *w = want->child; w; w = w->next, k++)
                assert_int_equal(ids[k], w->i);
            lode_free(ids);
            const eng_json *gen = eng_json_get(c, "ids"), *text = eng_json_get(c, "text");
            if (gen && text) {
                eng_token gi[256];
                size_t ng = 0;
                for (const eng_json *w = gen->child; w && ng < 256; w = w->next)
                    gi[ng++] = (eng_token)w->i;
                lode_buf b = LODE_BUF_INIT;
                assert_int_equal(eng_tok_decode(v, gi, ng, ENG_TOK_RENDER_SPECIAL, &b), LODE_OK);
                if (lode_utf8_valid_prefix(b.data, b.len) == b.len) {
                    assert_string_equal(b.data, text->str);
                    n_text++;
                }
                lode_buf_free(&b);
            }
        }
        eng_json_free(doc);
        free(txt);
    }
    assert_true(n_chat >= 4);
    assert_true(n_text >= 4);
    eng_gguf_close(g);
    eng_vocab_destroy(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_ids),        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_stream_split_emoji), cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_vocab_queries),      cmocka_unit_test(test_encode_nomem),
        cmocka_unit_test(test_bpe_arrays),         cmocka_unit_test(test_spm_arrays),
        cmocka_unit_test(test_spm_fixture),        cmocka_unit_test(test_bpe_pre_fixtures),
        cmocka_unit_test(test_prompts_and_texts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
