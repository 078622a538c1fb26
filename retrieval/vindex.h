/*
 * vindex.h: the dense vector index, FAISS through its C API. SQLite stays the source of
 * truth (vectors are stored there as BLOBs); this index is derived from it, saved to a
 * file beside the database together with the change sequence number it reflects, and
 * caught up or rebuilt from SQLite by its owner when that number lags.
 *
 * Vectors are L2-normalized embeddings searched by inner product (cosine). Small indexes
 * are exact (flat); once the live vectors reach a configurable count the index is
 * rebuilt as an approximate one from a FAISS factory string (default HNSW). Vectors are
 * added and removed by the caller's 64-bit id (a chunk id); adding an id again replaces
 * its vector. Removal works on every index kind: FAISS labels are internal and a removed
 * one is skipped in results until the index compacts itself.
 *
 * One writer at a time with any number of concurrent searches (an internal rwlock).
 */
#ifndef LODE_RETRIEVAL_VINDEX_H
#define LODE_RETRIEVAL_VINDEX_H

#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"

typedef struct ret_vindex ret_vindex;

typedef struct ret_vindex_opts {
    int dim;                    /* vector dimension (required) */
    int64_t approx_threshold;   /* live vectors at which the index turns approximate; 0: 20000,
                                   < 0: never */
    const char *approx_factory; /* FAISS factory string; NULL: "HNSW32,Flat" */
    int ef_search;              /* HNSW search breadth; 0: 128 */
    uint32_t tag; /* saved in the file; loading a file with another tag is refused (the
                     store puts a hash of the embedding model's name here) */
} ret_vindex_opts;

typedef struct ret_vhit {
    int64_t id;
    float score; /* inner product */
} ret_vhit;

/* Creates an empty index. Returns INVALID for a bad dimension, INDEX with a message in
 * err when FAISS fails. *out is owned by the caller (ret_vindex_destroy). */
lode_status ret_vindex_create(const ret_vindex_opts *o, ret_vindex **out /* OUT */, char *err,
                              size_t errlen);
void ret_vindex_destroy(ret_vindex *v);

/* Adds (or replaces) n vectors: ids[i] and vecs[i * dim ..]. */
lode_status ret_vindex_add(ret_vindex *v, size_t n, const int64_t *ids, const float *vecs);
/* Removes ids; ids not present are ignored. *removed (may be NULL) counts those found. */
lode_status ret_vindex_remove(ret_vindex *v, size_t n, const int64_t *ids, size_t *removed);
/* The k nearest live vectors to q by inner product, best first, into hits; *n_hits may
 * be below k when the index holds fewer. */
lode_status ret_vindex_search(ret_vindex *v, const float *q, size_t k, ret_vhit *hits /* OUT */,
                              size_t *n_hits /* OUT */);

/* 1 when id is in the index (live). */
int ret_vindex_contains(ret_vindex *v, int64_t id);
/* Live vectors; 1 when the approximate index is in use. */
int64_t ret_vindex_count(ret_vindex *v);
int ret_vindex_is_approx(ret_vindex *v);
int ret_vindex_dim(const ret_vindex *v);

/* Writes the index and the change sequence it reflects to path, atomically (a
 * temporary file renamed over it). */
lode_status ret_vindex_save(ret_vindex *v, const char *path, int64_t change_seq);
/* Reads an index written by ret_vindex_save; o gives the threshold and factory to use
 * from now on (its dim and tag must match the file's, else LODE_ERR_INVALID). *change_seq gets
 * the saved sequence. NOTFOUND when the file does not exist, FORMAT when it is damaged. */
lode_status ret_vindex_load(const char *path, const ret_vindex_opts *o, ret_vindex **out /* OUT */,
                            int64_t *change_seq /* OUT */, char *err, size_t errlen);

/* The last detailed error message; owned by v. */
const char *ret_vindex_errmsg(ret_vindex *v);

#endif
