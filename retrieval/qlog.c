/*
 * qlog.c: the question log (see qlog.h). The log row is one INSERT,
 * atomic on its own; its JSON columns hold only numbers, written here directly.
 */
#include "retrieval/qlog.h"
#include "retrieval/store_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int utf8_ok(const char *p)
{
    return p && lode_utf8_valid_prefix(p, strlen(p)) == strlen(p);
}

static double finite_or_zero(double x)
{
    return isfinite(x) ? x : 0;
}

lode_status ret_qlog_add(ret_store *s, const ret_qlog *q, int64_t *id)
{
    lode_buf hits = LODE_BUF_INIT, cited = LODE_BUF_INIT;
    sqlite3_stmt *ins = NULL;
    lode_status st = LODE_OK;
    if (!q || !q->question || !q->answer || (q->n_hits && !q->hits) || (q->n_cited && !q->cited))
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID,
                           "question log: a question and an answer are required");
    if (!utf8_ok(q->question) || !utf8_ok(q->answer) || (q->mode && !utf8_ok(q->mode)) ||
        (q->finish && !utf8_ok(q->finish)) || (q->model && !utf8_ok(q->model)))
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_UTF8,
                           "question log: text is not valid UTF-8");
    st = lode_buf_putc(&hits, '[');
    for (size_t i = 0; !st && i < q->n_hits; i++) {
        char n[16] = "null";
        if (q->hits[i].n > 0) snprintf(n, sizeof n, "%d", q->hits[i].n);
        st = lode_buf_printf(&hits, "%s{\"chunk_id\":%lld,\"score\":%.6g,\"n\":%s}", i ? "," : "",
                             (long long)q->hits[i].chunk_id, finite_or_zero(q->hits[i].score), n);
    }
    if (!st) st = lode_buf_putc(&hits, ']');
    if (!st) st = lode_buf_putc(&cited, '[');
    for (size_t i = 0; !st && i < q->n_cited; i++)
        st = lode_buf_printf(&cited, "%s%lld", i ? "," : "", (long long)q->cited[i]);
    if (!st) st = lode_buf_putc(&cited, ']');
    if (st) {
        st = lode_seterr(s->err, sizeof s->err, st, "question log: out of memory");
        goto out;
    }
    int rc = sqlite3_prepare_v2(
        s->db,
        "INSERT INTO questions(created_at, question, mode, k, retrieved, answer, cited, finish, "
        "model, prompt_tokens, answer_tokens, retrieve_ms, prompt_ms, prefill_ms, decode_ms, "
        "total_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        -1, &ins, NULL);
    if (rc != SQLITE_OK) {
        st = ret_store_dberr(s, rc, "question log");
        goto out;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sqlite3_bind_double(ins, 1, (double)ts.tv_sec + ts.tv_nsec / 1e9);
    sqlite3_bind_text(ins, 2, q->question, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 3, q->mode ? q->mode : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(ins, 4, q->k);
    sqlite3_bind_text(ins, 5, hits.data, (int)hits.len, SQLITE_STATIC);
    sqlite3_bind_text(ins, 6, q->answer, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 7, cited.data, (int)cited.len, SQLITE_STATIC);
    sqlite3_bind_text(ins, 8, q->finish ? q->finish : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 9, q->model ? q->model : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(ins, 10, q->prompt_tokens);
    sqlite3_bind_int(ins, 11, q->answer_tokens);
    sqlite3_bind_double(ins, 12, finite_or_zero(q->retrieve_ms));
    sqlite3_bind_double(ins, 13, finite_or_zero(q->prompt_ms));
    sqlite3_bind_double(ins, 14, finite_or_zero(q->prefill_ms));
    sqlite3_bind_double(ins, 15, finite_or_zero(q->decode_ms));
    sqlite3_bind_double(ins, 16, finite_or_zero(q->total_ms));
    rc = sqlite3_step(ins);
    if (rc != SQLITE_DONE) {
        st = ret_store_dberr(s, rc, "question log");
        goto out;
    }
    if (id) *id = sqlite3_last_insert_rowid(s->db);
out:
    sqlite3_finalize(ins);
    lode_buf_free(&hits);
    lode_buf_free(&cited);
    return st;
}
