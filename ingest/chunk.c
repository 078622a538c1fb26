/*
 * chunk.c: cutting a normalized document into retrieval chunks.
 *
 * A section is a run of blocks under one heading path; chunks never cross sections. In a
 * section, whole blocks are packed greedily up to the target; a block that does not fit
 * is cut at sentence ends (lines for code) when the chunk is less than half full, a
 * sentence that does not fit is cut at words, and only a single word longer than the
 * whole target is cut inside (at a code point). The next chunk of the same section starts
 * with the last ~overlap tokens of the previous one, at a word start.
 */
#include "ingest/ingest.h"

#include <string.h>

/* Byte classes for the estimate: 0 space or control, 1 word, 2 punctuation or symbol. */
static const unsigned char tok_class[256] = {
    ['!'] = 2,           ['"'] = 2,  ['#'] = 2,         ['$'] = 2,         ['%'] = 2,
    ['&'] = 2,           ['\''] = 2, ['('] = 2,         [')'] = 2,         ['*'] = 2,
    ['+'] = 2,           [','] = 2,  ['-'] = 2,         ['.'] = 2,         ['/'] = 2,
    [':'] = 2,           [';'] = 2,  ['<'] = 2,         ['='] = 2,         ['>'] = 2,
    ['?'] = 2,           ['@'] = 2,  ['['] = 2,         ['\\'] = 2,        [']'] = 2,
    ['^'] = 2,           ['`'] = 2,  ['{'] = 2,         ['|'] = 2,         ['}'] = 2,
    ['~'] = 2,           ['_'] = 1,  ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
    [0x80 ... 0xFF] = 1,
};

size_t ing_token_estimate(const char *text, size_t len, void *ctx)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t n = 0, i = 0;
    while (i < len) {
        unsigned char k = tok_class[p[i]];
        if (k == 1) {
            size_t s = i;
            while (i < len && tok_class[p[i]] == 1) i++;
            n += 1 + (i - s - 1) / 5; /* common words are one token, long ones ~5 bytes each */
        } else {
            n += k >> 1; /* punctuation and symbols are tokens of their own */
            i++;
        }
    }
    return n;
}

typedef struct chunker {
    const ing_doc *doc;
    const char *t;
    ing_token_counter count;
    void *ctx;
    size_t target, overlap;
    size_t span; /* the most bytes of new text one chunk looks at */
    ing_chunk *out;
    size_t n, cap;
    size_t cb, cc; /* byte and code point position of the last offset conversion */
} chunker;

static size_t tok(chunker *c, size_t s, size_t e)
{
    return e > s ? c->count(c->t + s, e - s, c->ctx) : 0;
}

static int ws(char ch)
{
    return ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r' || ch == '\f' || ch == '\v';
}

static size_t skip_ws(const chunker *c, size_t p, size_t end)
{
    while (p < end && ws(c->t[p])) p++;
    return p;
}

/* End of the sentence (or code line) that starts at s, within [s, end). */
/* End of the sentence (or code line) that starts at s, within [s, end). No further than
 * c->span bytes: past that, the last word break before it (a sentence that long is cut
 * at words anyway, and looking further made long paragraphs quadratic). */
static size_t sentence_end(const chunker *c, size_t s, size_t end, int code)
{
    const char *t = c->t;
    size_t lim = end - s > c->span ? s + c->span : end;
    if (code) {
        const char *nl = memchr(t + s, '\n', lim - s);
        if (nl) return (size_t)(nl - t);
    } else {
        for (size_t i = s; i < lim; i++) {
            if (t[i] != '.' && t[i] != '!' && t[i] != '?') continue;
            size_t j = i + 1;
            while (j < end && (t[j] == '"' || t[j] == '\'' || t[j] == ')' || t[j] == ']')) j++;
            if (j == end || ws(t[j])) return j;
        }
    }
    if (lim == end) return end;
    size_t k = lim;
    while (k > s && !ws(t[k])) k--;
    return k > s ? k : lim; /* one word longer than the span: cut by hard_cut later */
}

