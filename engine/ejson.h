/*
 * ejson.h: a small strict JSON reader for the engine's own inputs (safetensors headers,
 * model config files). The engine links nothing but libc, pthreads, utf8proc and PCRE2
 * (it must build on the GPU machine, which has no jansson), so it carries this reader.
 *
 * Strict means RFC 8259 and nothing more: no comments, no trailing commas, no leading
 * zeros, no NaN, valid UTF-8, valid escapes with paired surrogates, no \u0000 inside
 * strings, a nesting limit. The whole text is parsed into a read-only tree that lives in
 * one document object.
 */
#ifndef LODE_ENGINE_EJSON_H
#define LODE_ENGINE_EJSON_H

#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"

typedef enum eng_json_type {
    ENG_JSON_NULL = 0,
    ENG_JSON_FALSE,
    ENG_JSON_TRUE,
    ENG_JSON_NUMBER,
    ENG_JSON_STRING,
    ENG_JSON_ARRAY,
    ENG_JSON_OBJECT
} eng_json_type;

/* One value. Members of arrays and objects are a linked list from `child` through
 * `next`; object members carry their key. Strings are decoded and NUL-terminated. */
typedef struct eng_json eng_json;
struct eng_json {
    eng_json_type type;
    int is_int;      /* NUMBER written without fraction or exponent and fits int64 */
    int64_t i;       /* the value when is_int */
    double d;        /* NUMBER as double */
    const char *str; /* STRING value */
    size_t len;      /* STRING length in bytes; ARRAY/OBJECT member count */
    const char *key; /* set on object members */
    size_t key_len;  /* bytes */
    eng_json *child; /* first member of ARRAY/OBJECT */
    eng_json *next;  /* next sibling */
};

typedef struct eng_json_doc eng_json_doc;

/* Nesting deeper than this is refused. */
#define ENG_JSON_MAX_DEPTH 64

/* Parses text[0..len) (not NUL-terminated necessarily). On success *out owns the tree
 * (free with eng_json_free). On failure returns LODE_ERR_FORMAT (or NOMEM) with a message
 * naming the byte offset in err. */
lode_status eng_json_parse(const char *text, size_t len, eng_json_doc **out /* OUT */, char *err,
                           size_t errlen);
void eng_json_free(eng_json_doc *doc);
const eng_json *eng_json_root(const eng_json_doc *doc);

/* The member of an object with that key (the first when repeated), or NULL when obj is
 * not an object or has no such member. */
const eng_json *eng_json_get(const eng_json *obj, const char *key);
/* Helpers for config files: the member as an integer / number / string / bool; return
 * def when it is absent or of another type. */
int64_t eng_json_get_int(const eng_json *obj, const char *key, int64_t def);
double eng_json_get_num(const eng_json *obj, const char *key, double def);
const char *eng_json_get_str(const eng_json *obj, const char *key, const char *def);
int eng_json_get_bool(const eng_json *obj, const char *key, int def);

#endif
