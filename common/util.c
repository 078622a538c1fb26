/* util.c: logging, string buffers, clocks, CPU count and UTF-8 validation. */
#include "common/lode.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ---- logging ----------------------------------------------------------------------- */
static int log_level = -1; /* -1: not read from the environment yet */

static lode_log_level env_level(void)
{
    const char *e = getenv("LODE_LOG");
    if (!e) return LODE_LOG_WARN;
    if (!strcasecmp(e, "error")) return LODE_LOG_ERROR;
    if (!strcasecmp(e, "info")) return LODE_LOG_INFO;
    if (!strcasecmp(e, "debug")) return LODE_LOG_DEBUG;
    return LODE_LOG_WARN;
}

void lode_log_set_level(lode_log_level lvl)
{
    log_level = (int)lvl;
}

lode_log_level lode_log_get_level(void)
{
    if (log_level < 0) log_level = (int)env_level();
    return (lode_log_level)log_level;
}

void lode_log(lode_log_level lvl, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    if (lvl > lode_log_get_level()) return;
    char line[2048];
    int n = snprintf(line, sizeof line, "lode: %s: ", names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    if (len && line[len - 1] != '\n' && len + 1 < sizeof line) line[len++] = '\n', line[len] = 0;
    fputs(line, stderr); /* one write per line keeps threads' lines whole */
}

/* ---- buffers ----------------------------------------------------------------------- */
#define BUF_DEFAULT_MAX ((size_t)1 << 30)

lode_status lode_buf_reserve(lode_buf *b, size_t extra)
{
    size_t max = b->max ? b->max : BUF_DEFAULT_MAX;
    if (extra > max || b->len > max - extra) return LODE_ERR_LIMIT;
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return LODE_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = lode_realloc(b->data, cap);
    if (!p) return LODE_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return LODE_OK;
}

lode_status lode_buf_append(lode_buf *b, const void *p, size_t n)
{
    lode_status st = lode_buf_reserve(b, n);
    if (st) return st;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return LODE_OK;
}

lode_status lode_buf_puts(lode_buf *b, const char *s)
{
    return lode_buf_append(b, s, strlen(s));
}

lode_status lode_buf_putc(lode_buf *b, char c)
{
    return lode_buf_append(b, &c, 1);
}

lode_status lode_buf_vprintf(lode_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) return LODE_ERR_INVALID;
    lode_status st = lode_buf_reserve(b, (size_t)n);
    if (st) return st;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return LODE_OK;
}

lode_status lode_buf_printf(lode_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lode_status st = lode_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return st;
}

void lode_buf_reset(lode_buf *b)
{
    b->len = 0;
    if (b->data) b->data[0] = 0;
}

void lode_buf_free(lode_buf *b)
{
    lode_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *lode_buf_take(lode_buf *b)
{
    char *p = b->data ? b->data : lode_strdup("");
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

/* ---- time, CPUs -------------------------------------------------------------------- */
int64_t lode_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double lode_now_s(void)
{
    return (double)lode_now_ns() * 1e-9;
}

int lode_cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ---- UTF-8 ------------------------------------------------------------------------- */
size_t lode_utf8_valid_prefix(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        /* ASCII runs, the bulk of most text, eight bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & UINT64_C(0x8080808080808080)) break;
            i += 8;
        }
        if (i >= n) break;
        unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned min;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0)
            len = 2, min = 0x80, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0)
            len = 3, min = 0x800, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0)
            len = 4, min = 0x10000, cp = c & 0x07;
        else
            return i;
        if (i + len > n) return i;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return n;
}

char *lode_utf8_clean(const char *s, size_t n)
{
    lode_buf b = LODE_BUF_INIT;
    size_t i = 0;
    if (lode_buf_reserve(&b, n + 1)) goto fail;
    while (i < n) {
        size_t ok = lode_utf8_valid_prefix(s + i, n - i);
        if (lode_buf_append(&b, s + i, ok)) goto fail;
        i += ok;
        if (i < n) {
            if (lode_buf_puts(&b, "\xef\xbf\xbd")) goto fail;
            i++;
        }
    }
    return lode_buf_take(&b);
fail:
    lode_buf_free(&b);
    return NULL;
}
