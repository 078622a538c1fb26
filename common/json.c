/*
 * json.c: jansson with precise errors. Parsing reports line, column and byte position;
 * the typed getters report the field path, the expected type and the type or value seen,
 * which is what an API user needs to fix a request.
 */
#include "common/json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void lode_json_err_clear(lode_json_err *err)
{
    if (!err) return;
    err->message[0] = 0;
    err->field[0] = 0;
    err->line = 0;
    err->column = 0;
    err->position = -1;
}

lode_status lode_json_err_set(lode_json_err *err, lode_status st, const char *field,
                              const char *fmt, ...)
{
    if (!err) return st;
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return st;
}

lode_status lode_json_parse(const char *buf, size_t len, json_t **out, lode_json_err *err)
{
    json_error_t je;
    lode_json_err_clear(err);
    *out = NULL;
    if (!buf) buf = "";
    json_t *v = json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        if (err) {
            err->line = je.line;
            err->column = je.column;
            err->position = je.position;
            snprintf(err->message, sizeof err->message,
                     "malformed JSON at line %d, column %d (byte %d): %s", je.line, je.column,
                     je.position, je.text);
        }
        return LODE_ERR_FORMAT;
    }
    *out = v;
    return LODE_OK;
}

const char *lode_json_type_name(const json_t *v)
{
    if (!v) return "nothing";
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

/* Looks the key up; absent or null: LODE_OK with *v NULL, or an error when required. */
static lode_status lookup(const json_t *obj, const char *key, const char *field, int required,
                          json_t **v, int *present, lode_json_err *err)
{
    *v = NULL;
    if (present) *present = 0;
    if (!json_is_object(obj))
        return lode_json_err_set(err, LODE_ERR_INVALID, "", "expected a JSON object, got %s",
                                 lode_json_type_name(obj));
    json_t *x = json_object_get(obj, key);
    if (!x || json_is_null(x)) {
        if (required)
            return lode_json_err_set(err, LODE_ERR_INVALID, field ? field : key,
                                     "missing required parameter '%s'", field ? field : key);
        return LODE_OK;
    }
    *v = x;
    return LODE_OK;
}

static lode_status wrong_type(lode_json_err *err, const char *key, const char *field,
                              const char *want, const json_t *got)
{
    const char *f = field ? field : key;
    return lode_json_err_set(err, LODE_ERR_INVALID, f, "'%s' must be %s, got %s", f, want,
                             lode_json_type_name(got));
}

lode_status lode_json_get_string(const json_t *obj, const char *key, const char *field,
                                 int required, const char **out, int *present, lode_json_err *err)
{
    json_t *v;
    lode_status st = lookup(obj, key, field, required, &v, present, err);
    if (st || !v) return st;
    if (!json_is_string(v)) return wrong_type(err, key, field, "a string", v);
    *out = json_string_value(v);
    if (present) *present = 1;
    return LODE_OK;
}

lode_status lode_json_get_int(const json_t *obj, const char *key, const char *field, int required,
                              int64_t min, int64_t max, int64_t *out, int *present,
                              lode_json_err *err)
{
    json_t *v;
    lode_status st = lookup(obj, key, field, required, &v, present, err);
    if (st || !v) return st;
    const char *f = field ? field : key;
    int64_t x;
    if (json_is_integer(v)) {
        x = (int64_t)json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (int64_t)json_real_value(v); /* 16.0 is an integer to most clients */
    } else {
        return wrong_type(err, key, field, "an integer", v);
    }
    if (x < min || x > max)
        return lode_json_err_set(err, LODE_ERR_INVALID, f,
                                 "'%s' must be between %lld and %lld, got %lld", f, (long long)min,
                                 (long long)max, (long long)x);
    *out = x;
    if (present) *present = 1;
    return LODE_OK;
}

lode_status lode_json_get_number(const json_t *obj, const char *key, const char *field,
                                 int required, double min, double max, double *out, int *present,
                                 lode_json_err *err)
{
    json_t *v;
    lode_status st = lookup(obj, key, field, required, &v, present, err);
    if (st || !v) return st;
    const char *f = field ? field : key;
    if (!json_is_number(v)) return wrong_type(err, key, field, "a number", v);
    double x = json_number_value(v);
    if (!(x >= min && x <= max))
        return lode_json_err_set(err, LODE_ERR_INVALID, f, "'%s' must be between %g and %g, got %g",
                                 f, min, max, x);
    *out = x;
    if (present) *present = 1;
    return LODE_OK;
}

lode_status lode_json_get_bool(const json_t *obj, const char *key, const char *field, int required,
                               int *out, int *present, lode_json_err *err)
{
    json_t *v;
    lode_status st = lookup(obj, key, field, required, &v, present, err);
    if (st || !v) return st;
    if (!json_is_boolean(v)) return wrong_type(err, key, field, "a boolean", v);
    *out = json_is_true(v);
    if (present) *present = 1;
    return LODE_OK;
}

lode_status lode_json_get_array(const json_t *obj, const char *key, const char *field, int required,
                                json_t **out, int *present, lode_json_err *err)
{
    json_t *v;
    lode_status st = lookup(obj, key, field, required, &v, present, err);
    if (st || !v) return st;
    if (!json_is_array(v)) return wrong_type(err, key, field, "an array", v);
    *out = v;
    if (present) *present = 1;
    return LODE_OK;
}

lode_status lode_json_get_object(const json_t *obj, const char *key, const char *field,
                                 int required, json_t **out, int *present, lode_json_err *err)
{
    json_t *v;
    lode_status st = lookup(obj, key, field, required, &v, present, err);
    if (st || !v) return st;
    if (!json_is_object(v)) return wrong_type(err, key, field, "an object", v);
    *out = v;
    if (present) *present = 1;
    return LODE_OK;
}

static int dump_cb(const char *p, size_t n, void *data)
{
    return lode_buf_append(data, p, n) == LODE_OK ? 0 : -1;
}

lode_status lode_json_append(lode_buf *b, const json_t *v)
{
    if (!v) return LODE_ERR_INVALID;
    return json_dump_callback(v, dump_cb, b,
                              JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(12)) == 0
               ? LODE_OK
               : LODE_ERR_NOMEM;
}
