/*
 * load_html.c: HTML to a normalized document through libxml2's HTML parser (its SAX
 * interface, recovering from broken markup, never touching the network): h1-h6 become headings and
 * the heading path, <pre> stays as written, list items are list blocks, other block elements end a
 * paragraph, and what is not content is dropped: scripts, styles, forms, SVG, the <head> (but its
 * <title>), and navigation (nav/header/footer/aside elements, role="navigation", and
 * elements whose class or id names a menu, table of contents or "nosearch" region).
 * libxml2 decodes the entities; whitespace is collapsed by the builder.
 */
#include "ingest/ingest_int.h"

#include <libxml/HTMLparser.h>
#include <libxml/parserInternals.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum {
    EL_INLINE = 0,
    EL_DROP,
    EL_BLOCK,
    EL_HEADING,
    EL_PRE,
    EL_ITEM,
    EL_CELL,
    EL_BR
} el_kind;

/* Element names by kind, sorted for bsearch (strcmp order). */
static const struct el_name {
    const char *name;
    el_kind kind;
} el_names[] = {
    {"address", EL_BLOCK},    {"article", EL_BLOCK}, {"aside", EL_DROP},     {"audio", EL_DROP},
    {"blockquote", EL_BLOCK}, {"body", EL_BLOCK},    {"br", EL_BR},          {"button", EL_DROP},
    {"canvas", EL_DROP},      {"caption", EL_BLOCK}, {"center", EL_BLOCK},   {"dd", EL_ITEM},
    {"details", EL_BLOCK},    {"dialog", EL_BLOCK},  {"dir", EL_BLOCK},      {"div", EL_BLOCK},
    {"dl", EL_BLOCK},         {"dt", EL_ITEM},       {"embed", EL_DROP},     {"fieldset", EL_BLOCK},
    {"figcaption", EL_BLOCK}, {"figure", EL_BLOCK},  {"footer", EL_DROP},    {"form", EL_DROP},
    {"frameset", EL_BLOCK},   {"h1", EL_HEADING},    {"h2", EL_HEADING},     {"h3", EL_HEADING},
    {"h4", EL_HEADING},       {"h5", EL_HEADING},    {"h6", EL_HEADING},     {"header", EL_DROP},
    {"hgroup", EL_BLOCK},     {"hr", EL_BLOCK},      {"html", EL_BLOCK},     {"iframe", EL_DROP},
    {"input", EL_DROP},       {"label", EL_DROP},    {"legend", EL_BLOCK},   {"li", EL_ITEM},
    {"listing", EL_PRE},      {"main", EL_BLOCK},    {"map", EL_DROP},       {"math", EL_DROP},
    {"menu", EL_BLOCK},       {"nav", EL_DROP},      {"noframes", EL_BLOCK}, {"noscript", EL_DROP},
    {"object", EL_DROP},      {"ol", EL_BLOCK},      {"option", EL_DROP},    {"p", EL_BLOCK},
    {"picture", EL_BLOCK},    {"plaintext", EL_PRE}, {"pre", EL_PRE},        {"script", EL_DROP},
    {"section", EL_BLOCK},    {"select", EL_DROP},   {"style", EL_DROP},     {"summary", EL_BLOCK},
    {"svg", EL_DROP},         {"table", EL_BLOCK},   {"tbody", EL_BLOCK},    {"td", EL_CELL},
    {"template", EL_DROP},    {"textarea", EL_DROP}, {"tfoot", EL_BLOCK},    {"th", EL_CELL},
    {"thead", EL_BLOCK},      {"tr", EL_BLOCK},      {"ul", EL_BLOCK},       {"video", EL_DROP},
    {"xmp", EL_PRE},
};

static int el_cmp(const void *key, const void *e)
{
    return strcmp(key, ((const struct el_name *)e)->name);
}

static el_kind classify(const char *name)
{
    const struct el_name *e =
        bsearch(name, el_names, LODE_ARRAY_LEN(el_names), sizeof el_names[0], el_cmp);
    return e ? e->kind : EL_INLINE;
}

/* True when a class or id value names navigation: one of its words (split at space, '-'
 * and '_') is a known navigation word. */
