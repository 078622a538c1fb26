/*
 * dense.c: the store's embedding setting and vectors, and the FAISS index kept consistent
 * with them (dense.h): loading or rebuilding the index file, catching it up from the
 * change log, and embedding chunks that have no vector yet.
 */
#include "retrieval/dense.h"

#include "engine/bert.h"
#include "engine/embedder.h"
#include "retrieval/store_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILL_BATCH  64   /* chunks embedded and committed together by ret_vectors_fill */
#define ADD_BATCH   1024 /* vectors added to the index at once when rebuilding */
#define MAX_CHANGES 1000 /* change rows read at once when catching up */

struct ret_dense {
    struct eng_bert *bert;
    int own_bert;
    struct eng_embedder *emb; /* when set, embedding goes through it (under mu) */
    ret_vindex *vi;
    ret_vindex_opts vo;
    char factory[128];
    char model[128];
    int dim;
    char index_path[4096];
    int no_save;
    int64_t seq;           /* the change sequence vi reflects */
    int64_t vv;            /* the store's vectors_version vi reflects */
    int dirty;             /* vi changed since it was saved */
    sqlite3 *seen_db;      /* the connection of the last sync ... */
    int64_t seen_version;  /* ... its PRAGMA data_version then ... */
    int64_t seen_changes;  /* ... and sqlite3_total_changes64 */
    pthread_mutex_t mu;    /* catching up and embedding */
    pthread_rwlock_t swap; /* vi is replaced (write) / used (read) */
    char note[512];
    char err[1024];
};

/* ---- helpers --------------------------------------------------------------------------- */
uint32_t ret_dense_model_tag(const char *model)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)(model ? model : ""); *p; p++)
        h = (h ^ *p) * 16777619u;
    return h ? h : 1;
}

/* Begins a transaction of kind ("BEGIN" or "BEGIN IMMEDIATE") unless the caller has one
 * open; *own says whether this call must end it. */
static lode_status txn_open(ret_store *s, const char *kind, int *own)
{
    *own = 0;
    if (!sqlite3_get_autocommit(s->db)) return LODE_OK;
    int rc = sqlite3_exec(s->db, kind, NULL, NULL, NULL);
    if (rc != SQLITE_OK) return ret_store_dberr(s, rc, "starting a transaction");
    *own = 1;
    return LODE_OK;
}

static lode_status txn_close(ret_store *s, int own, lode_status st)
{
    if (!own) return st;
    if (st == LODE_OK) {
        int rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
        if (rc == SQLITE_OK) return LODE_OK;
        st = ret_store_dberr(s, rc, "committing");
    }
    if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

/* ---- settings and vectors ---------------------------------------------------------------- */
lode_status ret_store_embed_get(ret_store *s, ret_embed_info *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_EMBED_GET,
                                     "SELECT key, value FROM settings WHERE key IN "
                                     "('embed_model', 'embed_dim', 'embed_path')");
    if (!q) return ret_stmt_failed(s);
    int rc, have = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(q, 0);
        const char *v = (const char *)sqlite3_column_text(q, 1);
        if (!k || !v) continue;
        if (!strcmp(k, "embed_model")) {
            snprintf(out->model, sizeof out->model, "%s", v);
            have = 1;
        } else if (!strcmp(k, "embed_dim")) {
            out->dim = atoi(v);
        } else if (!strcmp(k, "embed_path")) {
            snprintf(out->path, sizeof out->path, "%s", v);
        }
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) return ret_store_dberr(s, rc, "reading the embedding setting");
    if (!have) return LODE_ERR_NOTFOUND;
    if (out->dim <= 0)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_FORMAT,
                           "the store's embedding setting has no valid dimension");
    return LODE_OK;
}

static lode_status setting_put(ret_store *s, const char *key, const char *value)
{
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_SETTING_PUT,
                                     "INSERT OR REPLACE INTO settings(key, value) VALUES (?1, ?2)");
    if (!q) return ret_stmt_failed(s);
    sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, value, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? LODE_OK : ret_store_dberr(s, rc, "writing a setting");
}

/* Vectors written without a change row (fills, repairs, a model change) bump the setting
 * vectors_version, so an index knows to look at the vector count again. */
