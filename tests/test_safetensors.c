/* test_safetensors.c: the engine's strict JSON reader and the safetensors reader: valid
 * files in every float dtype, each validation rule refusing a crafted bad file, the file
 * path (mmap) and the real embedding model when `make model` has fetched it.
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
#include "engine/ejson.h"
#include "engine/safetensors.h"
#include "kernels/quant.h"

static lode_status parse_json_n(const char *s, size_t n)
{
    char err[256];
    eng_json_doc *d = NULL;
    lode_status st = eng_json_parse(s, n, &d, err, sizeof err);
    eng_json_free(d);
    return st;
}

static lode_status parse_json(const char *s)
{
    return parse_json_n(s, strlen(s));
}

static void test_json_strict(void **state)
{
    const char *good[] = {"{}",
                          "[]",
                          " {\"a\" : [1, -2.5e3, true, false, null, \"x\"]} ",
                          "0",
                          "\"\\u00e9\\ud83d\\ude00\\n\"",
                          "-0",
                          "1E+2"};
    const char *bad[] = {"",         "{",       "{\"a\":1,}",  "[1,]",
                         "01",       "1.",      ".5",          "+1",
                         "{'a':1}",  "\"\\x\"", "\"\\ud800\"", "\"\\udc00x\"",
                         "\"a\nb\"", "tru",     "{} x",        "\"\\u0000\"",
                         "NaN",      "[1 2]",   "{\"a\" 1}",   "\"\xc3\x28\"",
                         "\"\\u12\""};
    for (size_t i = 0; i < LODE_ARRAY_LEN(good); i++)
        if (parse_json(good[i]) != LODE_OK) fail_msg("refused good JSON #%zu: %s", i, good[i]);
    for (size_t i = 0; i < LODE_ARRAY_LEN(bad); i++)
        if (parse_json(bad[i]) != LODE_ERR_FORMAT)
            fail_msg("accepted bad JSON #%zu: %s", i, bad[i]);
    /* nesting: the limit is enforced, just under it parses */
    char deep[2 * (ENG_JSON_MAX_DEPTH + 1)];
    memset(deep, '[', ENG_JSON_MAX_DEPTH + 1);
    memset(deep + ENG_JSON_MAX_DEPTH + 1, ']', ENG_JSON_MAX_DEPTH + 1);
    assert_int_equal(parse_json_n(deep, sizeof deep), LODE_ERR_FORMAT);
    assert_int_equal(parse_json_n(deep + 1, sizeof deep - 2), LODE_OK);
}

static void test_json_values(void **state)
{
    const char *s = "{\"n\": 9007199254740993, \"neg\": -9223372036854775808, \"big\": "
                    "99999999999999999999, \"f\": 0.25, \"s\": \"a\\\"b\\u00e9\", \"t\": true}";
    char err[128];
    eng_json_doc *d = NULL;
    assert_int_equal(eng_json_parse(s, strlen(s), &d, err, sizeof err), LODE_OK);
    const eng_json *r = eng_json_root(d);
    assert_int_equal(eng_json_get_int(r, "n", 0), 9007199254740993LL);
    assert_true(eng_json_get_int(r, "neg", 0) == INT64_MIN);
    assert_int_equal(eng_json_get_int(r, "big", -7), -7); /* does not fit int64 */
    assert_true(eng_json_get_num(r, "big", 0) > 9.9e19);
    assert_true(eng_json_get_num(r, "f", 0) == 0.25);
    assert_string_equal(eng_json_get_str(r, "s", ""), "a\"b\xc3\xa9");
    assert_int_equal(eng_json_get_bool(r, "t", 0), 1);
    assert_null(eng_json_get(r, "missing"));
    assert_int_equal(eng_json_root(d)->len, 6);
    eng_json_free(d);
}

/* Builds a safetensors image: header text (padded with spaces to a multiple of 8) then
 * data_len bytes from data. */
static uint8_t *make_st(const char *header, const void *data, size_t data_len, size_t *len)
{
    size_t h = strlen(header), hp = (h + 7) / 8 * 8;
    uint8_t *buf = malloc(8 + hp + data_len + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hp >> (8 * i));
    memcpy(buf + 8, header, h);
    memset(buf + 8 + h, ' ', hp - h);
    if (data_len) memcpy(buf + 8 + hp, data, data_len);
    *len = 8 + hp + data_len;
    return buf;
}

