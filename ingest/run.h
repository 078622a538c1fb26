/*
 * run.h: an ingest run: walk the paths, read, hash, load and chunk the files on worker
 * threads, and write them to the store from the calling thread.
 *
 * Incremental: a file whose size and modification time match the stored document is
 * unchanged without being read (opts.rehash reads and hashes it anyway); otherwise its
 * SHA-256 decides: equal means unchanged (the new mtime is recorded), different means its
 * chunks are replaced. Each document is replaced atomically (one savepoint); several
 * documents share one transaction for throughput, committed every few MB or half second,
 * so a crash loses at most the last uncommitted batch and never leaves half a document.
 * Another process writing the same store makes this one wait (busy timeout), not fail.
 * With prune, documents under the roots whose files are gone are deleted.
 *
 * Embedding (opts.embedder set): every new or changed document's chunks are embedded on
 * the writing thread and their vectors written in the same transaction as the chunks, so
 * a crash never leaves a committed chunk without its vector. Before the files, a model
 * other than the store's becomes the store's model (its old vectors are dropped, with a
 * message); after them, chunks that still have no vector (ingested lexical-only before,
 * or before a model change) are embedded, committed batch by batch; finally the FAISS
 * index file beside the store is caught up (retrieval/dense.h). Without an embedder the
 * run is lexical-only and touches no vector.
 */
#ifndef LODE_INGEST_RUN_H
#define LODE_INGEST_RUN_H

#include "common/lode.h"
#include "ingest/ingest.h"
#include "retrieval/store.h"

#define ING_MAX_SIZE_DEFAULT ((int64_t)32 << 20)

typedef struct ing_run_stats {
    int64_t files_total; /* files the walk found */
    int64_t bytes_total; /* their bytes */
    int64_t files_done;  /* files handled so far */
    int64_t bytes_done;  /* their bytes (read or not) */
    int64_t files_seen, files_added, files_updated, files_unchanged, files_failed, files_pruned;
    int64_t files_repaired; /* ingested with invalid UTF-8 replaced */
    int64_t files_ignored;  /* in directories but not of a kind lode reads */
    int64_t chunks;         /* chunks written */
    int64_t bytes_read;     /* bytes read from files */
    double seconds;
    double write_seconds;     /* of which the store took (writes and commits) */
    double write_cpu_seconds; /* CPU time of the writer thread in the store */
    double wait_seconds;      /* of which the writer waited for loader threads */
    int64_t run_id;           /* the ingest-run log row */
    int embedding;            /* 0: files; 1: embedding chunks that had no vector */
    int64_t chunks_embedded;  /* chunks embedded (both phases) */
    int64_t embed_total;      /* phase 1: chunks to embed */
    int64_t embed_done;       /* phase 1: of which done */
    int64_t vectors_dropped;  /* vectors of another model dropped by a model change */
    double embed_seconds;     /* time in the embedder */
    int interrupted;
} ing_run_stats;

typedef struct ing_run_opts {
    const char *const *includes;
    size_t n_includes;
    const char *const *excludes;
    size_t n_excludes;
    int prune;
    int rehash;       /* hash files even when size and mtime match */
    int64_t max_size; /* bytes; 0: ING_MAX_SIZE_DEFAULT */
    ing_chunk_opts chunk;
    int threads;                /* loader threads; 0: the CPU count */
    volatile const int *cancel; /* when it becomes non-zero the run stops early (may be NULL) */
    /* One line per file that failed (failed = 1) or was ingested with a warning (0). */
    void (*on_message)(void *ctx, const char *path, const char *reason, int failed);
    /* After every file, from the calling thread. */
    void (*on_progress)(void *ctx, const ing_run_stats *st);
    void *ctx;
    struct eng_bert *embedder; /* embeds chunks when set (not owned); NULL: lexical only */
    const char *embed_path;    /* where it was loaded from, recorded in the store */
} ing_run_opts;

/* One document made ready for ret_store_doc_replace: loaded, normalized and chunked, with
 * the chunk rows (cin, n_chunks of them) pointing into texts. */
typedef struct ing_prepared {
    ing_doc *doc;
    ing_chunk *chunks;
    size_t n_chunks;
    char *texts; /* the chunks' texts, NUL-separated */
    ret_chunk_in *cin;
    size_t text_bytes;
} ing_prepared;

/* Loads data as media (ING_MEDIA_UNKNOWN: sniffed) and chunks it with o (NULL: defaults).
 * On success *p owns the result (ing_prepared_clear); on failure it holds nothing and err
 * says why: ing_load's errors, or LODE_ERR_INVALID for a document without text. */
lode_status ing_prepare(const char *data, size_t len, ing_media media, const ing_chunk_opts *o,
                        ing_prepared *p /* OUT */, char *err, size_t errlen);
void ing_prepared_clear(ing_prepared *p); /* accepts NULL */

/* Runs an ingest of paths[0..n) into s. Files that fail are reported through on_message
 * and counted; the run goes on. Returns LODE_OK when the run completed (even with failed
 * files: see stats->files_failed), or the store's error when it cannot go on (the work
 * committed before stays). *stats is filled in either case. */
lode_status ing_run(ret_store *s, const char *const *paths, size_t n, const ing_run_opts *o,
                    ing_run_stats *stats /* OUT */);

#endif