static lode_status bump_vectors_version(ret_store *s)
{
    return sqlite3_exec(s->db,
                        "INSERT INTO settings(key, value) VALUES ('vectors_version', 1) ON "
                        "CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                        NULL, NULL, NULL) == SQLITE_OK
               ? LODE_OK
               : ret_store_dberr(s, sqlite3_errcode(s->db), "bumping vectors_version");
}

/* The latest change's sequence and the vectors_version, both cheap to read. */
static lode_status read_state(ret_store *s, int64_t *seq, int64_t *vv)
{
    sqlite3_stmt *q = ret_store_stmt(
        s, RET_STMT_DENSE_STATE,
        "SELECT (SELECT coalesce(max(seq), 0) FROM changes), coalesce((SELECT CAST(value AS "
        "INTEGER) FROM settings WHERE key = 'vectors_version'), 0)");
    if (!q) return ret_stmt_failed(s);
    int rc = sqlite3_step(q);
    lode_status st = LODE_OK;
    if (rc == SQLITE_ROW) {
        *seq = sqlite3_column_int64(q, 0);
        *vv = sqlite3_column_int64(q, 1);
    } else {
        st = ret_store_dberr(s, rc, "reading the change sequence");
    }
    sqlite3_reset(q);
    return st;
}

lode_status ret_store_embed_set(ret_store *s, const char *model, int dim, const char *path,
                                int64_t *dropped)
{
    if (dropped) *dropped = 0;
    if (!model || !*model || dim <= 0 || strlen(model) >= sizeof(((ret_embed_info *)0)->model))
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID,
                           "embed_set: a model name and a positive dimension are needed");
    int own = 0;
    lode_status st = txn_open(s, "BEGIN IMMEDIATE", &own);
    if (st) return st;
    char num[32];
    snprintf(num, sizeof num, "%d", dim);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, "DELETE FROM vectors WHERE model <> ?1 OR dim <> ?2", -1, &q,
                                NULL);
    if (rc != SQLITE_OK) {
        st = ret_store_dberr(s, rc, "dropping other models' vectors");
        goto out;
    }
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 2, dim);
    rc = sqlite3_step(q);
    if (rc != SQLITE_DONE) {
        st = ret_store_dberr(s, rc, "dropping other models' vectors");
        goto out;
    }
    if (dropped) *dropped = sqlite3_changes64(s->db);
    if ((st = setting_put(s, "embed_model", model)) || (st = setting_put(s, "embed_dim", num)) ||
        (st = setting_put(s, "embed_path", path ? path : "")) || (st = bump_vectors_version(s)))
        goto out;
out:
    sqlite3_finalize(q);
    return txn_close(s, own, st);
}

lode_status ret_store_index_kind_get(ret_store *s, int64_t *threshold, char *factory,
                                     size_t factory_len)
{
    *threshold = 0;
    if (factory_len) factory[0] = 0;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "SELECT key, value FROM settings WHERE key IN "
                                "('index_approx_threshold', 'index_factory')",
                                -1, &q, NULL);
    if (rc != SQLITE_OK) return ret_store_dberr(s, rc, "reading the index settings");
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(q, 0);
        const char *v = (const char *)sqlite3_column_text(q, 1);
        if (!k || !v) continue;
        if (!strcmp(k, "index_approx_threshold"))
            *threshold = strtoll(v, NULL, 10);
        else if (factory_len)
            snprintf(factory, factory_len, "%s", v);
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? LODE_OK : ret_store_dberr(s, rc, "reading the index settings");
}

lode_status ret_store_index_kind_set(ret_store *s, int64_t threshold, const char *factory)
{
    int own = 0;
    lode_status st = txn_open(s, "BEGIN IMMEDIATE", &own);
    if (st) return st;
    char num[32];
    snprintf(num, sizeof num, "%lld", (long long)threshold);
    if (threshold) st = setting_put(s, "index_approx_threshold", num);
    if (!st && factory && *factory) st = setting_put(s, "index_factory", factory);
    return txn_close(s, own, st);
}

lode_status ret_store_vectors_put(ret_store *s, const char *model, int dim, size_t n,
                                  const int64_t *ids, const float *vecs, size_t *written)
{
    if (written) *written = 0;
    if (!model || dim <= 0 || (n && (!ids || !vecs)))
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID, "vectors_put: bad arguments");
    int own = 0;
    lode_status st = txn_open(s, "BEGIN IMMEDIATE", &own);
    if (st) return st;
    /* the SELECT skips chunks deleted meanwhile instead of failing on the foreign key */
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_VECTOR_PUT,
                                     "INSERT OR REPLACE INTO vectors(chunk_id, model, dim, vec) "
                                     "SELECT id, ?2, ?3, ?4 FROM chunks WHERE id = ?1");
    if (!q) {
        st = ret_stmt_failed(s);
        goto out;
    }
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(q, 1, ids[i]);
        sqlite3_bind_text(q, 2, model, -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 3, dim);
        sqlite3_bind_blob(q, 4, vecs + i * (size_t)dim, (int)(sizeof(float) * (size_t)dim),
                          SQLITE_STATIC);
        int rc = sqlite3_step(q);
        sqlite3_reset(q);
        if (rc != SQLITE_DONE) {
            st = ret_store_dberr(s, rc, "writing a vector");
            goto out;
        }
        w += (size_t)sqlite3_changes(s->db);
    }
    if (w && (st = bump_vectors_version(s))) goto out;
    if (written) *written = w;
