/*
 * gguf.c: the GGUF v2/v3 reader of gguf.h. One pass over the header with a bounds-checked
 * cursor records every key/value and tensor info; a second step checks the tensors'
 * shapes, types, alignment and data ranges (inside the file, not overlapping). Only then
 * is the handle returned, so accessors never re-check.
 */
#include "engine/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/quant.h"

typedef struct gguf_kv {
    char *key;
    eng_gguf_type type;
    eng_gguf_type arr_type; /* arrays only */
    uint64_t arr_len;
    const uint8_t *val; /* value bytes in the mapping (array: first element) */
    char *str;          /* scalar string: NUL-terminated copy */
    uint64_t str_len;
    eng_gguf_str *strs; /* string arrays: element views */
} gguf_kv;

struct eng_gguf {
    const uint8_t *base;
    size_t size;
    int mapped;
    uint32_t version;
    uint32_t alignment;
    int64_t n_kv;
    gguf_kv *kv;
    int64_t n_tensors;
    eng_gguf_tensor *tensors;
    size_t data_start;
    char err[512];
};

typedef struct cursor {
    const uint8_t *base;
    size_t size;
    size_t pos;
    char *err;
    size_t errlen;
} cursor;

static const size_t type_size[ENG_GGUF_TYPE_COUNT] = {
    [ENG_GGUF_U8] = 1,  [ENG_GGUF_I8] = 1,  [ENG_GGUF_U16] = 2, [ENG_GGUF_I16] = 2,
    [ENG_GGUF_U32] = 4, [ENG_GGUF_I32] = 4, [ENG_GGUF_F32] = 4, [ENG_GGUF_BOOL] = 1,
    [ENG_GGUF_U64] = 8, [ENG_GGUF_I64] = 8, [ENG_GGUF_F64] = 8,
};

const char *eng_gguf_type_name(eng_gguf_type t)
{
    static const char *const names[ENG_GGUF_TYPE_COUNT] = {
        "u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
        "bool", "string", "array", "u64", "i64", "f64",
    };
    return (unsigned)t < ENG_GGUF_TYPE_COUNT ? names[t] : "unknown";
}

