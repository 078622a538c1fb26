/*
 * request.c: OpenAI-style error objects and the validation of chat and completion request
 * bodies. The rules follow the OpenAI API where lode supports a feature (types, ranges,
 * defaults) and reject clearly what lode does not support (echo, suffix, best_of != n,
 * non-text message parts) instead of silently ignoring it. Also the bodies of
 * /v1/embeddings, POST /v1/documents and /v1/ask.
 */
#include "server/request.h"

#include "orchestrate/ask.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define INVALID "invalid_request_error"

lode_status srv_error_set(srv_error *e, lode_status st, int status, const char *type,
                          const char *code, const char *field, const char *fmt, ...)
{
    if (!e) return st;
    e->status = status;
    e->type = type;
    e->code = code;
    lode_json_err_clear(&e->j);
    snprintf(e->j.field, sizeof e->j.field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->j.message, sizeof e->j.message, fmt, ap);
    va_end(ap);
    return st;
}

/* A JSON string of s with bytes that are not valid UTF-8 replaced: messages quote the
 * client's input (a JSON parser's context, a field name), and json_string refuses
 * invalid UTF-8, which would turn a 400 into no error object at all. */
static json_t *clean_string(const char *s)
{
    size_t n = strlen(s);
    if (lode_utf8_valid_prefix(s, n) == n) return json_string(s);
    char *c = lode_utf8_clean(s, n);
    json_t *v = c ? json_string(c) : NULL;
    lode_free(c);
    return v;
}

lode_status srv_error_append_json(const srv_error *e, lode_buf *b)
{
    lode_status st = LODE_ERR_NOMEM;
    json_t *o = json_object(), *in = json_object();
    if (!o || !in) goto out;
    if (json_object_set_new(in, "message", clean_string(e->j.message)) ||
        json_object_set_new(in, "type", json_string(e->type ? e->type : "server_error")) ||
        json_object_set_new(in, "param", e->j.field[0] ? clean_string(e->j.field) : json_null()) ||
        json_object_set_new(in, "code", e->code ? json_string(e->code) : json_null()))
        goto out;
    if (json_object_set(o, "error", in)) goto out;
    st = lode_json_append(b, o);
out:
    json_decref(in);
    json_decref(o);
    return st;
}

const char *srv_role_name(srv_role r)
{
    switch (r) {
    case SRV_ROLE_SYSTEM:
        return "system";
    case SRV_ROLE_USER:
        return "user";
    case SRV_ROLE_ASSISTANT:
        return "assistant";
    }
    return "user";
}

void srv_gen_request_clear(srv_gen_request *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_messages; i++) lode_free(r->messages[i].content);
    lode_free(r->messages);
    json_decref(r->root);
    memset(r, 0, sizeof *r);
}

/* A getter failed: copy its message into a 400. */
static lode_status bad(srv_error *e, const lode_json_err *je)
{
    e->status = 400;
    e->type = INVALID;
    e->code = NULL;
    e->j = *je;
    return LODE_ERR_INVALID;
}

static lode_status parse_content(const json_t *v, const char *field, char **out, srv_error *e)
{
    if (json_is_string(v)) {
        *out = lode_strndup(json_string_value(v), json_string_length(v));
        return *out ? LODE_OK : LODE_ERR_NOMEM;
    }
    if (!json_is_array(v))
        return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, field,
                             "'%s' must be a string or an array of text parts, got %s", field,
                             lode_json_type_name(v));
    lode_buf b = LODE_BUF_INIT;
    lode_status st = LODE_OK;
    size_t i;
    json_t *part;
    char pf[160];
    json_array_foreach(v, i, part)
    {
        lode_json_err je;
        const char *type = NULL, *text = NULL;
        snprintf(pf, sizeof pf, "%s[%zu].type", field, i);
        if (!json_is_object(part)) {
            snprintf(pf, sizeof pf, "%s[%zu]", field, i);
            st = srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, pf,
                               "'%s' must be an object, got %s", pf, lode_json_type_name(part));
            goto out;
        }
        if ((st = lode_json_get_string(part, "type", pf, 1, &type, NULL, &je))) {
            st = bad(e, &je);
            goto out;
        }
        if (strcmp(type, "text") != 0) {
            st = srv_error_set(e, LODE_ERR_UNSUPPORTED, 400, INVALID, "unsupported_content", pf,
                               "content part type '%.40s' is not supported (only 'text')", type);
            goto out;
        }
        snprintf(pf, sizeof pf, "%s[%zu].text", field, i);
        if ((st = lode_json_get_string(part, "text", pf, 1, &text, NULL, &je))) {
            st = bad(e, &je);
            goto out;
        }
        if ((st = lode_buf_puts(&b, text))) goto out;
    }
    *out = lode_buf_take(&b);
    if (!*out) st = LODE_ERR_NOMEM;
