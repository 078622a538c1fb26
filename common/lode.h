/*
 * lode.h: what every module of lode shares: the status type, logging, counted
 * allocation with failure injection, bounded string buffers and a monotonic clock.
 * Nothing here depends on anything but libc and pthreads, so the engine builds alone.
 */
#ifndef LODE_COMMON_H
#define LODE_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* One status type for the whole project; 0 is success. Keep lode_strerror in step. */
typedef enum lode_status {
    LODE_OK = 0,
    LODE_ERR_NOMEM,       /* allocation failed or a bound was reached */
    LODE_ERR_IO,          /* read/write/open failed (errno in the message) */
    LODE_ERR_INVALID,     /* bad argument or bad input from outside */
    LODE_ERR_FORMAT,      /* malformed file or document */
    LODE_ERR_UNSUPPORTED, /* well-formed but not something lode handles */
    LODE_ERR_NOTFOUND,
    LODE_ERR_EXISTS,
    LODE_ERR_RANGE, /* value out of range, e.g. prompt longer than the context */
    LODE_ERR_LIMIT, /* input over a configured size limit */
    LODE_ERR_BUSY,  /* resource held elsewhere (database lock, full queue) */
    LODE_ERR_CANCELLED,
    LODE_ERR_DB,    /* SQLite error (message has the detail) */
    LODE_ERR_INDEX, /* FAISS error */
    LODE_ERR_CUDA,  /* CUDA runtime, cuBLAS or kernel launch error */
    LODE_ERR_NET,   /* curl or socket error */
    LODE_ERR_AUTH,
    LODE_ERR_VERSION,  /* file or database written by a newer lode */
    LODE_ERR_UTF8,     /* invalid UTF-8 */
    LODE_ERR_INTERNAL, /* a bug: an invariant did not hold */
    LODE_STATUS_COUNT
} lode_status;

/* Static English text for a status; never NULL. */
const char *lode_strerror(lode_status st);

/* ---- logging ----------------------------------------------------------------------- */
typedef enum lode_log_level {
    LODE_LOG_ERROR = 0,
    LODE_LOG_WARN,
    LODE_LOG_INFO,
    LODE_LOG_DEBUG
} lode_log_level;

/* Messages at or below the level go to stderr. The level starts from LODE_LOG
 * (error|warn|info|debug), default warn. */
void lode_log_set_level(lode_log_level lvl);
lode_log_level lode_log_get_level(void);
void lode_log(lode_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LODE_ERROR(...) lode_log(LODE_LOG_ERROR, __VA_ARGS__)
#define LODE_WARN(...)  lode_log(LODE_LOG_WARN, __VA_ARGS__)
#define LODE_INFO(...)  lode_log(LODE_LOG_INFO, __VA_ARGS__)
#define LODE_DEBUG(...) lode_log(LODE_LOG_DEBUG, __VA_ARGS__)

/* ---- allocation -------------------------------------------------------------------- */
/* All of lode allocates through these: they count live bytes and blocks, and tests can
 * make the n-th allocation from now fail (lode_alloc_fail_after). Memory from lode_malloc
 * must be released with lode_free, never free(). All accept/return NULL like libc. */
void *lode_malloc(size_t n);
void *lode_calloc(size_t count, size_t size);
void *lode_realloc(void *p, size_t n);
void lode_free(void *p);
char *lode_strdup(const char *s);
char *lode_strndup(const char *s, size_t n);
/* Aligned blocks (align a power of two >= 16) for SIMD and kernel buffers. */
void *lode_aligned_alloc(size_t align, size_t n);
void lode_aligned_free(void *p);

typedef struct lode_alloc_stats {
    int64_t live_bytes;
    int64_t live_blocks;
    int64_t peak_bytes;
    int64_t total_allocs;
} lode_alloc_stats;
void lode_alloc_get_stats(lode_alloc_stats *out /* OUT */);
/* Make the n-th allocation from now (1 = the next) and every one after it fail;
 * n <= 0 turns injection off. For tests. */
void lode_alloc_fail_after(int64_t n);

/* ---- string buffer ----------------------------------------------------------------- */
/* A growable, always NUL-terminated byte buffer with an upper bound (max, 0 = 1 GiB). */
typedef struct lode_buf {
    char *data; /* NUL-terminated; NULL until the first append */
    size_t len;
    size_t cap;
    size_t max;
} lode_buf;
#define LODE_BUF_INIT                                                                              \
    {                                                                                              \
        NULL, 0, 0, 0                                                                              \
    }
lode_status lode_buf_reserve(lode_buf *b, size_t extra);
lode_status lode_buf_append(lode_buf *b, const void *p, size_t n);
lode_status lode_buf_puts(lode_buf *b, const char *s);
lode_status lode_buf_putc(lode_buf *b, char c);
lode_status lode_buf_printf(lode_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
lode_status lode_buf_vprintf(lode_buf *b, const char *fmt, va_list ap);
void lode_buf_reset(lode_buf *b); /* len = 0, keeps memory */
void lode_buf_free(lode_buf *b);
/* Hands the data to the caller (free with lode_free) and resets the buffer. Never NULL
 * unless allocation fails: an empty buffer yields "". */
char *lode_buf_take(lode_buf *b);

/* ---- error messages ---------------------------------------------------------------- */
/* Handles keep their last detailed message in a fixed char array; this formats into it
 * and returns st, so `return lode_seterr(h->err, sizeof h->err, LODE_ERR_IO, "...")`. */
lode_status lode_seterr(char *dst, size_t dstlen, lode_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- time -------------------------------------------------------------------------- */
int64_t lode_now_ns(void); /* CLOCK_MONOTONIC */
double lode_now_s(void);

/* ---- misc -------------------------------------------------------------------------- */
#define LODE_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define LODE_MIN(a, b)    ((a) < (b) ? (a) : (b))
#define LODE_MAX(a, b)    ((a) > (b) ? (a) : (b))
/* Number of CPUs this process may run on (sched_getaffinity), at least 1. */
int lode_cpu_count(void);
/* Validates UTF-8 (no overlongs, surrogates or > U+10FFFF). Returns the length of the
 * valid prefix; == n when all of it is valid. */
size_t lode_utf8_valid_prefix(const char *s, size_t n);
/* A NUL-terminated copy of s[0..n) with each byte that is not part of valid UTF-8
 * replaced by U+FFFD. The caller frees it (lode_free); NULL when out of memory. */
char *lode_utf8_clean(const char *s, size_t n);

#endif