static lode_status fail(cursor *c, lode_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static lode_status fail(cursor *c, lode_status st, const char *fmt, ...)
{
    if (c->err && c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        char tmp[400];
        vsnprintf(tmp, sizeof tmp, fmt, ap);
        va_end(ap);
        snprintf(c->err, c->errlen, "gguf: %s", tmp);
    }
    return st;
}

static int take(cursor *c, size_t n, const uint8_t **p)
{
    if (n > c->size - c->pos) return 0;
    *p = c->base + c->pos;
    c->pos += n;
    return 1;
}

static int rd_u32(cursor *c, uint32_t *v)
{
    const uint8_t *p;
    if (!take(c, 4, &p)) return 0;
    memcpy(v, p, 4);
    return 1;
}

static int rd_u64(cursor *c, uint64_t *v)
{
    const uint8_t *p;
    if (!take(c, 8, &p)) return 0;
    memcpy(v, p, 8);
    return 1;
}

/* Reads a GGUF string (u64 length + bytes) as a view; max bounds its length. */
static lode_status rd_str(cursor *c, eng_gguf_str *s, uint64_t max, const char *what)
{
    size_t at = c->pos;
    uint64_t n;
    if (!rd_u64(c, &n))
        return fail(c, LODE_ERR_FORMAT, "truncated at offset %zu reading the length of %s", at,
                    what);
    if (n > max)
        return fail(c, LODE_ERR_FORMAT, "%s at offset %zu has length %llu (limit %llu)", what, at,
                    (unsigned long long)n, (unsigned long long)max);
    const uint8_t *p;
    if (!take(c, (size_t)n, &p))
        return fail(
            c, LODE_ERR_FORMAT,
            "truncated at offset %zu: %s of %llu bytes runs past the end of the file (%zu bytes)",
            at, what, (unsigned long long)n, c->size);
    s->ptr = (const char *)p;
    s->len = n;
    return LODE_OK;
}

static char *dup_view(eng_gguf_str s)
{
    char *d = lode_malloc((size_t)s.len + 1);
    if (!d) return NULL;
    memcpy(d, s.ptr, (size_t)s.len);
    d[s.len] = 0;
    return d;
}

static lode_status read_kv(cursor *c, eng_gguf *g, int64_t idx)
{
    gguf_kv *kv = &g->kv[idx];
    eng_gguf_str key;
    char what[64];
    snprintf(what, sizeof what, "key #%lld", (long long)idx);
    lode_status st = rd_str(c, &key, ENG_GGUF_MAX_KEY_LEN, what);
    if (st) return st;
    if (key.len == 0) return fail(c, LODE_ERR_FORMAT, "key #%lld is empty", (long long)idx);
    if (memchr(key.ptr, 0, (size_t)key.len))
        return fail(c, LODE_ERR_FORMAT, "key #%lld holds a NUL byte", (long long)idx);
    if (!(kv->key = dup_view(key))) return fail(c, LODE_ERR_NOMEM, "out of memory");
    for (int64_t j = 0; j < idx; j++)
        if (!strcmp(g->kv[j].key, kv->key))
            return fail(c, LODE_ERR_FORMAT, "duplicate key '%s'", kv->key);
    uint32_t t;
    size_t at = c->pos;
    if (!rd_u32(c, &t))
        return fail(c, LODE_ERR_FORMAT, "truncated at offset %zu reading the type of key '%s'", at,
                    kv->key);
    if (t >= ENG_GGUF_TYPE_COUNT)
        return fail(c, LODE_ERR_FORMAT, "key '%s' has unknown value type %u", kv->key, t);
    kv->type = (eng_gguf_type)t;
    at = c->pos;
    if (kv->type == ENG_GGUF_STRING) {
        eng_gguf_str s;
        char w[400];
        snprintf(w, sizeof w, "the value of key '%.300s'", kv->key);
        if ((st = rd_str(c, &s, UINT64_MAX, w))) return st;
        kv->val = (const uint8_t *)s.ptr;
        kv->str_len = s.len;
        if (!(kv->str = dup_view(s))) return fail(c, LODE_ERR_NOMEM, "out of memory");
        return LODE_OK;
    }
    if (kv->type != ENG_GGUF_ARRAY) {
        if (!take(c, type_size[kv->type], &kv->val))
            return fail(c, LODE_ERR_FORMAT, "truncated at offset %zu in the value of key '%s'", at,
                        kv->key);
        if (kv->type == ENG_GGUF_BOOL && *kv->val > 1)
            return fail(c, LODE_ERR_FORMAT, "key '%s': bool value %u is not 0 or 1", kv->key,
                        *kv->val);
        return LODE_OK;
    }
    uint32_t et;
    uint64_t n;
    if (!rd_u32(c, &et) || !rd_u64(c, &n))
        return fail(c, LODE_ERR_FORMAT, "truncated at offset %zu in the array header of key '%s'",
                    at, kv->key);
    if (et >= ENG_GGUF_TYPE_COUNT)
        return fail(c, LODE_ERR_FORMAT, "key '%s': array of unknown type %u", kv->key, et);
    if (et == ENG_GGUF_ARRAY)
        return fail(c, LODE_ERR_UNSUPPORTED, "key '%s': nested arrays are not supported", kv->key);
    kv->arr_type = (eng_gguf_type)et;
    kv->arr_len = n;
    at = c->pos;
    if (et == ENG_GGUF_STRING) {
        /* each element takes at least its 8-byte length */
        if (n > (c->size - c->pos) / 8)
            return fail(c, LODE_ERR_FORMAT,
                        "key '%s': string array of %llu elements cannot fit in the %zu bytes left",
                        kv->key, (unsigned long long)n, c->size - c->pos);
        kv->val = c->base + c->pos;
        if (n && !(kv->strs = lode_malloc((size_t)n * sizeof *kv->strs)))
            return fail(c, LODE_ERR_NOMEM, "out of memory for key '%s'", kv->key);
        for (uint64_t i = 0; i < n; i++) {
            char w[400];
            snprintf(w, sizeof w, "element %llu of key '%.300s'", (unsigned long long)i, kv->key);
            if ((st = rd_str(c, &kv->strs[i], UINT64_MAX, w))) return st;
        }
        return LODE_OK;
    }
    size_t es = type_size[et];
    if (n > (c->size - c->pos) / es)
        return fail(
            c, LODE_ERR_FORMAT,
            "truncated at offset %zu: array of key '%s' (%llu x %s) runs past the end of the file",
            at, kv->key, (unsigned long long)n, eng_gguf_type_name(kv->arr_type));
    take(c, (size_t)n * es, &kv->val);
    if (et == ENG_GGUF_BOOL)
        for (uint64_t i = 0; i < n; i++)
            if (kv->val[i] > 1)
                return fail(c, LODE_ERR_FORMAT, "key '%s': bool element %llu is not 0 or 1",
                            kv->key, (unsigned long long)i);
    return LODE_OK;
}

static lode_status read_tensor_info(cursor *c, eng_gguf *g, int64_t idx)
{
    eng_gguf_tensor *t = &g->tensors[idx];
    eng_gguf_str name;
    char what[64];
    snprintf(what, sizeof what, "the name of tensor #%lld", (long long)idx);
    lode_status st = rd_str(c, &name, ENG_GGUF_MAX_NAME_LEN, what);
    if (st) return st;
    if (name.len == 0)
        return fail(c, LODE_ERR_FORMAT, "tensor #%lld has an empty name", (long long)idx);
    if (memchr(name.ptr, 0, (size_t)name.len))
        return fail(c, LODE_ERR_FORMAT, "the name of tensor #%lld holds a NUL byte",
                    (long long)idx);
    char *nm = dup_view(name);
    if (!nm) return fail(c, LODE_ERR_NOMEM, "out of memory");
    t->name = nm;
    size_t at = c->pos;
    uint32_t nd;
    if (!rd_u32(c, &nd))
        return fail(c, LODE_ERR_FORMAT, "truncated at offset %zu in the info of tensor '%s'", at,
                    nm);
    if (nd < 1 || nd > 4)
        return fail(c, LODE_ERR_FORMAT, "tensor '%s' has %u dimensions (1..4 allowed)", nm, nd);
    t->n_dims = (int)nd;
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        if (!rd_u64(c, &t->ne[d]))
            return fail(c, LODE_ERR_FORMAT, "truncated at offset %zu in the dims of tensor '%s'",
                        at, nm);
        if (t->ne[d] == 0 || t->ne[d] > (1ull << 40))
            return fail(c, LODE_ERR_FORMAT, "tensor '%s': dimension %u is %llu", nm, d,
                        (unsigned long long)t->ne[d]);
    }
    uint32_t type;
    if (!rd_u32(c, &type) || !rd_u64(c, &t->offset))
        return fail(c, LODE_ERR_FORMAT, "truncated at offset %zu in the info of tensor '%s'", at,
                    nm);
    if (type >= LODE_DTYPE_MAX || lode_dtype_block_bytes((int)type) == 0 || type == LODE_Q8_1 ||
        type == LODE_Q8_K)
        return fail(c, LODE_ERR_UNSUPPORTED, "tensor '%s' has unknown or unsupported type %u", nm,
                    type);
    t->type = (int)type;
    uint64_t n = 1;
    for (int d = 0; d < 4; d++) {
        if (t->ne[d] > (UINT64_MAX >> 1) / n)
            return fail(c, LODE_ERR_FORMAT, "tensor '%s': element count overflows", nm);
        n *= t->ne[d];
    }
    t->n_elems = n;
    size_t be = lode_dtype_block_elems(t->type);
    if (t->ne[0] % be)
        return fail(c, LODE_ERR_FORMAT,
                    "tensor '%s': row of %llu elements is not a multiple of the %s block (%zu)", nm,
                    (unsigned long long)t->ne[0], lode_dtype_name(t->type), be);
    uint64_t row = t->ne[0] / be * lode_dtype_block_bytes(t->type);
    uint64_t rows = n / t->ne[0];
    if (row && rows > UINT64_MAX / 2 / row)
        return fail(c, LODE_ERR_FORMAT, "tensor '%s': byte size overflows", nm);
    t->nbytes = row * rows;
    return LODE_OK;
}

