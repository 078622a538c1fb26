/*
 * wordpiece.c: BERT WordPiece tokenizer (see wordpiece.h). The vocabulary is one text
 * blob with an open-addressing hash table over it; lookups of "##" continuation pieces
 * hash the prefix and the word's bytes without building the string. Encoding walks the
 * text once, normalizing each code point into the current word, and cuts each finished
 * word into pieces; it allocates nothing.
 */
#include "engine/wordpiece.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <utf8proc.h>

#define MAX_VOCAB      (1 << 22)
#define MAX_VOCAB_TEXT ((size_t)256 << 20)
/* A word is kept up to its character limit; NFD may turn one character into a few. */
#define WORD_BYTES (ENG_WP_MAX_WORD_CHARS * 4 + 8)

struct eng_wordpiece {
    char *blob;       /* vocab text, each token NUL-terminated in place */
    char **tokens;    /* (n_vocab) */
    uint32_t *lens;   /* (n_vocab) */
    int32_t *slots;   /* (n_slots) token id or -1 */
    uint32_t n_slots; /* power of two */
    int32_t n_vocab;
    int32_t cls, sep, pad, unk;
    int lowercase;
};

static uint64_t hash_bytes(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ULL;
    return h;
}

#define HASH_SEED 0xcbf29ce484222325ULL

/* Id of (cont ? "##" : "") + s[0..n), or -1. */
static int32_t lookup(const eng_wordpiece *wp, int cont, const char *s, size_t n)
{
    uint64_t h = HASH_SEED;
    if (cont) h = hash_bytes(h, "##", 2);
    h = hash_bytes(h, s, n);
    size_t full = n + (cont ? 2 : 0);
    for (uint32_t i = (uint32_t)h & (wp->n_slots - 1);; i = (i + 1) & (wp->n_slots - 1)) {
        int32_t id = wp->slots[i];
        if (id < 0) return -1;
        const char *t = wp->tokens[id];
        if (wp->lens[id] != full) continue;
        if (cont && (t[0] != '#' || t[1] != '#')) continue;
        if (memcmp(t + (cont ? 2 : 0), s, n) == 0) return id;
    }
}

int32_t eng_wordpiece_id(const eng_wordpiece *wp, const char *token)
{
    return lookup(wp, 0, token, strlen(token));
}

void eng_wordpiece_destroy(eng_wordpiece *wp)
{
    if (!wp) return;
    lode_free(wp->blob);
    lode_free(wp->tokens);
    lode_free(wp->lens);
    lode_free(wp->slots);
    lode_free(wp);
}

