/*
 * gguf_write.h: writes GGUF v3 files (the format engine/gguf.h reads): metadata key/values,
 * then tensor infos, then tensor data aligned to general.alignment. Tensor data is produced
 * by a callback while the file is written, so multi-gigabyte synthetic models stream to
 * disk without being held in memory. Used by `lode synth` and by tests that need a model.
 */
#ifndef LODE_ENGINE_GGUF_WRITE_H
#define LODE_ENGINE_GGUF_WRITE_H

#include "common/lode.h"

#include <stddef.h>
#include <stdint.h>

typedef struct eng_gguf_writer eng_gguf_writer;

/* Fills buf (nbytes, a part of tensor `index` starting at byte `offset`) with the data. */
typedef lode_status (*eng_gguf_fill_fn)(void *arg, int64_t index, uint64_t offset, void *buf,
                                        size_t nbytes);

/* A new, empty writer with data alignment `align` (a power of two, 0: 32). */
lode_status eng_gguf_writer_create(uint32_t align, eng_gguf_writer **out /* OUT */);
void eng_gguf_writer_destroy(eng_gguf_writer *w); /* accepts NULL */
const char *eng_gguf_writer_errmsg(const eng_gguf_writer *w);

/* Metadata; keys are copied. Arrays of strings take n NUL-terminated strings. */
lode_status eng_gguf_w_u32(eng_gguf_writer *w, const char *key, uint32_t v);
lode_status eng_gguf_w_i32(eng_gguf_writer *w, const char *key, int32_t v);
lode_status eng_gguf_w_f32(eng_gguf_writer *w, const char *key, float v);
lode_status eng_gguf_w_bool(eng_gguf_writer *w, const char *key, int v);
lode_status eng_gguf_w_str(eng_gguf_writer *w, const char *key, const char *v);
lode_status eng_gguf_w_arr_str(eng_gguf_writer *w, const char *key, const char *const *v,
                               uint64_t n);
lode_status eng_gguf_w_arr_i32(eng_gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
lode_status eng_gguf_w_arr_f32(eng_gguf_writer *w, const char *key, const float *v, uint64_t n);

/* Declares a tensor: `type` a lode_dtype, ne[0] innermost; returns its index in *index. */
lode_status eng_gguf_w_tensor(eng_gguf_writer *w, const char *name, int type, int n_dims,
                              const uint64_t *ne, int64_t *index /* OUT, may be NULL */);

/* Writes the file: header, metadata, tensor infos, then each tensor's data from fill. */
lode_status eng_gguf_writer_save(eng_gguf_writer *w, const char *path, eng_gguf_fill_fn fill,
                                 void *arg);

#endif
