/* test_gguf.c: the GGUF reader on a crafted file (valid, then corrupted field by field
 * and truncated at every length) and on the real model when it is present.
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
#include "engine/gguf.h"
#include "kernels/quant.h"

/* ---- a tiny GGUF builder that remembers where each field went ---------------------- */
typedef struct wbuf {
    uint8_t d[8192];
    size_t n;
} wbuf;

typedef struct layout {
    size_t version, n_tensors, n_kv;
    size_t t_ndims[2], t_dim0[2], t_type[2], t_offset[2];
    size_t kv_type_u32, arr_len_strs, str_len_name;
    size_t data_start, size;
} layout;

static void put(wbuf *b, const void *p, size_t n)
{
    assert_true(b->n + n <= sizeof b->d);
    memcpy(b->d + b->n, p, n);
    b->n += n;
}
static void put_u32(wbuf *b, uint32_t v)
{
    put(b, &v, 4);
}
static void put_u64(wbuf *b, uint64_t v)
{
    put(b, &v, 8);
}
static void put_str(wbuf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void patch_u32(wbuf *b, size_t at, uint32_t v)
{
    memcpy(b->d + at, &v, 4);
}
static void patch_u64(wbuf *b, size_t at, uint64_t v)
{
    memcpy(b->d + at, &v, 8);
}

/* Two tensors: "a" f32 [4,2] at 0 and "b" q4_1 [32,2] at 32; 7 keys. */
static void build(wbuf *b, layout *l)
{
    memset(b, 0, sizeof *b);
    put(b, "GGUF", 4);
    l->version = b->n;
    put_u32(b, 3);
    l->n_tensors = b->n;
    put_u64(b, 2);
    l->n_kv = b->n;
    put_u64(b, 7);
    put_str(b, "general.architecture");
    put_u32(b, ENG_GGUF_STRING);
    l->str_len_name = b->n;
    put_str(b, "llama");
    put_str(b, "llama.block_count");
    l->kv_type_u32 = b->n;
    put_u32(b, ENG_GGUF_U32);
    put_u32(b, 30);
    put_str(b, "llama.rope.freq_base");
    put_u32(b, ENG_GGUF_F32);
    float f = 10000.5f;
    put(b, &f, 4);
    put_str(b, "flag");
    put_u32(b, ENG_GGUF_BOOL);
    uint8_t one = 1;
    put(b, &one, 1);
    put_str(b, "tokens");
    put_u32(b, ENG_GGUF_ARRAY);
    put_u32(b, ENG_GGUF_STRING);
    l->arr_len_strs = b->n;
    put_u64(b, 3);
    put_str(b, "<s>");
    put_str(b, "");
    put_str(b, "h\xc3\xa9");
    put_str(b, "types");
    put_u32(b, ENG_GGUF_ARRAY);
    put_u32(b, ENG_GGUF_I16);
    put_u64(b, 3);
    int16_t iv[3] = {-5, 0, 300};
    put(b, iv, sizeof iv);
    put_str(b, "general.alignment");
    put_u32(b, ENG_GGUF_U32);
    put_u32(b, 32);
    const char *names[2] = {"a", "b"};
    uint64_t d0[2] = {4, 32}, off[2] = {0, 32};
    uint32_t ty[2] = {LODE_F32, LODE_Q4_1};
    for (int i = 0; i < 2; i++) {
        put_str(b, names[i]);
        l->t_ndims[i] = b->n;
        put_u32(b, 2);
        l->t_dim0[i] = b->n;
        put_u64(b, d0[i]);
        put_u64(b, 2);
        l->t_type[i] = b->n;
        put_u32(b, ty[i]);
        l->t_offset[i] = b->n;
        put_u64(b, off[i]);
    }
    while (b->n % 32) b->d[b->n++] = 0;
    l->data_start = b->n;
    float av[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    put(b, av, sizeof av);
    b->n = l->data_start + 32; /* b starts at 32 */
    for (int i = 0; i < 40; i++) b->d[b->n++] = (uint8_t)(i * 7);
    l->size = b->n;
}

static lode_status try_open(wbuf *b, size_t n, char *err, size_t errlen)
{
    eng_gguf *g = NULL;
    lode_status st = eng_gguf_open_memory(b->d, n, &g, err, errlen);
    if (st == LODE_OK)
        assert_non_null(g);
    else
        assert_null(g);
    eng_gguf_close(g);
    return st;
}

static void test_valid(void **state)
{
    wbuf b;
    layout l;
    build(&b, &l);
    char err[512];
    eng_gguf *g = NULL;
    assert_int_equal(eng_gguf_open_memory(b.d, l.size, &g, err, sizeof err), LODE_OK);
    assert_int_equal(eng_gguf_version(g), 3);
    assert_int_equal(eng_gguf_n_kv(g), 7);
    const char *s;
    size_t len;
    assert_int_equal(eng_gguf_get_str(g, "general.architecture", &s, &len), LODE_OK);
    assert_string_equal(s, "llama");
    assert_int_equal(len, 5);
    uint32_t u;
    assert_int_equal(eng_gguf_get_u32(g, "llama.block_count", &u), LODE_OK);
    assert_int_equal(u, 30);
    int32_t i32;
    assert_int_equal(eng_gguf_get_i32(g, "llama.block_count", &i32), LODE_OK);
    assert_int_equal(i32, 30);
    float f;
    assert_int_equal(eng_gguf_get_f32(g, "llama.rope.freq_base", &f), LODE_OK);
    assert_true(f == 10000.5f);
    int flag;
    assert_int_equal(eng_gguf_get_bool(g, "flag", &flag), LODE_OK);
    assert_int_equal(flag, 1);
    /* absent key: NOTFOUND; wrong type: FORMAT with the key in the message */
    assert_int_equal(eng_gguf_get_u32(g, "nope", &u), LODE_ERR_NOTFOUND);
    assert_int_equal(eng_gguf_get_u32(g, "general.architecture", &u), LODE_ERR_FORMAT);
    assert_non_null(strstr(eng_gguf_errmsg(g), "general.architecture"));
    assert_int_equal(eng_gguf_get_f32(g, "llama.block_count", &f), LODE_ERR_FORMAT);
    const eng_gguf_str *strs;
    uint64_t n;
    assert_int_equal(eng_gguf_get_arr_strs(g, "tokens", &strs, &n), LODE_OK);
    assert_int_equal(n, 3);
    assert_int_equal(strs[0].len, 3);
    assert_memory_equal(strs[0].ptr, "<s>", 3);
    assert_int_equal(strs[1].len, 0);
    assert_int_equal(strs[2].len, 3);
    eng_gguf_type et;
    assert_int_equal(eng_gguf_get_arr_info(g, "types", &et, &n), LODE_OK);
    assert_int_equal(et, ENG_GGUF_I16);
    int32_t iv[3];
    float fv[3];
    assert_int_equal(eng_gguf_copy_arr_i32(g, "types", iv, 3), LODE_OK);
    assert_int_equal(iv[0], -5);
    assert_int_equal(iv[2], 300);
    assert_int_equal(eng_gguf_copy_arr_f32(g, "types", fv, 3), LODE_OK);
    assert_true(fv[0] == -5.0f);
    assert_int_equal(eng_gguf_copy_arr_i32(g, "types", iv, 2), LODE_ERR_FORMAT);
    assert_int_equal(eng_gguf_copy_arr_i32(g, "tokens", iv, 3), LODE_ERR_FORMAT);
    assert_int_equal(eng_gguf_n_tensors(g), 2);
    const eng_gguf_tensor *ta = eng_gguf_find_tensor(g, "a"), *tb = eng_gguf_find_tensor(g, "b");
    assert_non_null(ta);
    assert_non_null(tb);
    assert_null(eng_gguf_find_tensor(g, "c"));
    assert_int_equal(ta->type, LODE_F32);
    assert_int_equal(ta->ne[0], 4);
    assert_int_equal(ta->ne[1], 2);
    assert_int_equal(ta->n_elems, 8);
    assert_int_equal(ta->nbytes, 32);
    float a7;
    memcpy(&a7, (const char *)ta->data + 28, 4);
    assert_true(a7 == 8.0f);
    assert_int_equal(tb->nbytes, 40);
    assert_ptr_equal(tb->data, b.d + l.data_start + 32);
    eng_gguf_close(g);
}

static void test_truncated_everywhere(void **state)
{
    wbuf b;
    layout l;
    build(&b, &l);
    char err[512];
    for (size_t n = 0; n < l.size; n++) {
        lode_status st = try_open(&b, n, err, sizeof err);
        assert_int_not_equal(st, LODE_OK);
        assert_true(err[0] != 0);
    }
    assert_int_equal(try_open(&b, l.size, err, sizeof err), LODE_OK);
    /* truncated inside the data of tensor b: the message names it */
    assert_int_equal(try_open(&b, l.size - 1, err, sizeof err), LODE_ERR_FORMAT);
    assert_non_null(strstr(err, "'b'"));
}

typedef void (*corrupt_fn)(wbuf *b, const layout *l);
static void bad_magic(wbuf *b, const layout *l)
{
    b->d[0] = 'X';
}
static void bad_version(wbuf *b, const layout *l)
{
    patch_u32(b, l->version, 7);
}
static void version1(wbuf *b, const layout *l)
{
    patch_u32(b, l->version, 1);
}
static void huge_tensors(wbuf *b, const layout *l)
{
    patch_u64(b, l->n_tensors, UINT64_MAX);
}
static void many_tensors(wbuf *b, const layout *l)
{
    patch_u64(b, l->n_tensors, 60000);
}
static void huge_kv(wbuf *b, const layout *l)
{
    patch_u64(b, l->n_kv, 1ull << 40);
}
static void huge_str(wbuf *b, const layout *l)
{
    patch_u64(b, l->str_len_name, UINT64_MAX - 3);
}
static void huge_arr(wbuf *b, const layout *l)
{
    patch_u64(b, l->arr_len_strs, 1ull << 62);
}
static void bad_kv_type(wbuf *b, const layout *l)
{
    patch_u32(b, l->kv_type_u32, 99);
}
static void unknown_tensor_type(wbuf *b, const layout *l)
{
    patch_u32(b, l->t_type[1], 5);
}
static void tensor_type_huge(wbuf *b, const layout *l)
{
    patch_u32(b, l->t_type[0], 0xffffffffu);
}
static void five_dims(wbuf *b, const layout *l)
{
    patch_u32(b, l->t_ndims[0], 5);
}
static void zero_dim(wbuf *b, const layout *l)
{
    patch_u64(b, l->t_dim0[0], 0);
}
static void dim_overflow(wbuf *b, const layout *l)
{
    patch_u64(b, l->t_dim0[0], 1ull << 40);
}
static void row_not_block(wbuf *b, const layout *l)
{
    patch_u64(b, l->t_dim0[1], 48);
}
static void overlap(wbuf *b, const layout *l)
{
    patch_u64(b, l->t_offset[1], 0);
}
static void out_of_range(wbuf *b, const layout *l)
{
    patch_u64(b, l->t_offset[1], 64);
}
static void offset_huge(wbuf *b, const layout *l)
{
    patch_u64(b, l->t_offset[1], UINT64_MAX - 31);
}
static void misaligned(wbuf *b, const layout *l)
{
    patch_u64(b, l->t_offset[1], 33);
}
static void grow_a(wbuf *b, const layout *l)
{
    patch_u64(b, l->t_dim0[0], 8); /* a now 64 bytes: runs into b */
}

static void test_corruptions(void **state)
{
    struct {
        corrupt_fn fn;
        lode_status want;
        const char *msg; /* must appear in the message */
    } cases[] = {
        {bad_magic, LODE_ERR_FORMAT, "magic"},
        {bad_version, LODE_ERR_UNSUPPORTED, "version 7"},
        {version1, LODE_ERR_UNSUPPORTED, "version 1"},
        {huge_tensors, LODE_ERR_FORMAT, "tensor count"},
        {many_tensors, LODE_ERR_FORMAT, "cannot fit"},
        {huge_kv, LODE_ERR_FORMAT, "key/value count"},
        {huge_str, LODE_ERR_FORMAT, "general.architecture"},
        {huge_arr, LODE_ERR_FORMAT, "tokens"},
        {bad_kv_type, LODE_ERR_FORMAT, "llama.block_count"},
        {unknown_tensor_type, LODE_ERR_UNSUPPORTED, "'b'"},
        {tensor_type_huge, LODE_ERR_UNSUPPORTED, "'a'"},
        {five_dims, LODE_ERR_FORMAT, "'a'"},
        {zero_dim, LODE_ERR_FORMAT, "'a'"},
        {dim_overflow, LODE_ERR_FORMAT, "'a'"},
        {row_not_block, LODE_ERR_FORMAT, "'b'"},
        {overlap, LODE_ERR_FORMAT, "overlap"},
        {out_of_range, LODE_ERR_FORMAT, "'b'"},
        {offset_huge, LODE_ERR_FORMAT, "'b'"},
        {misaligned, LODE_ERR_FORMAT, "alignment"},
        {grow_a, LODE_ERR_FORMAT, "overlap"},
    };
    for (size_t i = 0; i < LODE_ARRAY_LEN(cases); i++) {
        wbuf b;
        layout l;
        build(&b, &l);
        cases[i].fn(&b, &l);
        char err[512] = "";
        lode_status st = try_open(&b, l.size, err, sizeof err);
        if (st != cases[i].want || !strstr(err, cases[i].msg))
            fail_msg("case %zu: status %d (%s), want %d with '%s'", i, st, err, cases[i].want,
                     cases[i].msg);
    }
}

/* Random byte flips anywhere in the header: any status, never a crash or leak. */
static void test_random_flips(void **state)
{
    uint64_t rng = 12345;
    lode_alloc_stats a, z;
    lode_alloc_get_stats(&a);
    for (int it = 0; it < 20000; it++) {
        wbuf b;
        layout l;
        build(&b, &l);
        for (int k = 0; k < 1 + it % 4; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(rng >> 33) % l.data_start;
            b.d[at] = (uint8_t)(rng >> 20);
        }
        char err[256];
        try_open(&b, l.size, err, sizeof err);
    }
    lode_alloc_get_stats(&z);
    assert_int_equal(z.live_blocks, a.live_blocks);
}

static void test_alloc_failures(void **state)
{
    wbuf b;
    layout l;
    build(&b, &l);
    char err[256];
    for (int n = 1; n < 40; n++) {
        lode_alloc_fail_after(n);
        lode_status st = try_open(&b, l.size, err, sizeof err);
        lode_alloc_fail_after(0);
        assert_true(st == LODE_OK || st == LODE_ERR_NOMEM);
    }
}

static void test_files(void **state)
{
    char err[512];
    eng_gguf *g = NULL;
    assert_int_equal(eng_gguf_open("/nonexistent/x.gguf", &g, err, sizeof err), LODE_ERR_IO);
    assert_null(g);
    assert_non_null(strstr(err, "/nonexistent/x.gguf"));
    char path[] = "/tmp/lode-test-gguf-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    wbuf b;
    layout l;
    build(&b, &l);
    assert_int_equal(write(fd, b.d, l.size - 5), (ssize_t)(l.size - 5));
    close(fd);
    assert_int_equal(eng_gguf_open(path, &g, err, sizeof err), LODE_ERR_FORMAT);
    assert_non_null(strstr(err, path));
    unlink(path);
}

static void test_real_model(void **state)
{
    const char *path = getenv("LODE_MODEL");
    if (!path || !*path) path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (access(path, R_OK) != 0) {
        printf("model %s not present (run make model)\n", path);
        skip();
    }
    char err[512];
    eng_gguf *g = NULL;
    assert_int_equal(eng_gguf_open(path, &g, err, sizeof err), LODE_OK);
    const char *arch;
    assert_int_equal(eng_gguf_get_str(g, "general.architecture", &arch, NULL), LODE_OK);
    const eng_gguf_str *toks;
    uint64_t n;
    assert_int_equal(eng_gguf_get_arr_strs(g, "tokenizer.ggml.tokens", &toks, &n), LODE_OK);
    assert_true(n > 1000);
    const eng_gguf_tensor *t = eng_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->ne[1], n);
    assert_int_equal((uintptr_t)t->data % eng_gguf_alignment(g), 0);
    eng_gguf_close(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),          cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_corruptions),    cmocka_unit_test(test_random_flips),
        cmocka_unit_test(test_alloc_failures), cmocka_unit_test(test_files),
        cmocka_unit_test(test_real_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