/* End of the word at s, looking at most c->span bytes ahead. */
static size_t word_end(const chunker *c, size_t s, size_t end)
{
    size_t lim = end - s > c->span ? s + c->span : end;
    while (s < lim && !ws(c->t[s])) s++;
    return s;
}

static int inside_cp(const chunker *c, size_t i, size_t end)
{
    return i < end && ((unsigned char)c->t[i] & 0xC0) == 0x80;
}

/* The longest prefix of [s, end) (at least one code point) that fits the budget: grown by
 * doubling, then bisected, so it costs about the length of the answer (bisecting the whole
 * span made a megabyte of punctuation take seconds). */
static size_t hard_cut(chunker *c, size_t s, size_t end, size_t budget)
{
    size_t ok = s + 1;
    while (inside_cp(c, ok, end)) ok++;
    if (ok >= end || tok(c, s, ok) > budget) return ok;
    size_t bad = end + 1, step = 64;
    while (bad > end) {
        size_t next = ok + step < end ? ok + step : end;
        while (inside_cp(c, next, end)) next++;
        if (tok(c, s, next) <= budget) {
            ok = next;
            if (next >= end) return end;
            step *= 2;
        } else {
            bad = next;
        }
    }
    while (bad > ok + 1) {
        size_t mid = ok + (bad - ok) / 2, m = mid;
        while (m > ok && inside_cp(c, m, end)) m--;
        if (m == ok) {
            m = mid;
            while (m < bad && inside_cp(c, m, end)) m++;
            if (m >= bad) break;
        }
        if (tok(c, s, m) <= budget)
            ok = m;
        else
            bad = m;
    }
    return ok;
}

static size_t char_pos(chunker *c, size_t b)
{
    if (b >= c->cb) {
        for (size_t i = c->cb; i < b; i++) c->cc += ((unsigned char)c->t[i] & 0xC0) != 0x80;
    } else {
        for (size_t i = b; i < c->cb; i++) c->cc -= ((unsigned char)c->t[i] & 0xC0) != 0x80;
    }
    c->cb = b;
    return c->cc;
}

static lode_status emit(chunker *c, size_t s, size_t e, size_t path)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        ing_chunk *p = lode_realloc(c->out, cap * sizeof *p);
        if (!p) return LODE_ERR_NOMEM;
        c->out = p;
        c->cap = cap;
    }
    ing_chunk *k = &c->out[c->n++];
    k->start = s;
    k->end = e;
    k->char_start = char_pos(c, s);
    k->char_end = char_pos(c, e);
    k->path = path;
    size_t n = tok(c, s, e);
    k->tokens = n > (size_t)INT32_MAX ? INT32_MAX : (int)n;
    return LODE_OK;
}

