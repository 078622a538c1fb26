/*
 * doc.c: what every loader shares: the document builder (block text, whitespace
 * collapsing, heading paths), UTF-8 repair, media types and content sniffing, SHA-256,
 * and ing_load, which picks a loader. Plain text is loaded here too: it is nothing but
 * paragraphs separated by blank lines.
 */
#include "ingest/ingest_int.h"

#include <libxml/HTMLparser.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- builder ----------------------------------------------------------------------- */
lode_status docb_init(docb *b)
{
    memset(b, 0, sizeof *b);
    b->title_from_h1 = 1;
    b->paths = lode_malloc(8 * sizeof *b->paths);
    if (!b->paths) return b->st = LODE_ERR_NOMEM;
    b->cap_paths = 8;
    b->paths[0] = lode_strdup("");
    if (!b->paths[0]) return b->st = LODE_ERR_NOMEM;
    b->n_paths = 1;
    return LODE_OK;
}

void docb_free(docb *b)
{
    lode_buf_free(&b->text);
    lode_buf_free(&b->cur);
    lode_buf_free(&b->title);
    for (int i = 0; i < 7; i++) lode_free(b->heads[i]);
    for (size_t i = 0; i < b->n_paths; i++) lode_free(b->paths[i]);
    lode_free(b->paths);
    lode_free(b->blocks);
    memset(b, 0, sizeof *b);
}

static int is_space_byte(unsigned char c)
{
    return c <= 0x20 || c == 0x7f; /* ASCII whitespace and control bytes collapse */
}

void docb_begin(docb *b, ing_block_kind kind, int level)
{
    if (b->open) docb_end(b);
    b->open = 1;
    b->kind = kind;
    b->level = level;
    b->space = 0;
    lode_buf_reset(&b->cur);
}

void docb_text(docb *b, const char *s, size_t n)
{
    if (b->st) return;
    if (!b->open) docb_begin(b, ING_BLOCK_PARAGRAPH, 0);
    const unsigned char *p = (const unsigned char *)s;
    if (b->kind == ING_BLOCK_CODE) {
        size_t i = 0;
        while (i < n && !b->st) {
            size_t j = i;
            while (j < n && (p[j] >= 0x20 || p[j] == '\t' || p[j] == '\n') && p[j] != 0x7f) j++;
            if (j > i) b->st = lode_buf_append(&b->cur, s + i, j - i);
            if (j < n) {
                /* \r\n and lone \r become \n; other control bytes are dropped */
                if (p[j] == '\r') {
                    b->st = lode_buf_putc(&b->cur, '\n');
                    if (j + 1 < n && p[j + 1] == '\n') j++;
                }
                j++;
            }
            i = j;
        }
        return;
    }
    size_t i = 0;
    while (i < n && !b->st) {
        if (is_space_byte(p[i])) {
            b->space = 1;
            i++;
            continue;
        }
        if (p[i] == 0xC2 && i + 1 < n && p[i + 1] == 0xA0) { /* no-break space */
            b->space = 1;
            i += 2;
            continue;
        }
        size_t j = i;
        while (j < n && !is_space_byte(p[j]) && !(p[j] == 0xC2 && j + 1 < n && p[j + 1] == 0xA0))
            j++;
        if (b->space && b->cur.len) b->st = lode_buf_putc(&b->cur, ' ');
        b->space = 0;
        if (!b->st) b->st = lode_buf_append(&b->cur, s + i, j - i);
        i = j;
    }
}

void docb_space(docb *b)
{
    if (!b->open) return;
    if (b->kind == ING_BLOCK_CODE) {
        if (!b->st) b->st = lode_buf_putc(&b->cur, '\n');
    } else {
        b->space = 1;
    }
}

/* Length of at most max bytes of s that ends on a code point boundary. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max) return n;
    size_t k = max;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    return k;
}

static lode_status push_path(docb *b, const char *path)
{
    if (b->n_paths == b->cap_paths) {
        size_t cap = b->cap_paths * 2;
        char **p = lode_realloc(b->paths, cap * sizeof *p);
        if (!p) return LODE_ERR_NOMEM;
        b->paths = p;
        b->cap_paths = cap;
    }
    /* consecutive headings often give the same path back: reuse it */
    if (!strcmp(b->paths[b->path], path)) return LODE_OK;
    /* a document of nothing but deep headings would otherwise keep a long path per
     * heading: past the bound, later headings keep the path they are under */
    size_t n = strlen(path);
    if (b->path_bytes + n > DOCB_MAX_PATH_BYTES) return LODE_OK;
    char *s = lode_strndup(path, n);
    if (!s) return LODE_ERR_NOMEM;
    b->paths[b->n_paths] = s;
    b->path = b->n_paths++;
    b->path_bytes += n + 1;
    return LODE_OK;
}

