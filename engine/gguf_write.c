/*
 * gguf_write.c: the GGUF v3 writer of gguf_write.h. Metadata is serialized as it is added
 * (into a bounded buffer); tensor infos are kept until save, which lays the data out at
 * aligned offsets and streams it from the caller's fill callback in 4 MiB pieces.
 */
#include "engine/gguf_write.h"

#include "kernels/quant.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define PIECE      (4u << 20)

typedef struct winfo {
    char *name;
    int type, n_dims;
    uint64_t ne[4];
    uint64_t nbytes, offset;
} winfo;

struct eng_gguf_writer {
    uint32_t align;
    lode_buf kv;
    uint64_t n_kv;
    winfo *t;
    int64_t n_t, cap_t;
    char err[256];
};

lode_status eng_gguf_writer_create(uint32_t align, eng_gguf_writer **out)
{
    *out = NULL;
    if (align == 0) align = 32;
    if (align & (align - 1)) return LODE_ERR_INVALID;
    eng_gguf_writer *w = lode_calloc(1, sizeof *w);
    if (!w) return LODE_ERR_NOMEM;
    w->align = align;
    w->kv.max = (size_t)1 << 30;
    *out = w;
    return LODE_OK;
}

void eng_gguf_writer_destroy(eng_gguf_writer *w)
{
    if (!w) return;
    for (int64_t i = 0; i < w->n_t; i++) lode_free(w->t[i].name);
    lode_free(w->t);
    lode_buf_free(&w->kv);
    lode_free(w);
}

const char *eng_gguf_writer_errmsg(const eng_gguf_writer *w)
{
    return w ? w->err : "";
}

static lode_status put(lode_buf *b, const void *p, size_t n)
{
    return lode_buf_append(b, p, n);
}
static lode_status put_u32(lode_buf *b, uint32_t v)
{
    return put(b, &v, 4);
}
static lode_status put_u64(lode_buf *b, uint64_t v)
{
    return put(b, &v, 8);
}
static lode_status put_str(lode_buf *b, const char *s)
{
    uint64_t n = strlen(s);
    lode_status st = put_u64(b, n);
    return st ? st : put(b, s, n);
}

/* key, then the value type */
static lode_status key(eng_gguf_writer *w, const char *k, uint32_t type)
{
    lode_status st = put_str(&w->kv, k);
    if (!st) st = put_u32(&w->kv, type);
    if (!st) w->n_kv++;
    return st;
}

lode_status eng_gguf_w_u32(eng_gguf_writer *w, const char *k, uint32_t v)
{
    lode_status st = key(w, k, 4);
    return st ? st : put_u32(&w->kv, v);
}

lode_status eng_gguf_w_i32(eng_gguf_writer *w, const char *k, int32_t v)
{
    lode_status st = key(w, k, 5);
    return st ? st : put(&w->kv, &v, 4);
}

lode_status eng_gguf_w_f32(eng_gguf_writer *w, const char *k, float v)
{
    lode_status st = key(w, k, 6);
    return st ? st : put(&w->kv, &v, 4);
}

lode_status eng_gguf_w_bool(eng_gguf_writer *w, const char *k, int v)
{
    uint8_t b = v ? 1 : 0;
    lode_status st = key(w, k, 7);
    return st ? st : put(&w->kv, &b, 1);
}

lode_status eng_gguf_w_str(eng_gguf_writer *w, const char *k, const char *v)
{
    lode_status st = key(w, k, 8);
    return st ? st : put_str(&w->kv, v);
}

static lode_status arr_head(eng_gguf_writer *w, const char *k, uint32_t elem, uint64_t n)
{
    lode_status st = key(w, k, 9);
    if (!st) st = put_u32(&w->kv, elem);
    if (!st) st = put_u64(&w->kv, n);
    return st;
}

lode_status eng_gguf_w_arr_str(eng_gguf_writer *w, const char *k, const char *const *v, uint64_t n)
{
    lode_status st = arr_head(w, k, 8, n);
    for (uint64_t i = 0; !st && i < n; i++) st = put_str(&w->kv, v[i]);
    return st;
}

lode_status eng_gguf_w_arr_i32(eng_gguf_writer *w, const char *k, const int32_t *v, uint64_t n)
{
    lode_status st = arr_head(w, k, 5, n);
    return st ? st : put(&w->kv, v, n * 4);
}

lode_status eng_gguf_w_arr_f32(eng_gguf_writer *w, const char *k, const float *v, uint64_t n)
{
    lode_status st = arr_head(w, k, 6, n);
    return st ? st : put(&w->kv, v, n * 4);
}