out:
    lode_buf_free(&b);
    return st;
}

static lode_status parse_messages(srv_gen_request *r, srv_error *e)
{
    lode_json_err je;
    json_t *arr = NULL;
    if (lode_json_get_array(r->root, "messages", NULL, 1, &arr, NULL, &je)) return bad(e, &je);
    size_t n = json_array_size(arr);
    if (n == 0)
        return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "messages",
                             "'messages' must hold at least one message");
    if (n > SRV_MAX_MESSAGES)
        return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "messages",
                             "'messages' holds %zu messages; at most %d are accepted", n,
                             SRV_MAX_MESSAGES);
    r->messages = lode_calloc(n, sizeof *r->messages);
    if (!r->messages) return LODE_ERR_NOMEM;
    char f[96];
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(arr, i);
        const char *role = NULL;
        json_t *content;
        snprintf(f, sizeof f, "messages[%zu]", i);
        if (!json_is_object(m))
            return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, f,
                                 "'%s' must be an object, got %s", f, lode_json_type_name(m));
        snprintf(f, sizeof f, "messages[%zu].role", i);
        if (lode_json_get_string(m, "role", f, 1, &role, NULL, &je)) return bad(e, &je);
        srv_role rl;
        if (!strcmp(role, "system") || !strcmp(role, "developer"))
            rl = SRV_ROLE_SYSTEM;
        else if (!strcmp(role, "user"))
            rl = SRV_ROLE_USER;
        else if (!strcmp(role, "assistant"))
            rl = SRV_ROLE_ASSISTANT;
        else
            return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, f,
                                 "'%s' must be 'system', 'developer', 'user' or 'assistant', "
                                 "got '%.40s'",
                                 f, role);
        snprintf(f, sizeof f, "messages[%zu].content", i);
        content = json_object_get(m, "content");
        if (!content || json_is_null(content))
            return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, f,
                                 "missing required parameter '%s'", f);
        lode_status st = parse_content(content, f, &r->messages[i].content, e);
        if (st) return st;
        r->messages[i].role = rl;
        r->n_messages = i + 1;
    }
    return LODE_OK;
}

static lode_status parse_prompt(srv_gen_request *r, srv_error *e)
{
    json_t *p = json_object_get(r->root, "prompt");
    if (!p || json_is_null(p))
        return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "prompt",
                             "missing required parameter 'prompt'");
    if (json_is_array(p)) {
        /* The API allows a batch of prompts; lode takes one (n gives several choices). */
        if (json_array_size(p) != 1 || !json_is_string(json_array_get(p, 0)))
            return srv_error_set(e, LODE_ERR_UNSUPPORTED, 400, INVALID, NULL, "prompt",
                                 "'prompt' must be a string or an array of exactly one string");
        p = json_array_get(p, 0);
    }
    if (!json_is_string(p))
        return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "prompt",
                             "'prompt' must be a string, got %s", lode_json_type_name(p));
    r->prompt = json_string_value(p);
    return LODE_OK;
}

static lode_status parse_stop(srv_gen_request *r, srv_error *e)
{
    json_t *s = json_object_get(r->root, "stop");
    if (!s || json_is_null(s)) return LODE_OK;
    if (json_is_string(s)) {
        if (json_string_length(s) == 0)
            return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "stop",
                                 "'stop' must not be empty");
        r->stop[r->n_stop++] = json_string_value(s);
        return LODE_OK;
    }
    if (!json_is_array(s))
        return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "stop",
                             "'stop' must be a string or an array of strings, got %s",
                             lode_json_type_name(s));
    if (json_array_size(s) > SRV_MAX_STOP)
        return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "stop",
                             "'stop' holds %zu sequences; at most %d are accepted",
                             json_array_size(s), SRV_MAX_STOP);
    size_t i;
    json_t *x;
    json_array_foreach(s, i, x)
    {
        char f[32];
        snprintf(f, sizeof f, "stop[%zu]", i);
        if (!json_is_string(x))
            return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, f,
                                 "'%s' must be a string, got %s", f, lode_json_type_name(x));
        if (json_string_length(x) == 0)
            return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, f,
                                 "'%s' must not be empty", f);
        r->stop[r->n_stop++] = json_string_value(x);
    }
    return LODE_OK;
}