static lode_status set_heading(docb *b, int level, const char *text, size_t n)
{
    if (level < 1) level = 1;
    if (level > 6) level = 6;
    lode_free(b->heads[level]);
    b->heads[level] = lode_strndup(text, utf8_cut(text, n, DOCB_MAX_HEADING));
    if (!b->heads[level]) return LODE_ERR_NOMEM;
    for (int l = level + 1; l <= 6; l++) {
        lode_free(b->heads[l]);
        b->heads[l] = NULL;
    }
    lode_buf path = LODE_BUF_INIT;
    lode_status st = LODE_OK;
    for (int l = 1; l <= 6 && !st; l++) {
        if (!b->heads[l]) continue;
        if (path.len) st = lode_buf_puts(&path, " > ");
        if (!st) st = lode_buf_puts(&path, b->heads[l]);
    }
    if (!st) st = push_path(b, path.data ? path.data : "");
    lode_buf_free(&path);
    return st;
}

void docb_section(docb *b, const char *path)
{
    docb_end(b);
    if (b->st) return;
    for (int l = 1; l <= 6; l++) {
        lode_free(b->heads[l]);
        b->heads[l] = NULL;
    }
    b->st = push_path(b, path);
}

void docb_end(docb *b)
{
    if (!b->open) return;
    b->open = 0;
    if (b->st) return;
    lode_buf *c = &b->cur;
    size_t n = c->len;
    if (b->kind == ING_BLOCK_CODE) {
        size_t s = 0;
        /* drop blank lines around code, keep its indentation */
        while (n > 0 && (c->data[n - 1] == '\n' || c->data[n - 1] == ' ' || c->data[n - 1] == '\t'))
            n--;
        for (size_t i = 0; i < n; i++) {
            if (c->data[i] == '\n')
                s = i + 1;
            else if (c->data[i] != ' ' && c->data[i] != '\t')
                break;
        }
        if (s) {
            memmove(c->data, c->data + s, n - s);
            n -= s;
        }
        /* a code block of nothing but whitespace is empty */
        size_t k = 0;
        while (k < n && (c->data[k] == ' ' || c->data[k] == '\t' || c->data[k] == '\n')) k++;
        if (k == n) n = 0;
    }
    if (n == 0) return;
    if (b->kind == ING_BLOCK_HEADING) {
        if ((b->st = set_heading(b, b->level, c->data, n))) return;
        if (b->title_from_h1 && b->level == 1 && b->title.len == 0)
            b->st = lode_buf_append(&b->title, c->data, utf8_cut(c->data, n, 1024));
    }
    if (b->n_blocks == b->cap_blocks) {
        size_t cap = b->cap_blocks ? b->cap_blocks * 2 : 32;
        ing_block *p = lode_realloc(b->blocks, cap * sizeof *p);
        if (!p) {
            b->st = LODE_ERR_NOMEM;
            return;
        }
        b->blocks = p;
        b->cap_blocks = cap;
    }
    if (b->text.len) b->st = lode_buf_append(&b->text, "\n\n", 2);
    if (b->st) return;
    ing_block *blk = &b->blocks[b->n_blocks];
    blk->kind = b->kind;
    blk->level = b->kind == ING_BLOCK_HEADING ? b->level : 0;
    blk->start = b->text.len;
    if ((b->st = lode_buf_append(&b->text, c->data, n))) return;
    blk->end = b->text.len;
    blk->path = b->path;
    b->n_blocks++;
}

lode_status docb_finish(docb *b, ing_media media, ing_doc **out)
{
    *out = NULL;
    docb_end(b);
    if (b->st) return b->st;
    ing_doc *d = lode_calloc(1, sizeof *d);
    if (!d) return LODE_ERR_NOMEM;
    d->media = media;
    d->title = lode_buf_take(&b->title);
    d->text = lode_buf_take(&b->text);
    if (!d->title || !d->text) {
        ing_doc_destroy(d);
        return LODE_ERR_NOMEM;
    }
    d->len = strlen(d->text);
    d->blocks = b->blocks;
    d->n_blocks = b->n_blocks;
    b->blocks = NULL;
    b->n_blocks = b->cap_blocks = 0;
    d->paths = b->paths;
    d->n_paths = b->n_paths;
    b->paths = NULL;
    b->n_paths = b->cap_paths = 0;
    d->utf8_repairs = b->repairs;
    *out = d;
    return LODE_OK;
}