static int cmp_by_offset(const void *a, const void *b)
{
    const eng_gguf_tensor *x = *(const eng_gguf_tensor *const *)a,
                          *y = *(const eng_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static lode_status check_tensors(cursor *c, eng_gguf *g)
{
    /* data section starts at the next multiple of the alignment */
    size_t a = g->alignment;
    size_t ds = c->pos;
    if (ds % a) ds += a - ds % a;
    if (ds > c->size && g->n_tensors)
        return fail(c, LODE_ERR_FORMAT,
                    "truncated: the data section would start at offset %zu, past the end of the "
                    "file (%zu bytes)",
                    ds, c->size);
    g->data_start = ds;
    uint64_t avail = c->size > ds ? c->size - ds : 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        eng_gguf_tensor *t = &g->tensors[i];
        for (int64_t j = 0; j < i; j++)
            if (!strcmp(g->tensors[j].name, t->name))
                return fail(c, LODE_ERR_FORMAT, "duplicate tensor name '%s'", t->name);
        if (t->offset % a)
            return fail(c, LODE_ERR_FORMAT,
                        "tensor '%s': offset %llu is not a multiple of the alignment %zu", t->name,
                        (unsigned long long)t->offset, a);
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return fail(c, LODE_ERR_FORMAT,
                        "tensor '%s': data [%llu, +%llu) at file offset %llu runs past the end of "
                        "the file (%zu bytes; truncated?)",
                        t->name, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                        (unsigned long long)(ds + t->offset), c->size);
        t->data = c->base + ds + t->offset;
    }
    if (g->n_tensors > 1) {
        const eng_gguf_tensor **by = lode_malloc((size_t)g->n_tensors * sizeof *by);
        if (!by) return fail(c, LODE_ERR_NOMEM, "out of memory");
        for (int64_t i = 0; i < g->n_tensors; i++) by[i] = &g->tensors[i];
        qsort(by, (size_t)g->n_tensors, sizeof *by, cmp_by_offset);
        lode_status st = LODE_OK;
        for (int64_t i = 1; i < g->n_tensors; i++)
            if (by[i - 1]->offset + by[i - 1]->nbytes > by[i]->offset) {
                st = fail(c, LODE_ERR_FORMAT,
                          "tensors '%s' and '%s' overlap (offsets %llu+%llu and %llu)",
                          by[i - 1]->name, by[i]->name, (unsigned long long)by[i - 1]->offset,
                          (unsigned long long)by[i - 1]->nbytes, (unsigned long long)by[i]->offset);
                break;
            }
        lode_free(by);
        return st;
    }
    return LODE_OK;
}

static lode_status parse(eng_gguf *g, char *err, size_t errlen)
{
    cursor c = {g->base, g->size, 0, err, errlen};
    const uint8_t *p;
    if (!take(&c, 4, &p))
        return fail(&c, LODE_ERR_FORMAT, "file of %zu bytes is too short for a GGUF header",
                    g->size);
    if (memcmp(p, "GGUF", 4))
        return fail(&c, LODE_ERR_FORMAT, "bad magic %02x %02x %02x %02x (not a GGUF file)", p[0],
                    p[1], p[2], p[3]);
    uint64_t nt, nkv;
    if (!rd_u32(&c, &g->version)) return fail(&c, LODE_ERR_FORMAT, "truncated in the header");
    if (g->version == 1)
        return fail(&c, LODE_ERR_UNSUPPORTED, "GGUF version 1 is not supported (2 and 3 are)");
    if (g->version != 2 && g->version != 3)
        return fail(&c, LODE_ERR_UNSUPPORTED, "unknown GGUF version %u", g->version);
    if (!rd_u64(&c, &nt) || !rd_u64(&c, &nkv))
        return fail(&c, LODE_ERR_FORMAT, "truncated in the header");
    if (nt > ENG_GGUF_MAX_TENSORS)
        return fail(&c, LODE_ERR_FORMAT, "tensor count %llu is over the limit %d",
                    (unsigned long long)nt, ENG_GGUF_MAX_TENSORS);
    if (nkv > ENG_GGUF_MAX_KV)
        return fail(&c, LODE_ERR_FORMAT, "key/value count %llu is over the limit %d",
                    (unsigned long long)nkv, ENG_GGUF_MAX_KV);
    /* a key/value takes at least 8+1+4+1 bytes, a tensor info 8+1+4+8+4+8 */
    if (nkv > (g->size - c.pos) / 14 || nt > (g->size - c.pos) / 33)
        return fail(&c, LODE_ERR_FORMAT,
                    "truncated: %llu keys and %llu tensors cannot fit in %zu bytes",
                    (unsigned long long)nkv, (unsigned long long)nt, g->size);
    if (nkv && !(g->kv = lode_calloc((size_t)nkv, sizeof *g->kv)))
        return fail(&c, LODE_ERR_NOMEM, "out of memory");
    if (nt && !(g->tensors = lode_calloc((size_t)nt, sizeof *g->tensors)))
        return fail(&c, LODE_ERR_NOMEM, "out of memory");
    lode_status st;
    for (uint64_t i = 0; i < nkv; i++) {
        g->n_kv = (int64_t)i + 1; /* so close() frees what this one allocated */
        if ((st = read_kv(&c, g, (int64_t)i))) return st;
    }
    g->alignment = 32;
    int64_t ai = eng_gguf_find_key(g, "general.alignment");
    if (ai >= 0) {
        gguf_kv *kv = &g->kv[ai];
        if (kv->type != ENG_GGUF_U32)
            return fail(&c, LODE_ERR_FORMAT, "key 'general.alignment' has type %s, not u32",
                        eng_gguf_type_name(kv->type));
        uint32_t a;
        memcpy(&a, kv->val, 4);
        if (a == 0 || (a & (a - 1)) || a > ENG_GGUF_MAX_ALIGN)
            return fail(&c, LODE_ERR_FORMAT,
                        "key 'general.alignment' is %u, not a power of two up to %u", a,
                        ENG_GGUF_MAX_ALIGN);
        g->alignment = a;
    }
    for (uint64_t i = 0; i < nt; i++) {
        g->n_tensors = (int64_t)i + 1;
        if ((st = read_tensor_info(&c, g, (int64_t)i))) return st;
    }
    return check_tensors(&c, g);
}

static lode_status open_common(eng_gguf *g, eng_gguf **out, char *err, size_t errlen)
{
    lode_status st = parse(g, err, errlen);
    if (st) {
        eng_gguf_close(g);
        return st;
    }
    *out = g;
    return LODE_OK;
}

lode_status eng_gguf_open_memory(const void *data, size_t size, eng_gguf **out, char *err,
                                 size_t errlen)
{
    *out = NULL;
    if (err && errlen) err[0] = 0;
    if (!data && size) return lode_seterr(err, errlen, LODE_ERR_INVALID, "gguf: NULL data");
    eng_gguf *g = lode_calloc(1, sizeof *g);
    if (!g) return lode_seterr(err, errlen, LODE_ERR_NOMEM, "gguf: out of memory");
    g->base = data;
    g->size = size;
    return open_common(g, out, err, errlen);
}

lode_status eng_gguf_open(const char *path, eng_gguf **out, char *err, size_t errlen)
{
    *out = NULL;
    if (err && errlen) err[0] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lode_seterr(err, errlen, LODE_ERR_IO, "gguf: cannot open '%s': %s", path,
                           strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return lode_seterr(err, errlen, LODE_ERR_IO, "gguf: cannot stat '%s': %s", path,
                           strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return lode_seterr(err, errlen, LODE_ERR_IO, "gguf: '%s' is not a regular file", path);
    }
    if (sb.st_size < 24) {
        close(fd);
        return lode_seterr(err, errlen, LODE_ERR_FORMAT,
                           "gguf: '%s' has %lld bytes, too short for a GGUF header", path,
                           (long long)sb.st_size);
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED)
        return lode_seterr(err, errlen, LODE_ERR_IO, "gguf: cannot map '%s': %s", path,
                           strerror(e));
    eng_gguf *g = lode_calloc(1, sizeof *g);
    if (!g) {
        munmap(m, (size_t)sb.st_size);
        return lode_seterr(err, errlen, LODE_ERR_NOMEM, "gguf: out of memory");
    }
    g->base = m;
    g->size = (size_t)sb.st_size;
    g->mapped = 1;
    lode_status st = open_common(g, out, err, errlen);
    if (st && err && errlen) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s", err);
        snprintf(err, errlen, "%s: %s", path, tmp);
    }
    return st;
}

void eng_gguf_close(eng_gguf *g)
{
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv; i++) {
        lode_free(g->kv[i].key);
        lode_free(g->kv[i].str);
        lode_free(g->kv[i].strs);
    }
    lode_free(g->kv);
    for (int64_t i = 0; i < g->n_tensors; i++) lode_free((char *)g->tensors[i].name);
    lode_free(g->tensors);
    if (g->mapped) munmap((void *)g->base, g->size);
    lode_free(g);
}