static lode_status open_hdr(const char *header, size_t data_len, char *err, size_t errlen)
{
    uint8_t data[256] = {0};
    size_t len;
    uint8_t *buf = make_st(header, data, data_len, &len);
    eng_st *st = NULL;
    lode_status rc = eng_st_open_buffer(buf, len, &st, err, errlen);
    eng_st_close(st);
    free(buf);
    return rc;
}

static void test_st_valid(void **state)
{
    float f32[6] = {1, -2, 3.5f, 0, 1e-3f, 65504};
    uint8_t data[6 * 4 + 4 * 2 + 4 * 2 + 8];
    memcpy(data, f32, sizeof f32);
    lode_half h[4] = {lode_float_to_half(1.5f), lode_float_to_half(-0.25f), 0,
                      lode_float_to_half(1024)};
    memcpy(data + 24, h, sizeof h);
    lode_bf16 b[4] = {lode_float_to_bf16(3.0f), lode_float_to_bf16(-7.5f), 0,
                      lode_float_to_bf16(0.5f)};
    memcpy(data + 32, b, sizeof b);
    int64_t i64 = 42;
    memcpy(data + 40, &i64, 8);
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                      "\"h\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                      "\"ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[40,48]},"
                      "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[48,48]},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[32,40]}}";
    size_t len;
    uint8_t *buf = make_st(hdr, data, sizeof data, &len);
    char err[256];
    eng_st *st = NULL;
    assert_int_equal(eng_st_open_buffer(buf, len, &st, err, sizeof err), LODE_OK);
    assert_int_equal(eng_st_count(st), 5);
    assert_string_equal(eng_st_at(st, 0)->name, "b"); /* name order */
    assert_string_equal(eng_st_metadata(st, "format"), "pt");
    assert_null(eng_st_metadata(st, "nope"));
    const eng_st_tensor *w = eng_st_find(st, "w");
    assert_non_null(w);
    assert_int_equal(w->dtype, ENG_ST_F32);
    assert_int_equal(w->n_dims, 2);
    assert_int_equal(w->shape[0], 2);
    assert_int_equal(w->shape[1], 3);
    assert_int_equal(w->nbytes, 24);
    assert_ptr_equal(w->data, buf + len - sizeof data);
    float out[6];
    assert_int_equal(eng_st_to_f32(w, out, 6), LODE_OK);
    assert_memory_equal(out, f32, sizeof f32);
    assert_int_equal(eng_st_to_f32(w, out, 5), LODE_ERR_INVALID);
    assert_int_equal(eng_st_to_f32(eng_st_find(st, "h"), out, 4), LODE_OK);
    assert_true(out[0] == 1.5f && out[1] == -0.25f && out[2] == 0 && out[3] == 1024);
    assert_int_equal(eng_st_to_f32(eng_st_find(st, "b"), out, 4), LODE_OK);
    assert_true(out[0] == 3.0f && out[1] == -7.5f && out[3] == 0.5f);
    assert_int_equal(eng_st_to_f32(eng_st_find(st, "ids"), out, 1), LODE_ERR_UNSUPPORTED);
    assert_int_equal(eng_st_find(st, "empty")->n_elems, 0);
    assert_null(eng_st_find(st, "zzz"));
    eng_st_close(st);

    /* the same through a file and mmap */
    char path[] = "/tmp/lode-st-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
    assert_int_equal(eng_st_open(path, &st, err, sizeof err), LODE_OK);
    assert_int_equal(eng_st_count(st), 5);
    assert_int_equal(eng_st_to_f32(eng_st_find(st, "w"), out, 6), LODE_OK);
    assert_memory_equal(out, f32, sizeof f32);
    eng_st_close(st);
    /* truncated on disk: the header now points past the end */
    assert_int_equal(truncate(path, (off_t)len - 4), 0);
    assert_int_equal(eng_st_open(path, &st, err, sizeof err), LODE_ERR_FORMAT);
    assert_null(st);
    unlink(path);
    assert_int_equal(eng_st_open(path, &st, err, sizeof err), LODE_ERR_IO);
    free(buf);
    eng_st_close(NULL);
}

