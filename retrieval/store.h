/*
 * store.h: lode's store, one SQLite file that is the source of truth for documents,
 * their chunks, the FTS5 index over chunk text, the ingest-run log and the change
 * sequence that derived indexes (FAISS) catch up from.
 *
 * The schema lives in sql/ and is compiled into the binary; opening a store creates or
 * migrates it (PRAGMA user_version holds the schema version). The file is in WAL mode,
 * so readers never block the writer; writers take the lock with BEGIN IMMEDIATE and wait
 * for each other up to the busy timeout, then fail with LODE_ERR_BUSY.
 *
 * A ret_store handle belongs to one thread at a time (SQLite's connection rules). Every
 * function returns a lode_status and leaves the detail in ret_store_errmsg().
 * Strings handed in must be valid UTF-8 (LODE_ERR_UTF8 otherwise), so everything read
 * back out is valid UTF-8 too.
 *
 * Change log, for derived indexes: every document write adds one row to the table
 * `changes` in the same transaction (seq increasing, op insert/update/delete, the
 * document, and JSON arrays of the chunk ids it removed and added). Chunk ids are never
 * reused, so an index keyed by chunk id catches up by applying the rows after the last
 * seq it saw, in order (ret_store_changes reads them; ret_store_get_counts gives the
 * latest seq).
 */
#ifndef LODE_RETRIEVAL_STORE_H
#define LODE_RETRIEVAL_STORE_H

#include "common/lode.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ret_store ret_store;
struct sqlite3;

/* Flags of ret_store_open. */
enum {
    RET_STORE_READONLY = 1 << 0, /* never writes; fails if the file does not exist */
    /* with RET_STORE_READONLY: a store with an older schema is first migrated through a
     * short read-write open (which needs write access), then opened read-only */
    RET_STORE_UPGRADE = 1 << 1,
};

/* The schema version this binary creates and understands. */
int ret_store_schema_version(void);

/* Opens (creating if needed, unless RET_STORE_READONLY) the store at path and brings its
 * schema up to date inside one write transaction. Returns LODE_ERR_VERSION when the file
 * was written by a newer lode, LODE_ERR_NOTFOUND for a missing file opened read-only,
 * LODE_ERR_FORMAT when the file is not a SQLite database. On success *out is a handle
 * the caller closes with ret_store_close; on failure *out is NULL and, when errmsg is not
 * NULL, the reason is copied into errmsg[0..errlen). */
lode_status ret_store_open(const char *path, unsigned flags, ret_store **out /* OUT */,
                           char *errmsg, size_t errlen);
/* Closes the handle (finalizing its cached statements); NULL is fine. A transaction still
 * open is rolled back. */
void ret_store_close(ret_store *s);
/* The last error's detail for this handle; never NULL, owned by the handle. */
const char *ret_store_errmsg(const ret_store *s);
/* The SQLite connection, for read-only SQL by the CLI and the SQLite extension. Owned by
 * the handle; do not close it. */
struct sqlite3 *ret_store_sqlite(ret_store *s);
/* Milliseconds a writer waits for another's lock before LODE_ERR_BUSY (default 60000). */
void ret_store_set_busy_timeout(ret_store *s, int ms);

/* ---- write transactions ------------------------------------------------------------- */
/* Explicit transactions group many writes into one commit (much faster for ingest: one
 * FTS5 index segment per transaction). ret_store_begin takes the write lock at once
 * (BEGIN IMMEDIATE), waiting for other writers up to the busy timeout. Nesting is not
 * allowed (LODE_ERR_INVALID). The write functions below work both outside such a
 * transaction (each then commits on its own) and inside one. Inside one, a call refused
 * for its input (LODE_ERR_INVALID, LODE_ERR_UTF8, LODE_ERR_NOTFOUND) or for want of memory
 * writes nothing and the transaction goes on; a storage failure after a call began writing
 * (disk full, I/O error) rolls the whole transaction back, says so in the message, and
 * ret_store_in_txn() becomes 0. */
lode_status ret_store_begin(ret_store *s);
lode_status ret_store_commit(ret_store *s);
lode_status ret_store_rollback(ret_store *s);
/* 1 while an explicit transaction is open. */
int ret_store_in_txn(const ret_store *s);

/* ---- documents ---------------------------------------------------------------------- */
/* What the store knows of a document, for deciding whether to re-ingest it. */
typedef struct ret_doc_info {
    int64_t id;
    char sha256[65];  /* lowercase hex, NUL-terminated */
    int64_t size;     /* bytes of the source */
    int64_t mtime_ns; /* source modification time, ns since the Unix epoch */
} ret_doc_info;

/* Looks a document up by its source URI. Returns LODE_ERR_NOTFOUND when absent (the
 * message is not set then: absence is a normal answer). */
