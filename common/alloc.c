/*
 * alloc.c: counted allocation. Every block carries a 16-byte header with its size so
 * that live bytes can be tracked; tests read the counters to find leaks and use
 * failure injection to walk the error paths of code that allocates.
 */
#include "common/lode.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define HDR 16

static _Atomic int64_t live_bytes, live_blocks, peak_bytes, total_allocs;
static _Atomic int64_t fail_countdown; /* 0 = off; else fail when it reaches 1 */

static int should_fail(void)
{
    int64_t c = atomic_load(&fail_countdown);
    if (c <= 0) return 0;
    if (c == 1) return 1; /* stays at 1: every later allocation fails too */
    atomic_fetch_sub(&fail_countdown, 1);
    return 0;
}

static void account(int64_t bytes, int64_t blocks)
{
    int64_t now = atomic_fetch_add(&live_bytes, bytes) + bytes;
    atomic_fetch_add(&live_blocks, blocks);
    int64_t peak = atomic_load(&peak_bytes);
    while (now > peak && !atomic_compare_exchange_weak(&peak_bytes, &peak, now)) {
    }
}

void *lode_malloc(size_t n)
{
    if (n > SIZE_MAX - HDR || should_fail()) return NULL;
    unsigned char *p = malloc(n + HDR);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    account((int64_t)n, 1);
    atomic_fetch_add(&total_allocs, 1);
    return p + HDR;
}

void *lode_calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size) return NULL;
    void *p = lode_malloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

void *lode_realloc(void *p, size_t n)
{
    if (!p) return lode_malloc(n);
    if (n == 0) {
        lode_free(p);
        return NULL;
    }
    if (n > SIZE_MAX - HDR || should_fail()) return NULL;
    unsigned char *base = (unsigned char *)p - HDR;
    size_t old;
    memcpy(&old, base, sizeof old);
    unsigned char *nb = realloc(base, n + HDR);
    if (!nb) return NULL;
    memcpy(nb, &n, sizeof n);
    account((int64_t)n - (int64_t)old, 0);
    atomic_fetch_add(&total_allocs, 1);
    return nb + HDR;
}

void lode_free(void *p)
{
    if (!p) return;
    unsigned char *base = (unsigned char *)p - HDR;
    size_t n;
    memcpy(&n, base, sizeof n);
    account(-(int64_t)n, -1);
    free(base);
}

char *lode_strndup(const char *s, size_t n)
{
    if (!s) return NULL;
    size_t len = strnlen(s, n);
    char *d = lode_malloc(len + 1);
    if (!d) return NULL;
    memcpy(d, s, len);
    d[len] = 0;
    return d;
}

char *lode_strdup(const char *s)
{
    return s ? lode_strndup(s, strlen(s)) : NULL;
}

/* Aligned blocks keep the raw pointer and the size just below the aligned address. */
void *lode_aligned_alloc(size_t align, size_t n)
{
    if (align < 16 || (align & (align - 1))) return NULL;
    if (n > SIZE_MAX - align - HDR || should_fail()) return NULL;
    unsigned char *raw = malloc(n + align + HDR);
    if (!raw) return NULL;
    uintptr_t a = ((uintptr_t)raw + HDR + align - 1) & ~(uintptr_t)(align - 1);
    unsigned char *p = (unsigned char *)a;
    memcpy(p - HDR, &raw, sizeof raw);
    memcpy(p - HDR + sizeof raw, &n, sizeof n);
    account((int64_t)n, 1);
    atomic_fetch_add(&total_allocs, 1);
    return p;
}

void lode_aligned_free(void *p)
{
    if (!p) return;
    unsigned char *raw;
    size_t n;
    memcpy(&raw, (unsigned char *)p - HDR, sizeof raw);
    memcpy(&n, (unsigned char *)p - HDR + sizeof raw, sizeof n);
    account(-(int64_t)n, -1);
    free(raw);
}

void lode_alloc_get_stats(lode_alloc_stats *out)
{
    out->live_bytes = atomic_load(&live_bytes);
    out->live_blocks = atomic_load(&live_blocks);
    out->peak_bytes = atomic_load(&peak_bytes);
    out->total_allocs = atomic_load(&total_allocs);
}

void lode_alloc_fail_after(int64_t n)
{
    atomic_store(&fail_countdown, n > 0 ? n : 0);
}
