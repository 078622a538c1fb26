/*
 * test_ingest_pdf.c: the PDF loader (ingest/load_pdf.c) on the fixtures of tests/data/pdf/
 * (scripts/make-pdf-fixtures.py): text per page under the heading path "p. N", the title,
 * accented text, pages without text skipped; encrypted, image-only, not-a-PDF and damaged
 * files refused with a reason; every truncation and a few hundred byte mutations of a good
 * file loaded without a crash; and a whole ingest run into a store, where search hits
 * name the page, the bad PDFs are reported and the run goes on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/lode.h"
#include "ingest/ingest.h"
#include "ingest/run.h"
#include "retrieval/search.h"
#include "retrieval/store.h"

#include <ftw.h>
#include <poppler.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wformat-truncation"

#define DATA "tests/data/pdf/"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    lode_buf b = LODE_BUF_INIT;
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) lode_buf_append(&b, tmp, n);
    fclose(f);
    *len = b.len;
    return lode_buf_take(&b);
}

static void spit(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static char *fixture(const char *name, size_t *len)
{
    char path[256];
    snprintf(path, sizeof path, DATA "%s", name);
    char *d = slurp(path, len);
    if (!d) fail_msg("missing fixture %s (scripts/make-pdf-fixtures.py writes it)", path);
    return d;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

/* The text of the blocks under heading path "p. N", joined by one space; "" if none. */
static char *page_text(const ing_doc *d, int page)
{
    char want[32];
    snprintf(want, sizeof want, "p. %d", page);
    lode_buf b = LODE_BUF_INIT;
    for (size_t i = 0; i < d->n_blocks; i++) {
        const ing_block *bl = &d->blocks[i];
        if (strcmp(d->paths[bl->path], want)) continue;
        if (b.len) lode_buf_putc(&b, ' ');
        lode_buf_append(&b, d->text + bl->start, bl->end - bl->start);
    }
    return lode_buf_take(&b);
}

static void test_text_per_page(void **state)
{
    size_t len;
    char *data = fixture("text.pdf", &len);
    ing_doc *d = NULL;
    char err[256] = "";
    assert_int_equal(ing_media_from_name("Report.PDF"), ING_MEDIA_PDF);
    assert_string_equal(ing_media_mime(ING_MEDIA_PDF), "application/pdf");
    lode_status st = ing_load(data, len, ing_media_from_name("x/text.pdf"), &d, err, sizeof err);
    if (st) fail_msg("text.pdf: %s", err);
    assert_int_equal(d->media, ING_MEDIA_PDF);
    assert_string_equal(d->title, "Harbour Notes");
    assert_int_equal(d->utf8_repairs, 0);

    char *p1 = page_text(d, 1), *p2 = page_text(d, 2), *p3 = page_text(d, 3), *p4 = page_text(d, 4);
    /* lines of a page run together with one space */
    assert_string_equal(p1,
                        "Lighthouse keepers trimmed the wicks every evening and logged the weather "
                        "in a leather-bound book.");
    assert_non_null(strstr(p2, "harbour pilot boarded incoming freighters"));
    /* ligatures (U+FB01, U+FB02) become letters, soft hyphens go */
    assert_non_null(strstr(p2, "The final flag went up at the office of the breakwater."));
    assert_string_equal(p3, ""); /* only an image */
    /* WinAnsi accents come out as UTF-8 */
    assert_non_null(strstr(
        p4,
        "A caf\xC3\xA9 on the quay served na\xC3\xAFve tourists cr\xC3\xA8me br\xC3\xBBl\xC3\xA9"
        "e."));
    assert_non_null(strstr(p4, "gulls circled overhead"));
    assert_null(strstr(p1, "harbour"));
    lode_free(p1);
    lode_free(p2);
    lode_free(p3);
    lode_free(p4);

    /* chunks never span pages, so each one names its page */
    ing_chunk *c = NULL;
    size_t n = 0;
    ing_chunk_opts co = {.target_tokens = 8, .overlap_tokens = 2};
    assert_int_equal(ing_chunk_doc(d, &co, &c, &n), LODE_OK);
    assert_true(n >= 4);
    int seen[5] = {0};
    for (size_t i = 0; i < n; i++) {
        const char *path = d->paths[c[i].path];
        int pg = 0;
        assert_int_equal(sscanf(path, "p. %d", &pg), 1);
        assert_true(pg >= 1 && pg <= 4);
        seen[pg]++;
        char *t = lode_strndup(d->text + c[i].start, c[i].end - c[i].start);
        if (strstr(t, "pilot")) assert_int_equal(pg, 2);
        if (strstr(t, "Lighthouse")) assert_int_equal(pg, 1);
        if (strstr(t, "gulls")) assert_int_equal(pg, 4);
        lode_free(t);
    }
    assert_true(seen[1] && seen[2] && seen[4]);
    assert_int_equal(seen[3], 0);
    lode_free(c);
    ing_doc_destroy(d);

    /* without a name the bytes say it is a PDF */
    d = NULL;
    assert_int_equal(ing_load(data, len, ING_MEDIA_UNKNOWN, &d, err, sizeof err), LODE_OK);
    assert_int_equal(d->media, ING_MEDIA_PDF);
    ing_doc_destroy(d);
    lode_free(data);
}