static void test_st_invalid(void **state)
{
    static const struct {
        const char *hdr;
        size_t data_len;
        lode_status want;
        const char *what;
    } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, LODE_OK, "ok"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, LODE_ERR_FORMAT,
         "shape vs size"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 16, LODE_ERR_FORMAT,
         "trailing data"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, LODE_ERR_FORMAT,
         "past the end"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, LODE_ERR_FORMAT,
         "hole"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, LODE_ERR_FORMAT, "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
         16, LODE_ERR_FORMAT, "duplicate name"},
        {"{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, LODE_ERR_UNSUPPORTED,
         "unknown dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, LODE_ERR_FORMAT,
         "negative dim"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, LODE_ERR_FORMAT,
         "fractional dim"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, LODE_ERR_FORMAT,
         "end before begin"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, LODE_ERR_FORMAT,
         "one offset"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8,
         LODE_ERR_FORMAT, "extra field"},
        {"{\"a\":[1]}", 0, LODE_ERR_FORMAT, "entry not an object"},
        {"{\"__metadata__\":{\"k\":1}}", 0, LODE_ERR_FORMAT, "metadata not strings"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
         "\"data_offsets\":[0,8]}}",
         8, LODE_ERR_FORMAT, "shape overflow"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         LODE_ERR_UNSUPPORTED, "too many dims"},
        {"[]", 0, LODE_ERR_FORMAT, "not an object"},
        {"{\"a\":", 0, LODE_ERR_FORMAT, "bad JSON"},
    };
    char err[256];
    for (size_t i = 0; i < LODE_ARRAY_LEN(cases); i++) {
        lode_status rc = open_hdr(cases[i].hdr, cases[i].data_len, err, sizeof err);
        if (rc != cases[i].want)
            fail_msg("case '%s': got %s (%s), want %s", cases[i].what, lode_strerror(rc), err,
                     lode_strerror(cases[i].want));
    }
    /* header length field: too short a file, zero, past the end, over the limit */
    uint8_t small[8] = {2, 0, 0, 0, 0, 0, 0, 0};
    eng_st *st = NULL;
    assert_int_equal(eng_st_open_buffer(small, 4, &st, err, sizeof err), LODE_ERR_FORMAT);
    assert_int_equal(eng_st_open_buffer(small, 8, &st, err, sizeof err), LODE_ERR_FORMAT);
    uint8_t zero[10] = {0, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    assert_int_equal(eng_st_open_buffer(zero, 10, &st, err, sizeof err), LODE_ERR_FORMAT);
    uint8_t huge[10] = {0, 0, 0, 0, 0, 0, 0, 0x80, '{', '}'};
    assert_int_equal(eng_st_open_buffer(huge, 10, &st, err, sizeof err), LODE_ERR_FORMAT);
    uint8_t empty[10] = {2, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    assert_int_equal(eng_st_open_buffer(empty, 10, &st, err, sizeof err), LODE_OK);
    assert_int_equal(eng_st_count(st), 0);
    eng_st_close(st);
}

static void test_st_alloc_failure(void **state)
{
    const char *hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[8,12]}}";
    uint8_t data[12] = {0};
    size_t len;
    uint8_t *buf = make_st(hdr, data, sizeof data, &len);
    lode_alloc_stats a, b;
    lode_alloc_get_stats(&a);
    char err[128];
    int ok = 0;
    for (int n = 1; n < 20 && !ok; n++) {
        eng_st *st = NULL;
        lode_alloc_fail_after(n);
        lode_status rc = eng_st_open_buffer(buf, len, &st, err, sizeof err);
        lode_alloc_fail_after(0);
        if (rc == LODE_OK)
            ok = 1;
        else
            assert_int_equal(rc, LODE_ERR_NOMEM);
        eng_st_close(st);
    }
    assert_true(ok);
    lode_alloc_get_stats(&b);
    assert_int_equal(a.live_blocks, b.live_blocks); /* nothing leaked on any failure path */
    free(buf);
}

static void test_st_real_model(void **state)
{
    const char *path = "models/all-MiniLM-L6-v2/model.safetensors";
    if (access(path, R_OK) != 0) {
        printf("skipping: %s absent (run `make model`)\n", path);
        skip();
    }
    char err[256];
    eng_st *st = NULL;
    assert_int_equal(eng_st_open(path, &st, err, sizeof err), LODE_OK);
    assert_int_equal(eng_st_count(st), 104);
    const eng_st_tensor *t = eng_st_find(st, "embeddings.word_embeddings.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, ENG_ST_F32);
    assert_int_equal(t->shape[0], 30522);
    assert_int_equal(t->shape[1], 384);
    assert_int_equal(eng_st_find(st, "embeddings.position_ids")->dtype, ENG_ST_I64);
    eng_st_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_strict),      cmocka_unit_test(test_json_values),
        cmocka_unit_test(test_st_valid),         cmocka_unit_test(test_st_invalid),
        cmocka_unit_test(test_st_alloc_failure), cmocka_unit_test(test_st_real_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