const char *eng_gguf_errmsg(const eng_gguf *g)
{
    return g ? g->err : "gguf: no handle";
}
uint32_t eng_gguf_version(const eng_gguf *g)
{
    return g->version;
}
uint32_t eng_gguf_alignment(const eng_gguf *g)
{
    return g->alignment;
}
size_t eng_gguf_file_size(const eng_gguf *g)
{
    return g->size;
}
int64_t eng_gguf_n_kv(const eng_gguf *g)
{
    return g->n_kv;
}

int64_t eng_gguf_find_key(const eng_gguf *g, const char *key)
{
    for (int64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && !strcmp(g->kv[i].key, key)) return i;
    return -1;
}

const char *eng_gguf_key(const eng_gguf *g, int64_t i)
{
    return g->kv[i].key;
}
eng_gguf_type eng_gguf_kv_type(const eng_gguf *g, int64_t i)
{
    return g->kv[i].type;
}
eng_gguf_type eng_gguf_arr_type(const eng_gguf *g, int64_t i)
{
    return g->kv[i].type == ENG_GGUF_ARRAY ? g->kv[i].arr_type : g->kv[i].type;
}
uint64_t eng_gguf_arr_len(const eng_gguf *g, int64_t i)
{
    return g->kv[i].type == ENG_GGUF_ARRAY ? g->kv[i].arr_len : 0;
}