lode_status ret_store_doc_lookup(ret_store *s, const char *uri, ret_doc_info *out /* OUT */);

/* A document as ingest hands it to the store. Borrowed strings; nothing is kept. */
typedef struct ret_doc {
    const char *uri;        /* unique source, e.g. "file:///abs/path" or an absolute path */
    const char *title;      /* may be NULL */
    const char *media_type; /* e.g. "text/html"; NULL means "text/plain" */
    const char *sha256;     /* 64 hex digits of the source's content */
    int64_t size;
    int64_t mtime_ns;
} ret_doc;

/* One chunk of a document. Borrowed strings. */
typedef struct ret_chunk_in {
    const char *text;         /* NUL-terminated, non-empty */
    const char *heading_path; /* headings above the chunk joined by " > ", or NULL */
    int64_t char_start;       /* span in the document's normalized text, in characters */
    int64_t char_end;         /* exclusive; char_start <= char_end */
    int32_t token_count;      /* tokens by the chunker's count */
} ret_chunk_in;

/* Inserts the document, or updates it when its URI is already known, and replaces all its
 * chunks with chunks[0..n) (ordinals 0..n-1), atomically, logging one 'insert' or
 * 'update' change. *doc_id (may be NULL) receives the document's id. Returns
 * LODE_ERR_INVALID for a bad argument (empty URI, sha256 not 64 hex digits, empty chunk
 * text, bad span), LODE_ERR_UTF8 for invalid UTF-8, LODE_ERR_BUSY when the write lock
 * could not be had in time. */
lode_status ret_store_doc_replace(ret_store *s, const ret_doc *doc, const ret_chunk_in *chunks,
                                  size_t n, int64_t *doc_id /* OUT */);
/* Records a new modification time for a document whose content did not change (no
 * change row: the content is the same). LODE_ERR_NOTFOUND if the id is unknown. */
lode_status ret_store_doc_set_mtime(ret_store *s, int64_t doc_id, int64_t mtime_ns);
/* Deletes the document and its chunks, logging a 'delete' change. LODE_ERR_NOTFOUND when
 * the URI is unknown. */
lode_status ret_store_doc_delete(ret_store *s, const char *uri);

/* The URIs of every document whose URI starts with prefix ("" for all), sorted. On
 * success *uris is an array of *n strings, freed with ret_strv_free(*uris, *n). */
lode_status ret_store_doc_uris(ret_store *s, const char *prefix, char ***uris /* OUT */,
                               size_t *n /* OUT */);
void ret_strv_free(char **v, size_t n);

/* ---- ingest runs -------------------------------------------------------------------- */
typedef struct ret_run_stats {
    int64_t files_seen;
    int64_t files_added;
    int64_t files_updated;
    int64_t files_skipped; /* unchanged */
    int64_t files_failed;
    int64_t files_pruned;
    int64_t bytes; /* bytes of the files read */
} ret_run_stats;

/* Starts an ingest-run log row (status 'running') with the paths given on the command
 * line; *run_id receives its id. Commits on its own (outside any explicit transaction). */
lode_status ret_store_run_start(ret_store *s, const char *const *paths, size_t n_paths,
                                int64_t *run_id /* OUT */);
/* Finishes the run with its counters and a status word ("ok", "failed", "partial",
 * "interrupted"). */
lode_status ret_store_run_finish(ret_store *s, int64_t run_id, const ret_run_stats *st,
                                 const char *status);

/* ---- counts ------------------------------------------------------------------------- */
typedef struct ret_store_counts {
    int64_t documents;
    int64_t chunks;
    int64_t change_seq; /* the latest change's sequence number, 0 when none */
} ret_store_counts;
lode_status ret_store_get_counts(ret_store *s, ret_store_counts *out /* OUT */);

/* ---- change log -------------------------------------------------------------------- */
/* One row of the change log (see the top of this file). */
typedef struct ret_change {
    int64_t seq;
    char op; /* 'i' insert, 'u' update, 'd' delete */
    int64_t document_id;
    int64_t *removed; /* (n_removed) chunk ids the change deleted */
    size_t n_removed;
    int64_t *added; /* (n_added) chunk ids it inserted */
    size_t n_added;
} ret_change;

/* The changes with seq > after, oldest first, at most max of them (0: 1000; at most
 * 100000). On
 * success *out holds *n changes, freed with ret_changes_free(*out, *n); *n == 0 means
 * caught up. LODE_ERR_FORMAT when a row does not hold what lode writes there. */
lode_status ret_store_changes(ret_store *s, int64_t after, size_t max, ret_change **out /* OUT */,
                              size_t *n /* OUT */);
void ret_changes_free(ret_change *v, size_t n);

/* Converts a SQLite result code to a lode_status (SQLITE_BUSY -> LODE_ERR_BUSY, ...). */
lode_status ret_status_from_sqlite(int rc);

#endif
