/*
 * ejson.c: the engine's strict JSON reader (see ejson.h for why it exists). A recursive
 * descent parser with a depth limit; nodes and decoded strings come from a block arena
 * owned by the document, so freeing a document is a walk over a few blocks.
 */
#include "engine/ejson.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} arena_block;

struct eng_json_doc {
    arena_block *blocks;
    eng_json *root;
};

typedef struct parser {
    const char *s;
    size_t n, pos;
    eng_json_doc *doc;
    char *err;
    size_t errlen;
    lode_status st;
} parser;

static void *arena_alloc(eng_json_doc *doc, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    arena_block *b = doc->blocks;
    if (!b || b->cap - b->used < size) {
        size_t cap = size > 65536 ? size : 65536;
        b = lode_malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = doc->blocks;
        b->used = 0;
        b->cap = cap;
        doc->blocks = b;
    }
    void *p = b->data + b->used;
    b->used += size;
    return p;
}

static int fail(parser *p, lode_status st, const char *fmt, ...)
{
    if (p->st == LODE_OK) {
        char msg[160];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        p->st = lode_seterr(p->err, p->errlen, st, "JSON: %s at byte %zu", msg, p->pos);
    }
    return -1;
}

static void skip_ws(parser *p)
{
    while (p->pos < p->n) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int hex4(parser *p, uint32_t *out)
{
    if (p->n - p->pos < 4) return fail(p, LODE_ERR_FORMAT, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return fail(p, LODE_ERR_FORMAT, "bad hex digit in \\u escape");
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *d, uint32_t cp)
{
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xC0 | (cp >> 6));
        d[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xE0 | (cp >> 12));
        d[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        d[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    d[0] = (char)(0xF0 | (cp >> 18));
    d[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    d[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* At the opening quote. Decodes into the arena; a decoded string is never longer than
 * its source, so one allocation of the source span suffices. */
static int parse_string(parser *p, const char **out, size_t *out_len)
{
    size_t start = ++p->pos, end = start;
    while (end < p->n && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->n) return fail(p, LODE_ERR_FORMAT, "unterminated string");
    char *d = arena_alloc(p->doc, end - start + 1);
    if (!d) return fail(p, LODE_ERR_NOMEM, "out of memory");
    size_t k = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) return fail(p, LODE_ERR_FORMAT, "control character in string");
        if (c != '\\') {
            d[k++] = (char)c;
            p->pos++;
            continue;
        }
        p->pos++;
        char e = p->s[p->pos++];
        switch (e) {
        case '"':
        case '\\':
        case '/':
            d[k++] = e;
            break;
        case 'b':
            d[k++] = '\b';
            break;
        case 'f':
            d[k++] = '\f';
            break;
        case 'n':
            d[k++] = '\n';
            break;
        case 'r':
            d[k++] = '\r';
            break;
        case 't':
            d[k++] = '\t';
            break;
        case 'u': {
            uint32_t cp, lo;
            if (hex4(p, &cp)) return -1;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(p, LODE_ERR_FORMAT, "lone surrogate");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p->n - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
                    return fail(p, LODE_ERR_FORMAT, "lone surrogate");
                p->pos += 2;
                if (hex4(p, &lo)) return -1;
                if (lo < 0xDC00 || lo > 0xDFFF) return fail(p, LODE_ERR_FORMAT, "lone surrogate");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) return fail(p, LODE_ERR_FORMAT, "\\u0000 in string");
            k += put_utf8(d + k, cp);
            break;
        }
        default:
            return fail(p, LODE_ERR_FORMAT, "bad escape");
        }
        if (p->pos > end) return fail(p, LODE_ERR_FORMAT, "bad escape");
    }
    p->pos = end + 1;
    d[k] = 0;
    *out = d;
    *out_len = k;
    return 0;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int parse_number(parser *p, eng_json *v)
{
    size_t start = p->pos;
    int integral = 1;
    if (p->pos < p->n && p->s[p->pos] == '-') p->pos++;
    if (p->pos >= p->n || !is_digit(p->s[p->pos])) return fail(p, LODE_ERR_FORMAT, "bad number");
    if (p->s[p->pos] == '0')
        p->pos++;
    else
        while (p->pos < p->n && is_digit(p->s[p->pos])) p->pos++;
    if (p->pos < p->n && p->s[p->pos] == '.') {
        integral = 0;
        p->pos++;
        if (p->pos >= p->n || !is_digit(p->s[p->pos]))
            return fail(p, LODE_ERR_FORMAT, "bad number fraction");
        while (p->pos < p->n && is_digit(p->s[p->pos])) p->pos++;
    }
    if (p->pos < p->n && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        integral = 0;
        p->pos++;
        if (p->pos < p->n && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (p->pos >= p->n || !is_digit(p->s[p->pos]))
            return fail(p, LODE_ERR_FORMAT, "bad number exponent");
        while (p->pos < p->n && is_digit(p->s[p->pos])) p->pos++;
    }
    size_t len = p->pos - start;
    char buf[64];
    if (len >= sizeof buf) {
        /* Long spellings are legal JSON; strtod needs a terminated copy. */
        char *tmp = lode_strndup(p->s + start, len);
        if (!tmp) return fail(p, LODE_ERR_NOMEM, "out of memory");
        v->d = strtod(tmp, NULL);
        lode_free(tmp);
    } else {
        memcpy(buf, p->s + start, len);
        buf[len] = 0;
        v->d = strtod(buf, NULL);
    }
    v->type = ENG_JSON_NUMBER;
    if (integral) {
        int neg = p->s[start] == '-';
        uint64_t acc = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        int fits = 1;
        for (size_t i = start + (size_t)neg; i < p->pos; i++) {
            uint64_t dgt = (uint64_t)(p->s[i] - '0');
            if (acc > (lim - dgt) / 10) {
                fits = 0;
                break;
            }
            acc = acc * 10 + dgt;
        }
        if (fits) {
            v->is_int = 1;
            v->i =
                neg ? (acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc) : (int64_t)acc;
        }
    }
    return 0;
}

static int parse_value(parser *p, eng_json *v, int depth);

static int parse_container(parser *p, eng_json *v, int depth, int object)
{
    if (depth >= ENG_JSON_MAX_DEPTH) return fail(p, LODE_ERR_FORMAT, "nesting too deep");
    char close = object ? '}' : ']';
    v->type = object ? ENG_JSON_OBJECT : ENG_JSON_ARRAY;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == close) {
        p->pos++;
        return 0;
    }
    eng_json **tail = &v->child;
    for (;;) {
        eng_json *m = arena_alloc(p->doc, sizeof *m);
        if (!m) return fail(p, LODE_ERR_NOMEM, "out of memory");
        memset(m, 0, sizeof *m);
        if (object) {
            skip_ws(p);
            if (p->pos >= p->n || p->s[p->pos] != '"')
                return fail(p, LODE_ERR_FORMAT, "expected a string key");
            if (parse_string(p, &m->key, &m->key_len)) return -1;
            skip_ws(p);
            if (p->pos >= p->n || p->s[p->pos] != ':')
                return fail(p, LODE_ERR_FORMAT, "expected ':'");
            p->pos++;
        }
        if (parse_value(p, m, depth + 1)) return -1;
        *tail = m;
        tail = &m->next;
        v->len++;
        skip_ws(p);
        if (p->pos >= p->n)
            return fail(p, LODE_ERR_FORMAT, "unterminated %s", object ? "object" : "array");
        char c = p->s[p->pos++];
        if (c == close) return 0;
        if (c != ',') return fail(p, LODE_ERR_FORMAT, "expected ',' or '%c'", close);
    }
}

static int literal(parser *p, const char *word, eng_json_type t, eng_json *v)
{
    size_t l = strlen(word);
    if (p->n - p->pos < l || memcmp(p->s + p->pos, word, l) != 0)
        return fail(p, LODE_ERR_FORMAT, "unexpected character");
    p->pos += l;
    v->type = t;
    return 0;
}

static int parse_value(parser *p, eng_json *v, int depth)
{
    skip_ws(p);
    if (p->pos >= p->n) return fail(p, LODE_ERR_FORMAT, "unexpected end");
    switch (p->s[p->pos]) {
    case '{':
        return parse_container(p, v, depth, 1);
    case '[':
        return parse_container(p, v, depth, 0);
    case '"':
        v->type = ENG_JSON_STRING;
        return parse_string(p, &v->str, &v->len);
    case 't':
        return literal(p, "true", ENG_JSON_TRUE, v);
    case 'f':
        return literal(p, "false", ENG_JSON_FALSE, v);
    case 'n':
        return literal(p, "null", ENG_JSON_NULL, v);
    default:
        return parse_number(p, v);
    }
}

void eng_json_free(eng_json_doc *doc)
{
    if (!doc) return;
    arena_block *b = doc->blocks;
    while (b) {
        arena_block *next = b->next;
        lode_free(b);
        b = next;
    }
    lode_free(doc);
}

lode_status eng_json_parse(const char *text, size_t len, eng_json_doc **out, char *err,
                           size_t errlen)
{
    *out = NULL;
    parser p = {text, len, 0, NULL, err, errlen, LODE_OK};
    size_t valid = lode_utf8_valid_prefix(text, len);
    if (valid != len) {
        p.pos = valid;
        fail(&p, LODE_ERR_FORMAT, "invalid UTF-8");
        return p.st;
    }
    p.doc = lode_calloc(1, sizeof *p.doc);
    if (!p.doc) return lode_seterr(err, errlen, LODE_ERR_NOMEM, "JSON: out of memory");
    p.doc->root = arena_alloc(p.doc, sizeof(eng_json));
    if (!p.doc->root) {
        fail(&p, LODE_ERR_NOMEM, "out of memory");
        goto out;
    }
    memset(p.doc->root, 0, sizeof(eng_json));
    if (parse_value(&p, p.doc->root, 0)) goto out;
    skip_ws(&p);
    if (p.pos != p.n) fail(&p, LODE_ERR_FORMAT, "trailing characters");
out:
    if (p.st != LODE_OK) {
        eng_json_free(p.doc);
        return p.st;
    }
    *out = p.doc;
    return LODE_OK;
}

const eng_json *eng_json_root(const eng_json_doc *doc)
{
    return doc ? doc->root : NULL;
}

const eng_json *eng_json_get(const eng_json *obj, const char *key)
{
    if (!obj || obj->type != ENG_JSON_OBJECT) return NULL;
    size_t kl = strlen(key);
    for (const eng_json *m = obj->child; m; m = m->next)
        if (m->key_len == kl && memcmp(m->key, key, kl) == 0) return m;
    return NULL;
}

int64_t eng_json_get_int(const eng_json *obj, const char *key, int64_t def)
{
    const eng_json *v = eng_json_get(obj, key);
    return v && v->type == ENG_JSON_NUMBER && v->is_int ? v->i : def;
}

double eng_json_get_num(const eng_json *obj, const char *key, double def)
{
    const eng_json *v = eng_json_get(obj, key);
    return v && v->type == ENG_JSON_NUMBER ? v->d : def;
}

const char *eng_json_get_str(const eng_json *obj, const char *key, const char *def)
{
    const eng_json *v = eng_json_get(obj, key);
    return v && v->type == ENG_JSON_STRING ? v->str : def;
}

int eng_json_get_bool(const eng_json *obj, const char *key, int def)
{
    const eng_json *v = eng_json_get(obj, key);
    if (!v) return def;
    if (v->type == ENG_JSON_TRUE) return 1;
    if (v->type == ENG_JSON_FALSE) return 0;
    return def;
}