lode_status eng_wordpiece_load_buffer(const char *text, size_t len, int lowercase,
                                      eng_wordpiece **out, char *err, size_t errlen)
{
    lode_status rc = LODE_OK;
    *out = NULL;
    if (len > MAX_VOCAB_TEXT)
        return lode_seterr(err, errlen, LODE_ERR_LIMIT,
                           "wordpiece: vocab of %zu bytes is too large", len);
    eng_wordpiece *wp = lode_calloc(1, sizeof *wp);
    if (!wp || !(wp->blob = lode_malloc(len + 1))) {
        rc = lode_seterr(err, errlen, LODE_ERR_NOMEM, "wordpiece: out of memory");
        goto out;
    }
    wp->lowercase = lowercase;
    memcpy(wp->blob, text, len);
    wp->blob[len] = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += text[i] == '\n';
    if (len && text[len - 1] != '\n') n++;
    if (n == 0 || n > MAX_VOCAB) {
        rc = lode_seterr(err, errlen, LODE_ERR_FORMAT, "wordpiece: vocab has %zu tokens", n);
        goto out;
    }
    if (lode_utf8_valid_prefix(text, len) != len) {
        rc = lode_seterr(err, errlen, LODE_ERR_FORMAT, "wordpiece: vocab is not valid UTF-8");
        goto out;
    }
    wp->n_slots = 1;
    while (wp->n_slots < 2 * n) wp->n_slots <<= 1;
    wp->tokens = lode_malloc(n * sizeof *wp->tokens);
    wp->lens = lode_malloc(n * sizeof *wp->lens);
    wp->slots = lode_malloc(wp->n_slots * sizeof *wp->slots);
    if (!wp->tokens || !wp->lens || !wp->slots) {
        rc = lode_seterr(err, errlen, LODE_ERR_NOMEM, "wordpiece: out of memory");
        goto out;
    }
    memset(wp->slots, 0xff, wp->n_slots * sizeof *wp->slots);
    char *p = wp->blob, *end = wp->blob + len;
    for (size_t id = 0; id < n; id++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        *e = 0;
        if (e > p && e[-1] == '\r') *--e = 0;
        wp->tokens[id] = p;
        wp->lens[id] = (uint32_t)(e - p);
        p = nl ? nl + 1 : end;
        /* a repeated token keeps its last id, as BERT's vocab loader does */
        uint32_t i =
            (uint32_t)hash_bytes(HASH_SEED, wp->tokens[id], wp->lens[id]) & (wp->n_slots - 1);
        for (;; i = (i + 1) & (wp->n_slots - 1)) {
            int32_t o = wp->slots[i];
            if (o < 0 || (wp->lens[o] == wp->lens[id] &&
                          memcmp(wp->tokens[o], wp->tokens[id], wp->lens[id]) == 0)) {
                wp->slots[i] = (int32_t)id;
                break;
            }
        }
    }
    wp->n_vocab = (int32_t)n;
    wp->cls = eng_wordpiece_id(wp, "[CLS]");
    wp->sep = eng_wordpiece_id(wp, "[SEP]");
    wp->pad = eng_wordpiece_id(wp, "[PAD]");
    wp->unk = eng_wordpiece_id(wp, "[UNK]");
    if (wp->cls < 0 || wp->sep < 0 || wp->pad < 0 || wp->unk < 0)
        rc = lode_seterr(err, errlen, LODE_ERR_FORMAT,
                         "wordpiece: vocab lacks one of [CLS] [SEP] [PAD] [UNK]");
out:
    if (rc)
        eng_wordpiece_destroy(wp);
    else
        *out = wp;
    return rc;
}

lode_status eng_wordpiece_load(const char *vocab_path, int lowercase, eng_wordpiece **out,
                               char *err, size_t errlen)
{
    lode_status rc = LODE_OK;
    lode_buf b = LODE_BUF_INIT;
    *out = NULL;
    b.max = MAX_VOCAB_TEXT;
    FILE *f = fopen(vocab_path, "rb");
    if (!f)
        return lode_seterr(err, errlen, LODE_ERR_IO, "wordpiece: cannot open %s: %s", vocab_path,
                           strerror(errno));
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        if ((rc = lode_buf_append(&b, chunk, got))) {
            rc = lode_seterr(err, errlen, rc, "wordpiece: %s: %s", vocab_path, lode_strerror(rc));
            goto out;
        }
    if (ferror(f)) {
        rc = lode_seterr(err, errlen, LODE_ERR_IO, "wordpiece: cannot read %s", vocab_path);
        goto out;
    }
    rc = eng_wordpiece_load_buffer(b.data ? b.data : "", b.len, lowercase, out, err, errlen);
out:
    fclose(f);
    lode_buf_free(&b);
    return rc;
}

int32_t eng_wordpiece_vocab_size(const eng_wordpiece *wp)
{
    return wp->n_vocab;
}

const char *eng_wordpiece_token(const eng_wordpiece *wp, int32_t id)
{
    return id >= 0 && id < wp->n_vocab ? wp->tokens[id] : NULL;
}

int32_t eng_wordpiece_cls(const eng_wordpiece *wp)
{
    return wp->cls;
}
int32_t eng_wordpiece_sep(const eng_wordpiece *wp)
{
    return wp->sep;
}
int32_t eng_wordpiece_pad(const eng_wordpiece *wp)
{
    return wp->pad;
}
int32_t eng_wordpiece_unk(const eng_wordpiece *wp)
{
    return wp->unk;
}

/* ---- encoding ---------------------------------------------------------------------- */