/* Reads element i of a numeric value of type t as a signed 128-bit-safe pair: integers
 * go to *iv (with *neg for negatives held in a u64 magnitude), floats to *fv. */
typedef struct num {
    int is_float;
    int neg;
    uint64_t mag;
    double f;
} num;

static int read_num(eng_gguf_type t, const uint8_t *p, num *n)
{
    memset(n, 0, sizeof *n);
    switch (t) {
    case ENG_GGUF_U8:
    case ENG_GGUF_BOOL:
        n->mag = p[0];
        return 1;
    case ENG_GGUF_I8: {
        int8_t v = (int8_t)p[0];
        n->neg = v < 0;
        n->mag = (uint64_t)(v < 0 ? -(int64_t)v : v);
        return 1;
    }
    case ENG_GGUF_U16: {
        uint16_t v;
        memcpy(&v, p, 2);
        n->mag = v;
        return 1;
    }
    case ENG_GGUF_I16: {
        int16_t v;
        memcpy(&v, p, 2);
        n->neg = v < 0;
        n->mag = (uint64_t)(v < 0 ? -(int64_t)v : v);
        return 1;
    }
    case ENG_GGUF_U32: {
        uint32_t v;
        memcpy(&v, p, 4);
        n->mag = v;
        return 1;
    }
    case ENG_GGUF_I32: {
        int32_t v;
        memcpy(&v, p, 4);
        n->neg = v < 0;
        n->mag = (uint64_t)(v < 0 ? -(int64_t)v : v);
        return 1;
    }
    case ENG_GGUF_U64:
        memcpy(&n->mag, p, 8);
        return 1;
    case ENG_GGUF_I64: {
        int64_t v;
        memcpy(&v, p, 8);
        n->neg = v < 0;
        n->mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
        return 1;
    }
    case ENG_GGUF_F32: {
        float v;
        memcpy(&v, p, 4);
        n->is_float = 1;
        n->f = v;
        return 1;
    }
    case ENG_GGUF_F64:
        memcpy(&n->f, p, 8);
        n->is_float = 1;
        return 1;
    default:
        return 0;
    }
}