/* Options present in the API that lode refuses rather than ignores. */
static lode_status refuse_unsupported(srv_gen_request *r, srv_error *e)
{
    lode_json_err je;
    int echo = 0;
    if (lode_json_get_bool(r->root, "echo", NULL, 0, &echo, NULL, &je)) return bad(e, &je);
    if (echo)
        return srv_error_set(e, LODE_ERR_UNSUPPORTED, 400, INVALID, "unsupported_parameter", "echo",
                             "'echo' is not supported");
    json_t *v = json_object_get(r->root, "suffix");
    if (v && !json_is_null(v))
        return srv_error_set(e, LODE_ERR_UNSUPPORTED, 400, INVALID, "unsupported_parameter",
                             "suffix", "'suffix' is not supported");
    int64_t best_of = r->n;
    if (lode_json_get_int(r->root, "best_of", NULL, 0, 1, SRV_MAX_N, &best_of, NULL, &je))
        return bad(e, &je);
    if (best_of != r->n)
        return srv_error_set(e, LODE_ERR_UNSUPPORTED, 400, INVALID, "unsupported_parameter",
                             "best_of", "'best_of' must equal 'n' (%d)", r->n);
    v = json_object_get(r->root, "tools");
    if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0))
        return srv_error_set(e, LODE_ERR_UNSUPPORTED, 400, INVALID, "unsupported_parameter",
                             "tools", "'tools' (function calling) is not supported");
    return LODE_OK;
}

lode_status srv_gen_request_parse(srv_gen_kind kind, const char *body, size_t len,
                                  srv_gen_request *out, srv_error *e)
{
    lode_status st;
    lode_json_err je;
    srv_gen_request *r = out;
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->max_tokens = -1;
    r->temperature = 1.0;
    r->top_p = 1.0;
    r->n = 1;

    if ((st = lode_json_parse(body, len, &r->root, &je))) {
        bad(e, &je);
        e->code = "invalid_json";
        goto out;
    }
    if (!json_is_object(r->root)) {
        st = srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, NULL,
                           "the request body must be a JSON object, got %s",
                           lode_json_type_name(r->root));
        goto out;
    }
    if ((st = lode_json_get_string(r->root, "model", NULL, 1, &r->model, NULL, &je))) goto bad;
    if (kind == SRV_GEN_CHAT) {
        if ((st = parse_messages(r, e))) goto out;
    } else {
        if ((st = parse_prompt(r, e))) goto out;
    }

    int64_t n = 1;
    if ((st = lode_json_get_int(r->root, "n", NULL, 0, 1, SRV_MAX_N, &n, NULL, &je))) goto bad;
    r->n = (int)n;
    /* max_completion_tokens is the chat API's newer name; either may come. */
    if ((st = lode_json_get_int(r->root, "max_tokens", NULL, 0, 1, INT32_MAX, &r->max_tokens, NULL,
                                &je)))
        goto bad;
    if (kind == SRV_GEN_CHAT && (st = lode_json_get_int(r->root, "max_completion_tokens", NULL, 0,
                                                        1, INT32_MAX, &r->max_tokens, NULL, &je)))
        goto bad;
    if (kind == SRV_GEN_COMPLETION && r->max_tokens < 0) r->max_tokens = 16;
    if ((st = lode_json_get_number(r->root, "temperature", NULL, 0, 0.0, 2.0, &r->temperature, NULL,
                                   &je)))
        goto bad;
    if ((st = lode_json_get_number(r->root, "top_p", NULL, 0, 0.0, 1.0, &r->top_p, NULL, &je)))
        goto bad;
    if ((st = lode_json_get_number(r->root, "presence_penalty", NULL, 0, -2.0, 2.0,
                                   &r->presence_penalty, NULL, &je)))
        goto bad;
    if ((st = lode_json_get_number(r->root, "frequency_penalty", NULL, 0, -2.0, 2.0,
                                   &r->frequency_penalty, NULL, &je)))
        goto bad;
    int64_t seed = 0;
    if ((st = lode_json_get_int(r->root, "seed", NULL, 0, INT64_MIN, INT64_MAX, &seed, &r->has_seed,
                                &je)))
        goto bad;
    r->seed = (uint64_t)seed;
    if ((st = lode_json_get_bool(r->root, "stream", NULL, 0, &r->stream, NULL, &je))) goto bad;
    json_t *so = NULL;
    if ((st = lode_json_get_object(r->root, "stream_options", NULL, 0, &so, NULL, &je))) goto bad;
    if (so && (st = lode_json_get_bool(so, "include_usage", "stream_options.include_usage", 0,
                                       &r->include_usage, NULL, &je)))
        goto bad;
    if ((st = parse_stop(r, e))) goto out;

    if (kind == SRV_GEN_CHAT) {
        int64_t top = 0;
        int present = 0;
        if ((st = lode_json_get_bool(r->root, "logprobs", NULL, 0, &r->logprobs, NULL, &je)))
            goto bad;
        if ((st = lode_json_get_int(r->root, "top_logprobs", NULL, 0, 0, SRV_MAX_TOP_CHAT, &top,
                                    &present, &je)))
            goto bad;
        if (present && !r->logprobs) {
            st = srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "top_logprobs",
                               "'top_logprobs' needs 'logprobs' set to true");
            goto out;
        }
        r->top_logprobs = (int)top;
    } else {
        int64_t lp = 0;
        int present = 0;
        if ((st = lode_json_get_int(r->root, "logprobs", NULL, 0, 0, SRV_MAX_TOP_COMPL, &lp,
                                    &present, &je)))
            goto bad;
        r->logprobs = present;
        r->top_logprobs = (int)lp;
    }
    if ((st = refuse_unsupported(r, e))) goto out;
    return LODE_OK;