out:
    return txn_close(s, own, st);
}

lode_status ret_store_doc_vectors_put(ret_store *s, const char *model, int dim, int64_t doc_id,
                                      size_t n, const float *vecs)
{
    if (!model || dim <= 0 || (n && !vecs))
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID,
                           "doc_vectors_put: bad arguments");
    int own = 0;
    lode_status st = txn_open(s, "BEGIN IMMEDIATE", &own);
    if (st) return st;
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_DOC_VECTOR_PUT,
                                     "INSERT OR REPLACE INTO vectors(chunk_id, model, dim, vec) "
                                     "SELECT id, ?3, ?4, ?5 FROM chunks WHERE document_id = ?1 "
                                     "AND ordinal = ?2");
    if (!q) {
        st = ret_stmt_failed(s);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(q, 1, doc_id);
        sqlite3_bind_int64(q, 2, (int64_t)i);
        sqlite3_bind_text(q, 3, model, -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 4, dim);
        sqlite3_bind_blob(q, 5, vecs + i * (size_t)dim, (int)(sizeof(float) * (size_t)dim),
                          SQLITE_STATIC);
        int rc = sqlite3_step(q);
        sqlite3_reset(q);
        if (rc != SQLITE_DONE) {
            st = ret_store_dberr(s, rc, "writing a vector");
            goto out;
        }
    }
out:
    return txn_close(s, own, st);
}

lode_status ret_store_vector_counts(ret_store *s, const char *model, int64_t *vectors,
                                    int64_t *missing)
{
    /* the missing count visits every chunk: only when asked for */
    sqlite3_stmt *q =
        missing ? ret_store_stmt(s, RET_STMT_VECTOR_COUNTS,
                                 "SELECT (SELECT count(*) FROM vectors WHERE model = ?1), "
                                 "(SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM "
                                 "vectors v WHERE v.chunk_id = c.id AND v.model = ?1))")
                : ret_store_stmt(s, RET_STMT_VECTOR_COUNT,
                                 "SELECT count(*), 0 FROM vectors WHERE model = ?1");
    if (!q) return ret_stmt_failed(s);
    sqlite3_bind_text(q, 1, model ? model : "", -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    lode_status st = LODE_OK;
    if (rc == SQLITE_ROW) {
        if (vectors) *vectors = sqlite3_column_int64(q, 0);
        if (missing) *missing = sqlite3_column_int64(q, 1);
    } else {
        st = ret_store_dberr(s, rc, "counting vectors");
    }
    sqlite3_reset(q);
    return st;
}

lode_status ret_vectors_fill(ret_store *s, struct eng_bert *m, volatile const int *cancel,
                             ret_fill_progress progress, void *ctx, int64_t *embedded)
{
    if (embedded) *embedded = 0;
    ret_embed_info info;
    lode_status st = ret_store_embed_get(s, &info);
    if (st == LODE_ERR_NOTFOUND)
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID,
                           "the store has no embedding model set");
    if (st) return st;
    if (strcmp(info.model, eng_bert_name(m)) || info.dim != eng_bert_dim(m))
        return lode_seterr(s->err, sizeof s->err, LODE_ERR_INVALID,
                           "the store's embedding model is %s (%d), not %s (%d)", info.model,
                           info.dim, eng_bert_name(m), eng_bert_dim(m));
    int64_t total = 0, done = 0, after = 0;
    if ((st = ret_store_vector_counts(s, info.model, NULL, &total))) return st;
    int dim = info.dim;
    int64_t ids[FILL_BATCH];
    char *texts[FILL_BATCH] = {0};
    float *vecs = lode_malloc(sizeof(float) * (size_t)dim * FILL_BATCH);
    if (!vecs) return lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory");
    for (;;) {
        if (cancel && *cancel) break;
        sqlite3_stmt *q = ret_store_stmt(
            s, RET_STMT_UNEMBEDDED,
            "SELECT c.id, c.heading_path, c.text FROM chunks c WHERE c.id > ?2 AND NOT EXISTS "
            "(SELECT 1 FROM vectors v WHERE v.chunk_id = c.id AND v.model = ?1) ORDER BY c.id "
            "LIMIT ?3");
        if (!q) {
            st = ret_stmt_failed(s);
            break;
        }
        sqlite3_bind_text(q, 1, info.model, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, after);
        sqlite3_bind_int(q, 3, FILL_BATCH);
        size_t n = 0;
        int rc;
        while (n < FILL_BATCH && (rc = sqlite3_step(q)) == SQLITE_ROW) {
            ids[n] = sqlite3_column_int64(q, 0);
            lode_buf b = LODE_BUF_INIT;
            if (ret_embed_input(&b, (const char *)sqlite3_column_text(q, 1),
                                (const char *)sqlite3_column_text(q, 2))) {
                lode_buf_free(&b);
                st = lode_seterr(s->err, sizeof s->err, LODE_ERR_NOMEM, "out of memory");
                break;
            }
            texts[n++] = lode_buf_take(&b);
        }
        if (!st && n < FILL_BATCH && rc != SQLITE_DONE)
            st = ret_store_dberr(s, rc, "reading chunks");
        sqlite3_reset(q);
        if (!st && n > 0) {
            after = ids[n - 1];
            if ((st = eng_bert_embed(m, (const char *const *)texts, NULL, n, vecs)))
                lode_seterr(s->err, sizeof s->err, st, "embedding: %s", eng_bert_errmsg(m));
            else
                st = ret_store_vectors_put(s, info.model, dim, n, ids, vecs, NULL);
        }
        for (size_t i = 0; i < n; i++) {
            lode_free(texts[i]);
            texts[i] = NULL;
        }
        if (st || n == 0) break;
        done += (int64_t)n;
        if (embedded) *embedded = done;
        if (progress) progress(ctx, done, total);
    }
    lode_free(vecs);
    return st;
}