static const gguf_kv *lookup(eng_gguf *g, const char *key, lode_status *st)
{
    int64_t i = eng_gguf_find_key(g, key);
    *st = i < 0 ? LODE_ERR_NOTFOUND : LODE_OK;
    return i < 0 ? NULL : &g->kv[i];
}

static lode_status get_int(eng_gguf *g, const char *key, int is_signed, uint64_t maxpos,
                           uint64_t maxneg, num *out)
{
    lode_status st;
    const gguf_kv *kv = lookup(g, key, &st);
    if (!kv) return st;
    if (!read_num(kv->type, kv->val, out) || out->is_float || kv->type == ENG_GGUF_BOOL)
        return lode_seterr(g->err, sizeof g->err, LODE_ERR_FORMAT,
                           "gguf: key '%s' has type %s, not an integer", key,
                           eng_gguf_type_name(kv->type));
    if ((!out->neg && out->mag > maxpos) || (out->neg && (!is_signed || out->mag > maxneg)))
        return lode_seterr(g->err, sizeof g->err, LODE_ERR_FORMAT,
                           "gguf: key '%s': value %s%llu out of range", key, out->neg ? "-" : "",
                           (unsigned long long)out->mag);
    return LODE_OK;
}

lode_status eng_gguf_get_u32(eng_gguf *g, const char *key, uint32_t *out)
{
    num n;
    lode_status st = get_int(g, key, 0, UINT32_MAX, 0, &n);
    if (!st) *out = (uint32_t)n.mag;
    return st;
}

