/*
 * prepare.c: one document's way from bytes to what the store takes (load, normalize,
 * chunk, and the chunk rows pointing into one text block). `lode ingest` (run.c) and the
 * server's uploads both go through here, so a document is cut and stored the same way
 * whichever door it came in by.
 */
#include "ingest/run.h"

#include <string.h>

void ing_prepared_clear(ing_prepared *p)
{
    if (!p) return;
    ing_doc_destroy(p->doc);
    lode_free(p->chunks);
    lode_free(p->texts);
    lode_free(p->cin);
    memset(p, 0, sizeof *p);
}

lode_status ing_prepare(const char *data, size_t len, ing_media media, const ing_chunk_opts *o,
                        ing_prepared *p, char *err, size_t errlen)
{
    lode_status st;
    memset(p, 0, sizeof *p);
    if ((st = ing_load(data, len, media, &p->doc, err, errlen))) goto out;
    if ((st = ing_chunk_doc(p->doc, o, &p->chunks, &p->n_chunks))) {
        lode_seterr(err, errlen, st, "cannot chunk: %s", lode_strerror(st));
        goto out;
    }
    if (p->n_chunks == 0) {
        st = lode_seterr(err, errlen, LODE_ERR_INVALID, "no text in it");
        goto out;
    }
    size_t total = 0;
    for (size_t i = 0; i < p->n_chunks; i++) total += p->chunks[i].end - p->chunks[i].start + 1;
    p->texts = lode_malloc(total);
    p->cin = lode_calloc(p->n_chunks, sizeof *p->cin);
    if (!p->texts || !p->cin) {
        st = lode_seterr(err, errlen, LODE_ERR_NOMEM, "out of memory");
        goto out;
    }
    char *t = p->texts;
    for (size_t i = 0; i < p->n_chunks; i++) {
        const ing_chunk *c = &p->chunks[i];
        size_t n = c->end - c->start;
        memcpy(t, p->doc->text + c->start, n);
        t[n] = 0;
        p->cin[i].text = t;
        p->cin[i].heading_path = p->doc->paths[c->path];
        p->cin[i].char_start = (int64_t)c->char_start;
        p->cin[i].char_end = (int64_t)c->char_end;
        p->cin[i].token_count = c->tokens;
        t += n + 1;
    }
    p->text_bytes = total;
out:
    if (st) ing_prepared_clear(p);
    return st;
}