lode_status ret_embed_input(lode_buf *b, const char *heading_path, const char *text)
{
    lode_status st = LODE_OK;
    if (heading_path && *heading_path) {
        st = lode_buf_puts(b, heading_path);
        if (!st) st = lode_buf_puts(b, "\n");
    }
    if (!st) st = lode_buf_puts(b, text ? text : "");
    return st;
}

/* ---- the index ------------------------------------------------------------------------- */
static lode_status vec_of(ret_dense *d, ret_store *s, int64_t id, const float **v, int *found)
{
    *found = 0;
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_VECTOR_GET,
                                     "SELECT vec FROM vectors WHERE chunk_id = ?1 AND model = ?2");
    if (!q) return ret_stmt_failed(s);
    sqlite3_bind_int64(q, 1, id);
    sqlite3_bind_text(q, 2, d->model, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_bytes(q, 0) == (int)sizeof(float) * d->dim) {
            *v = sqlite3_column_blob(q, 0);
            *found = 1;
        }
        return LODE_OK; /* the statement stays on the row until the next call resets it */
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? LODE_OK : ret_store_dberr(s, rc, "reading a vector");
}

static lode_status vi_err(ret_dense *d, ret_vindex *vi, lode_status st)
{
    return lode_seterr(d->err, sizeof d->err, st, "%s", ret_vindex_errmsg(vi));
}

/* A new index holding every vector of d's model; *seq gets the change sequence it
 * reflects. Runs inside a read transaction, so the two agree. */