void ing_doc_destroy(ing_doc *doc)
{
    if (!doc) return;
    lode_free(doc->title);
    lode_free(doc->text);
    lode_free(doc->blocks);
    for (size_t i = 0; i < doc->n_paths; i++) lode_free(doc->paths[i]);
    lode_free(doc->paths);
    lode_free(doc);
}

/* ---- UTF-8 ------------------------------------------------------------------------- */
size_t ing_utf8_encode(uint32_t cp, char *o)
{
    if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

lode_status ing_utf8_repair(const char *data, size_t len, lode_buf *out, size_t *repairs)
{
    static const char repl[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    lode_status st = lode_buf_reserve(out, len);
    size_t i = 0, fixed = 0;
    while (!st && i < len) {
        size_t run = lode_utf8_valid_prefix(data + i, len - i);
        /* NUL is valid UTF-8 but would cut every C string after it */
        const char *nul = memchr(data + i, 0, run);
        if (nul) run = (size_t)(nul - (data + i));
        if (run) st = lode_buf_append(out, data + i, run);
        i += run;
        if (st || i >= len) break;
        /* one replacement per invalid byte that starts no valid sequence */
        st = lode_buf_append(out, repl, 3);
        fixed++;
        i++;
    }
    if (repairs) *repairs += fixed;
    return st;
}

int ing_entity_lookup(const char *name, size_t n)
{
    char tmp[40];
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, name, n);
    tmp[n] = 0;
    const htmlEntityDesc *e = htmlEntityLookup((const xmlChar *)tmp);
    return e ? (int)e->value : -1;
}

/* ---- media types and sniffing ------------------------------------------------------ */
const char *ing_media_mime(ing_media m)
{
    switch (m) {
    case ING_MEDIA_TEXT:
        return "text/plain";
    case ING_MEDIA_MARKDOWN:
        return "text/markdown";
    case ING_MEDIA_HTML:
        return "text/html";
    case ING_MEDIA_PDF:
        return "application/pdf";
    default:
        return "application/octet-stream";
    }
}

ing_media ing_media_from_name(const char *name)
{
    const char *slash = strrchr(name, '/');
    const char *base = slash ? slash + 1 : name;
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base) return ING_MEDIA_UNKNOWN;
    static const struct {
        const char *ext;
        ing_media m;
    } map[] = {
        {"txt", ING_MEDIA_TEXT},       {"text", ING_MEDIA_TEXT},
        {"md", ING_MEDIA_MARKDOWN},    {"markdown", ING_MEDIA_MARKDOWN},
        {"mdown", ING_MEDIA_MARKDOWN}, {"mkd", ING_MEDIA_MARKDOWN},
        {"html", ING_MEDIA_HTML},      {"htm", ING_MEDIA_HTML},
        {"xhtml", ING_MEDIA_HTML},     {"pdf", ING_MEDIA_PDF},
    };
    for (size_t i = 0; i < LODE_ARRAY_LEN(map); i++)
        if (!strcasecmp(dot + 1, map[i].ext)) return map[i].m;
    return ING_MEDIA_UNKNOWN;
}

static int starts_with(const char *d, size_t n, const char *sig, size_t k)
{
    return n >= k && !memcmp(d, sig, k);
}

