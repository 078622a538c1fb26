/* test_wordpiece.c: BERT WordPiece tokenizer: greedy longest-match pieces, [UNK] rules,
 * normalization (case, accents, CJK, punctuation, control characters), truncation, and the
 * ids of the Hugging Face tokenizer for the fixture sentences (tests/data/minilm/).
 * lode-test: engine */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/lode.h"
#include "engine/wordpiece.h"

static const char small_vocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nun\n##want\n##ed\nwant\nrun\n"
                                  "##ning\n,\n.\nhello\nworld\ncafe\n\xe4\xb8\xad\n\xe6\x96\x87\n"
                                  "!\na\n##a\n";
/* ids: 0 [PAD] 1 [UNK] 2 [CLS] 3 [SEP] 4 un 5 ##want 6 ##ed 7 want 8 run 9 ##ning 10 ,
 * 11 . 12 hello 13 world 14 cafe 15 中 16 文 17 ! 18 a 19 ##a */

static eng_wordpiece *small(int lowercase)
{
    char err[256];
    eng_wordpiece *wp = NULL;
    assert_int_equal(eng_wordpiece_load_buffer(small_vocab, strlen(small_vocab), lowercase, &wp,
                                               err, sizeof err),
                     LODE_OK);
    return wp;
}

static int enc(const eng_wordpiece *wp, const char *s, int32_t *ids, int max, int *trunc)
{
    int n = -1;
    assert_int_equal(eng_wordpiece_encode(wp, s, strlen(s), ids, max, &n, trunc), LODE_OK);
    return n;
}

static void expect(const eng_wordpiece *wp, const char *s, const int32_t *want, int nwant)
{
    int32_t ids[64];
    int n = enc(wp, s, ids, 64, NULL);
    if (n != nwant || memcmp(ids, want, (size_t)n * sizeof *ids) != 0) {
        fprintf(stderr, "text '%s': got", s);
        for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
        fail_msg("wrong ids for '%s'", s);
    }
}

static void test_pieces(void **state)
{
    eng_wordpiece *wp = small(1);
    assert_int_equal(eng_wordpiece_vocab_size(wp), 20);
    assert_int_equal(eng_wordpiece_cls(wp), 2);
    assert_int_equal(eng_wordpiece_sep(wp), 3);
    assert_int_equal(eng_wordpiece_pad(wp), 0);
    assert_int_equal(eng_wordpiece_unk(wp), 1);
    assert_string_equal(eng_wordpiece_token(wp, 5), "##want");
    assert_null(eng_wordpiece_token(wp, 20));
    assert_int_equal(eng_wordpiece_id(wp, "##ning"), 9);
    assert_int_equal(eng_wordpiece_id(wp, "ning"), -1);
    expect(wp, "unwanted running", (int32_t[]){2, 4, 5, 6, 8, 9, 3}, 7);
    expect(wp, "", (int32_t[]){2, 3}, 2);
    expect(wp, "   \t\n ", (int32_t[]){2, 3}, 2);
    /* a word that cannot be cut entirely is one [UNK], not partial pieces */
    expect(wp, "wantx hello", (int32_t[]){2, 1, 12, 3}, 4);
    /* punctuation splits words, also without spaces */
    expect(wp, "hello,world.", (int32_t[]){2, 12, 10, 13, 11, 3}, 6);
    /* case and accents (uncased model) */
    expect(wp, "HELLO Caf\xc3\xa9 CAF\xc3\x89", (int32_t[]){2, 12, 14, 14, 3}, 5);
    /* CJK ideographs become words even inside other text */
    expect(wp,
           "a\xe4\xb8\xad\xe6\x96\x87"
           "a",
           (int32_t[]){2, 18, 15, 16, 18, 3}, 6);
    /* control characters vanish (do not split), NUL and invalid bytes too */
    expect(wp, "hel\x07lo wor\xffld", (int32_t[]){2, 12, 13, 3}, 4);
    /* 100 characters is still a word, 101 is [UNK] */
    char w[128];
    memset(w, 'a', 100);
    w[100] = 0;
    int32_t ids[256];
    int n = enc(wp, w, ids, 256, NULL);
    assert_int_equal(n, 102); /* [CLS] a ##a*99 [SEP] */
    assert_int_equal(ids[1], 18);
    assert_int_equal(ids[100], 19);
    memset(w, 'a', 101);
    w[101] = 0;
    expect(wp, w, (int32_t[]){2, 1, 3}, 3);
    eng_wordpiece_destroy(wp);

    /* cased: no lowercasing or accent stripping */
    wp = small(0);
    expect(wp, "Hello hello", (int32_t[]){2, 1, 12, 3}, 4);
    expect(wp, "caf\xc3\xa9", (int32_t[]){2, 1, 3}, 3);
    eng_wordpiece_destroy(wp);
}

