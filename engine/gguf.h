/*
 * gguf.h: a validating reader for GGUF v2/v3 model files.
 *
 * The file is memory-mapped read-only and checked completely when it is opened (header,
 * every key/value, every tensor info, alignment, data ranges), so later code can trust
 * what the accessors return. A truncated or corrupt file yields LODE_ERR_FORMAT (or
 * LODE_ERR_UNSUPPORTED) and a message that names the key, tensor or byte offset at
 * fault; nothing in here asserts or reads out of bounds on bad input.
 *
 * Strings inside GGUF are not NUL-terminated. Scalar string values are copied once at
 * open and returned NUL-terminated; the elements of string arrays are returned as
 * (pointer, length) views into the mapping, which may hold any bytes.
 */
#ifndef LODE_ENGINE_GGUF_H
#define LODE_ENGINE_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"

typedef struct eng_gguf eng_gguf;

/* Value types of GGUF metadata, with the file's numbering. */
typedef enum eng_gguf_type {
    ENG_GGUF_U8 = 0,
    ENG_GGUF_I8 = 1,
    ENG_GGUF_U16 = 2,
    ENG_GGUF_I16 = 3,
    ENG_GGUF_U32 = 4,
    ENG_GGUF_I32 = 5,
    ENG_GGUF_F32 = 6,
    ENG_GGUF_BOOL = 7,
    ENG_GGUF_STRING = 8,
    ENG_GGUF_ARRAY = 9,
    ENG_GGUF_U64 = 10,
    ENG_GGUF_I64 = 11,
    ENG_GGUF_F64 = 12,
    ENG_GGUF_TYPE_COUNT
} eng_gguf_type;

/* A byte string inside the mapping: not NUL-terminated. */
typedef struct eng_gguf_str {
    const char *ptr;
    uint64_t len;
} eng_gguf_str;

/* One tensor as described by the file. `data` points into the mapping and is aligned to
 * the file's general.alignment (relative to the file start; the mapping is page
 * aligned). ne[0] is the innermost (contiguous) dimension, as in GGML. */
typedef struct eng_gguf_tensor {
    const char *name; /* NUL-terminated, owned by the handle */
    int type;         /* lode_dtype */
    int n_dims;       /* 1..4 */
    uint64_t ne[4];   /* dims beyond n_dims are 1 */
    uint64_t n_elems;
    uint64_t offset; /* from the start of the data section */
    uint64_t nbytes;
    const void *data;
} eng_gguf_tensor;

/* Limits that bound what a file may claim (beyond them: LODE_ERR_FORMAT). */
#define ENG_GGUF_MAX_TENSORS  65536
#define ENG_GGUF_MAX_KV       65536
#define ENG_GGUF_MAX_KEY_LEN  65535
#define ENG_GGUF_MAX_NAME_LEN 255
#define ENG_GGUF_MAX_ALIGN    (1u << 20)

/* Opens and validates a GGUF file. On success *out is a handle the caller frees with
 * eng_gguf_close. On failure *out is NULL and err (if not NULL) holds a message naming
 * the problem. Returns LODE_OK, LODE_ERR_IO, LODE_ERR_FORMAT, LODE_ERR_UNSUPPORTED or
 * LODE_ERR_NOMEM. */
lode_status eng_gguf_open(const char *path, eng_gguf **out /* OUT */, char *err, size_t errlen);

/* The same over bytes in memory (tests, fuzzing). The memory must outlive the handle;
 * it is not copied. */
lode_status eng_gguf_open_memory(const void *data, size_t size, eng_gguf **out /* OUT */, char *err,
                                 size_t errlen);

/* Unmaps and frees; accepts NULL. Pointers obtained from the handle die with it. */
void eng_gguf_close(eng_gguf *g);

/* The last detailed message of a failed getter on this handle ("" if none). */
const char *eng_gguf_errmsg(const eng_gguf *g);

uint32_t eng_gguf_version(const eng_gguf *g);
uint32_t eng_gguf_alignment(const eng_gguf *g);
size_t eng_gguf_file_size(const eng_gguf *g);

/* ---- metadata ---------------------------------------------------------------------- */
int64_t eng_gguf_n_kv(const eng_gguf *g);
/* Index of a key, or -1 when absent. */
int64_t eng_gguf_find_key(const eng_gguf *g, const char *key);
/* Key name (NUL-terminated, owned by the handle), type, and for arrays the element type
 * and length (0 for scalars) of the i-th pair; i must be < eng_gguf_n_kv. */
const char *eng_gguf_key(const eng_gguf *g, int64_t i);
eng_gguf_type eng_gguf_kv_type(const eng_gguf *g, int64_t i);
eng_gguf_type eng_gguf_arr_type(const eng_gguf *g, int64_t i);
uint64_t eng_gguf_arr_len(const eng_gguf *g, int64_t i);

/* Typed getters. Integers convert from any integer type when the value fits; floats
 * from F32 or F64. Return LODE_OK, LODE_ERR_NOTFOUND when the key is absent (the message
 * is not set then, so optional keys are cheap), LODE_ERR_FORMAT on a type mismatch or a
 * value out of range (message names the key). */
lode_status eng_gguf_get_u32(eng_gguf *g, const char *key, uint32_t *out /* OUT */);
lode_status eng_gguf_get_i32(eng_gguf *g, const char *key, int32_t *out /* OUT */);
lode_status eng_gguf_get_u64(eng_gguf *g, const char *key, uint64_t *out /* OUT */);
lode_status eng_gguf_get_f32(eng_gguf *g, const char *key, float *out /* OUT */);
lode_status eng_gguf_get_bool(eng_gguf *g, const char *key, int *out /* OUT */);
/* A NUL-terminated copy owned by the handle; *len (may be NULL) excludes the NUL. */
lode_status eng_gguf_get_str(eng_gguf *g, const char *key, const char **out /* OUT */,
                             size_t *len /* OUT */);

/* Arrays. get_arr_info: element type and count. get_arr_strs: the string elements as
 * views (array owned by the handle). copy_arr_i32/f32: converts numeric elements into
 * dst, which holds n elements; n must equal the array length. */
lode_status eng_gguf_get_arr_info(eng_gguf *g, const char *key, eng_gguf_type *elem /* OUT */,
                                  uint64_t *n /* OUT */);
lode_status eng_gguf_get_arr_strs(eng_gguf *g, const char *key, const eng_gguf_str **out /* OUT */,
                                  uint64_t *n /* OUT */);
lode_status eng_gguf_copy_arr_i32(eng_gguf *g, const char *key, int32_t *dst, uint64_t n);
lode_status eng_gguf_copy_arr_f32(eng_gguf *g, const char *key, float *dst, uint64_t n);

/* ---- tensors ----------------------------------------------------------------------- */
int64_t eng_gguf_n_tensors(const eng_gguf *g);
const eng_gguf_tensor *eng_gguf_tensor_at(const eng_gguf *g, int64_t i);
/* The tensor with this name, or NULL. */
const eng_gguf_tensor *eng_gguf_find_tensor(const eng_gguf *g, const char *name);

const char *eng_gguf_type_name(eng_gguf_type t);

#endif
