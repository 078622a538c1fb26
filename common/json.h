/*
 * json.h: typed access to JSON from outside (HTTP bodies, config files) on top of jansson.
 * Every getter either yields a value of the expected type and range or fills a
 * lode_json_err naming the field and saying what was wrong, so callers turn bad input
 * into a precise message (an HTTP 400 naming the parameter) without repeating checks.
 * A JSON null counts as absent: OpenAI-style clients send null for unset options.
 */
#ifndef LODE_COMMON_JSON_H
#define LODE_COMMON_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"

typedef struct lode_json_err {
    char message[320]; /* "" when no error */
    char field[128];   /* dotted path of the offending field ("messages[1].role"); "" if none */
    int line;          /* parse errors: 1-based line and column; 0 otherwise */
    int column;
    long position; /* parse errors: byte offset into the input; -1 otherwise */
} lode_json_err;

/* Clears err (no message, no field, position -1). */
void lode_json_err_clear(lode_json_err *err);
/* Sets err's field (may be NULL) and message; returns st so callers can `return` it. */
lode_status lode_json_err_set(lode_json_err *err, lode_status st, const char *field,
                              const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Parses len bytes of JSON text (strict: one value, no trailing data, no duplicate keys,
 * no NUL in strings, valid UTF-8). On success *out is a new reference the caller releases
 * with json_decref. On failure returns LODE_ERR_FORMAT with line, column and byte position
 * in err, and *out is NULL. */
lode_status lode_json_parse(const char *buf, size_t len, json_t **out /* OUT */,
                            lode_json_err *err);

/* Field getters on an object. `field` is the path used in messages (NULL: key itself).
 * required: absent (or null) is an error; otherwise absent returns LODE_OK and leaves *out
 * unchanged, so callers set the default first. *present (may be NULL) says whether the
 * value was there. Wrong type or range: LODE_ERR_INVALID with err filled.
 * Strings point into obj and live as long as it does. */
lode_status lode_json_get_string(const json_t *obj, const char *key, const char *field,
                                 int required, const char **out /* OUT */, int *present,
                                 lode_json_err *err);
lode_status lode_json_get_int(const json_t *obj, const char *key, const char *field, int required,
                              int64_t min, int64_t max, int64_t *out /* OUT */, int *present,
                              lode_json_err *err);
/* Numbers: integers are accepted where a number is expected. */
lode_status lode_json_get_number(const json_t *obj, const char *key, const char *field,
                                 int required, double min, double max, double *out /* OUT */,
                                 int *present, lode_json_err *err);
lode_status lode_json_get_bool(const json_t *obj, const char *key, const char *field, int required,
                               int *out /* OUT */, int *present, lode_json_err *err);
/* Arrays and objects: *out is a borrowed reference into obj. */
lode_status lode_json_get_array(const json_t *obj, const char *key, const char *field, int required,
                                json_t **out /* OUT */, int *present, lode_json_err *err);
lode_status lode_json_get_object(const json_t *obj, const char *key, const char *field,
                                 int required, json_t **out /* OUT */, int *present,
                                 lode_json_err *err);

/* The JSON type's name as a message would say it ("string", "array", "null"...). */
const char *lode_json_type_name(const json_t *v);

/* Serializes v compactly (keys in insertion order, UTF-8 unescaped) and appends it to b.
 * Returns LODE_ERR_NOMEM on allocation failure or when b's bound is reached. */
lode_status lode_json_append(lode_buf *b, const json_t *v);

#endif