static int nav_words(const char *v)
{
    static const char *const words[] = {"nav",        "navbar",      "navigation", "menu",
                                        "breadcrumb", "breadcrumbs", "sidebar",    "toc",
                                        "nosearch",   "noindex",     "skiplink",   "cookie"};
    const char *p = v;
    while (*p) {
        while (*p && (*p == ' ' || *p == '-' || *p == '_' || *p == '\t' || *p == '\n')) p++;
        const char *s = p;
        while (*p && !(*p == ' ' || *p == '-' || *p == '_' || *p == '\t' || *p == '\n')) p++;
        size_t n = (size_t)(p - s);
        for (size_t i = 0; n && i < LODE_ARRAY_LEN(words); i++)
            if (strlen(words[i]) == n && !strncasecmp(s, words[i], n)) return 1;
    }
    return 0;
}

static int is_navigation(const xmlChar **attrs)
{
    for (size_t i = 0; attrs && attrs[i]; i += 2) {
        const char *name = (const char *)attrs[i];
        const char *v = (const char *)attrs[i + 1];
        if (!v) continue;
        if (!strcasecmp(name, "role") && !strcasecmp(v, "navigation")) return 1;
        if (!strcasecmp(name, "aria-hidden") && !strcasecmp(v, "true")) return 1;
        if ((!strcasecmp(name, "class") || !strcasecmp(name, "id")) && nav_words(v)) return 1;
    }
    return 0;
}

#define MAX_TRACKED_DEPTH 4096 /* deeper elements are treated as inline */

typedef struct walk {
    docb *b;
    int in_heading; /* inside h1-h6: nested blocks are inline */
    int in_pre;
    int in_item;
    int in_title;
    size_t depth;      /* open elements */
    size_t skip_depth; /* > 0: inside a dropped element opened at this depth */
    size_t head_depth; /* > 0: inside <head> */
    unsigned char kinds[MAX_TRACKED_DEPTH];
    lode_buf title;
} walk;

static int inert(const walk *w)
{
    return w->in_heading || w->in_pre;
}

static void on_text(void *ud, const xmlChar *s, int n)
{
    walk *w = ud;
    if (w->skip_depth || n <= 0) return;
    if (w->in_title) {
        if (w->title.len < 4096) lode_buf_append(&w->title, s, (size_t)n);
        return;
    }
    if (w->head_depth) return;
    if (!w->b->open) docb_begin(w->b, w->in_item ? ING_BLOCK_LIST : ING_BLOCK_PARAGRAPH, 0);
    docb_text(w->b, (const char *)s, (size_t)n);
}

static void on_start(void *ud, const xmlChar *xname, const xmlChar **attrs)
{
    walk *w = ud;
    size_t d = ++w->depth;
    if (w->skip_depth) return;
    const char *name = (const char *)xname;
    el_kind k = name ? classify(name) : EL_INLINE;
    if (name && !strcmp(name, "title")) {
        w->in_title = w->title.len == 0; /* the first <title> only */
        k = EL_INLINE;
    } else if (name && !strcmp(name, "head")) {
        if (!w->head_depth) w->head_depth = d;
        k = EL_INLINE;
    } else if (k == EL_DROP || (k != EL_INLINE && is_navigation(attrs))) {
        w->skip_depth = d;
        return;
    }
    if (d <= MAX_TRACKED_DEPTH)
        w->kinds[d - 1] = (unsigned char)k;
    else
        k = EL_INLINE;
    switch (k) {
    case EL_HEADING:
        if (!inert(w)) docb_begin(w->b, ING_BLOCK_HEADING, name[1] - '0');
        w->in_heading++;
        break;
    case EL_PRE:
        if (!inert(w)) docb_begin(w->b, ING_BLOCK_CODE, 0);
        w->in_pre++;
        break;
    case EL_ITEM:
        if (!inert(w)) docb_begin(w->b, ING_BLOCK_LIST, 0);
        w->in_item++;
        break;
    case EL_BLOCK:
        if (!inert(w)) docb_end(w->b);
        break;
    case EL_CELL:
    case EL_BR:
        docb_space(w->b);
        break;
    default:
        break;
    }
}

