/*
 * dense.h: the store's embeddings and the FAISS index derived from them.
 *
 * SQLite is the source of truth: the table `vectors` holds every chunk's embedding as a
 * BLOB with its model's name and dimension, and the setting embed_model (table
 * `settings`) names the one model the store's vectors come from. Vectors of another model
 * are never used: a change of model drops them and re-embeds every chunk
 * (ret_store_embed_set, then ret_vectors_fill).
 *
 * A ret_dense is an embedder (engine/bert.h) and a vector index (vindex.h) for one store.
 * The index lives in a file beside the database (<db>.faiss) that records the change
 * sequence it reflects; on open, and before each search, it is caught up by applying the
 * change log rows after that sequence (removed chunk ids leave, added ones enter with
 * their vectors); vectors written without a change row (ret_vectors_fill, repairs, a
 * model change) bump the setting vectors_version, and when it moved the index's size is
 * checked against the store's vector count and, when they differ, reconciled id by id
 * (always on open). Between changes a catch-up costs two single-row reads. A file that is missing,
 * damaged or made for another model is rebuilt from the vectors table. The index is flat (exact)
 * below a configurable number of vectors and approximate (a FAISS factory string, default HNSW)
 * above it.
 *
 * A ret_dense may be shared by threads: embedding and catching up are serialized inside,
 * searches run concurrently. Each thread passes its own ret_store handle of the same store.
 */
#ifndef LODE_RETRIEVAL_DENSE_H
#define LODE_RETRIEVAL_DENSE_H

#include "common/lode.h"
#include "retrieval/store.h"
#include "retrieval/vindex.h"

#include <stddef.h>
#include <stdint.h>

/* The default embedding model folder, relative to the working directory (make model). */
#define RET_DEFAULT_EMBED_MODEL "models/all-MiniLM-L6-v2"
/* Vectors at which the index turns approximate, unless set otherwise. */
#define RET_DEFAULT_APPROX_THRESHOLD 20000

struct eng_bert;

/* ---- the store's embedding setting and vectors ---------------------------------------- */
typedef struct ret_embed_info {
    char model[128]; /* the model's short name (eng_bert_name) */
    int dim;
    char path[1024]; /* where it was loaded from, for those who embed queries later */
} ret_embed_info;

/* The store's embedding model. LODE_ERR_NOTFOUND when none is set (a lexical-only store). */
lode_status ret_store_embed_get(ret_store *s, ret_embed_info *out /* OUT */);
/* Makes model/dim/path the store's embedding model, in one transaction (or inside the
 * caller's). When it differs from the current one (name or dimension), every vector of
 * another model or dimension is deleted; *dropped (may be NULL) counts them. */
lode_status ret_store_embed_set(ret_store *s, const char *model, int dim, const char *path,
                                int64_t *dropped /* OUT */);
/* Writes the vectors of chunk ids[0..n) (vecs: n * dim floats) under model, replacing
 * existing ones; inside the caller's transaction or in its own. Chunks that no longer
 * exist are skipped (*written, may be NULL, counts the rows written). */
lode_status ret_store_vectors_put(ret_store *s, const char *model, int dim, size_t n,
                                  const int64_t *ids, const float *vecs, size_t *written /* OUT */);
/* Writes the vectors of document doc_id's chunks by ordinal: vecs[i * dim ..] for the
 * chunk of ordinal i, i < n (as ret_store_doc_replace numbered them); inside the caller's
 * transaction (the one of the document's write, so chunks and vectors commit together)
 * or in its own. */
lode_status ret_store_doc_vectors_put(ret_store *s, const char *model, int dim, int64_t doc_id,
                                      size_t n, const float *vecs);
/* Counts: chunks, vectors of model, and chunks without a vector of model. */
lode_status ret_store_vector_counts(ret_store *s, const char *model, int64_t *vectors /* OUT */,
                                    int64_t *missing /* OUT */);

/* Appends the text a chunk is embedded from: its heading path and a line break (when it
 * has one), then its text. Ingest and ret_vectors_fill both use it. */
lode_status ret_embed_input(lode_buf *b, const char *heading_path, const char *text);

/* Progress of ret_vectors_fill, after every batch. */
typedef void (*ret_fill_progress)(void *ctx, int64_t done, int64_t total);

/* Embeds, with m, every chunk of s that has no vector of m's model and stores the vectors,
 * committing every batch (so an interrupted fill keeps what it did), until none is left or
 * *cancel becomes non-zero. The store's embedding model must be m's (ret_store_embed_set).
 * *embedded (may be NULL) counts the chunks embedded. Must run outside a transaction. */
lode_status ret_vectors_fill(ret_store *s, struct eng_bert *m, volatile const int *cancel,
                             ret_fill_progress progress, void *ctx, int64_t *embedded /* OUT */);