lode_status eng_gguf_w_tensor(eng_gguf_writer *w, const char *name, int type, int n_dims,
                              const uint64_t *ne, int64_t *index)
{
    if (n_dims < 1 || n_dims > 4 || !lode_dtype_block_elems(type))
        return lode_seterr(w->err, sizeof w->err, LODE_ERR_INVALID, "tensor %s: bad type or dims",
                           name);
    uint64_t rows = 1;
    for (int i = 1; i < n_dims; i++) rows *= ne[i];
    size_t rb = lode_dtype_row_bytes(type, (size_t)ne[0]);
    if (!rb)
        return lode_seterr(w->err, sizeof w->err, LODE_ERR_INVALID,
                           "tensor %s: row not a multiple of the block", name);
    if (w->n_t == w->cap_t) {
        int64_t cap = w->cap_t ? 2 * w->cap_t : 64;
        winfo *t = lode_realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return LODE_ERR_NOMEM;
        w->t = t;
        w->cap_t = cap;
    }
    winfo *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = lode_strdup(name))) return LODE_ERR_NOMEM;
    t->type = type;
    t->n_dims = n_dims;
    for (int i = 0; i < 4; i++) t->ne[i] = i < n_dims ? ne[i] : 1;
    t->nbytes = rows * rb;
    if (index) *index = w->n_t;
    w->n_t++;
    return LODE_OK;
}

static uint64_t align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) / a * a;
}

lode_status eng_gguf_writer_save(eng_gguf_writer *w, const char *path, eng_gguf_fill_fn fill,
                                 void *arg)
{
    lode_buf h = LODE_BUF_INIT;
    h.max = (size_t)1 << 30;
    lode_status st = LODE_OK;
    FILE *f = NULL;
    void *piece = NULL;
    /* general.alignment first when not the default, so readers see it */
    uint64_t n_kv = w->n_kv + (w->align != 32);
    if ((st = put_u32(&h, GGUF_MAGIC)) || (st = put_u32(&h, 3)) ||
        (st = put_u64(&h, (uint64_t)w->n_t)) || (st = put_u64(&h, n_kv)))
        goto out;
    if (w->align != 32) {
        if ((st = put_str(&h, "general.alignment")) || (st = put_u32(&h, 4)) ||
            (st = put_u32(&h, w->align)))
            goto out;
    }
    if (w->kv.len && (st = put(&h, w->kv.data, w->kv.len))) goto out;
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_t; i++) {
        winfo *t = &w->t[i];
        off = align_up(off, w->align);
        t->offset = off;
        off += t->nbytes;
        if ((st = put_str(&h, t->name)) || (st = put_u32(&h, (uint32_t)t->n_dims))) goto out;
        for (int d = 0; d < t->n_dims; d++)
            if ((st = put_u64(&h, t->ne[d]))) goto out;
        if ((st = put_u32(&h, (uint32_t)t->type)) || (st = put_u64(&h, t->offset))) goto out;
    }
    size_t pad = (size_t)(align_up(h.len, w->align) - h.len);
    static const char zeros[64];
    while (pad) {
        size_t k = LODE_MIN(pad, sizeof zeros);
        if ((st = put(&h, zeros, k))) goto out;
        pad -= k;
    }
    if (!(f = fopen(path, "wb"))) {
        st = lode_seterr(w->err, sizeof w->err, LODE_ERR_IO, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (fwrite(h.data, 1, h.len, f) != h.len) goto io;
    if (!(piece = lode_malloc(PIECE))) {
        st = LODE_ERR_NOMEM;
        goto out;
    }
    uint64_t pos = 0;
    for (int64_t i = 0; i < w->n_t; i++) {
        winfo *t = &w->t[i];
        memset(piece, 0, PIECE);
        for (; pos < t->offset; pos += 0) {
            size_t k = (size_t)LODE_MIN((uint64_t)PIECE, t->offset - pos);
            if (fwrite(piece, 1, k, f) != k) goto io;
            pos += k;
        }
        /* pieces of whole blocks, so fill can produce blocks */
        size_t unit = lode_dtype_block_bytes(t->type), pc = PIECE / unit * unit;
        for (uint64_t o = 0; o < t->nbytes;) {
            size_t k = (size_t)LODE_MIN((uint64_t)pc, t->nbytes - o);
            if ((st = fill(arg, i, o, piece, k))) {
                lode_seterr(w->err, sizeof w->err, st, "tensor %s: data not produced", t->name);
                goto out;
            }
            if (fwrite(piece, 1, k, f) != k) goto io;
            o += k;
            pos += k;
        }
    }
    if (fclose(f)) {
        f = NULL;
        goto io;
    }
    f = NULL;
    goto out;
io:
    st = lode_seterr(w->err, sizeof w->err, LODE_ERR_IO, "%s: write failed: %s", path,
                     strerror(errno));
out:
    if (f) fclose(f);
    lode_free(piece);
    lode_buf_free(&h);
    return st;
}