bad:
    bad(e, &je);
out:
    if (st == LODE_ERR_NOMEM)
        srv_error_set(e, st, 500, "server_error", NULL, NULL, "out of memory");
    srv_gen_request_clear(r);
    return st;
}

/* ---- /v1/embeddings ----------------------------------------------------------------- */

void srv_embed_request_clear(srv_embed_request *r)
{
    if (!r) return;
    lode_free(r->texts);
    lode_free(r->lens);
    json_decref(r->root);
    memset(r, 0, sizeof *r);
}

static lode_status embed_input(srv_embed_request *r, srv_error *e)
{
    json_t *in = json_object_get(r->root, "input");
    if (!in || json_is_null(in))
        return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "input",
                             "missing required parameter 'input'");
    size_t n = 1;
    if (json_is_array(in)) {
        r->input_was_array = 1;
        n = json_array_size(in);
        if (n == 0)
            return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "input",
                                 "'input' must not be an empty array");
        if (n > SRV_MAX_EMBED_INPUTS)
            return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "input",
                                 "'input' holds %zu texts; at most %d are accepted", n,
                                 SRV_MAX_EMBED_INPUTS);
        if (json_is_integer(json_array_get(in, 0)))
            return srv_error_set(e, LODE_ERR_UNSUPPORTED, 400, INVALID, "unsupported_parameter",
                                 "input", "'input': token arrays are not supported; send text");
    } else if (!json_is_string(in)) {
        return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "input",
                             "'input' must be a string or an array of strings, got %s",
                             lode_json_type_name(in));
    }
    r->texts = lode_calloc(n, sizeof *r->texts);
    r->lens = lode_calloc(n, sizeof *r->lens);
    if (!r->texts || !r->lens) return LODE_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *x = r->input_was_array ? json_array_get(in, i) : in;
        char f[32];
        if (r->input_was_array)
            snprintf(f, sizeof f, "input[%zu]", i);
        else
            snprintf(f, sizeof f, "input");
        if (json_is_array(x) && json_array_size(x) > 0 && json_is_integer(json_array_get(x, 0)))
            return srv_error_set(e, LODE_ERR_UNSUPPORTED, 400, INVALID, "unsupported_parameter", f,
                                 "'%s': token arrays are not supported; send text", f);
        if (!json_is_string(x))
            return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, f,
                                 "'%s' must be a string, got %s", f, lode_json_type_name(x));
        if (json_string_length(x) == 0)
            return srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, f,
                                 "'%s' must not be empty", f);
        r->texts[i] = json_string_value(x);
        r->lens[i] = json_string_length(x);
    }
    r->n_texts = n;
    return LODE_OK;
}