static lode_status build_index(ret_dense *d, ret_store *s, ret_vindex **out, int64_t *seq,
                               int64_t *vv)
{
    *out = NULL;
    ret_vindex *vi = NULL;
    float *buf = NULL;
    int64_t *ids = NULL;
    sqlite3_stmt *q = NULL;
    int own = 0;
    lode_status st = txn_open(s, "BEGIN", &own);
    if (st) return st;
    int64_t at_seq = 0, at_vv = 0;
    if ((st = read_state(s, &at_seq, &at_vv))) goto out;
    if ((st = ret_vindex_create(&d->vo, &vi, d->err, sizeof d->err))) goto out;
    buf = lode_malloc(sizeof(float) * (size_t)d->dim * ADD_BATCH);
    ids = lode_malloc(sizeof(int64_t) * ADD_BATCH);
    if (!buf || !ids) {
        st = lode_seterr(d->err, sizeof d->err, LODE_ERR_NOMEM, "out of memory");
        goto out;
    }
    int rc = sqlite3_prepare_v2(s->db, "SELECT chunk_id, vec FROM vectors WHERE model = ?1", -1, &q,
                                NULL);
    if (rc != SQLITE_OK) {
        st = ret_store_dberr(s, rc, "reading vectors");
        lode_seterr(d->err, sizeof d->err, st, "%s", ret_store_errmsg(s));
        goto out;
    }
    sqlite3_bind_text(q, 1, d->model, -1, SQLITE_STATIC);
    size_t n = 0;
    for (;;) {
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW && sqlite3_column_bytes(q, 1) == (int)sizeof(float) * d->dim) {
            ids[n] = sqlite3_column_int64(q, 0);
            memcpy(buf + n * (size_t)d->dim, sqlite3_column_blob(q, 1), sizeof(float) * d->dim);
            n++;
        }
        if ((rc != SQLITE_ROW || n == ADD_BATCH) && n > 0) {
            if ((st = ret_vindex_add(vi, n, ids, buf))) {
                vi_err(d, vi, st);
                goto out;
            }
            n = 0;
        }
        if (rc != SQLITE_ROW) break;
    }
    if (rc != SQLITE_DONE) {
        st = ret_store_dberr(s, rc, "reading vectors");
        lode_seterr(d->err, sizeof d->err, st, "%s", ret_store_errmsg(s));
        goto out;
    }
    *seq = at_seq;
    *vv = at_vv;
    *out = vi;
    vi = NULL;
out:
    sqlite3_finalize(q);
    lode_free(buf);
    lode_free(ids);
    ret_vindex_destroy(vi);
    return txn_close(s, own, st);
}

static void replace_index(ret_dense *d, ret_vindex *vi, int64_t seq, int64_t vv)
{
    pthread_rwlock_wrlock(&d->swap);
    ret_vindex *old = d->vi;
    d->vi = vi;
    d->seq = seq;
    d->vv = vv;
    pthread_rwlock_unlock(&d->swap);
    ret_vindex_destroy(old);
    d->dirty = 1;
}

static lode_status save_locked(ret_dense *d)
{
    if (d->no_save || !d->index_path[0]) return LODE_OK;
    lode_status st = ret_vindex_save(d->vi, d->index_path, d->seq);
    if (st) return vi_err(d, d->vi, st);
    d->dirty = 0;
    return LODE_OK;
}

static lode_status rebuild_locked(ret_dense *d, ret_store *s)
{
    ret_vindex *vi = NULL;
    int64_t seq = 0, vv = 0;
    lode_status st = build_index(d, s, &vi, &seq, &vv);
    if (st) return st;
    replace_index(d, vi, seq, vv);
    return LODE_OK;
}

/* Adds the vectors of ids that the store has and the index lacks. */
static lode_status add_missing(ret_dense *d, ret_store *s, int64_t *added)
{
    *added = 0;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, "SELECT chunk_id, vec FROM vectors WHERE model = ?1", -1, &q,
                                NULL);
    if (rc != SQLITE_OK) return ret_store_dberr(s, rc, "reading vectors");
    sqlite3_bind_text(q, 1, d->model, -1, SQLITE_STATIC);
    lode_status st = LODE_OK;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(q, 0);
        if (ret_vindex_contains(d->vi, id) ||
            sqlite3_column_bytes(q, 1) != (int)sizeof(float) * d->dim)
            continue;
        if ((st = ret_vindex_add(d->vi, 1, &id, sqlite3_column_blob(q, 1)))) {
            vi_err(d, d->vi, st);
            break;
        }
        (*added)++;
    }
    if (!st && rc != SQLITE_DONE) st = ret_store_dberr(s, rc, "reading vectors");
    sqlite3_finalize(q);
    return st;
}

/* Applies the change log after d->seq, then checks the count (see dense.h) when vectors
 * were written outside the change log since (or always, with force). */
