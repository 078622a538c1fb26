/*
 * evalset.c: parsing and validation of one line of a retrieval evaluation set (see
 * evalset.h).
 */
#include "retrieval/evalset.h"

#include "common/lode.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

char *ret_eval_normalize(const char *s)
{
    size_t n = strlen(s), j = 0;
    char *o = lode_malloc(n + 1);
    if (!o) return NULL;
    int space = 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isspace(c)) {
            if (!space) o[j++] = ' ';
            space = 1;
        } else {
            o[j++] = (char)tolower(c);
            space = 0;
        }
    }
    while (j > 0 && o[j - 1] == ' ') j--;
    o[j] = 0;
    return o;
}

/* Reads the string array key of obj into q's targets. Returns 0, or -1 with msg set. */
static int read_targets(json_t *obj, const char *key, ret_evalq *q, char *msg, size_t msglen)
{
    json_t *a = json_object_get(obj, key);
    if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > RET_EVAL_MAX_TARGETS) {
        snprintf(msg, msglen, "\"%s\" must be an array of 1 to %d strings", key,
                 RET_EVAL_MAX_TARGETS);
        return -1;
    }
    q->targets = lode_calloc(json_array_size(a), sizeof *q->targets);
    if (!q->targets) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
        const char *v = json_string_value(json_array_get(a, i));
        if (!v || !*v) {
            snprintf(msg, msglen, "\"%s\"[%zu] must be a non-empty string", key, i);
            return -1;
        }
        char *t = q->by_answer ? ret_eval_normalize(v) : lode_strdup(v);
        if (!t || (q->by_answer && !*t)) {
            lode_free(t);
            snprintf(msg, msglen, t ? "\"%s\"[%zu] is only spaces" : "out of memory", key, i);
            return -1;
        }
        q->targets[q->n_targets++] = t;
    }
    return 0;
}

int ret_evalq_parse(const char *line, size_t len, ret_evalq *q, char *msg, size_t msglen)
{
    json_error_t je;
    json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    int rc = -1;
    if (!obj) {
        snprintf(msg, msglen, "column %d: %s", je.column, je.text);
        return -1;
    }
    if (!json_is_object(obj)) {
        snprintf(msg, msglen, "not a JSON object");
        goto out;
    }
    const char *query = json_string_value(json_object_get(obj, "query"));
    if (!query || !*query) {
        snprintf(msg, msglen, "\"query\" must be a non-empty string");
        goto out;
    }
    json_t *id = json_object_get(obj, "id");
    if (id && !json_is_null(id) && !json_is_string(id) && !json_is_integer(id)) {
        snprintf(msg, msglen, "\"id\" must be a string or an integer");
        goto out;
    }
    char idbuf[32];
    if (json_is_integer(id))
        snprintf(idbuf, sizeof idbuf, "%lld", (long long)json_integer_value(id));
    const char *ids = json_is_string(id) ? json_string_value(id) : json_is_integer(id) ? idbuf : "";
    q->query = lode_strdup(query);
    q->id = lode_strdup(ids);
    if (!q->query || !q->id) {
        snprintf(msg, msglen, "out of memory");
        goto out;
    }
    if (json_object_get(obj, "relevant")) {
        if (read_targets(obj, "relevant", q, msg, msglen)) goto out;
    } else if (json_object_get(obj, "answers")) {
        q->by_answer = 1;
        if (read_targets(obj, "answers", q, msg, msglen)) goto out;
    } else {
        snprintf(msg, msglen, "needs \"relevant\" (documents) or \"answers\" (strings)");
        goto out;
    }
    rc = 0;
out:
    json_decref(obj);
    return rc;
}

void ret_evalq_free(ret_evalq *q)
{
    lode_free(q->id);
    lode_free(q->query);
    for (size_t i = 0; i < q->n_targets; i++) lode_free(q->targets[i]);
    lode_free(q->targets);
}
