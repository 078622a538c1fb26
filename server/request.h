/*
 * request.h: the HTTP API's request layer without the network: OpenAI-style error objects
 * and the parsing and validation of /v1/chat/completions and /v1/completions bodies into a
 * plain struct. It is separate from the HTTP code so the fuzz target and the unit tests
 * drive it directly, and so every bad body becomes a precise 400 before any work starts.
 */
#ifndef LODE_SERVER_REQUEST_H
#define LODE_SERVER_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "common/json.h"
#include "common/lode.h"

/* An error as the API reports it: {"error":{"message","type","param","code"}}. */
typedef struct srv_error {
    int status;       /* HTTP status: 400, 401, 404, 405, 413, 429, 500, 501, 503 */
    const char *type; /* "invalid_request_error", "authentication_error", ... (static) */
    const char *code; /* static machine-readable code or NULL */
    lode_json_err j;  /* message, and the offending parameter in j.field ("" = none) */
} srv_error;

/* Fills e and returns st (for `return srv_error_set(...)`). field may be NULL. */
lode_status srv_error_set(srv_error *e, lode_status st, int status, const char *type,
                          const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
/* Appends e as the JSON error object to b. */
lode_status srv_error_append_json(const srv_error *e, lode_buf *b);

typedef enum srv_gen_kind { SRV_GEN_CHAT = 0, SRV_GEN_COMPLETION = 1 } srv_gen_kind;

typedef enum srv_role {
    SRV_ROLE_SYSTEM = 0, /* "system" and "developer" */
    SRV_ROLE_USER,
    SRV_ROLE_ASSISTANT
} srv_role;

typedef struct srv_message {
    srv_role role;
    char *content; /* owned; text parts of an array content are joined */
} srv_message;

#define SRV_MAX_STOP      4
#define SRV_MAX_N         16
#define SRV_MAX_MESSAGES  1024
#define SRV_MAX_TOP_CHAT  20 /* top_logprobs for chat */
#define SRV_MAX_TOP_COMPL 5  /* logprobs for completions */

/* A parsed generation request. Strings point into `root` (kept alive here) unless said. */
typedef struct srv_gen_request {
    srv_gen_kind kind;
    json_t *root; /* the parsed body; owned */
    const char *model;
    srv_message *messages; /* chat: n_messages entries, owned */
    size_t n_messages;
    const char *prompt; /* completions */
    int64_t max_tokens; /* -1: not given (chat: up to the context; completions: 16) */
    double temperature; /* default 1.0 */
    double top_p;       /* default 1.0 */
    double presence_penalty, frequency_penalty;
    int has_seed;
    uint64_t seed;
    const char *stop[SRV_MAX_STOP];
    size_t n_stop;
    int n;            /* choices, 1..SRV_MAX_N */
    int logprobs;     /* return logprobs of the generated tokens */
    int top_logprobs; /* alternatives per token, 0..20 */
    int stream;
    int include_usage; /* stream_options.include_usage */
} srv_gen_request;

/* Parses and validates a request body of the given kind into *out (cleared first). On
 * failure returns non-OK with e filled (status 400, param named) and *out holds nothing to
 * free; on success release it with srv_gen_request_clear. Never reads past body[len]. */
lode_status srv_gen_request_parse(srv_gen_kind kind, const char *body, size_t len,
                                  srv_gen_request *out /* OUT */, srv_error *e);
void srv_gen_request_clear(srv_gen_request *r);

/* ---- /v1/embeddings ----------------------------------------------------------------- */
#define SRV_MAX_EMBED_INPUTS 2048 /* the OpenAI API's limit per request */

/* A parsed embeddings request. Strings point into `root`. */
typedef struct srv_embed_request {
    json_t *root; /* owned */
    const char *model;
    const char **texts; /* n_texts entries, owned array */
    size_t *lens;       /* their byte lengths, owned */
    size_t n_texts;
    int base64;          /* encoding_format "base64" (else "float") */
    int64_t dimensions;  /* 0: not given */
    int input_was_array; /* input came as an array (the answer is the same shape either way) */
} srv_embed_request;

/* Parses and validates an embeddings body: model (required), input (a non-empty string or
 * an array of 1..2048 non-empty strings; token arrays are refused), encoding_format
 * ("float" or "base64"), dimensions (positive), user (a string, ignored). Errors as
 * srv_gen_request_parse. Release with srv_embed_request_clear. */
lode_status srv_embed_request_parse(const char *body, size_t len, srv_embed_request *out /* OUT */,
                                    srv_error *e);
void srv_embed_request_clear(srv_embed_request *r);

/* ---- POST /v1/documents (JSON body) --------------------------------------------------- */
/* A parsed document upload: exactly one of text and url. Strings point into `root`. */
typedef struct srv_doc_request {
    json_t *root;     /* owned */
    const char *text; /* the document's content */
    size_t text_len;
    const char *url;        /* http(s) URL to fetch instead */
    const char *name;       /* the document's URI in the store ("uri" is an alias); may be NULL */
    const char *title;      /* may be NULL */
    const char *media_type; /* text/plain, text/markdown or text/html; may be NULL */
} srv_doc_request;

/* Parses a JSON upload: {text | url, name | uri, title, media_type}. Errors as
 * srv_gen_request_parse. Release with srv_doc_request_clear. */
lode_status srv_doc_request_parse(const char *body, size_t len, srv_doc_request *out /* OUT */,
                                  srv_error *e);
void srv_doc_request_clear(srv_doc_request *r);
/* Whether mt names a media type an upload may have (parameters like "; charset=utf-8"
 * ignored); *media gets ingest's kind number (ing_media) for it. */
int srv_media_type_ok(const char *mt, int *media /* OUT */);

/* ---- POST /v1/ask -------------------------------------------------------------------- */
#define SRV_ASK_MAX_TOKENS 4096
/* A parsed question: {question, k, mode, filters: {uri, media_type}, stream, max_tokens,
 * temperature, seed, model}. Strings point into `root`; mode is checked by the
 * orchestrator (orc_mode_parse), the rest here. */
typedef struct srv_ask_request {
    json_t *root; /* owned; may be set even when parsing failed */
    const char *question;
    const char *model;      /* may be NULL */
    const char *mode;       /* may be NULL */
    const char *uri;        /* filters.uri, a glob; may be NULL */
    const char *media_type; /* filters.media_type; may be NULL */
    int64_t k, max_tokens, seed;
    double temperature;
    int has_seed, has_temperature;
    int stream;
} srv_ask_request;

/* Parses a /v1/ask body. Errors as srv_gen_request_parse. Release with
 * srv_ask_request_clear, whatever the outcome. */
lode_status srv_ask_request_parse(const char *body, size_t len, srv_ask_request *out /* OUT */,
                                  srv_error *e);
void srv_ask_request_clear(srv_ask_request *r);

/* Role name as the API spells it. */
const char *srv_role_name(srv_role r);

#endif