static void test_truncation(void **state)
{
    eng_wordpiece *wp = small(1);
    int32_t ids[8];
    int trunc = -1;
    int n = enc(wp, "hello world hello world", ids, 4, &trunc);
    assert_int_equal(n, 4);
    assert_int_equal(trunc, 1);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 12);
    assert_int_equal(ids[2], 13);
    assert_int_equal(ids[3], 3);
    /* pieces of one word are cut too, like the reference tokenizer */
    n = enc(wp, "unwanted", ids, 3, &trunc);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], 4);
    assert_int_equal(ids[2], 3);
    n = enc(wp, "unwanted", ids, 5, &trunc);
    assert_int_equal(n, 5);
    assert_int_equal(trunc, 0);
    n = enc(wp, "hello", ids, 2, &trunc);
    assert_int_equal(n, 2);
    assert_int_equal(trunc, 1);
    assert_int_equal(eng_wordpiece_encode(wp, "x", 1, ids, 1, &n, NULL), LODE_ERR_INVALID);
    eng_wordpiece_destroy(wp);
}

static void test_bad_vocab(void **state)
{
    char err[256];
    eng_wordpiece *wp = NULL;
    const char *no_unk = "[PAD]\n[CLS]\n[SEP]\nhello\n";
    assert_int_equal(eng_wordpiece_load_buffer(no_unk, strlen(no_unk), 1, &wp, err, sizeof err),
                     LODE_ERR_FORMAT);
    assert_null(wp);
    assert_int_equal(eng_wordpiece_load_buffer("", 0, 1, &wp, err, sizeof err), LODE_ERR_FORMAT);
    const char *bad_utf8 = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n\xff\n";
    assert_int_equal(eng_wordpiece_load_buffer(bad_utf8, strlen(bad_utf8), 1, &wp, err, sizeof err),
                     LODE_ERR_FORMAT);
    assert_int_equal(eng_wordpiece_load("/nonexistent/vocab.txt", 1, &wp, err, sizeof err),
                     LODE_ERR_IO);
    /* CRLF lines and a missing final newline are fine */
    const char *crlf = "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nhello";
    assert_int_equal(eng_wordpiece_load_buffer(crlf, strlen(crlf), 1, &wp, err, sizeof err),
                     LODE_OK);
    assert_int_equal(eng_wordpiece_id(wp, "[SEP]"), 3);
    assert_int_equal(eng_wordpiece_id(wp, "hello"), 4);
    eng_wordpiece_destroy(wp);
    eng_wordpiece_destroy(NULL);
}

/* The reference: ids of the Hugging Face tokenizer for each fixture sentence. */
static void test_reference_ids(void **state)
{
    const char *vocab = "models/all-MiniLM-L6-v2/vocab.txt";
    if (access(vocab, R_OK) != 0) {
        printf("skipping: %s absent (run `make model`)\n", vocab);
        skip();
    }
    char err[256];
    eng_wordpiece *wp = NULL;
    assert_int_equal(eng_wordpiece_load(vocab, 1, &wp, err, sizeof err), LODE_OK);
    assert_int_equal(eng_wordpiece_vocab_size(wp), 30522);
    FILE *fs = fopen("tests/data/minilm/sentences.txt", "r");
    FILE *fi = fopen("tests/data/minilm/ids.txt", "r");
    assert_non_null(fs);
    assert_non_null(fi);
    static char line[65536], idline[65536];
    int32_t ids[512];
    int count = 0, bad = 0;
    while (fgets(line, sizeof line, fs)) {
        assert_non_null(fgets(idline, sizeof idline, fi));
        size_t len = strlen(line);
        if (len && line[len - 1] == '\n') line[--len] = 0;
        int n = 0;
        assert_int_equal(eng_wordpiece_encode(wp, line, len, ids, 256, &n, NULL), LODE_OK);
        int32_t want[512];
        int nw = 0;
        for (char *p = idline, *e; nw < 512; p = e) {
            long v = strtol(p, &e, 10);
            if (e == p) break;
            want[nw++] = (int32_t)v;
        }
        if (n != nw || memcmp(ids, want, (size_t)n * sizeof *ids) != 0) {
            fprintf(stderr, "sentence %d differs: '%s'\n  got ", count, line);
            for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n want");
            for (int i = 0; i < nw && i < 40; i++) fprintf(stderr, " %d", want[i]);
            fprintf(stderr, "\n");
            bad++;
        }
        count++;
    }
    fclose(fs);
    fclose(fi);
    eng_wordpiece_destroy(wp);
    assert_true(count >= 50);
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pieces),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_bad_vocab),
        cmocka_unit_test(test_reference_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
