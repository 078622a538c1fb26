/*
 * safetensors.c: mmap reader and validator for safetensors files (see safetensors.h).
 * Validation follows the format's rules: header length within the file and the limit,
 * header a JSON object that begins with '{', each entry {dtype, shape, data_offsets}
 * with known dtype, non-negative dims and begin <= end, end - begin equal to the shape's
 * byte size (overflow-checked), and the ranges tiling the data section exactly.
 */
#include "engine/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/ejson.h"
#include "kernels/quant.h"

struct eng_st {
    void *map; /* NULL for eng_st_open_buffer */
    size_t map_len;
    eng_json_doc *doc;
    const eng_json *metadata;
    eng_st_tensor *tensors; /* sorted by name */
    size_t n_tensors;
};

static const struct {
    const char *name;
    size_t size;
} dtypes[ENG_ST_DTYPE_COUNT] = {
    [ENG_ST_BOOL] = {"BOOL", 1},       [ENG_ST_U8] = {"U8", 1},
    [ENG_ST_I8] = {"I8", 1},           [ENG_ST_F8_E5M2] = {"F8_E5M2", 1},
    [ENG_ST_F8_E4M3] = {"F8_E4M3", 1}, [ENG_ST_I16] = {"I16", 2},
    [ENG_ST_U16] = {"U16", 2},         [ENG_ST_F16] = {"F16", 2},
    [ENG_ST_BF16] = {"BF16", 2},       [ENG_ST_I32] = {"I32", 4},
    [ENG_ST_U32] = {"U32", 4},         [ENG_ST_F32] = {"F32", 4},
    [ENG_ST_F64] = {"F64", 8},         [ENG_ST_I64] = {"I64", 8},
    [ENG_ST_U64] = {"U64", 8},
};

size_t eng_st_dtype_size(eng_st_dtype t)
{
    return (unsigned)t < ENG_ST_DTYPE_COUNT ? dtypes[t].size : 0;
}

const char *eng_st_dtype_name(eng_st_dtype t)
{
    return (unsigned)t < ENG_ST_DTYPE_COUNT ? dtypes[t].name : "unknown";
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const eng_st_tensor *)a)->name, ((const eng_st_tensor *)b)->name);
}

static int by_offset(const void *a, const void *b)
{
    const uint8_t *x = ((const eng_st_tensor *const *)a)[0]->data;
    const uint8_t *y = ((const eng_st_tensor *const *)b)[0]->data;
    size_t nx = ((const eng_st_tensor *const *)a)[0]->nbytes;
    size_t ny = ((const eng_st_tensor *const *)b)[0]->nbytes;
    if (x != y) return x < y ? -1 : 1;
    return nx < ny ? -1 : nx > ny;
}