static lode_status sync_locked(ret_dense *d, ret_store *s, int force, int *changed)
{
    *changed = 0;
    int own = 0;
    lode_status st = txn_open(s, "BEGIN", &own);
    if (st) return st;
    ret_store_counts c = {0};
    ret_change *ch = NULL;
    size_t nch = 0;
    int64_t vv = 0;
    if ((st = read_state(s, &c.change_seq, &vv))) goto out;
    if (c.change_seq < d->seq) { /* the store is not the one the index was made from */
        snprintf(d->note, sizeof d->note,
                 "rebuilt (the index file is ahead of the store's change log: %lld > %lld)",
                 (long long)d->seq, (long long)c.change_seq);
        st = rebuild_locked(d, s);
        *changed = 1;
        goto out;
    }
    while (d->seq < c.change_seq) {
        if ((st = ret_store_changes(s, d->seq, MAX_CHANGES, &ch, &nch))) goto out;
        if (nch == 0) break;
        for (size_t i = 0; i < nch && !st; i++) {
            ret_change *x = &ch[i];
            if (x->n_removed && (st = ret_vindex_remove(d->vi, x->n_removed, x->removed, NULL))) {
                vi_err(d, d->vi, st);
                break;
            }
            for (size_t j = 0; j < x->n_added && !st; j++) {
                const float *v = NULL;
                int found = 0;
                if ((st = vec_of(d, s, x->added[j], &v, &found))) break;
                if (found && (st = ret_vindex_add(d->vi, 1, &x->added[j], v))) vi_err(d, d->vi, st);
            }
            if (!st) d->seq = x->seq;
        }
        ret_changes_free(ch, nch);
        ch = NULL;
        if (st) goto out;
        *changed = 1;
    }
    if (!force && vv == d->vv) goto out;
    int64_t nvec = 0;
    if ((st = ret_store_vector_counts(s, d->model, &nvec, NULL))) goto out;
    d->vv = vv;
    if (nvec != ret_vindex_count(d->vi)) {
        int64_t added = 0;
        if ((st = add_missing(d, s, &added))) goto out;
        if (added) *changed = 1;
        if (nvec != ret_vindex_count(d->vi)) {
            snprintf(d->note, sizeof d->note,
                     "rebuilt (the index held vectors the store does not have)");
            if ((st = rebuild_locked(d, s))) goto out;
            *changed = 1;
        }
    }
out:
    if (s->stmt[RET_STMT_VECTOR_GET]) sqlite3_reset(s->stmt[RET_STMT_VECTOR_GET]);
    ret_changes_free(ch, nch);
    st = txn_close(s, own, st);
    if (st && !d->err[0]) lode_seterr(d->err, sizeof d->err, st, "%s", ret_store_errmsg(s));
    if (st && d->err[0] == 0) lode_seterr(d->err, sizeof d->err, st, "catching up the index");
    return st;
}

/* The connection's data version, to skip syncs when nothing was committed since. */
static int64_t data_version(ret_store *s)
{
    sqlite3_stmt *q = ret_store_stmt(s, RET_STMT_DATA_VERSION, "PRAGMA data_version");
    if (!q || sqlite3_step(q) != SQLITE_ROW) return -1;
    int64_t v = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    return v;
}

lode_status ret_dense_sync(ret_dense *d, ret_store *s)
{
    pthread_mutex_lock(&d->mu);
    lode_status st = LODE_OK;
    int64_t version = data_version(s), changes = sqlite3_total_changes64(s->db);
    if (version >= 0 && s->db == d->seen_db && version == d->seen_version &&
        changes == d->seen_changes && sqlite3_get_autocommit(s->db))
        goto out;
    d->err[0] = 0;
    int changed = 0;
    if ((st = sync_locked(d, s, 0, &changed))) goto out;
    if (d->dirty) {
        lode_status ss = save_locked(d);
        if (ss) LODE_DEBUG("%s (the index stays in memory)", d->err);
    }
    d->seen_db = s->db;
    d->seen_version = version;
    d->seen_changes = sqlite3_total_changes64(s->db);
out:
    pthread_mutex_unlock(&d->mu);
    return st;
}

lode_status ret_dense_save(ret_dense *d)
{
    pthread_mutex_lock(&d->mu);
    lode_status st = save_locked(d);
    pthread_mutex_unlock(&d->mu);
    return st;
}

lode_status ret_dense_rebuild(ret_dense *d, ret_store *s)
{
    pthread_mutex_lock(&d->mu);
    lode_status st = rebuild_locked(d, s);
    if (!st) st = save_locked(d);
    d->seen_db = NULL;
    pthread_mutex_unlock(&d->mu);
    return st;
}

