/* status.c: lode_status texts and per-handle error messages. */
#include "common/lode.h"

#include <stdio.h>

static const char *const texts[LODE_STATUS_COUNT] = {
    [LODE_OK] = "ok",
    [LODE_ERR_NOMEM] = "out of memory",
    [LODE_ERR_IO] = "input/output error",
    [LODE_ERR_INVALID] = "invalid argument or input",
    [LODE_ERR_FORMAT] = "malformed data",
    [LODE_ERR_UNSUPPORTED] = "not supported",
    [LODE_ERR_NOTFOUND] = "not found",
    [LODE_ERR_EXISTS] = "already exists",
    [LODE_ERR_RANGE] = "out of range",
    [LODE_ERR_LIMIT] = "over the size limit",
    [LODE_ERR_BUSY] = "busy",
    [LODE_ERR_CANCELLED] = "cancelled",
    [LODE_ERR_DB] = "database error",
    [LODE_ERR_INDEX] = "vector index error",
    [LODE_ERR_CUDA] = "CUDA error",
    [LODE_ERR_NET] = "network error",
    [LODE_ERR_AUTH] = "not authorized",
    [LODE_ERR_VERSION] = "made by a newer version of lode",
    [LODE_ERR_UTF8] = "invalid UTF-8",
    [LODE_ERR_INTERNAL] = "internal error",
};

const char *lode_strerror(lode_status st)
{
    if ((int)st < 0 || st >= LODE_STATUS_COUNT || !texts[st]) return "unknown status";
    return texts[st];
}

lode_status lode_seterr(char *dst, size_t dstlen, lode_status st, const char *fmt, ...)
{
    if (dst && dstlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(dst, dstlen, fmt, ap);
        va_end(ap);
    }
    return st;
}
