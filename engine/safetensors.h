/*
 * safetensors.h: reader for the safetensors format (8-byte little-endian header length,
 * a JSON header naming each tensor's dtype, shape and byte range, then the data). The
 * file is mmapped and validated in full before anything is handed out: the header length
 * and JSON, every dtype and shape, each byte range against its shape, ranges that tile
 * the data section without overlap or holes, and unique names. Tensor data pointers point
 * into the mapping. Embedding models (BERT family) come in this format.
 */
#ifndef LODE_ENGINE_SAFETENSORS_H
#define LODE_ENGINE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"

typedef enum eng_st_dtype {
    ENG_ST_BOOL = 0,
    ENG_ST_U8,
    ENG_ST_I8,
    ENG_ST_F8_E5M2,
    ENG_ST_F8_E4M3,
    ENG_ST_I16,
    ENG_ST_U16,
    ENG_ST_F16,
    ENG_ST_BF16,
    ENG_ST_I32,
    ENG_ST_U32,
    ENG_ST_F32,
    ENG_ST_F64,
    ENG_ST_I64,
    ENG_ST_U64,
    ENG_ST_DTYPE_COUNT
} eng_st_dtype;

#define ENG_ST_MAX_DIMS 8
/* Headers larger than this are refused (the format's reference reader uses 100 MB). */
#define ENG_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

typedef struct eng_st_tensor {
    const char *name;
    eng_st_dtype dtype;
    int n_dims;
    int64_t shape[ENG_ST_MAX_DIMS];
    int64_t n_elems;
    const void *data; /* inside the file's mapping; may be unaligned */
    size_t nbytes;
} eng_st_tensor;

typedef struct eng_st eng_st;

/* Maps and validates the file. On success *out owns the mapping (eng_st_close). On
 * failure returns IO, FORMAT, UNSUPPORTED or NOMEM with a message in err. */
lode_status eng_st_open(const char *path, eng_st **out /* OUT */, char *err, size_t errlen);
/* The same over a buffer the caller keeps alive and unchanged until eng_st_close. */
lode_status eng_st_open_buffer(const void *data, size_t len, eng_st **out /* OUT */, char *err,
                               size_t errlen);
void eng_st_close(eng_st *st);

size_t eng_st_count(const eng_st *st);
/* Tensors in name order; i < eng_st_count. */
const eng_st_tensor *eng_st_at(const eng_st *st, size_t i);
/* The tensor of that name, or NULL. */
const eng_st_tensor *eng_st_find(const eng_st *st, const char *name);
/* A "__metadata__" string value, or NULL. */
const char *eng_st_metadata(const eng_st *st, const char *key);

/* Bytes per element of a dtype; "F32"-style name. */
size_t eng_st_dtype_size(eng_st_dtype t);
const char *eng_st_dtype_name(eng_st_dtype t);

/* Converts a F32, F16 or BF16 tensor into dst[0..n), n == t->n_elems. Returns
 * UNSUPPORTED for other dtypes, INVALID when n differs. */
lode_status eng_st_to_f32(const eng_st_tensor *t, float *dst, size_t n);

#endif