lode_status srv_embed_request_parse(const char *body, size_t len, srv_embed_request *out,
                                    srv_error *e)
{
    lode_status st;
    lode_json_err je;
    srv_embed_request *r = out;
    memset(r, 0, sizeof *r);
    if ((st = lode_json_parse(body, len, &r->root, &je))) {
        bad(e, &je);
        e->code = "invalid_json";
        goto out;
    }
    if (!json_is_object(r->root)) {
        st = srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, NULL,
                           "the request body must be a JSON object, got %s",
                           lode_json_type_name(r->root));
        goto out;
    }
    if ((st = lode_json_get_string(r->root, "model", NULL, 1, &r->model, NULL, &je))) goto bad;
    if ((st = embed_input(r, e))) goto out;
    const char *fmt = NULL, *user = NULL;
    if ((st = lode_json_get_string(r->root, "encoding_format", NULL, 0, &fmt, NULL, &je))) goto bad;
    if (fmt && strcmp(fmt, "float") && strcmp(fmt, "base64")) {
        st = srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "encoding_format",
                           "'encoding_format' must be 'float' or 'base64', got '%.40s'", fmt);
        goto out;
    }
    r->base64 = fmt && !strcmp(fmt, "base64");
    if ((st = lode_json_get_int(r->root, "dimensions", NULL, 0, 1, 1 << 20, &r->dimensions, NULL,
                                &je)))
        goto bad;
    if ((st = lode_json_get_string(r->root, "user", NULL, 0, &user, NULL, &je))) goto bad;
    return LODE_OK;
bad:
    bad(e, &je);
out:
    if (st == LODE_ERR_NOMEM)
        srv_error_set(e, st, 500, "server_error", NULL, NULL, "out of memory");
    srv_embed_request_clear(r);
    return st;
}

/* ---- POST /v1/documents --------------------------------------------------------------- */

void srv_doc_request_clear(srv_doc_request *r)
{
    if (!r) return;
    json_decref(r->root);
    memset(r, 0, sizeof *r);
}

int srv_media_type_ok(const char *mt, int *media)
{
    /* the values of ing_media (ingest/ingest.h), which this layer does not link */
    static const struct {
        const char *name;
        int media;
    } known[] = {{"text/plain", 1},
                 {"text/markdown", 2},
                 {"text/x-markdown", 2},
                 {"text/html", 3},
                 {"application/xhtml+xml", 3}};
    size_t n = strcspn(mt, ";");
    while (n && (mt[n - 1] == ' ' || mt[n - 1] == '\t')) n--;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strlen(known[i].name) == n && !strncasecmp(mt, known[i].name, n)) {
            if (media) *media = known[i].media;
            return 1;
        }
    return 0;
}

lode_status srv_doc_request_parse(const char *body, size_t len, srv_doc_request *out, srv_error *e)
{
    lode_status st;
    lode_json_err je;
    srv_doc_request *r = out;
    memset(r, 0, sizeof *r);
    if ((st = lode_json_parse(body, len, &r->root, &je))) {
        bad(e, &je);
        e->code = "invalid_json";
        goto out;
    }
    if (!json_is_object(r->root)) {
        st = srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, NULL,
                           "the request body must be a JSON object, got %s",
                           lode_json_type_name(r->root));
        goto out;
    }
    const char *uri = NULL;
    if ((st = lode_json_get_string(r->root, "text", NULL, 0, &r->text, NULL, &je)) ||
        (st = lode_json_get_string(r->root, "url", NULL, 0, &r->url, NULL, &je)) ||
        (st = lode_json_get_string(r->root, "name", NULL, 0, &r->name, NULL, &je)) ||
        (st = lode_json_get_string(r->root, "uri", NULL, 0, &uri, NULL, &je)) ||
        (st = lode_json_get_string(r->root, "title", NULL, 0, &r->title, NULL, &je)) ||
        (st = lode_json_get_string(r->root, "media_type", NULL, 0, &r->media_type, NULL, &je)))
        goto bad;
    if (r->name && uri) {
        st = srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "uri",
                           "give either 'name' or 'uri', not both");
        goto out;
    }
    if (!r->name) r->name = uri;
    if (!r->text == !r->url) {
        st = srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, r->text ? "url" : "text",
                           r->text ? "give either 'text' or 'url', not both"
                                   : "missing required parameter 'text' (or 'url')");
        goto out;
    }
    if (r->text) {
        r->text_len = json_string_length(json_object_get(r->root, "text"));
        if (r->text_len == 0) {
            st = srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "text",
                               "'text' must not be empty");
            goto out;
        }
    }
    if (r->url && strncasecmp(r->url, "http://", 7) && strncasecmp(r->url, "https://", 8)) {
        st = srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, "invalid_url", "url",
                           "'url' must be an http:// or https:// URL");
        goto out;
    }
    if (r->name && !*r->name) {
        st = srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, uri ? "uri" : "name",
                           "'%s' must not be empty", uri ? "uri" : "name");
        goto out;
    }
    if (r->media_type && !srv_media_type_ok(r->media_type, NULL)) {
        st = srv_error_set(e, LODE_ERR_INVALID, 400, INVALID, NULL, "media_type",
                           "'media_type' must be text/plain, text/markdown or text/html, got "
                           "'%.60s'",
                           r->media_type);
        goto out;
    }
    return LODE_OK;