/* The index kind (settings index_approx_threshold and index_factory): the number of
 * vectors at which the index turns approximate (< 0: never) and the FAISS factory string
 * of the approximate index. ret_dense_open uses them unless its options say otherwise.
 * *threshold is 0 and factory "" when unset. */
lode_status ret_store_index_kind_get(ret_store *s, int64_t *threshold /* OUT */,
                                     char *factory /* OUT */, size_t factory_len);
lode_status ret_store_index_kind_set(ret_store *s, int64_t threshold, const char *factory);

/* ---- the dense index ----------------------------------------------------------------- */
typedef struct ret_dense ret_dense;

typedef struct ret_dense_opts {
    const char *model_path;     /* NULL: the store's embed_path, else RET_DEFAULT_EMBED_MODEL */
    struct eng_bert *model;     /* an embedder to use instead of loading one (not owned) */
    const char *index_path;     /* NULL: the store's database file + ".faiss" */
    int64_t approx_threshold;   /* 0: RET_DEFAULT_APPROX_THRESHOLD; < 0: always flat */
    const char *approx_factory; /* NULL: "HNSW32,Flat" */
    int ef_search;              /* 0: the index's default */
    int n_threads;              /* embedder threads; 0: all */
    int no_save;                /* never write the index file (read-only users); it is still read */
    int index_only;             /* load no embedder: the index only (ret_dense_embed then fails) */
} ret_dense_opts;

/* Opens the dense side of store s: loads the embedding model, checks it against the
 * store's (LODE_ERR_INVALID, with a message naming both, when they differ), then loads
 * the index file and catches it up, or rebuilds it. Returns LODE_ERR_NOTFOUND when the
 * store has no embedding model (it was ingested lexical-only), IO/FORMAT for a model that
 * cannot be loaded. On success *out is owned by the caller (ret_dense_close). */
lode_status ret_dense_open(ret_store *s, const ret_dense_opts *o, ret_dense **out /* OUT */,
                           char *err, size_t errlen);
void ret_dense_close(ret_dense *d);

/* Catches the index up with the store's change log and vectors (see the top); saves the
 * file when anything changed (unless no_save). Cheap when nothing changed (two counts). */
lode_status ret_dense_sync(ret_dense *d, ret_store *s);
/* Saves the index file now (atomically), with the sequence it reflects. */
lode_status ret_dense_save(ret_dense *d);
/* Drops the index and rebuilds it from the vectors table, then saves it. */
lode_status ret_dense_rebuild(ret_dense *d, ret_store *s);

/* Embeds one text (L2-normalized, ret_dense_dim floats) into out. */
lode_status ret_dense_embed(ret_dense *d, const char *text, float *out /* OUT */);
/* Embeds n texts into out[i * dim ..]; like ret_dense_embed serialized with every other
 * use of d's embedder (use this, not the embedder itself, where searches run beside). */
lode_status ret_dense_embed_many(ret_dense *d, const char *const *texts, size_t n,
                                 float *out /* OUT */);
/* The k nearest chunks to the vector q, best first (hits must hold k). */
lode_status ret_dense_search_vec(ret_dense *d, const float *q, size_t k, ret_vhit *hits /* OUT */,
                                 size_t *n /* OUT */);

/* 1 when the index holds chunk id. */
int ret_dense_contains(ret_dense *d, int64_t id);
int ret_dense_dim(const ret_dense *d);
const char *ret_dense_model(const ret_dense *d); /* the model name; owned by d */
const char *ret_dense_index_path(const ret_dense *d);
int64_t ret_dense_seq(const ret_dense *d); /* the change sequence the index reflects */
int64_t ret_dense_count(ret_dense *d);     /* vectors in the index */
int ret_dense_is_approx(ret_dense *d);
struct eng_bert *ret_dense_embedder(ret_dense *d); /* owned by d (or the caller's opts) */
struct eng_embedder;
/* Routes ret_dense_embed and ret_dense_embed_many through e (engine/embedder.h: a
 * scheduler that batches them with other embedding work) instead of calling d's
 * embedder directly; e must embed with d's model (same name and dimension, else
 * LODE_ERR_INVALID) and stay alive until it is detached with e NULL. The vectors are the
 * same bit for bit. */
lode_status ret_dense_use_embedder(ret_dense *d, struct eng_embedder *e);
/* What opening did to the index file: "loaded", "caught up", "rebuilt (...)"; owned by d. */
const char *ret_dense_open_note(const ret_dense *d);
/* The last detailed error message; owned by d. */
const char *ret_dense_errmsg(const ret_dense *d);

/* The tag the index file carries for a model name (a hash of it). */
uint32_t ret_dense_model_tag(const char *model);

#endif
