/* test_common.c: status texts, counted allocation and failure injection, buffers, UTF-8.
 * lode-test: engine */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "common/lode.h"

static void test_strerror(void **state)
{
    for (int s = 0; s < LODE_STATUS_COUNT; s++) {
        assert_non_null(lode_strerror((lode_status)s));
        assert_string_not_equal(lode_strerror((lode_status)s), "unknown status");
    }
    assert_string_equal(lode_strerror((lode_status)999), "unknown status");
}

static void test_alloc_counts(void **state)
{
    lode_alloc_stats a, b;
    lode_alloc_get_stats(&a);
    char *p = lode_malloc(100);
    void *q = lode_aligned_alloc(64, 1000);
    assert_non_null(p);
    assert_non_null(q);
    assert_int_equal((uintptr_t)q % 64, 0);
    lode_alloc_get_stats(&b);
    assert_int_equal(b.live_bytes - a.live_bytes, 1100);
    assert_int_equal(b.live_blocks - a.live_blocks, 2);
    p = lode_realloc(p, 10);
    lode_alloc_get_stats(&b);
    assert_int_equal(b.live_bytes - a.live_bytes, 1010);
    lode_free(p);
    lode_aligned_free(q);
    lode_alloc_get_stats(&b);
    assert_int_equal(b.live_bytes, a.live_bytes);
    assert_int_equal(b.live_blocks, a.live_blocks);
}

static void test_alloc_failure_injection(void **state)
{
    lode_alloc_fail_after(2);
    void *a = lode_malloc(8);
    void *b = lode_malloc(8);
    void *c = lode_malloc(8);
    lode_alloc_fail_after(0);
    assert_non_null(a);
    assert_null(b);
    assert_null(c);
    lode_free(a);
    assert_null(lode_calloc(SIZE_MAX / 2, 4)); /* overflow is refused, not wrapped */
}

static void test_buf(void **state)
{
    lode_buf b = LODE_BUF_INIT;
    assert_int_equal(lode_buf_puts(&b, "abc"), LODE_OK);
    assert_int_equal(lode_buf_printf(&b, "-%d-%s", 42, "x"), LODE_OK);
    assert_string_equal(b.data, "abc-42-x");
    assert_int_equal(b.len, 8);
    b.max = 10;
    assert_int_equal(lode_buf_puts(&b, "toolong"), LODE_ERR_LIMIT);
    assert_string_equal(b.data, "abc-42-x"); /* unchanged on failure */
    char *s = lode_buf_take(&b);
    assert_string_equal(s, "abc-42-x");
    assert_null(b.data);
    lode_free(s);
    lode_buf_free(&b);
}

static void test_utf8(void **state)
{
    const char ok[] = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80";
    assert_int_equal(lode_utf8_valid_prefix(ok, strlen(ok)), strlen(ok));
    assert_int_equal(lode_utf8_valid_prefix("ab\xc0\xafz", 5), 2);        /* overlong */
    assert_int_equal(lode_utf8_valid_prefix("ab\xed\xa0\x80z", 6), 2);    /* surrogate */
    assert_int_equal(lode_utf8_valid_prefix("ab\xf4\x90\x80\x80", 6), 2); /* > U+10FFFF */
    assert_int_equal(lode_utf8_valid_prefix("ab\xe2\x82", 4), 2);         /* truncated */
    assert_int_equal(lode_utf8_valid_prefix("\xff", 1), 0);
}

static void test_seterr(void **state)
{
    char err[16];
    assert_int_equal(
        lode_seterr(err, sizeof err, LODE_ERR_IO, "open %s failed", "a-long-file-name"),
        LODE_ERR_IO);
    assert_int_equal(strlen(err), sizeof err - 1); /* truncated, terminated */
    assert_true(lode_cpu_count() >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_alloc_counts),
        cmocka_unit_test(test_alloc_failure_injection),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_seterr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