lode_status ret_dense_open(ret_store *s, const ret_dense_opts *o, ret_dense **out, char *err,
                           size_t errlen)
{
    *out = NULL;
    ret_dense_opts defaults = {0};
    if (!o) o = &defaults;
    ret_embed_info info;
    lode_status st = ret_store_embed_get(s, &info);
    if (st == LODE_ERR_NOTFOUND)
        return lode_seterr(err, errlen, st,
                           "the store has no vectors (it was ingested without embeddings); "
                           "`lode ingest` with an embedding model adds them");
    if (st) return lode_seterr(err, errlen, st, "%s", ret_store_errmsg(s));
    ret_dense *d = lode_calloc(1, sizeof *d);
    if (!d) return lode_seterr(err, errlen, LODE_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&d->mu, NULL);
    pthread_rwlock_init(&d->swap, NULL);
    d->no_save = o->no_save;
    const char *path = o->model_path  ? o->model_path
                       : info.path[0] ? info.path
                                      : RET_DEFAULT_EMBED_MODEL;
    if (o->index_only && !o->model) {
        snprintf(d->model, sizeof d->model, "%s", info.model);
        d->dim = info.dim;
    } else if (o->model) {
        d->bert = o->model;
    } else {
        eng_bert_opts bo = {.n_threads = o->n_threads};
        if ((st = eng_bert_load(path, &bo, &d->bert, err, errlen))) goto fail;
        d->own_bert = 1;
    }
    if (d->bert) {
        snprintf(d->model, sizeof d->model, "%s", eng_bert_name(d->bert));
        d->dim = eng_bert_dim(d->bert);
    }
    if (strcmp(d->model, info.model) || d->dim != info.dim) {
        st = lode_seterr(err, errlen, LODE_ERR_INVALID,
                         "the store's vectors come from %s (%d dimensions, loaded from %s), but "
                         "the embedding model given is %s (%d): name that model's folder with "
                         "--embed-model, or re-ingest with the new one to re-embed the store",
                         info.model, info.dim, info.path[0] ? info.path : "?", d->model, d->dim);
        goto fail;
    }
    int64_t threshold = 0;
    char factory[128] = "";
    if ((st = ret_store_index_kind_get(s, &threshold, factory, sizeof factory))) {
        lode_seterr(err, errlen, st, "%s", ret_store_errmsg(s));
        goto fail;
    }
    if (o->approx_threshold) threshold = o->approx_threshold;
    snprintf(d->factory, sizeof d->factory, "%s", o->approx_factory ? o->approx_factory : factory);
    d->vo = (ret_vindex_opts){
        .dim = d->dim,
        .approx_threshold = threshold ? threshold : RET_DEFAULT_APPROX_THRESHOLD,
        .approx_factory = d->factory[0] ? d->factory : NULL,
        .ef_search = o->ef_search,
        .tag = ret_dense_model_tag(d->model),
    };
    if (o->index_path) {
        snprintf(d->index_path, sizeof d->index_path, "%s", o->index_path);
    } else {
        const char *db = sqlite3_db_filename(s->db, "main");
        if (db && *db)
            snprintf(d->index_path, sizeof d->index_path, "%s.faiss", db);
        else
            d->no_save = 1; /* an in-memory store */
    }
    char lerr[512] = "";
    int64_t seq = 0;
    lode_status ls = d->index_path[0]
                         ? ret_vindex_load(d->index_path, &d->vo, &d->vi, &seq, lerr, sizeof lerr)
                         : LODE_ERR_NOTFOUND;
    if (ls == LODE_OK) {
        d->seq = seq;
        snprintf(d->note, sizeof d->note, "loaded %.400s (change %lld)", d->index_path,
                 (long long)seq);
    } else {
        if (ls == LODE_ERR_NOTFOUND)
            snprintf(d->note, sizeof d->note, "built (no index file yet)");
        else
            snprintf(d->note, sizeof d->note, "rebuilt (%.400s)", lerr);
        if ((st = rebuild_locked(d, s))) {
            lode_seterr(err, errlen, st, "%s", d->err);
            goto fail;
        }
    }
    int64_t before = d->seq;
    int changed = 0;
    if ((st = sync_locked(d, s, 1, &changed))) {
        lode_seterr(err, errlen, st, "%s", d->err);
        goto fail;
    }
    if (ls == LODE_OK && changed && d->seq != before && !strncmp(d->note, "loaded", 6)) {
        size_t l = strlen(d->note);
        snprintf(d->note + l, sizeof d->note - l, ", caught up to change %lld", (long long)d->seq);
    }
    /* the kind follows the size: flat below the threshold, approximate at or above it
     * (a threshold changed since the file was written rebuilds it) */
    int64_t live = ret_vindex_count(d->vi);
    int want_approx = d->vo.approx_threshold > 0 && live >= d->vo.approx_threshold;
    if (want_approx != ret_vindex_is_approx(d->vi)) {
        snprintf(d->note, sizeof d->note, "rebuilt %s (%lld vectors, threshold %lld)",
                 want_approx ? "approximate" : "flat", (long long)live,
                 (long long)d->vo.approx_threshold);
        if ((st = rebuild_locked(d, s))) {
            lode_seterr(err, errlen, st, "%s", d->err);
            goto fail;
        }
    }
    if (d->dirty && save_locked(d)) LODE_WARN("%s (the index stays in memory)", d->err);
    *out = d;
    return LODE_OK;
fail:
    ret_dense_close(d);
    return st;
}

