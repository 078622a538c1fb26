/*
 * walk.h: finding the files an ingest run reads. Roots are files or directories;
 * directories are walked recursively in name order, following symbolic links but never
 * into a directory twice (so link loops end), skipping hidden files and folders (.git). In a
 * directory, a file is taken when an --include glob matches it or, with no includes, when
 * its extension is one lode reads or it has none (its content decides later). --exclude
 * globs drop files and whole directories. Globs (fnmatch) are tried on the base name and
 * on the path relative to the root. A file named as a root is always taken.
 */
#ifndef LODE_INGEST_WALK_H
#define LODE_INGEST_WALK_H

#include "common/lode.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ing_file {
    char *path; /* absolute, the document's URI */
    int64_t size;
    int64_t mtime_ns;
    int is_root; /* named on the command line */
} ing_file;

typedef struct ing_walk_opts {
    const char *const *includes;
    size_t n_includes;
    const char *const *excludes;
    size_t n_excludes;
    int missing_ok; /* a root that does not exist is no error (prune after deletion) */
    /* Called for each path that cannot be read (named, with a reason); may be NULL. */
    void (*on_error)(void *ctx, const char *path, const char *reason);
    void *ctx;
} ing_walk_opts;

typedef struct ing_walk_result {
    ing_file *files; /* in walk order */
    size_t n_files;
    char **roots; /* the roots made absolute, in order given */
    size_t n_roots;
    size_t errors;  /* paths reported through on_error */
    size_t ignored; /* files in directories not taken (extension, include globs) */
    int64_t bytes;  /* total size of files */
} ing_walk_result;

/* Walks the roots. Unreadable paths are reported and counted, never fatal. Returns
 * LODE_ERR_NOMEM only; on success *out owns its arrays (free with ing_walk_free). */
lode_status ing_walk(const char *const *roots, size_t n_roots, const ing_walk_opts *o,
                     ing_walk_result *out /* OUT */);
void ing_walk_free(ing_walk_result *r);

/* An absolute form of path: realpath() when it exists, else joined to the working
 * directory with "." and ".." resolved by name. Returns a new string (lode_free) or NULL
 * when out of memory. */
char *ing_abs_path(const char *path);

#endif
