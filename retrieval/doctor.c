/*
 * doctor.c: the store's consistency checks and repairs of doctor.h, each a few SQL
 * statements or a look at the FAISS file through vindex.h and dense.h.
 */
#include "retrieval/doctor.h"

#include "engine/bert.h"
#include "retrieval/dense.h"
#include "retrieval/store_int.h"
#include "retrieval/vindex.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

typedef struct doc_ctx {
    ret_store *s;
    const ret_doctor_opts *o;
    ret_doctor_report *r;
} doc_ctx;

static void line(doc_ctx *c, int kind, const char *check, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void line(doc_ctx *c, int kind, const char *check, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (kind == RET_DOCTOR_PROBLEM) c->r->problems++;
    if (kind == RET_DOCTOR_NOTE) c->r->notes++;
    if (kind == RET_DOCTOR_REPAIRED) c->r->repaired++;
    if (c->o->on_line) c->o->on_line(c->o->ctx, kind, check, msg);
}

/* The first column of the first row of sql as an integer (-1 on error, with *rc). */
static int64_t one_int(ret_store *s, const char *sql, const char *bind, int *rc)
{
    sqlite3_stmt *q = NULL;
    int64_t v = -1;
    *rc = sqlite3_prepare_v2(s->db, sql, -1, &q, NULL);
    if (*rc == SQLITE_OK) {
        if (bind) sqlite3_bind_text(q, 1, bind, -1, SQLITE_STATIC);
        *rc = sqlite3_step(q);
        if (*rc == SQLITE_ROW) {
            v = sqlite3_column_int64(q, 0);
            *rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(q);
    return v;
}

static lode_status exec1(ret_store *s, const char *sql, const char *bind, int64_t *changed)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &q, NULL);
    if (rc == SQLITE_OK) {
        if (bind) sqlite3_bind_text(q, 1, bind, -1, SQLITE_STATIC);
        rc = sqlite3_step(q);
        if (rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    if (changed) *changed = sqlite3_changes64(s->db);
    return rc == SQLITE_OK ? LODE_OK : ret_store_dberr(s, rc, sql);
}

static lode_status check_sqlite(doc_ctx *c)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(c->s->db, "PRAGMA integrity_check(20)", -1, &q, NULL);
    if (rc != SQLITE_OK) return ret_store_dberr(c->s, rc, "integrity_check");
    lode_buf msg = LODE_BUF_INIT;
    int ok = 1;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(q, 0);
        if (t && !strcmp(t, "ok")) continue;
        ok = 0;
        lode_buf_printf(&msg, "%s%s", msg.len ? "; " : "", t ? t : "?");
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE && (rc & 0xff) != SQLITE_CORRUPT && (rc & 0xff) != SQLITE_NOTADB) {
        lode_buf_free(&msg);
        return ret_store_dberr(c->s, rc, "integrity_check");
    }
    if (rc != SQLITE_DONE) ok = 0;
    if (ok)
        line(c, RET_DOCTOR_OK, "sqlite", "integrity_check: ok");
    else {
        line(c, RET_DOCTOR_PROBLEM, "sqlite",
             "integrity_check: %s (the file is damaged: restore a backup, or `sqlite3 DB "
             ".recover` into a new file, or re-ingest into a new store)",
             msg.data ? msg.data : sqlite3_errstr(rc));
        c->r->unrepaired++;
    }
    lode_buf_free(&msg);
    return LODE_OK;
}

static lode_status check_fts(doc_ctx *c)
{
    int rc = sqlite3_exec(c->s->db,
                          "INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)",
                          NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        line(c, RET_DOCTOR_OK, "fts", "the full-text index matches the chunks");
        return LODE_OK;
    }
    if ((rc & 0xff) != SQLITE_CORRUPT)
        return ret_store_dberr(c->s, rc, "checking the full-text index");
    if (!c->o->repair) {
        line(c, RET_DOCTOR_PROBLEM, "fts", "the full-text index does not match the chunks");
        c->r->unrepaired++;
        return LODE_OK;
    }
    c->r->problems++;
    lode_status st = ret_store_begin(c->s);
    if (!st) st = exec1(c->s, "INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')", NULL, NULL);
    st = st ? (ret_store_rollback(c->s), st) : ret_store_commit(c->s);
    if (st) return st;
    line(c, RET_DOCTOR_REPAIRED, "fts", "the full-text index did not match the chunks: rebuilt");
    return LODE_OK;
}

/* Counts rows by count_sql; when any, reports what, and with repair deletes them by
 * delete_sql. */
static lode_status stray(doc_ctx *c, const char *check, const char *count_sql,
                         const char *delete_sql, const char *bind, const char *what)
{
    int rc;
    int64_t n = one_int(c->s, count_sql, bind, &rc);
    if (rc != SQLITE_OK) return ret_store_dberr(c->s, rc, count_sql);
    if (n == 0) return LODE_OK;
    if (!c->o->repair) {
        line(c, RET_DOCTOR_PROBLEM, check, "%lld %s", (long long)n, what);
        c->r->unrepaired++;
        return LODE_OK;
    }
    c->r->problems++;
    lode_status st = ret_store_begin(c->s);
    if (!st) st = exec1(c->s, delete_sql, bind, NULL);
    st = st ? (ret_store_rollback(c->s), st) : ret_store_commit(c->s);
    if (st) return st;
    line(c, RET_DOCTOR_REPAIRED, check, "%lld %s: deleted", (long long)n, what);
    return LODE_OK;
}

static lode_status check_vectors(doc_ctx *c, const ret_embed_info *info, int have)
{
    lode_status st = stray(c, "vectors",
                           "SELECT count(*) FROM vectors v WHERE NOT EXISTS "
                           "(SELECT 1 FROM chunks c WHERE c.id = v.chunk_id)",
                           "DELETE FROM vectors WHERE chunk_id NOT IN (SELECT id FROM chunks)",
                           NULL, "vectors of chunks that no longer exist");
    if (st) return st;
    if (!have) {
        st = stray(c, "vectors", "SELECT count(*) FROM vectors", "DELETE FROM vectors", NULL,
                   "vectors in a store that has no embedding model set");
        if (!st) line(c, RET_DOCTOR_OK, "vectors", "no embedding model: a lexical-only store");
        return st;
    }
    char dimq[256], dimd[256];
    snprintf(dimq, sizeof dimq,
             "SELECT count(*) FROM vectors WHERE model <> ?1 OR dim <> %d OR length(vec) <> %d",
             info->dim, 4 * info->dim);
    snprintf(dimd, sizeof dimd,
             "DELETE FROM vectors WHERE model <> ?1 OR dim <> %d OR length(vec) <> %d", info->dim,
             4 * info->dim);
    if ((st = stray(c, "vectors", dimq, dimd, info->model,
                    "vectors of another model or dimension than the store's")))
        return st;
    int64_t nvec = 0, missing = 0;
    if ((st = ret_store_vector_counts(c->s, info->model, &nvec, &missing))) return st;
    if (missing == 0) {
        line(c, RET_DOCTOR_OK, "vectors", "%lld vectors of %s (%d dimensions), one per chunk",
             (long long)nvec, info->model, info->dim);
        return LODE_OK;
    }
    if (!c->o->repair) {
        line(c, RET_DOCTOR_NOTE, "vectors",
             "%lld chunks have no vector yet (an interrupted or lexical-only ingest): `lode "
             "ingest` or `lode doctor --repair` embeds them",
             (long long)missing);
        return LODE_OK;
    }
    c->r->notes++;
    struct eng_bert *m = c->o->model;
    eng_bert *own = NULL;
    char err[512];
    if (!m) {
        const char *path = c->o->model_path ? c->o->model_path : info->path;
        eng_bert_opts bo = {0};
        if ((st = eng_bert_load(path, &bo, &own, err, sizeof err))) {
            line(c, RET_DOCTOR_PROBLEM, "vectors",
                 "%lld chunks have no vector, and the model cannot be loaded from %s: %s",
                 (long long)missing, path, err);
            c->r->unrepaired++;
            return LODE_OK;
        }
        m = own;
    }
    int64_t done = 0;
    st = ret_vectors_fill(c->s, m, NULL, NULL, NULL, &done);
    eng_bert_destroy(own);
    if (st) return st;
    line(c, RET_DOCTOR_REPAIRED, "vectors", "%lld chunks had no vector: embedded", (long long)done);
    return LODE_OK;
}

static lode_status check_index(doc_ctx *c, const ret_embed_info *info)
{
    char path[4200];
    const char *db = sqlite3_db_filename(c->s->db, "main");
    if (c->o->index_path)
        snprintf(path, sizeof path, "%s", c->o->index_path);
    else if (db && *db)
        snprintf(path, sizeof path, "%.4090s.faiss", db);
    else
        return LODE_OK;
    ret_store_counts counts;
    lode_status st = ret_store_get_counts(c->s, &counts);
    if (st) return st;
    int64_t nvec = 0;
    if ((st = ret_store_vector_counts(c->s, info->model, &nvec, NULL))) return st;

    /* the file as it is */
    ret_vindex_opts vo = {.dim = info->dim, .tag = ret_dense_model_tag(info->model)};
    ret_vindex *vi = NULL;
    int64_t seq = 0;
    char err[512];
    lode_status ls = ret_vindex_load(path, &vo, &vi, &seq, err, sizeof err);
    ret_vindex_destroy(vi);
    int fine = 0;
    if (ls == LODE_ERR_NOTFOUND) {
        if (nvec == 0) {
            line(c, RET_DOCTOR_OK, "index", "no vectors and no index file");
            return LODE_OK;
        }
        line(c, RET_DOCTOR_NOTE, "index", "no index file %s yet (it is built on the next open)",
             path);
    } else if (ls) {
        line(c, RET_DOCTOR_PROBLEM, "index", "%s", err);
    } else if (seq > counts.change_seq) {
        line(c, RET_DOCTOR_PROBLEM, "index",
             "%s reflects change %lld, but the store's change log ends at %lld (the file "
             "belongs to another store or an older copy of this one)",
             path, (long long)seq, (long long)counts.change_seq);
    } else if (seq < counts.change_seq) {
        line(c, RET_DOCTOR_NOTE, "index",
             "%s reflects change %lld of %lld (caught up on every open)", path, (long long)seq,
             (long long)counts.change_seq);
    } else {
        fine = 1;
    }
    int bad_file = ls && ls != LODE_ERR_NOTFOUND;
    if (bad_file || (!ls && seq > counts.change_seq)) {
        if (!c->o->repair) c->r->unrepaired++;
    }

    /* caught up (in memory unless repairing), it must hold exactly the store's vectors */
    ret_dense *d = NULL;
    ret_dense_opts dopts = {.index_only = 1, .no_save = !c->o->repair, .index_path = path};
    if ((st = ret_dense_open(c->s, &dopts, &d, err, sizeof err))) {
        line(c, RET_DOCTOR_PROBLEM, "index", "cannot open the index: %s", err);
        c->r->unrepaired++;
        return LODE_OK;
    }
    int64_t have = ret_dense_count(d), absent = 0;
    sqlite3_stmt *q = NULL;
    int rc =
        sqlite3_prepare_v2(c->s->db, "SELECT chunk_id FROM vectors WHERE model = ?1", -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(q, 1, info->model, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(q)) == SQLITE_ROW)
            if (!ret_dense_contains(d, sqlite3_column_int64(q, 0))) absent++;
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) {
        ret_dense_close(d);
        return ret_store_dberr(c->s, rc, "reading vector ids");
    }
    if (have != nvec || absent) {
        line(c, RET_DOCTOR_PROBLEM, "index",
             "the caught-up index holds %lld vectors, the store %lld (%lld missing)",
             (long long)have, (long long)nvec, (long long)absent);
        if (c->o->repair) {
            if ((st = ret_dense_rebuild(d, c->s))) {
                ret_dense_close(d);
                return st;
            }
            line(c, RET_DOCTOR_REPAIRED, "index", "rebuilt from the store's vectors");
        } else {
            c->r->unrepaired++;
        }
    } else if (c->o->repair && !fine) {
        if (bad_file || (!ls && seq > counts.change_seq)) {
            if ((st = ret_dense_rebuild(d, c->s))) {
                ret_dense_close(d);
                return st;
            }
        } else if ((st = ret_dense_save(d))) {
            ret_dense_close(d);
            return st;
        }
        line(c, RET_DOCTOR_REPAIRED, "index", "%s now reflects change %lld (%lld vectors)", path,
             (long long)ret_dense_seq(d), (long long)have);
    } else if (fine) {
        line(c, RET_DOCTOR_OK, "index", "%s: %lld vectors (%s), at change %lld", path,
             (long long)have, ret_dense_is_approx(d) ? "approximate" : "flat", (long long)seq);
    }
    ret_dense_close(d);
    return LODE_OK;
}

lode_status ret_doctor_run(ret_store *s, const ret_doctor_opts *o, ret_doctor_report *out)
{
    ret_doctor_opts defaults = {0};
    if (!o) o = &defaults;
    memset(out, 0, sizeof *out);
    doc_ctx c = {s, o, out};
    lode_status st = check_sqlite(&c);
    if (st || out->problems) return st; /* a damaged file: the other checks would mislead */
    if ((st = check_fts(&c))) return st;
    ret_embed_info info;
    lode_status es = ret_store_embed_get(s, &info);
    if (es && es != LODE_ERR_NOTFOUND) return es;
    if ((st = check_vectors(&c, &info, es == LODE_OK))) return st;
    if (es == LODE_OK && (st = check_index(&c, &info))) return st;
    return LODE_OK;
}