static void test_encrypted_and_image_only(void **state)
{
    size_t len;
    char *data = fixture("encrypted.pdf", &len);
    ing_doc *d = NULL;
    char err[256] = "";
    assert_int_equal(ing_load(data, len, ING_MEDIA_PDF, &d, err, sizeof err), LODE_ERR_UNSUPPORTED);
    assert_null(d);
    assert_non_null(strstr(err, "encrypted PDF"));
    assert_non_null(strstr(err, "password"));
    /* the fixture is a real encrypted PDF: with its password poppler reads the text */
    GBytes *b = g_bytes_new_static(data, len);
    GError *ge = NULL;
    PopplerDocument *pd = poppler_document_new_from_bytes(b, "lode-secret", &ge);
    assert_non_null(pd);
    PopplerPage *pg = poppler_document_get_page(pd, 0);
    char *t = poppler_page_get_text(pg);
    assert_non_null(strstr(t, "vault combination"));
    g_free(t);
    g_object_unref(pg);
    g_object_unref(pd);
    g_bytes_unref(b);
    lode_free(data);

    data = fixture("image-only.pdf", &len);
    err[0] = 0;
    assert_int_equal(ing_load(data, len, ING_MEDIA_PDF, &d, err, sizeof err), LODE_ERR_UNSUPPORTED);
    assert_null(d);
    assert_non_null(strstr(err, "no text in any of its 2 pages"));
    assert_non_null(strstr(err, "OCR"));
    lode_free(data);
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* Loads bytes that may be anything; the loader must answer, never crash. Returns the
 * status and checks the answer is coherent. */
static lode_status load_any(const char *data, size_t len)
{
    ing_doc *d = NULL;
    char err[256] = "";
    lode_status st = ing_load_pdf(data, len, &d, err, sizeof err);
    if (st == LODE_OK) {
        assert_non_null(d);
        assert_int_equal(strlen(d->text), d->len);
        assert_true(lode_utf8_valid_prefix(d->text, d->len) == d->len);
        ing_doc_destroy(d);
    } else {
        assert_null(d);
        assert_true(err[0] != 0);
        assert_true(st == LODE_ERR_FORMAT || st == LODE_ERR_UNSUPPORTED);
    }
    return st;
}

static void test_garbage(void **state)
{
    ing_doc *d = NULL;
    char err[256] = "";
    static const char text[] = "This is a letter saved with the wrong extension.\n";
    assert_int_equal(ing_load(text, sizeof text - 1, ING_MEDIA_PDF, &d, err, sizeof err),
                     LODE_ERR_FORMAT);
    assert_non_null(strstr(err, "not a PDF"));
    char junk[4096];
    memcpy(junk, "%PDF-1.7\n", 9);
    for (size_t i = 9; i < sizeof junk; i++) junk[i] = (char)rnd();
    err[0] = 0;
    assert_int_equal(ing_load(junk, sizeof junk, ING_MEDIA_UNKNOWN, &d, err, sizeof err),
                     LODE_ERR_FORMAT);
    assert_non_null(strstr(err, "damaged PDF"));
    assert_int_equal(load_any("%PDF-", 5), LODE_ERR_FORMAT);

    /* every truncation of a good file: an answer each time, and most of the file is
     * needed before any of it reads (the cross-reference table is at the end) */
    size_t len;
    char *data = fixture("text.pdf", &len);
    size_t ok = 0, tried = 0;
    for (size_t cut = 1; cut < len; cut += 7, tried++)
        if (load_any(data, cut) == LODE_OK) ok++;
    assert_true(ok < tried);
    assert_int_equal(load_any(data, len), LODE_OK);
    /* byte mutations */
    char *m = lode_malloc(len);
    for (int r = 0; r < 300; r++) {
        memcpy(m, data, len);
        int flips = 1 + (int)(rnd() % 8);
        for (int k = 0; k < flips; k++) m[rnd() % len] = (char)rnd();
        load_any(m, len);
    }
    lode_free(m);
    lode_free(data);
}

typedef struct msgs {
    lode_buf failed;
} msgs;

static void on_message(void *ctx, const char *path, const char *reason, int failed)
{
    msgs *m = ctx;
    if (!failed) return;
    const char *base = strrchr(path, '/');
    lode_buf_printf(&m->failed, "%s: %s\n", base ? base + 1 : path, reason);
}

static void test_ingest_run(void **state)
{
    char tmpl[] = "/tmp/lode-test-pdf-XXXXXX";
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    char in[512], db[512], p[600];
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(db, sizeof db, "%s/store.db", dir);
    assert_int_equal(mkdir(in, 0755), 0);
    static const char *const names[] = {"text.pdf", "encrypted.pdf", "image-only.pdf"};
    for (size_t i = 0; i < LODE_ARRAY_LEN(names); i++) {
        size_t len;
        char *d = fixture(names[i], &len);
        snprintf(p, sizeof p, "%s/%s", in, names[i]);
        spit(p, d, len);
        if (i == 0) { /* and a truncated copy */
            snprintf(p, sizeof p, "%s/truncated.pdf", in);
            spit(p, d, len / 3);
        }
        lode_free(d);
    }

    ret_store *s = NULL;
    char err[256];
    assert_int_equal(ret_store_open(db, 0, &s, err, sizeof err), LODE_OK);
    msgs m = {LODE_BUF_INIT};
    ing_run_opts o = {.threads = 2, .on_message = on_message, .ctx = &m};
    ing_run_stats stats;
    const char *paths[] = {in};
    assert_int_equal(ing_run(s, paths, 1, &o, &stats), LODE_OK);
    assert_int_equal(stats.files_added, 1);
    assert_int_equal(stats.files_failed, 3);
    const char *f = m.failed.data ? m.failed.data : "";
    if (!strstr(f, "encrypted.pdf: encrypted PDF") || !strstr(f, "image-only.pdf: no text") ||
        !strstr(f, "truncated.pdf: damaged PDF"))
        fail_msg("unexpected messages:\n%s", f);
    lode_buf_free(&m.failed);

    ret_hits *h = NULL;
    ret_search_opts so = {.k = 5};
    assert_int_equal(ret_search_bm25(s, "harbour pilot", &so, &h), LODE_OK);
    assert_true(h->n >= 1);
    assert_string_equal(h->hit[0].heading_path, "p. 2");
    assert_string_equal(h->hit[0].title, "Harbour Notes");
    assert_non_null(strstr(h->hit[0].uri, "/text.pdf"));
    ret_hits_free(h);
    assert_int_equal(ret_search_bm25(s, "creme brulee", &so, &h), LODE_OK);
    assert_true(h->n >= 1);
    assert_string_equal(h->hit[0].heading_path, "p. 4");
    ret_hits_free(h);

    sqlite3_stmt *q = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(ret_store_sqlite(s),
                           "SELECT media_type FROM documents WHERE uri LIKE '%/text.pdf'", -1, &q,
                           NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "application/pdf");
    sqlite3_finalize(q);
    ret_store_close(s);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_per_page),
        cmocka_unit_test(test_encrypted_and_image_only),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_ingest_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