lode_status eng_gguf_get_i32(eng_gguf *g, const char *key, int32_t *out)
{
    num n;
    lode_status st = get_int(g, key, 1, INT32_MAX, (uint64_t)INT32_MAX + 1, &n);
    if (!st) *out = n.neg ? (int32_t)(-(int64_t)n.mag) : (int32_t)n.mag;
    return st;
}

lode_status eng_gguf_get_u64(eng_gguf *g, const char *key, uint64_t *out)
{
    num n;
    lode_status st = get_int(g, key, 0, UINT64_MAX, 0, &n);
    if (!st) *out = n.mag;
    return st;
}

lode_status eng_gguf_get_f32(eng_gguf *g, const char *key, float *out)
{
    lode_status st;
    const gguf_kv *kv = lookup(g, key, &st);
    if (!kv) return st;
    num n;
    if (kv->type != ENG_GGUF_F32 && kv->type != ENG_GGUF_F64)
        return lode_seterr(g->err, sizeof g->err, LODE_ERR_FORMAT,
                           "gguf: key '%s' has type %s, not a float", key,
                           eng_gguf_type_name(kv->type));
    read_num(kv->type, kv->val, &n);
    *out = (float)n.f;
    return LODE_OK;
}

lode_status eng_gguf_get_bool(eng_gguf *g, const char *key, int *out)
{
    lode_status st;
    const gguf_kv *kv = lookup(g, key, &st);
    if (!kv) return st;
    if (kv->type != ENG_GGUF_BOOL)
        return lode_seterr(g->err, sizeof g->err, LODE_ERR_FORMAT,
                           "gguf: key '%s' has type %s, not bool", key,
                           eng_gguf_type_name(kv->type));
    *out = kv->val[0] != 0;
    return LODE_OK;
}

lode_status eng_gguf_get_str(eng_gguf *g, const char *key, const char **out, size_t *len)
{
    lode_status st;
    const gguf_kv *kv = lookup(g, key, &st);
    if (!kv) return st;
    if (kv->type != ENG_GGUF_STRING)
        return lode_seterr(g->err, sizeof g->err, LODE_ERR_FORMAT,
                           "gguf: key '%s' has type %s, not string", key,
                           eng_gguf_type_name(kv->type));
    *out = kv->str;
    if (len) *len = (size_t)kv->str_len;
    return LODE_OK;
}