static void on_end(void *ud, const xmlChar *xname)
{
    walk *w = ud;
    if (w->depth == 0) return;
    size_t d = w->depth--;
    if (w->skip_depth) {
        if (d == w->skip_depth) w->skip_depth = 0;
        return;
    }
    if (d == w->head_depth) w->head_depth = 0;
    if (xname && !strcmp((const char *)xname, "title")) w->in_title = 0;
    if (d > MAX_TRACKED_DEPTH) return;
    switch ((el_kind)w->kinds[d - 1]) {
    case EL_HEADING:
        if (w->in_heading > 0) w->in_heading--;
        if (!inert(w)) docb_end(w->b);
        break;
    case EL_PRE:
        if (w->in_pre > 0) w->in_pre--;
        if (!inert(w)) docb_end(w->b);
        break;
    case EL_ITEM:
        if (w->in_item > 0) w->in_item--;
        if (!inert(w)) docb_end(w->b);
        break;
    case EL_BLOCK:
        if (!inert(w)) docb_end(w->b);
        break;
    case EL_CELL:
        docb_space(w->b);
        break;
    default:
        break;
    }
}

/* Elements whose content never reaches a chunk (they are EL_DROP above) and which can be
 * a large share of a page's bytes: on the SQLite documentation, 7.5 MB of SVG syntax-diagram
 * markup and 1.3 MB of script in 21.6 MB of HTML. libxml2 would parse every attribute of
 * them only for the walker to drop the result, so a pre-pass copies the page without their
 * content: the start and end tags stay, so the walker sees the same structure. Comments
 * are stepped over, so that a tag written inside one is not taken for real. */
static const struct opaque_el {
    const char *name;
    size_t len;
    int nests; /* an element of the same name may occur inside (svg in svg) */
} opaque_els[] = {{"svg", 3, 1}, {"script", 6, 0}, {"style", 5, 0}};

/* True when p (before end) starts with the tag name `name` followed by a character that
 * ends a tag name. */