lode_status ing_sniff(const char *data, size_t len, ing_media *media, char *why, size_t whylen)
{
    static const struct {
        const char *sig;
        size_t n;
        const char *what;
    } sigs[] = {
        {"%PDF-", 5, "PDF"},
        {"\x89PNG", 4, "PNG image"},
        {"GIF8", 4, "GIF image"},
        {"\xFF\xD8\xFF", 3, "JPEG image"},
        {"PK\x03\x04", 4, "zip archive"},
        {"\x1F\x8B", 2, "gzip data"},
        {"\x7F"
         "ELF",
         4, "ELF executable"},
        {"BZh", 3, "bzip2 data"},
        {"\xFF\xFE", 2, "UTF-16 text"},
        {"\xFE\xFF", 2, "UTF-16 text"},
    };
    char dummy[8];
    if (!why) why = dummy, whylen = sizeof dummy;
    for (size_t i = 0; i < LODE_ARRAY_LEN(sigs); i++)
        if (starts_with(data, len, sigs[i].sig, sigs[i].n))
            return lode_seterr(why, whylen, LODE_ERR_UNSUPPORTED, "binary file (%s)", sigs[i].what);
    if (memchr(data, 0, len))
        return lode_seterr(why, whylen, LODE_ERR_UNSUPPORTED, "binary file (contains NUL bytes)");
    /* mostly non-text: over 10% control bytes or invalid UTF-8 in the first 8 KiB */
    size_t n = LODE_MIN(len, (size_t)8192), bad = 0, i = 0;
    while (i < n) {
        size_t run = lode_utf8_valid_prefix(data + i, n - i);
        for (size_t k = i; k < i + run; k++) {
            unsigned char c = (unsigned char)data[k];
            if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f') || c == 0x7f) bad++;
        }
        i += run;
        if (i < n) {
            /* a sequence cut by the end of the sample is not counted as invalid */
            if (n < len && n - i < 4) break;
            bad++;
            i++;
        }
    }
    if (n && bad * 10 > n)
        return lode_seterr(why, whylen, LODE_ERR_UNSUPPORTED,
                           "binary file (%zu of the first %zu bytes are not text)", bad, n);
    if (media && *media == ING_MEDIA_UNKNOWN) {
        *media = ING_MEDIA_TEXT;
        size_t k = 0, m = LODE_MIN(len, (size_t)1024);
        if (starts_with(data, len, "\xEF\xBB\xBF", 3)) k = 3;
        while (k < m && is_space_byte((unsigned char)data[k])) k++;
        if (m - k >= 5 &&
            (!strncasecmp(data + k, "<!doctype html", LODE_MIN(14, m - k)) ||
             !strncasecmp(data + k, "<html", 5) || !strncasecmp(data + k, "<!--", 4) ||
             !strncasecmp(data + k, "<head", 5) || !strncasecmp(data + k, "<body", 5)))
            *media = ING_MEDIA_HTML;
    }
    return LODE_OK;
}

/* ---- hashing ----------------------------------------------------------------------- */
lode_status ing_sha256_hex(const void *data, size_t len, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    hex[0] = 0;
    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return LODE_ERR_INTERNAL;
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = 0;
    return LODE_OK;
}

/* ---- plain text -------------------------------------------------------------------- */
lode_status ing_load_text(const char *data, size_t len, ing_doc **out, char *err, size_t errlen)
{
    docb b;
    lode_buf clean = LODE_BUF_INIT;
    lode_status st = docb_init(&b);
    *out = NULL;
    if (st) goto out;
    if ((st = ing_utf8_repair(data, len, &clean, &b.repairs))) goto out;
    const char *s = clean.data ? clean.data : "";
    size_t n = clean.len, i = 0;
    if (n >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) i = 3;
    int title_set = 0;
    b.title_from_h1 = 0;
    while (i < n && !b.st) {
        const char *nl = memchr(s + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - s) : n;
        size_t k = i;
        while (k < e && is_space_byte((unsigned char)s[k])) k++;
        if (k == e) {
            docb_end(&b); /* a blank line ends the paragraph */
        } else {
            if (!title_set) {
                size_t te = e;
                while (te > k && is_space_byte((unsigned char)s[te - 1])) te--;
                if (te - k <= 200) b.st = lode_buf_append(&b.title, s + k, te - k);
                title_set = 1;
            }
            docb_text(&b, s + i, e - i);
            docb_space(&b);
        }
        i = e + 1;
    }
    st = docb_finish(&b, ING_MEDIA_TEXT, out);
out:
    if (st && err) lode_seterr(err, errlen, st, "cannot load text: %s", lode_strerror(st));
    lode_buf_free(&clean);
    docb_free(&b);
    return st;
}

lode_status ing_load(const char *data, size_t len, ing_media media, ing_doc **out, char *err,
                     size_t errlen)
{
    char why[160];
    *out = NULL;
    /* a PDF is binary to the sniffer: its own loader says what is wrong with it */
    if (media == ING_MEDIA_PDF || (len >= 5 && !memcmp(data, "%PDF-", 5)))
        return ing_load_pdf(data, len, out, err, errlen);
    lode_status st = ing_sniff(data, len, &media, why, sizeof why);
    if (st) {
        if (err) lode_seterr(err, errlen, st, "%s", why);
        return st;
    }
    switch (media) {
    case ING_MEDIA_MARKDOWN:
        return ing_load_markdown(data, len, out, err, errlen);
    case ING_MEDIA_HTML:
        return ing_load_html(data, len, out, err, errlen);
    default:
        return ing_load_text(data, len, out, err, errlen);
    }
}
