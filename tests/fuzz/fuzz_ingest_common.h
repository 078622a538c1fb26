/*
 * fuzz_ingest_common.h: what the loader fuzz targets check on every input: a loader either
 * fails with a status or yields a document whose text is valid UTF-8, whose blocks lie in
 * order inside the text and whose heading paths exist; chunking it keeps every chunk
 * inside the text, under the target, with spans in order.
 */
#ifndef LODE_FUZZ_INGEST_COMMON_H
#define LODE_FUZZ_INGEST_COMMON_H

#include "ingest/ingest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz ingest: %s\n", what);
    abort();
}

static void fuzz_check_doc(lode_status st, ing_doc *d)
{
    if (st) {
        if (d) fuzz_fail("a failed load returned a document");
        return;
    }
    if (!d || !d->text || !d->title) fuzz_fail("no document");
    if (strlen(d->text) != d->len) fuzz_fail("text length");
    if (lode_utf8_valid_prefix(d->text, d->len) != d->len) fuzz_fail("text is not UTF-8");
    if (lode_utf8_valid_prefix(d->title, strlen(d->title)) != strlen(d->title))
        fuzz_fail("title is not UTF-8");
    size_t prev = 0;
    for (size_t i = 0; i < d->n_blocks; i++) {
        const ing_block *b = &d->blocks[i];
        if (b->start >= b->end || b->end > d->len || b->start < prev) fuzz_fail("block span");
        if (b->path >= d->n_paths) fuzz_fail("block path");
        prev = b->end;
    }
    for (int target = 8; target <= 256; target *= 8) {
        ing_chunk_opts o = {target, target / 4, NULL, NULL};
        ing_chunk *c = NULL;
        size_t n = 0;
        if (ing_chunk_doc(d, &o, &c, &n)) fuzz_fail("chunking failed");
        for (size_t i = 0; i < n; i++) {
            if (c[i].start >= c[i].end || c[i].end > d->len) fuzz_fail("chunk span");
            if (c[i].tokens > target) fuzz_fail("chunk over the target");
            if (c[i].char_end < c[i].char_start) fuzz_fail("chunk characters");
            if (i && c[i].start < c[i - 1].start) fuzz_fail("chunk order");
        }
        lode_free(c);
    }
    ing_doc_destroy(d);
}

#endif