static int is_cjk(int32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static int is_punct(int32_t c)
{
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
        (c >= 123 && c <= 126))
        return 1;
    utf8proc_category_t k = utf8proc_category(c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

static int is_space(int32_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0x2028 || c == 0x2029 ||
           utf8proc_category(c) == UTF8PROC_CATEGORY_ZS;
}

static int is_dropped(int32_t c)
{
    if (c == 0 || c == 0xFFFD) return 1;
    if (c == '\t' || c == '\n' || c == '\r') return 0;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_CN || k >= UTF8PROC_CATEGORY_CC;
}

typedef struct encoder {
    const eng_wordpiece *wp;
    int32_t *ids;
    int n, cap; /* cap: room for pieces (max_tokens - 1, [SEP] excluded) */
    int truncated;
    char word[WORD_BYTES];
    size_t wlen;
    int wchars;
} encoder;

static void push(encoder *e, int32_t id)
{
    if (e->n < e->cap)
        e->ids[e->n++] = id;
    else
        e->truncated = 1;
}

/* Cuts the current word into pieces and appends them. */
static void flush_word(encoder *e)
{
    const eng_wordpiece *wp = e->wp;
    if (e->wchars == 0) return;
    if (e->wchars > ENG_WP_MAX_WORD_CHARS) {
        push(e, wp->unk);
    } else {
        int32_t pieces[ENG_WP_MAX_WORD_CHARS];
        int np = 0;
        size_t start = 0;
        while (start < e->wlen) {
            size_t end = e->wlen;
            int32_t id = -1;
            while (end > start) {
                id = lookup(wp, start > 0, e->word + start, end - start);
                if (id >= 0) break;
                do end--;
                while (end > start && ((uint8_t)e->word[end] & 0xC0) == 0x80);
            }
            if (id < 0) {
                np = 0;
                pieces[np++] = wp->unk;
                break;
            }
            pieces[np++] = id;
            start = end;
        }
        for (int i = 0; i < np; i++) push(e, pieces[i]);
    }
    e->wlen = 0;
    e->wchars = 0;
}

static void add_char(encoder *e, int32_t c)
{
    if (++e->wchars > ENG_WP_MAX_WORD_CHARS) return; /* [UNK] anyway; stop storing */
    e->wlen += (size_t)utf8proc_encode_char(c, (utf8proc_uint8_t *)e->word + e->wlen);
}

/* One normalized character: punctuation is a word of its own, others extend the word. */
static void emit(encoder *e, int32_t c)
{
    if (is_punct(c)) {
        flush_word(e);
        add_char(e, c);
        flush_word(e);
    } else {
        add_char(e, c);
    }
}

lode_status eng_wordpiece_encode(const eng_wordpiece *wp, const char *text, size_t len,
                                 int32_t *ids, int max_tokens, int *n_out, int *truncated)
{
    if (max_tokens < 2) return LODE_ERR_INVALID;
    encoder e;
    e.wp = wp;
    e.ids = ids;
    e.n = 0;
    e.cap = max_tokens - 1;
    e.truncated = 0;
    e.wlen = 0;
    e.wchars = 0;
    push(&e, wp->cls);
    size_t i = 0;
    while (i < len && !e.truncated) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)text + i, (utf8proc_ssize_t)(len - i), &c);
        if (k <= 0) { /* invalid byte: dropped like U+FFFD */
            i++;
            continue;
        }
        i += (size_t)k;
        if (is_dropped(c)) continue;
        if (is_space(c)) {
            flush_word(&e);
            continue;
        }
        if (is_cjk(c)) {
            flush_word(&e);
            add_char(&e, c);
            flush_word(&e);
            continue;
        }
        if (!wp->lowercase) {
            emit(&e, c);
            continue;
        }
        utf8proc_int32_t d[8];
        int bound = 0;
        utf8proc_ssize_t nd = utf8proc_decompose_char(c, d, 8, UTF8PROC_DECOMPOSE, &bound);
        if (nd < 0 || nd > 8) {
            d[0] = c;
            nd = 1;
        }
        for (utf8proc_ssize_t j = 0; j < nd; j++) {
            if (utf8proc_category(d[j]) == UTF8PROC_CATEGORY_MN) continue;
            emit(&e, utf8proc_tolower(d[j]));
        }
    }
    if (!e.truncated) flush_word(&e);
    e.ids[e.n++] = wp->sep;
    *n_out = e.n;
    if (truncated) *truncated = e.truncated;
    return LODE_OK;
}