/* Fills t from one header entry; data is the start of the data section. */
static lode_status parse_entry(const eng_json *e, const uint8_t *data, uint64_t data_len,
                               eng_st_tensor *t, char *err, size_t errlen)
{
    if (e->type != ENG_JSON_OBJECT)
        return lode_seterr(err, errlen, LODE_ERR_FORMAT, "safetensors: entry '%s' is not an object",
                           e->key);
    const eng_json *dt = eng_json_get(e, "dtype");
    const eng_json *shape = eng_json_get(e, "shape");
    const eng_json *offs = eng_json_get(e, "data_offsets");
    if (!dt || dt->type != ENG_JSON_STRING || !shape || shape->type != ENG_JSON_ARRAY || !offs ||
        offs->type != ENG_JSON_ARRAY || offs->len != 2 || e->len != 3)
        return lode_seterr(err, errlen, LODE_ERR_FORMAT,
                           "safetensors: entry '%s' needs exactly dtype, shape, data_offsets",
                           e->key);
    int found = -1;
    for (int i = 0; i < ENG_ST_DTYPE_COUNT; i++)
        if (strcmp(dt->str, dtypes[i].name) == 0) found = i;
    if (found < 0)
        return lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED,
                           "safetensors: tensor '%s' has unknown dtype '%.32s'", e->key, dt->str);
    t->dtype = (eng_st_dtype)found;
    if (shape->len > ENG_ST_MAX_DIMS)
        return lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED,
                           "safetensors: tensor '%s' has %zu dims (at most %d)", e->key, shape->len,
                           ENG_ST_MAX_DIMS);
    uint64_t elems = 1;
    int overflow = 0;
    t->n_dims = 0;
    for (const eng_json *d = shape->child; d; d = d->next) {
        if (d->type != ENG_JSON_NUMBER || !d->is_int || d->i < 0)
            return lode_seterr(err, errlen, LODE_ERR_FORMAT,
                               "safetensors: tensor '%s' has a bad dimension", e->key);
        uint64_t v = (uint64_t)d->i;
        if (v && elems > UINT64_MAX / v)
            overflow = 1;
        else
            elems *= v;
        t->shape[t->n_dims++] = d->i;
    }
    const eng_json *b = offs->child, *en = b->next;
    if (b->type != ENG_JSON_NUMBER || !b->is_int || b->i < 0 || en->type != ENG_JSON_NUMBER ||
        !en->is_int || en->i < b->i)
        return lode_seterr(err, errlen, LODE_ERR_FORMAT,
                           "safetensors: tensor '%s' has bad data_offsets", e->key);
    uint64_t begin = (uint64_t)b->i, end = (uint64_t)en->i;
    if (end > data_len)
        return lode_seterr(err, errlen, LODE_ERR_FORMAT,
                           "safetensors: tensor '%s' ends at %llu, past the data (%llu bytes)",
                           e->key, (unsigned long long)end, (unsigned long long)data_len);
    uint64_t esz = dtypes[t->dtype].size;
    if (overflow || elems > UINT64_MAX / esz || elems * esz != end - begin)
        return lode_seterr(err, errlen, LODE_ERR_FORMAT,
                           "safetensors: tensor '%s' has %llu bytes, its shape needs another size",
                           e->key, (unsigned long long)(end - begin));
    t->name = e->key;
    t->n_elems = (int64_t)elems;
    t->data = data + begin;
    t->nbytes = (size_t)(end - begin);
    return LODE_OK;
}