bad:
    bad(e, &je);
out:
    if (st == LODE_ERR_NOMEM)
        srv_error_set(e, st, 500, "server_error", NULL, NULL, "out of memory");
    srv_doc_request_clear(r);
    return st;
}

/* ---- /v1/ask ------------------------------------------------------------------------ */

lode_status srv_ask_request_parse(const char *body, size_t len, srv_ask_request *r, srv_error *e)
{
    lode_json_err je;
    lode_json_err_clear(&je);
    memset(r, 0, sizeof *r);
    r->k = ORC_DEFAULT_K;
    r->max_tokens = ORC_DEFAULT_MAX_TOKENS;
    lode_status st = lode_json_parse(body ? body : "", len, &r->root, &je);
    if (st) {
        srv_error_set(e, st, 400, "invalid_request_error", "invalid_json", NULL,
                      "the body is not valid JSON: %s", je.message);
        return st;
    }
    if (!json_is_object(r->root)) {
        srv_error_set(e, LODE_ERR_INVALID, 400, "invalid_request_error", NULL, NULL,
                      "the body must be a JSON object");
        return LODE_ERR_INVALID;
    }
    json_t *filters = NULL;
    int has_filters = 0;
    if ((st = lode_json_get_string(r->root, "question", NULL, 1, &r->question, NULL, &je)) ||
        (st = lode_json_get_string(r->root, "model", NULL, 0, &r->model, NULL, &je)) ||
        (st = lode_json_get_string(r->root, "mode", NULL, 0, &r->mode, NULL, &je)) ||
        (st = lode_json_get_int(r->root, "k", NULL, 0, 1, ORC_MAX_K, &r->k, NULL, &je)) ||
        (st = lode_json_get_int(r->root, "max_tokens", NULL, 0, 1, SRV_ASK_MAX_TOKENS,
                                &r->max_tokens, NULL, &je)) ||
        (st = lode_json_get_number(r->root, "temperature", NULL, 0, 0, 2, &r->temperature,
                                   &r->has_temperature, &je)) ||
        (st = lode_json_get_int(r->root, "seed", NULL, 0, INT64_MIN, INT64_MAX, &r->seed,
                                &r->has_seed, &je)) ||
        (st = lode_json_get_bool(r->root, "stream", NULL, 0, &r->stream, NULL, &je)) ||
        (st = lode_json_get_object(r->root, "filters", NULL, 0, &filters, &has_filters, &je))) {
        srv_error_set(e, st, 400, "invalid_request_error", NULL, je.field[0] ? je.field : NULL,
                      "%s", je.message);
        return st;
    }
    if (has_filters) {
        const char *key;
        json_t *v;
        json_object_foreach(filters, key, v)
        {
            if (strcmp(key, "uri") != 0 && strcmp(key, "media_type") != 0) {
                char field[160];
                snprintf(field, sizeof field, "filters.%.100s", key);
                srv_error_set(e, LODE_ERR_INVALID, 400, "invalid_request_error", NULL, field,
                              "unknown filter '%.100s' (filters: uri, a glob on the document's "
                              "URI; media_type)",
                              key);
                return LODE_ERR_INVALID;
            }
        }
        if ((st = lode_json_get_string(filters, "uri", "filters.uri", 0, &r->uri, NULL, &je)) ||
            (st = lode_json_get_string(filters, "media_type", "filters.media_type", 0,
                                       &r->media_type, NULL, &je))) {
            srv_error_set(e, st, 400, "invalid_request_error", NULL, je.field, "%s", je.message);
            return st;
        }
    }
    return LODE_OK;
}

void srv_ask_request_clear(srv_ask_request *r)
{
    json_decref(r->root);
    r->root = NULL;
}
