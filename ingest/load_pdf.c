/*
 * load_pdf.c: the PDF loader, through poppler-glib. lode wants the words of a PDF and
 * where they are: poppler gives each page's text in reading order, and every page becomes
 * a section of its own (heading path "p. N"), so the chunker never joins two pages and a
 * search hit or an answer's citation names the page it came from.
 *
 * What cannot be read is said plainly and never crashes the run: not a PDF, damaged
 * beyond poppler's repair (a truncated download), encrypted with a user password, or
 * holding no text at all (a scan without OCR). Poppler parses untrusted bytes; the data
 * stays owned by the caller and is only borrowed for the length of the call.
 */
#include "ingest/ingest_int.h"

#include <limits.h>
#include <poppler.h>
#include <stdio.h>
#include <string.h>

/* Bytes of a title kept (the Info dictionary can hold anything). */
#define PDF_MAX_TITLE 1024

/* The PDF header may follow up to 1 KiB of junk (the format's implementation notes). */
static int has_pdf_header(const char *data, size_t len)
{
    size_t n = LODE_MIN(len, (size_t)1024);
    for (size_t i = 0; i + 5 <= n; i++)
        if (data[i] == '%' && !memcmp(data + i, "%PDF-", 5)) return 1;
    return 0;
}

/* Typeset PDFs map ligature glyphs to the Unicode presentation forms U+FB00..U+FB06
 * ("ﬁnal") and keep soft hyphens (U+00AD) where a word may break: neither is what a
 * reader searches for, so the ligatures become their letters and soft hyphens go. In
 * place: the result is never longer. */
static void plain_letters(lode_buf *b)
{
    static const char *const lig[] = {"ff", "fi", "fl", "ffi", "ffl", "st", "st"};
    size_t o = 0;
    for (size_t i = 0; i < b->len;) {
        const unsigned char *p = (const unsigned char *)b->data + i;
        if (i + 2 < b->len && p[0] == 0xEF && p[1] == 0xAC && p[2] >= 0x80 && p[2] <= 0x86) {
            const char *l = lig[p[2] - 0x80];
            size_t n = strlen(l);
            memcpy(b->data + o, l, n);
            o += n;
            i += 3;
        } else if (i + 1 < b->len && p[0] == 0xC2 && p[1] == 0xAD) {
            i += 2;
        } else {
            b->data[o++] = b->data[i++];
        }
    }
    b->len = o;
    if (b->data) b->data[o] = 0;
}

/* Adds one page's text (already valid UTF-8 without NULs): lines run together into
 * paragraphs, which blank lines separate. Returns 1 when the page had any text. */
static int add_page(docb *b, const char *s, size_t n)
{
    size_t i = 0;
    int any = 0;
    while (i < n && !b->st) {
        const char *nl = memchr(s + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - s) : n;
        size_t k = i;
        while (k < e && ((unsigned char)s[k] <= 0x20 || s[k] == 0x7f)) k++;
        if (k == e) {
            docb_end(b); /* a blank line (or a form feed alone) ends the paragraph */
        } else {
            docb_text(b, s + i, e - i);
            docb_space(b);
            any = 1;
        }
        i = e + 1;
    }
    docb_end(b);
    return any;
}

lode_status ing_load_pdf(const char *data, size_t len, ing_doc **out, char *err, size_t errlen)
{
    docb b;
    lode_buf clean = LODE_BUF_INIT;
    GBytes *bytes = NULL;
    GError *gerr = NULL;
    PopplerDocument *pdf = NULL;
    char why[256] = "";
    lode_status st = docb_init(&b);
    *out = NULL;
    if (st) goto out;
    b.title_from_h1 = 0;
    if (!has_pdf_header(data, len)) {
        st = lode_seterr(why, sizeof why, LODE_ERR_FORMAT, "not a PDF (no %%PDF- header)");
        goto out;
    }
    if (len > INT_MAX) { /* poppler's offsets are int-sized in places */
        st = lode_seterr(why, sizeof why, LODE_ERR_LIMIT, "PDF too large (%zu bytes)", len);
        goto out;
    }
    bytes = g_bytes_new_static(data, len);
    pdf = poppler_document_new_from_bytes(bytes, NULL, &gerr);
    if (!pdf) {
        int encrypted =
            gerr && gerr->domain == POPPLER_ERROR && gerr->code == POPPLER_ERROR_ENCRYPTED;
        if (encrypted)
            st = lode_seterr(why, sizeof why, LODE_ERR_UNSUPPORTED,
                             "encrypted PDF: it needs a password, which lode does not take");
        else
            st = lode_seterr(why, sizeof why, LODE_ERR_FORMAT,
                             "damaged PDF, poppler cannot read it (%s)",
                             gerr && gerr->message ? gerr->message : "no reason given");
        goto out;
    }

    gchar *title = poppler_document_get_title(pdf);
    if (title) {
        size_t tl = strlen(title);
        lode_buf t = LODE_BUF_INIT;
        st = ing_utf8_repair(title, LODE_MIN(tl, (size_t)PDF_MAX_TITLE), &t, NULL);
        g_free(title);
        plain_letters(&t);
        /* the title is one line: runs of whitespace and control bytes become one space */
        for (size_t i = 0; !st && i < t.len; i++) {
            unsigned char c = (unsigned char)t.data[i];
            int sp = c <= 0x20 || c == 0x7f;
            if (sp && (b.title.len == 0 || b.title.data[b.title.len - 1] == ' ')) continue;
            st = lode_buf_putc(&b.title, sp ? ' ' : (char)c);
        }
        while (b.title.len && b.title.data[b.title.len - 1] == ' ') b.title.data[--b.title.len] = 0;
        lode_buf_free(&t);
        if (st) goto out;
    }

    int n_pages = poppler_document_get_n_pages(pdf), text_pages = 0;
    if (n_pages <= 0) {
        st = lode_seterr(why, sizeof why, LODE_ERR_FORMAT, "damaged PDF: it has no pages");
        goto out;
    }
    for (int i = 0; i < n_pages && !b.st; i++) {
        PopplerPage *page = poppler_document_get_page(pdf, i);
        if (!page) continue; /* a broken page object: the others still count */
        char *text = poppler_page_get_text(page);
        g_object_unref(page);
        if (!text) continue;
        lode_buf_reset(&clean);
        st = ing_utf8_repair(text, strlen(text), &clean, &b.repairs);
        g_free(text);
        if (st) goto out;
        plain_letters(&clean);
        char path[32];
        snprintf(path, sizeof path, "p. %d", i + 1);
        docb_section(&b, path);
        if (clean.len && add_page(&b, clean.data, clean.len)) text_pages++;
    }
    if (b.st) {
        st = b.st;
        goto out;
    }
    if (text_pages == 0) {
        st = lode_seterr(
            why, sizeof why, LODE_ERR_UNSUPPORTED,
            "no text in any of its %d page%s (scanned or image-only PDF; lode does no OCR)",
            n_pages, n_pages == 1 ? "" : "s");
        goto out;
    }
    st = docb_finish(&b, ING_MEDIA_PDF, out);
out:
    if (st && err) {
        if (why[0])
            lode_seterr(err, errlen, st, "%s", why);
        else
            lode_seterr(err, errlen, st, "cannot load PDF: %s", lode_strerror(st));
    }
    if (pdf) g_object_unref(pdf);
    if (bytes) g_bytes_unref(bytes);
    if (gerr) g_error_free(gerr);
    lode_buf_free(&clean);
    docb_free(&b);
    return st;
}