static lode_status parse(eng_st *st, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    lode_status rc = LODE_OK;
    const eng_st_tensor **order = NULL;
    if (len < 8)
        return lode_seterr(err, errlen, LODE_ERR_FORMAT, "safetensors: file too short (%zu bytes)",
                           len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
    if (hlen < 2 || hlen > ENG_ST_MAX_HEADER || hlen > len - 8)
        return lode_seterr(err, errlen, LODE_ERR_FORMAT,
                           "safetensors: header length %llu does not fit the file (%zu bytes)",
                           (unsigned long long)hlen, len);
    if (buf[8] != '{')
        return lode_seterr(err, errlen, LODE_ERR_FORMAT,
                           "safetensors: header does not start with '{'");
    if ((rc = eng_json_parse((const char *)buf + 8, (size_t)hlen, &st->doc, err, errlen))) goto out;
    const eng_json *root = eng_json_root(st->doc);
    const uint8_t *data = buf + 8 + hlen;
    uint64_t data_len = len - 8 - hlen;
    size_t n = 0;
    for (const eng_json *e = root->child; e; e = e->next) n += strcmp(e->key, "__metadata__") != 0;
    st->tensors = lode_calloc(n ? n : 1, sizeof *st->tensors);
    order = lode_calloc(n ? n : 1, sizeof *order);
    if (!st->tensors || !order) {
        rc = lode_seterr(err, errlen, LODE_ERR_NOMEM, "safetensors: out of memory");
        goto out;
    }
    for (const eng_json *e = root->child; e; e = e->next) {
        if (strcmp(e->key, "__metadata__") == 0) {
            if (st->metadata || e->type != ENG_JSON_OBJECT) {
                rc = lode_seterr(err, errlen, LODE_ERR_FORMAT, "safetensors: bad __metadata__");
                goto out;
            }
            for (const eng_json *m = e->child; m; m = m->next)
                if (m->type != ENG_JSON_STRING) {
                    rc = lode_seterr(err, errlen, LODE_ERR_FORMAT,
                                     "safetensors: __metadata__ values must be strings");
                    goto out;
                }
            st->metadata = e;
            continue;
        }
        if ((rc = parse_entry(e, data, data_len, &st->tensors[st->n_tensors], err, errlen)))
            goto out;
        order[st->n_tensors] = &st->tensors[st->n_tensors];
        st->n_tensors++;
    }
    qsort(st->tensors, st->n_tensors, sizeof *st->tensors, by_name);
    for (size_t i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0) {
            rc = lode_seterr(err, errlen, LODE_ERR_FORMAT, "safetensors: tensor '%s' named twice",
                             st->tensors[i].name);
            goto out;
        }
    for (size_t i = 0; i < st->n_tensors; i++) order[i] = &st->tensors[i];
    qsort(order, st->n_tensors, sizeof *order, by_offset);
    const uint8_t *at = data;
    for (size_t i = 0; i < st->n_tensors; i++) {
        if ((const uint8_t *)order[i]->data != at) {
            rc = lode_seterr(err, errlen, LODE_ERR_FORMAT,
                             "safetensors: tensor '%s' %s another's data", order[i]->name,
                             (const uint8_t *)order[i]->data < at ? "overlaps"
                                                                  : "leaves a hole before");
            goto out;
        }
        at += order[i]->nbytes;
    }
    if (at != data + data_len)
        rc = lode_seterr(err, errlen, LODE_ERR_FORMAT,
                         "safetensors: %zu bytes after the last tensor",
                         (size_t)(data + data_len - at));
out:
    lode_free(order);
    return rc;
}

static void st_free(eng_st *st)
{
    if (!st) return;
    if (st->map) munmap(st->map, st->map_len);
    eng_json_free(st->doc);
    lode_free(st->tensors);
    lode_free(st);
}

void eng_st_close(eng_st *st)
{
    st_free(st);
}

lode_status eng_st_open_buffer(const void *data, size_t len, eng_st **out, char *err, size_t errlen)
{
    *out = NULL;
    eng_st *st = lode_calloc(1, sizeof *st);
    if (!st) return lode_seterr(err, errlen, LODE_ERR_NOMEM, "safetensors: out of memory");
    lode_status rc = parse(st, data, len, err, errlen);
    if (rc) {
        st_free(st);
        return rc;
    }
    *out = st;
    return LODE_OK;
}

lode_status eng_st_open(const char *path, eng_st **out, char *err, size_t errlen)
{
    lode_status rc = LODE_OK;
    eng_st *st = NULL;
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lode_seterr(err, errlen, LODE_ERR_IO, "safetensors: cannot open %s: %s", path,
                           strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        rc = lode_seterr(err, errlen, LODE_ERR_IO, "safetensors: %s is not a regular file", path);
        goto out;
    }
    if (sb.st_size < 8) {
        rc = lode_seterr(err, errlen, LODE_ERR_FORMAT, "safetensors: %s is too short", path);
        goto out;
    }
    if (!(st = lode_calloc(1, sizeof *st))) {
        rc = lode_seterr(err, errlen, LODE_ERR_NOMEM, "safetensors: out of memory");
        goto out;
    }
    st->map_len = (size_t)sb.st_size;
    void *m = mmap(NULL, st->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
        rc = lode_seterr(err, errlen, LODE_ERR_IO, "safetensors: cannot map %s: %s", path,
                         strerror(errno));
        goto out;
    }
    st->map = m;
    if ((rc = parse(st, m, st->map_len, err, errlen))) goto out;
    *out = st;
    st = NULL;
out:
    close(fd);
    st_free(st);
    return rc;
}

size_t eng_st_count(const eng_st *st)
{
    return st->n_tensors;
}

const eng_st_tensor *eng_st_at(const eng_st *st, size_t i)
{
    return i < st->n_tensors ? &st->tensors[i] : NULL;
}

const eng_st_tensor *eng_st_find(const eng_st *st, const char *name)
{
    eng_st_tensor key = {.name = name};
    return bsearch(&key, st->tensors, st->n_tensors, sizeof key, by_name);
}

const char *eng_st_metadata(const eng_st *st, const char *key)
{
    return eng_json_get_str(st->metadata, key, NULL);
}

lode_status eng_st_to_f32(const eng_st_tensor *t, float *dst, size_t n)
{
    if ((int64_t)n != t->n_elems) return LODE_ERR_INVALID;
    const uint8_t *s = t->data;
    switch (t->dtype) {
    case ENG_ST_F32:
        memcpy(dst, s, n * 4);
        return LODE_OK;
    case ENG_ST_F16:
        for (size_t i = 0; i < n; i++) {
            lode_half h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = lode_half_to_float(h);
        }
        return LODE_OK;
    case ENG_ST_BF16:
        for (size_t i = 0; i < n; i++) {
            lode_bf16 h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = lode_bf16_to_float(h);
        }
        return LODE_OK;
    default:
        return LODE_ERR_UNSUPPORTED;
    }
}
