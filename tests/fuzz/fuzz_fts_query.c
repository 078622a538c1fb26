/* fuzz_fts_query.c: libFuzzer target for search-query escaping. Any bytes, searched in
 * each matching mode over a small in-memory store, must give LODE_OK (never an FTS5 syntax
 * error), and the escaper's output must be valid UTF-8 made of quoted phrases. */
#include "retrieval/search.h"
#include "retrieval/store.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static ret_store *store;

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_fts_query: %s: %s\n", what, detail);
    abort();
}

static void open_store(void)
{
    char err[256];
    if (ret_store_open(":memory:", 0, &store, err, sizeof err)) fail("open", err);
    static const char *texts[] = {"alpha beta \"gamma\" delta", "NEAR near or and not",
                                  "h\xc3\xa9llo w\xc3\xb6rld \xe6\x97\xa5\xe6\x9c\xac",
                                  "col:on star* caret^ (paren)"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char uri[32];
        snprintf(uri, sizeof uri, "mem:%zu", i);
        ret_doc d = {uri, uri, NULL, SHA, 1, 0};
        ret_chunk_in c = {texts[i], "Head > ing", 0, 10, 4};
        if (ret_store_doc_replace(store, &d, &c, 1, NULL)) fail("insert", ret_store_errmsg(store));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!store) open_store();
    char *q = malloc(size + 1);
    if (!q) return 0;
    memcpy(q, data, size);
    q[size] = 0;

    lode_buf b = LODE_BUF_INIT;
    size_t terms = 0;
    if (ret_fts_query(q, size, size & 1, &b, &terms) != LODE_OK) fail("escape", q);
    if (terms > RET_SEARCH_MAX_TERMS) fail("too many terms", q);
    if (terms && (!b.data || b.data[0] != '"' || b.data[b.len - 1] != '"'))
        fail("not a quoted phrase", b.data ? b.data : "");
    if (b.data && lode_utf8_valid_prefix(b.data, b.len) != b.len) fail("invalid UTF-8 out", q);
    lode_buf_free(&b);

    static const ret_match_mode modes[] = {RET_MATCH_AUTO, RET_MATCH_ALL, RET_MATCH_ANY};
    for (size_t m = 0; m < 3; m++) {
        ret_search_opts o = {.k = 3, .mode = modes[m]};
        ret_hits *h = NULL;
        if (ret_search_bm25(store, q, &o, &h) != LODE_OK) fail("search", ret_store_errmsg(store));
        ret_hits_free(h);
    }
    /* raw mode may reject the query, but only as LODE_ERR_INVALID or LODE_ERR_UTF8 */
    ret_search_opts raw = {.k = 3, .raw = 1};
    ret_hits *h = NULL;
    lode_status st = ret_search_bm25(store, q, &raw, &h);
    if (st != LODE_OK && st != LODE_ERR_INVALID && st != LODE_ERR_UTF8)
        fail("raw search", ret_store_errmsg(store));
    ret_hits_free(h);
    free(q);
    return 0;
}