static const gguf_kv *lookup_arr(eng_gguf *g, const char *key, lode_status *st)
{
    const gguf_kv *kv = lookup(g, key, st);
    if (kv && kv->type != ENG_GGUF_ARRAY) {
        *st =
            lode_seterr(g->err, sizeof g->err, LODE_ERR_FORMAT,
                        "gguf: key '%s' has type %s, not array", key, eng_gguf_type_name(kv->type));
        return NULL;
    }
    return kv;
}

lode_status eng_gguf_get_arr_info(eng_gguf *g, const char *key, eng_gguf_type *elem, uint64_t *n)
{
    lode_status st;
    const gguf_kv *kv = lookup_arr(g, key, &st);
    if (!kv) return st;
    if (elem) *elem = kv->arr_type;
    if (n) *n = kv->arr_len;
    return LODE_OK;
}

lode_status eng_gguf_get_arr_strs(eng_gguf *g, const char *key, const eng_gguf_str **out,
                                  uint64_t *n)
{
    lode_status st;
    const gguf_kv *kv = lookup_arr(g, key, &st);
    if (!kv) return st;
    if (kv->arr_type != ENG_GGUF_STRING)
        return lode_seterr(g->err, sizeof g->err, LODE_ERR_FORMAT,
                           "gguf: key '%s' is an array of %s, not of strings", key,
                           eng_gguf_type_name(kv->arr_type));
    *out = kv->strs;
    *n = kv->arr_len;
    return LODE_OK;
}

static lode_status copy_arr(eng_gguf *g, const char *key, void *dst, uint64_t n, int as_float)
{
    lode_status st;
    const gguf_kv *kv = lookup_arr(g, key, &st);
    if (!kv) return st;
    if (kv->arr_type == ENG_GGUF_STRING || kv->arr_type == ENG_GGUF_BOOL)
        return lode_seterr(g->err, sizeof g->err, LODE_ERR_FORMAT,
                           "gguf: key '%s' is an array of %s, not numbers", key,
                           eng_gguf_type_name(kv->arr_type));
    if (n != kv->arr_len)
        return lode_seterr(g->err, sizeof g->err, LODE_ERR_FORMAT,
                           "gguf: key '%s' has %llu elements, expected %llu", key,
                           (unsigned long long)kv->arr_len, (unsigned long long)n);
    size_t es = type_size[kv->arr_type];
    for (uint64_t i = 0; i < n; i++) {
        num v;
        read_num(kv->arr_type, kv->val + i * es, &v);
        if (as_float) {
            ((float *)dst)[i] = v.is_float ? (float)v.f : v.neg ? -(float)v.mag : (float)v.mag;
        } else {
            if (v.is_float || (!v.neg && v.mag > INT32_MAX) ||
                (v.neg && v.mag > (uint64_t)INT32_MAX + 1))
                return lode_seterr(g->err, sizeof g->err, LODE_ERR_FORMAT,
                                   "gguf: key '%s': element %llu is not an i32", key,
                                   (unsigned long long)i);
            ((int32_t *)dst)[i] = v.neg ? (int32_t)(-(int64_t)v.mag) : (int32_t)v.mag;
        }
    }
    return LODE_OK;
}

lode_status eng_gguf_copy_arr_i32(eng_gguf *g, const char *key, int32_t *dst, uint64_t n)
{
    return copy_arr(g, key, dst, n, 0);
}

lode_status eng_gguf_copy_arr_f32(eng_gguf *g, const char *key, float *dst, uint64_t n)
{
    return copy_arr(g, key, dst, n, 1);
}

int64_t eng_gguf_n_tensors(const eng_gguf *g)
{
    return g->n_tensors;
}

const eng_gguf_tensor *eng_gguf_tensor_at(const eng_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const eng_gguf_tensor *eng_gguf_find_tensor(const eng_gguf *g, const char *name)
{
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}