/* Chunks of blocks [b0, b1), under heading path `path`. */
static lode_status chunk_section(chunker *c, size_t b0, size_t b1, size_t path)
{
    const ing_block *bl = c->doc->blocks;
    size_t sec_end = bl[b1 - 1].end;
    size_t pos = skip_ws(c, bl[b0].start, sec_end);
    size_t bi = b0;
    int have_ov = 0;
    size_t ov = 0;
    while (pos < sec_end) {
        size_t cstart = have_ov ? ov : pos;
        size_t ovt = have_ov ? tok(c, ov, pos) : 0;
        size_t budget = c->target > ovt ? c->target - ovt : 1;
        size_t used = 0, end = pos, cur = pos;
        while (bi < b1 && bl[bi].end <= cur) bi++;
        int done = 0;
        while (!done && bi < b1) {
            size_t bs = LODE_MAX(cur, bl[bi].start), be = bl[bi].end;
            /* a block longer than the span cannot fit: not counted whole, it goes to the
             * sentence cut */
            size_t t = be - bs > c->span ? (size_t)-1 / 2 : tok(c, bs, be);
            if (used + t <= budget) {
                used += t;
                end = be;
                bi++;
                if (bi < b1) cur = bl[bi].start;
                continue;
            }
            done = 1;
            if (used > 0 && used * 2 >= budget) break;
            /* the block does not fit: take its sentences */
            int code = bl[bi].kind == ING_BLOCK_CODE;
            size_t s = skip_ws(c, bs, be);
            while (s < be) {
                size_t se = sentence_end(c, s, be, code);
                t = tok(c, s, se);
                if (used + t <= budget && se - pos <= c->span) {
                    used += t;
                    end = se;
                    s = skip_ws(c, se, be);
                    continue;
                }
                if (used > 0 && used * 2 >= budget) break;
                /* the sentence does not fit: take its words */
                size_t w = s;
                while (w < se) {
                    size_t we = word_end(c, w, se);
                    t = tok(c, w, we);
                    if (used + t <= budget && we - pos <= c->span) {
                        used += t;
                        end = we;
                        w = skip_ws(c, we, se);
                        continue;
                    }
                    if (used == 0) end = hard_cut(c, w, we, budget);
                    break;
                }
                break;
            }
        }
        if (end <= pos) end = hard_cut(c, pos, word_end(c, pos, sec_end), budget);
        lode_status st = emit(c, cstart, end, path);
        if (st) return st;
        pos = skip_ws(c, end, sec_end);
        if (pos >= sec_end) break;
        /* the next chunk starts with the last words of this one, up to the overlap */
        have_ov = 0;
        size_t p = end, content = cstart, acc = 0;
        while (c->overlap > 0) {
            size_t q = p;
            while (q > content && ws(c->t[q - 1])) q--;
            while (q > content && !ws(c->t[q - 1])) q--;
            /* counted word by word: the counter is additive at whitespace */
            size_t t = tok(c, q, p);
            if (q <= content || acc + t > c->overlap) break;
            acc += t;
            p = q;
        }
        if (p < end) {
            have_ov = 1;
            ov = p;
        }
    }
    return LODE_OK;
}

lode_status ing_chunk_doc(const ing_doc *doc, const ing_chunk_opts *opts, ing_chunk **out,
                          size_t *n)
{
    chunker c = {.doc = doc, .t = doc->text};
    c.count = opts && opts->counter ? opts->counter : ing_token_estimate;
    c.ctx = opts ? opts->counter_ctx : NULL;
    int target = opts && opts->target_tokens > 0 ? opts->target_tokens : ING_CHUNK_TARGET_DEFAULT;
    int overlap = opts ? opts->overlap_tokens : ING_CHUNK_OVERLAP_DEFAULT;
    if (target < 8) target = 8;
    if (overlap < 0) overlap = 0;
    if (overlap > target / 2) overlap = target / 2;
    c.target = (size_t)target;
    c.overlap = (size_t)overlap;
    /* 32 bytes a token is far beyond any text's average (about 5), so only chunks of
     * whitespace-heavy code get cut short by it */
    c.span = LODE_MAX((size_t)4096, c.target * 32);
    *out = NULL;
    *n = 0;
    lode_status st = LODE_OK;
    size_t b0 = 0;
    int only_headings = doc->n_blocks && doc->blocks[0].kind == ING_BLOCK_HEADING;
    for (size_t i = 1; i <= doc->n_blocks && !st; i++) {
        if (i < doc->n_blocks && doc->blocks[i].path == doc->blocks[i - 1].path) {
            only_headings &= doc->blocks[i].kind == ING_BLOCK_HEADING;
            continue;
        }
        /* a heading with no text of its own goes with the section that follows it */
        if (i < doc->n_blocks && only_headings) {
            only_headings = doc->blocks[i].kind == ING_BLOCK_HEADING;
            continue;
        }
        st = chunk_section(&c, b0, i, doc->blocks[i - 1].path);
        b0 = i;
        only_headings = i < doc->n_blocks && doc->blocks[i].kind == ING_BLOCK_HEADING;
    }
    if (st) {
        lode_free(c.out);
        return st;
    }
    *out = c.out;
    *n = c.n;
    return LODE_OK;
}
