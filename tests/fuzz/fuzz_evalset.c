/* fuzz_evalset.c: libFuzzer target for a line of a retrieval evaluation set (the JSONL
 * file of `lode eval retrieval`): any bytes must parse into a query with 1 to
 * RET_EVAL_MAX_TARGETS non-empty targets or be refused with a message, never crash or
 * leak; answers come back normalized (no upper-case ASCII, no runs of spaces). */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "retrieval/evalset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ret_evalq q;
    memset(&q, 0, sizeof q);
    char msg[256] = "";
    if (ret_evalq_parse((const char *)data, size, &q, msg, sizeof msg) == 0) {
        if (!q.query || !*q.query || !q.id) abort();
        if (q.n_targets < 1 || q.n_targets > RET_EVAL_MAX_TARGETS) abort();
        for (size_t i = 0; i < q.n_targets; i++) {
            const char *t = q.targets[i];
            if (!t || !*t) abort();
            if (q.by_answer) {
                size_t n = strlen(t);
                if (t[0] == ' ' || t[n - 1] == ' ' || strstr(t, "  ")) abort();
                for (size_t k = 0; k < n; k++)
                    if (isupper((unsigned char)t[k]) ||
                        (isspace((unsigned char)t[k]) && t[k] != ' '))
                        abort();
            }
        }
    } else if (!msg[0]) {
        abort(); /* a refusal says why */
    }
    ret_evalq_free(&q);
    return 0;
}
