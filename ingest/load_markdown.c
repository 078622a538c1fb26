/*
 * load_markdown.c: Markdown (CommonMark with GitHub's tables and strikethrough) to a
 * normalized document through md4c's callbacks. Headings make the heading path, fenced
 * and indented code stays as written, list items are list blocks, links and images keep
 * their text, raw HTML is dropped and entities are decoded (libxml2's entity table).
 */
#include "ingest/ingest_int.h"

#include <md4c.h>
#include <stdlib.h>
#include <string.h>

typedef struct mdw {
    docb *b;
    int in_item;
} mdw;

static int enter_block(MD_BLOCKTYPE type, void *detail, void *ud)
{
    mdw *w = ud;
    switch (type) {
    case MD_BLOCK_H:
        docb_begin(w->b, ING_BLOCK_HEADING, (int)((MD_BLOCK_H_DETAIL *)detail)->level);
        break;
    case MD_BLOCK_CODE:
        docb_begin(w->b, ING_BLOCK_CODE, 0);
        break;
    case MD_BLOCK_LI:
        docb_begin(w->b, ING_BLOCK_LIST, 0);
        w->in_item++;
        break;
    case MD_BLOCK_P:
    case MD_BLOCK_TR:
        docb_begin(w->b, w->in_item ? ING_BLOCK_LIST : ING_BLOCK_PARAGRAPH, 0);
        break;
    case MD_BLOCK_TH:
    case MD_BLOCK_TD:
        docb_space(w->b);
        break;
    case MD_BLOCK_HTML:
        docb_end(w->b);
        break;
    default:
        docb_end(w->b);
        break;
    }
    return w->b->st ? 1 : 0;
}

static int leave_block(MD_BLOCKTYPE type, void *detail, void *ud)
{
    mdw *w = ud;
    switch (type) {
    case MD_BLOCK_LI:
        w->in_item--;
        docb_end(w->b);
        break;
    case MD_BLOCK_TH:
    case MD_BLOCK_TD:
        docb_space(w->b);
        break;
    default:
        docb_end(w->b);
        break;
    }
    return w->b->st ? 1 : 0;
}

static int enter_span(MD_SPANTYPE type, void *detail, void *ud)
{
    return 0;
}

static int leave_span(MD_SPANTYPE type, void *detail, void *ud)
{
    return 0;
}

static void entity(mdw *w, const char *s, size_t n)
{
    /* s is "&name;", "&#123;" or "&#x1F;" as md4c recognised it */
    long cp = -1;
    if (n >= 4 && s[1] == '#') {
        char tmp[16];
        size_t k = n - 3;
        int hex = s[2] == 'x' || s[2] == 'X';
        if (hex) k--;
        if (k > 0 && k < sizeof tmp) {
            memcpy(tmp, s + (hex ? 3 : 2), k);
            tmp[k] = 0;
            cp = strtol(tmp, NULL, hex ? 16 : 10);
        }
    } else if (n >= 3) {
        cp = ing_entity_lookup(s + 1, n - 2);
    }
    char u[4];
    size_t k = cp > 0 && cp <= 0x10FFFF ? ing_utf8_encode((uint32_t)cp, u) : 0;
    if (k) {
        docb_text(w->b, u, k);
    } else if (cp >= 0) {
        docb_text(w->b, "\xEF\xBF\xBD", 3); /* a number that is no character */
    } else {
        docb_text(w->b, s, n); /* unknown name: kept as written */
    }
}

static int text(MD_TEXTTYPE type, const MD_CHAR *s, MD_SIZE n, void *ud)
{
    mdw *w = ud;
    switch (type) {
    case MD_TEXT_HTML:
        break;
    case MD_TEXT_NULLCHAR:
        docb_text(w->b, "\xEF\xBF\xBD", 3);
        break;
    case MD_TEXT_BR:
    case MD_TEXT_SOFTBR:
        docb_space(w->b);
        break;
    case MD_TEXT_ENTITY:
        entity(w, s, n);
        break;
    default:
        if (!w->b->open) docb_begin(w->b, w->in_item ? ING_BLOCK_LIST : ING_BLOCK_PARAGRAPH, 0);
        docb_text(w->b, s, n);
        break;
    }
    return w->b->st ? 1 : 0;
}

lode_status ing_load_markdown(const char *data, size_t len, ing_doc **out, char *err, size_t errlen)
{
    docb b;
    lode_buf clean = LODE_BUF_INIT;
    mdw w = {.b = &b};
    lode_status st = docb_init(&b);
    *out = NULL;
    if (st) goto out;
    if ((st = ing_utf8_repair(data, len, &clean, &b.repairs))) goto out;
    if (clean.len > (size_t)UINT32_MAX / 2) {
        st = LODE_ERR_LIMIT;
        goto out;
    }
    MD_PARSER p = {
        .abi_version = 0,
        .flags = MD_FLAG_TABLES | MD_FLAG_STRIKETHROUGH | MD_FLAG_PERMISSIVEAUTOLINKS |
                 MD_FLAG_TASKLISTS,
        .enter_block = enter_block,
        .leave_block = leave_block,
        .enter_span = enter_span,
        .leave_span = leave_span,
        .text = text,
    };
    int rc = md_parse(clean.data ? clean.data : "", (MD_SIZE)clean.len, &p, &w);
    if (b.st) {
        st = b.st;
        goto out;
    }
    if (rc != 0) {
        st = LODE_ERR_FORMAT;
        if (err) lode_seterr(err, errlen, st, "Markdown parser failed (%d)", rc);
        goto out;
    }
    st = docb_finish(&b, ING_MEDIA_MARKDOWN, out);
out:
    if (st && st != LODE_ERR_FORMAT && err)
        lode_seterr(err, errlen, st, "cannot load Markdown: %s", lode_strerror(st));
    lode_buf_free(&clean);
    docb_free(&b);
    return st;
}