void ret_dense_close(ret_dense *d)
{
    if (!d) return;
    ret_vindex_destroy(d->vi);
    if (d->own_bert) eng_bert_destroy(d->bert);
    pthread_mutex_destroy(&d->mu);
    pthread_rwlock_destroy(&d->swap);
    lode_free(d);
}

lode_status ret_dense_use_embedder(ret_dense *d, struct eng_embedder *e)
{
    if (e) {
        eng_bert *b = eng_embedder_bert(e);
        if (strcmp(eng_bert_name(b), d->model) || eng_bert_dim(b) != d->dim)
            return lode_seterr(d->err, sizeof d->err, LODE_ERR_INVALID,
                               "the embedder's model %s (%d) is not the index's %s (%d)",
                               eng_bert_name(b), eng_bert_dim(b), d->model, d->dim);
    }
    pthread_mutex_lock(&d->mu);
    d->emb = e;
    pthread_mutex_unlock(&d->mu);
    return LODE_OK;
}

lode_status ret_dense_embed(ret_dense *d, const char *text, float *out)
{
    const char *t[1] = {text ? text : ""};
    return ret_dense_embed_many(d, t, 1, out);
}

lode_status ret_dense_embed_many(ret_dense *d, const char *const *texts, size_t n, float *out)
{
    pthread_mutex_lock(&d->mu);
    struct eng_embedder *e = d->emb;
    if (e) {
        /* the embedder is thread-safe and batches concurrent callers: no lock held */
        pthread_mutex_unlock(&d->mu);
        char msg[256];
        lode_status st = eng_embed_run(e, texts, NULL, n, out, msg, sizeof msg);
        if (st) lode_seterr(d->err, sizeof d->err, st, "embedding: %s", msg);
        return st;
    }
    if (!d->bert) {
        pthread_mutex_unlock(&d->mu);
        return lode_seterr(d->err, sizeof d->err, LODE_ERR_INVALID,
                           "this dense index was opened without its embedder");
    }
    lode_status st = eng_bert_embed(d->bert, texts, NULL, n, out);
    if (st) lode_seterr(d->err, sizeof d->err, st, "embedding: %s", eng_bert_errmsg(d->bert));
    pthread_mutex_unlock(&d->mu);
    return st;
}

lode_status ret_dense_search_vec(ret_dense *d, const float *q, size_t k, ret_vhit *hits, size_t *n)
{
    pthread_rwlock_rdlock(&d->swap);
    lode_status st = ret_vindex_search(d->vi, q, k, hits, n);
    if (st) lode_seterr(d->err, sizeof d->err, st, "%s", ret_vindex_errmsg(d->vi));
    pthread_rwlock_unlock(&d->swap);
    return st;
}

int ret_dense_contains(ret_dense *d, int64_t id)
{
    pthread_rwlock_rdlock(&d->swap);
    int in = ret_vindex_contains(d->vi, id);
    pthread_rwlock_unlock(&d->swap);
    return in;
}

int ret_dense_dim(const ret_dense *d)
{
    return d->dim;
}
const char *ret_dense_model(const ret_dense *d)
{
    return d->model;
}
const char *ret_dense_index_path(const ret_dense *d)
{
    return d->index_path;
}
int64_t ret_dense_seq(const ret_dense *d)
{
    return d->seq;
}
int64_t ret_dense_count(ret_dense *d)
{
    pthread_rwlock_rdlock(&d->swap);
    int64_t n = ret_vindex_count(d->vi);
    pthread_rwlock_unlock(&d->swap);
    return n;
}
int ret_dense_is_approx(ret_dense *d)
{
    pthread_rwlock_rdlock(&d->swap);
    int a = ret_vindex_is_approx(d->vi);
    pthread_rwlock_unlock(&d->swap);
    return a;
}
struct eng_bert *ret_dense_embedder(ret_dense *d)
{
    return d->bert;
}
const char *ret_dense_open_note(const ret_dense *d)
{
    return d->note;
}
const char *ret_dense_errmsg(const ret_dense *d)
{
    return d->err[0] ? d->err : "no error";
}