static int tag_name_at(const char *p, const char *end, const char *name, size_t len)
{
    if ((size_t)(end - p) <= len || strncasecmp(p, name, len)) return 0;
    char c = p[len];
    return c == '>' || c == '/' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

/* Copies s[0..n) into out without the content of the opaque elements; *changed says whether
 * anything was left out (when 0, out is untouched and the caller parses s). An element
 * without its end tag, and everything after it, is left to the parser as it is. */
static lode_status strip_opaque(const char *s, size_t n, lode_buf *out, int *changed)
{
    const char *p = s, *end = s + n, *copied = s;
    lode_status st = LODE_OK;
    *changed = 0;
    while (p < end && (p = memchr(p, '<', (size_t)(end - p)))) {
        if (end - p >= 4 && !memcmp(p, "<!--", 4)) {
            const char *e = memmem(p + 4, (size_t)(end - p - 4), "-->", 3);
            if (!e) break;
            p = e + 3;
            continue;
        }
        const struct opaque_el *el = NULL;
        for (size_t i = 0; i < LODE_ARRAY_LEN(opaque_els) && !el; i++)
            if (tag_name_at(p + 1, end, opaque_els[i].name, opaque_els[i].len)) el = &opaque_els[i];
        if (!el) {
            p++;
            continue;
        }
        const char *gt = memchr(p, '>', (size_t)(end - p));
        if (!gt) break;
        if (gt[-1] == '/') { /* <svg ... /> holds nothing */
            p = gt + 1;
            continue;
        }
        const char *q = gt + 1, *close = NULL;
        int depth = 1;
        while (q < end && (q = memchr(q, '<', (size_t)(end - q)))) {
            if (q + 1 < end && q[1] == '/' && tag_name_at(q + 2, end, el->name, el->len)) {
                if (--depth == 0) {
                    close = q;
                    break;
                }
            } else if (el->nests && tag_name_at(q + 1, end, el->name, el->len)) {
                const char *g = memchr(q, '>', (size_t)(end - q));
                if (g && g[-1] != '/') depth++;
            }
            q++;
        }
        if (!close) break;
        if (!*changed && (st = lode_buf_reserve(out, n))) return st;
        *changed = 1;
        if ((st = lode_buf_append(out, copied, (size_t)(gt + 1 - copied)))) return st;
        copied = close;
        p = close + 2;
    }
    if (*changed) st = lode_buf_append(out, copied, (size_t)(end - copied));
    return st;
}

/* True when the first 2 KiB declare a charset other than UTF-8 (<meta charset=...> or
 * http-equiv content="...; charset=..."). */
static int declares_other_charset(const char *d, size_t n)
{
    size_t m = LODE_MIN(n, (size_t)2048);
    for (size_t i = 0; i + 8 < m; i++) {
        if (strncasecmp(d + i, "charset=", 8)) continue;
        size_t k = i + 8;
        while (k < m && (d[k] == '"' || d[k] == '\'' || d[k] == ' ')) k++;
        size_t e = k;
        while (e < m && (isalnum((unsigned char)d[e]) || d[e] == '-' || d[e] == '_')) e++;
        if (e == k) return 0;
        return !((e - k == 5 && !strncasecmp(d + k, "utf-8", 5)) ||
                 (e - k == 4 && !strncasecmp(d + k, "utf8", 4)) ||
                 (e - k == 8 && !strncasecmp(d + k, "us-ascii", 8)));
    }
    return 0;
}

lode_status ing_load_html(const char *data, size_t len, ing_doc **out, char *err, size_t errlen)
{
    docb b;
    lode_buf clean = LODE_BUF_INIT, lean = LODE_BUF_INIT;
    htmlParserCtxtPtr ctx = NULL;
    xmlSAXHandler *old_sax = NULL;
    walk *w = NULL;
    lode_status st = docb_init(&b);
    *out = NULL;
    if (st) goto out;
    if (!(w = lode_calloc(1, sizeof *w))) {
        st = LODE_ERR_NOMEM;
        goto out;
    }
    w->b = &b;
    /* Valid UTF-8 (nearly every page) is parsed as it is. Other bytes are decoded by
     * libxml2 when the page declares another charset (ISO-8859-1, windows-1252, ...),
     * else repaired to UTF-8, so the parser never guesses. */
    const char *src = data;
    size_t n = len;
    int own_charset = 0;
    if (lode_utf8_valid_prefix(data, len) != len || memchr(data, 0, len)) {
        own_charset = declares_other_charset(data, len);
        if (!own_charset) {
            if ((st = ing_utf8_repair(data, len, &clean, &b.repairs))) goto out;
            src = clean.data ? clean.data : "";
            n = clean.len;
        }
    }
    if (n > (size_t)INT32_MAX) {
        st = LODE_ERR_LIMIT;
        goto out;
    }
    if (n == 0) goto finish;
    int stripped = 0;
    if ((st = strip_opaque(src, n, &lean, &stripped))) goto out;
    if (stripped) {
        src = lean.data;
        n = lean.len;
    }
    /* SAX, not a tree: measured 33-42 MB/s against 10 MB/s for htmlReadMemory plus a walk
     * on the SQLite documentation (2-core box), and the walk needs no recursion */
    ctx = htmlNewParserCtxt();
    if (!ctx) {
        st = LODE_ERR_NOMEM;
        goto out;
    }
    htmlSAXHandler sax;
    memset(&sax, 0, sizeof sax);
    sax.startElement = on_start;
    sax.endElement = on_end;
    sax.characters = on_text;
    sax.cdataBlock = on_text;
    sax.ignorableWhitespace = on_text;
    old_sax = ctx->sax;
    ctx->sax = (xmlSAXHandler *)&sax;
    ctx->userData = w;
    /* the encoding is set before the parser reads a byte: UTF-8 (valid or repaired), or the
     * page's own declaration. Without it libxml2 read undeclared UTF-8 as ISO-8859-1 */
    xmlDocPtr none = htmlCtxtReadMemory(
        ctx, src, (int)n, NULL, own_charset ? NULL : "UTF-8",
        HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | HTML_PARSE_NONET |
            HTML_PARSE_COMPACT | (own_charset ? 0 : HTML_PARSE_IGNORE_ENC));
    if (none) xmlFreeDoc(none);
    ctx->sax = old_sax;
    if (ctx->myDoc) xmlFreeDoc(ctx->myDoc);
    ctx->myDoc = NULL;
finish:
    if (w->title.len) {
        lode_buf_reset(&b.title);
        docb_begin(&b, ING_BLOCK_PARAGRAPH, 0); /* collapse the title's whitespace */
        docb_text(&b, w->title.data, w->title.len);
        if (!b.st) b.st = lode_buf_append(&b.title, b.cur.data ? b.cur.data : "", b.cur.len);
        b.open = 0;
        lode_buf_reset(&b.cur);
    }
    st = docb_finish(&b, ING_MEDIA_HTML, out);
out:
    if (st && err) lode_seterr(err, errlen, st, "cannot load HTML: %s", lode_strerror(st));
    if (ctx) htmlFreeParserCtxt(ctx);
    lode_buf_free(&clean);
    lode_buf_free(&lean);
    if (w) lode_buf_free(&w->title);
    lode_free(w);
    docb_free(&b);
    return st;
}
