/* fuzz_request.c: libFuzzer target for the HTTP API's request layer: any body given to
 * /v1/chat/completions, /v1/completions, /v1/embeddings or POST /v1/documents (the first
 * byte picks which) must be parsed into a valid request or refused with a 4xx/5xx error
 * object, never crash, leak, loop or read out of bounds. Accepted requests are checked
 * against the documented limits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/request.h"

static void check_error(const srv_error *e)
{
    lode_buf b = LODE_BUF_INIT;
    if (e->status < 400 || e->status > 599 || !e->type || !e->j.message[0]) abort();
    if (srv_error_append_json(e, &b) != LODE_OK) abort();
    /* the error object must itself be valid JSON */
    json_error_t je;
    json_t *v = json_loadb(b.data, b.len, 0, &je);
    if (!v) abort();
    json_decref(v);
    lode_buf_free(&b);
}

static void embeddings(const char *body, size_t len)
{
    srv_embed_request r;
    srv_error e;
    if (srv_embed_request_parse(body, len, &r, &e) != LODE_OK) {
        check_error(&e);
        return;
    }
    if (!r.model || r.n_texts < 1 || r.n_texts > SRV_MAX_EMBED_INPUTS || r.dimensions < 0) abort();
    for (size_t i = 0; i < r.n_texts; i++)
        if (!r.texts[i] || r.lens[i] == 0 || r.lens[i] != strnlen(r.texts[i], r.lens[i] + 1))
            abort();
    srv_embed_request_clear(&r);
}

static void document(const char *body, size_t len)
{
    srv_doc_request r;
    srv_error e;
    if (srv_doc_request_parse(body, len, &r, &e) != LODE_OK) {
        check_error(&e);
        return;
    }
    if (!r.text == !r.url) abort(); /* exactly one source */
    if (r.text && r.text_len == 0) abort();
    if (r.url && strncasecmp(r.url, "http", 4)) abort();
    if (r.name && !r.name[0]) abort();
    if (r.media_type && !srv_media_type_ok(r.media_type, NULL)) abort();
    srv_doc_request_clear(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    if ((data[0] & 3) == 2) {
        embeddings((const char *)data + 1, size - 1);
        return 0;
    }
    if ((data[0] & 3) == 3) {
        document((const char *)data + 1, size - 1);
        return 0;
    }
    srv_gen_kind kind = (data[0] & 1) ? SRV_GEN_COMPLETION : SRV_GEN_CHAT;
    srv_gen_request r;
    srv_error e;
    lode_buf b = LODE_BUF_INIT;
    if (srv_gen_request_parse(kind, (const char *)data + 1, size - 1, &r, &e) == LODE_OK) {
        if (!r.model || r.n < 1 || r.n > SRV_MAX_N || r.n_stop > SRV_MAX_STOP) abort();
        if (r.temperature < 0 || r.temperature > 2 || r.top_p < 0 || r.top_p > 1) abort();
        if (kind == SRV_GEN_CHAT) {
            if (r.n_messages < 1 || r.n_messages > SRV_MAX_MESSAGES) abort();
            for (size_t i = 0; i < r.n_messages; i++)
                if (!r.messages[i].content || strlen(srv_role_name(r.messages[i].role)) == 0)
                    abort();
        } else if (!r.prompt || r.max_tokens < 1) {
            abort();
        }
        for (size_t i = 0; i < r.n_stop; i++)
            if (!r.stop[i] || !r.stop[i][0]) abort();
        srv_gen_request_clear(&r);
    } else {
        if (e.status < 400 || e.status > 599 || !e.type || !e.j.message[0]) abort();
        if (srv_error_append_json(&e, &b) != LODE_OK) abort();
        /* the error object must itself be valid JSON */
        json_error_t je;
        json_t *v = json_loadb(b.data, b.len, 0, &je);
        if (!v) abort();
        json_decref(v);
    }
    lode_buf_free(&b);
    return 0;
}
