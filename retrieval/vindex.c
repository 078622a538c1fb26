/*
 * vindex.c: the FAISS-backed vector index of vindex.h. FAISS holds vectors under its own
 * sequential labels; this file keeps label -> id, id -> label (an open-addressing hash)
 * and a dead flag per label, so removal and replacement work the same for flat and HNSW
 * indexes (HNSW cannot remove). Searches over-fetch and skip dead labels; when a quarter
 * of the labels are dead, or the live count crosses the approximate threshold, the index
 * is rebuilt from its own stored vectors (reconstruct).
 *
 * File format (little-endian): "LODEVIX1", u32 version 1, u32 dim, u32 flags (1: the
 * approximate index), u32 tag (the caller's, e.g. a hash of the model name; 0 none), i64
 * change_seq, i64 n_labels, i64 faiss_bytes, then n_labels i64 ids (-1 for dead labels), then
 * faiss_bytes of FAISS's own serialization of the index (faiss_write_index). The sizes are checked
 * before FAISS reads anything, so a truncated file is refused here (FAISS 1.7.3 leaks memory on a
 * short read).
 */
#include "retrieval/vindex.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>
#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#define DEFAULT_THRESHOLD 20000
#define DEFAULT_FACTORY   "HNSW32,Flat"
#define DEFAULT_EF        128
#define FILE_MAGIC        "LODEVIX1"
#define FILE_VERSION      1u

struct ret_vindex {
    char err[512];
    pthread_rwlock_t lock;
    int dim;
    uint32_t tag;
    int64_t threshold;
    char factory[128];
    int ef_search;
    int approx;
    FaissIndex *index;
    int64_t *label_id; /* (n_labels) id, or -1 when dead */
    int64_t n_labels, cap_labels;
    int64_t n_dead;
    int64_t *slot_id; /* (n_slots) hash of live ids; -1 empty, -2 deleted */
    int64_t *slot_label;
    int64_t n_slots, n_used; /* n_used counts live and deleted slots */
};

static lode_status faiss_err(ret_vindex *v, const char *what)
{
    const char *m = faiss_get_last_error();
    return lode_seterr(v->err, sizeof v->err, LODE_ERR_INDEX, "vindex: %s: %s", what,
                       m ? m : "FAISS error");
}

/* ---- id -> label hash ---------------------------------------------------------------- */

static uint64_t mix(int64_t id)
{
    uint64_t x = (uint64_t)id;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

/* Slot of id, or -1. */
static int64_t hash_find(const ret_vindex *v, int64_t id)
{
    if (!v->n_slots) return -1;
    for (uint64_t i = mix(id) & (uint64_t)(v->n_slots - 1);;
         i = (i + 1) & (uint64_t)(v->n_slots - 1)) {
        if (v->slot_id[i] == -1) return -1;
        if (v->slot_id[i] == id) return (int64_t)i;
    }
}

/* Makes room for `extra` more ids, so the next that many hash_put calls cannot fail. */
static lode_status hash_reserve(ret_vindex *v, int64_t extra)
{
    if ((v->n_used + extra) * 2 <= v->n_slots) return LODE_OK;
    int64_t n = v->n_slots ? v->n_slots : 1024;
    int64_t live = 0;
    for (int64_t i = 0; i < v->n_slots; i++) live += v->slot_id[i] >= 0;
    while (n < 4 * (live + extra + 1)) n *= 2;
    int64_t *ids = lode_malloc((size_t)n * sizeof *ids),
            *labels = lode_malloc((size_t)n * sizeof *labels);
    if (!ids || !labels) {
        lode_free(ids);
        lode_free(labels);
        return lode_seterr(v->err, sizeof v->err, LODE_ERR_NOMEM, "vindex: out of memory");
    }
    for (int64_t i = 0; i < n; i++) ids[i] = -1;
    for (int64_t i = 0; i < v->n_slots; i++) {
        if (v->slot_id[i] < 0) continue;
        uint64_t j = mix(v->slot_id[i]) & (uint64_t)(n - 1);
        while (ids[j] != -1) j = (j + 1) & (uint64_t)(n - 1);
        ids[j] = v->slot_id[i];
        labels[j] = v->slot_label[i];
    }
    lode_free(v->slot_id);
    lode_free(v->slot_label);
    v->slot_id = ids;
    v->slot_label = labels;
    v->n_slots = n;
    v->n_used = live;
    return LODE_OK;
}

static lode_status hash_put(ret_vindex *v, int64_t id, int64_t label)
{
    lode_status rc;
    if ((rc = hash_reserve(v, 1))) return rc;
    uint64_t i = mix(id) & (uint64_t)(v->n_slots - 1);
    while (v->slot_id[i] >= 0 && v->slot_id[i] != id) i = (i + 1) & (uint64_t)(v->n_slots - 1);
    if (v->slot_id[i] == -1) v->n_used++;
    v->slot_id[i] = id;
    v->slot_label[i] = label;
    return LODE_OK;
}

/* ---- index construction ------------------------------------------------------------ */

/* Sets HNSW's search breadth (not part of FAISS's serialization; other kinds of index
 * have no such parameter) and makes IVF indexes keep a direct map, which reading a
 * vector back (compaction, rebuild) needs. */
static lode_status set_ef(ret_vindex *v, FaissIndex *idx)
{
    FaissIndexIVF *ivf = faiss_IndexIVF_cast(idx);
    if (ivf && faiss_IndexIVF_make_direct_map(ivf, 1)) return faiss_err(v, "cannot map IVF ids");
    if (!strstr(v->factory, "HNSW")) return LODE_OK;
    FaissParameterSpace *ps = NULL;
    if (faiss_ParameterSpace_new(&ps)) return faiss_err(v, "cannot set efSearch");
    char p[32];
    snprintf(p, sizeof p, "efSearch=%d", v->ef_search);
    int bad = faiss_ParameterSpace_set_index_parameters(ps, idx, p);
    faiss_ParameterSpace_free(ps);
    return bad ? faiss_err(v, "cannot set efSearch") : LODE_OK;
}

static lode_status new_faiss(ret_vindex *v, int approx, FaissIndex **out)
{
    lode_status rc;
    *out = NULL;
    if (faiss_index_factory(out, v->dim, approx ? v->factory : "Flat", METRIC_INNER_PRODUCT))
        return faiss_err(v, approx ? "cannot build the approximate index"
                                   : "cannot build the flat index");
    if (approx && (rc = set_ef(v, *out))) {
        faiss_Index_free(*out);
        *out = NULL;
        return rc;
    }
    return LODE_OK;
}

static lode_status reserve_labels(ret_vindex *v, int64_t extra)
{
    if (v->n_labels + extra <= v->cap_labels) return LODE_OK;
    int64_t cap = v->cap_labels ? v->cap_labels : 1024;
    while (cap < v->n_labels + extra) cap *= 2;
    int64_t *p = lode_realloc(v->label_id, (size_t)cap * sizeof *p);
    if (!p) return lode_seterr(v->err, sizeof v->err, LODE_ERR_NOMEM, "vindex: out of memory");
    v->label_id = p;
    v->cap_labels = cap;
    return LODE_OK;
}

/* Rebuilds the FAISS index from the live vectors, as approximate or flat (training it
 * on them when the kind needs training, e.g. IVF); labels are renumbered densely. */
static lode_status rebuild(ret_vindex *v, int approx)
{
    lode_status rc = LODE_OK;
    FaissIndex *nidx = NULL;
    float *buf = NULL;
    int64_t *nid = NULL;
    int64_t live = v->n_labels - v->n_dead, n = 0;
    if ((rc = new_faiss(v, approx, &nidx))) return rc;
    buf = lode_malloc((size_t)(live ? live : 1) * (size_t)v->dim * sizeof *buf);
    nid = lode_malloc((size_t)(live ? live : 1) * sizeof *nid);
    if (!buf || !nid) {
        rc = lode_seterr(v->err, sizeof v->err, LODE_ERR_NOMEM, "vindex: out of memory");
        goto out;
    }
    for (int64_t l = 0; l < v->n_labels; l++) {
        if (v->label_id[l] < 0) continue;
        if (faiss_Index_reconstruct(v->index, l, buf + n * v->dim)) {
            rc = faiss_err(v, "cannot read back a vector");
            goto out;
        }
        nid[n++] = v->label_id[l];
    }
    if (!faiss_Index_is_trained(nidx) && faiss_Index_train(nidx, n, buf)) {
        rc = faiss_err(v, "cannot train the approximate index");
        goto out;
    }
    if (n && faiss_Index_add(nidx, n, buf)) {
        rc = faiss_err(v, "cannot add to the rebuilt index");
        goto out;
    }
    /* commit: new labels 0..n-1 */
    faiss_Index_free(v->index);
    v->index = nidx;
    nidx = NULL;
    memcpy(v->label_id, nid, (size_t)n * sizeof *nid);
    v->n_labels = n;
    v->n_dead = 0;
    v->approx = approx;
    for (int64_t i = 0; i < v->n_slots; i++) v->slot_id[i] = -1;
    v->n_used = 0;
    for (int64_t l = 0; l < n; l++) hash_put(v, v->label_id[l], l); /* slots only shrink */
out:
    faiss_Index_free(nidx);
    lode_free(buf);
    lode_free(nid);
    return rc;
}

static void apply_opts(ret_vindex *v, const ret_vindex_opts *o)
{
    v->threshold = o->approx_threshold == 0 ? DEFAULT_THRESHOLD : o->approx_threshold;
    snprintf(v->factory, sizeof v->factory, "%s",
             o->approx_factory ? o->approx_factory : DEFAULT_FACTORY);
    v->ef_search = o->ef_search > 0 ? o->ef_search : DEFAULT_EF;
}

static ret_vindex *alloc_vindex(const ret_vindex_opts *o)
{
    ret_vindex *v = lode_calloc(1, sizeof *v);
    if (!v) return NULL;
    pthread_rwlock_init(&v->lock, NULL);
    v->dim = o->dim;
    v->tag = o->tag;
    apply_opts(v, o);
    return v;
}

void ret_vindex_destroy(ret_vindex *v)
{
    if (!v) return;
    faiss_Index_free(v->index);
    lode_free(v->label_id);
    lode_free(v->slot_id);
    lode_free(v->slot_label);
    pthread_rwlock_destroy(&v->lock);
    lode_free(v);
}

lode_status ret_vindex_create(const ret_vindex_opts *o, ret_vindex **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!o || o->dim <= 0 || o->dim > 65536)
        return lode_seterr(err, errlen, LODE_ERR_INVALID, "vindex: bad dimension %d",
                           o ? o->dim : 0);
    ret_vindex *v = alloc_vindex(o);
    if (!v) return lode_seterr(err, errlen, LODE_ERR_NOMEM, "vindex: out of memory");
    lode_status rc = new_faiss(v, 0, &v->index);
    if (rc) {
        lode_seterr(err, errlen, rc, "%s", v->err);
        ret_vindex_destroy(v);
        return rc;
    }
    *out = v;
    return LODE_OK;
}

/* ---- add, remove, search ----------------------------------------------------------- */

static void kill_id(ret_vindex *v, int64_t slot)
{
    v->label_id[v->slot_label[slot]] = -1;
    v->n_dead++;
    v->slot_id[slot] = -2;
}

lode_status ret_vindex_add(ret_vindex *v, size_t n, const int64_t *ids, const float *vecs)
{
    lode_status rc = LODE_OK;
    if (n == 0) return LODE_OK;
    pthread_rwlock_wrlock(&v->lock);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0) {
            rc = lode_seterr(v->err, sizeof v->err, LODE_ERR_INVALID, "vindex: negative id %lld",
                             (long long)ids[i]);
            goto out;
        }
    if ((rc = reserve_labels(v, (int64_t)n)) || (rc = hash_reserve(v, (int64_t)n))) goto out;
    if (faiss_Index_add(v->index, (idx_t)n, vecs)) {
        rc = faiss_err(v, "cannot add vectors");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        int64_t s = hash_find(v, ids[i]);
        if (s >= 0) kill_id(v, s); /* replaced */
        int64_t label = v->n_labels++;
        v->label_id[label] = ids[i];
        hash_put(v, ids[i], label); /* room reserved above */
    }
    int64_t live = v->n_labels - v->n_dead;
    if (!v->approx && v->threshold > 0 && live >= v->threshold)
        rc = rebuild(v, 1);
    else if (v->n_dead > 1024 && v->n_dead * 4 > v->n_labels)
        rc = rebuild(v, v->approx);
out:
    pthread_rwlock_unlock(&v->lock);
    return rc;
}

lode_status ret_vindex_remove(ret_vindex *v, size_t n, const int64_t *ids, size_t *removed)
{
    lode_status rc = LODE_OK;
    size_t found = 0;
    pthread_rwlock_wrlock(&v->lock);
    for (size_t i = 0; i < n; i++) {
        int64_t s = hash_find(v, ids[i]);
        if (s < 0) continue;
        kill_id(v, s);
        found++;
    }
    if (v->n_dead > 1024 && v->n_dead * 4 > v->n_labels) rc = rebuild(v, v->approx);
    pthread_rwlock_unlock(&v->lock);
    if (removed) *removed = found;
    return rc;
}

/* ---- exact search --------------------------------------------------------------------- */
/* The flat index searched without FAISS's search: the inner products of the query with
 * every stored vector (FAISS's own array, faiss_IndexFlat_xb) by OpenBLAS sgemv, then the
 * k best live labels by a heap. FAISS 1.7.3 takes a BLAS product only for 20 queries or
 * more and scores a single query with its portable dot-product loop: over the SQLite
 * documentation's 10,599 vectors of 384 floats, 5.3 ms a query against 0.85 ms this way,
 * the same neighbours, on the 2-core Xeon of bench/RESULTS.md.
 *
 * The rows go in blocks of fewer than GEMV_ONE_THREAD elements, which OpenBLAS computes
 * on the calling thread (it threads a gemv of 2304 * GEMM_MULTITHREAD_THRESHOLD, 4 by
 * default, elements or more). One sgemv of all rows on two threads takes 0.4 ms, but its
 * workers then spin for a while, and a hybrid search runs its lexical query beside this
 * one: hybrid p50 went from 10.5 to 7.7 ms with OpenBLAS held to one thread. */
#define GEMV_ONE_THREAD (2304 * 4)
typedef struct scored {
    float score;
    int64_t label;
} scored;

/* 1 when a ranks below b: lower score, or the same score and a later label. */
static int below(const scored *a, const scored *b)
{
    return a->score < b->score || (a->score == b->score && a->label > b->label);
}

/* Restores the min-heap h (of n) below i: the worst hit at the root. */
static void sift_down(scored *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && below(&h[l], &h[m])) m = l;
        if (r < n && below(&h[r], &h[m])) m = r;
        if (m == i) return;
        scored t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static int scored_cmp(const void *a, const void *b)
{
    return below(a, b) ? 1 : below(b, a) ? -1 : 0;
}

/* The k best live vectors of the flat index by inner product; the caller holds the lock. */
static lode_status flat_search(ret_vindex *v, FaissIndexFlat *flat, const float *q, size_t k,
                               ret_vhit *hits, size_t *n_hits)
{
    float *xb = NULL;
    size_t size = 0;
    faiss_IndexFlat_xb(flat, &xb, &size);
    int64_t n = v->n_labels;
    if ((int64_t)(size / (size_t)v->dim) < n || n > INT32_MAX)
        return lode_seterr(v->err, sizeof v->err, LODE_ERR_INTERNAL,
                           "vindex: the flat index holds %zu floats for %lld labels", size,
                           (long long)n);
    if (n == 0) return LODE_OK;
    float *ip = lode_malloc((size_t)n * sizeof *ip);
    scored *h = lode_malloc(k * sizeof *h);
    if (!ip || !h) {
        lode_free(ip);
        lode_free(h);
        return lode_seterr(v->err, sizeof v->err, LODE_ERR_NOMEM, "vindex: out of memory");
    }
    int64_t rows = (GEMV_ONE_THREAD - 1) / v->dim;
    if (rows < 1) rows = 1;
    for (int64_t i = 0; i < n; i += rows)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)LODE_MIN(rows, n - i), v->dim, 1.0f,
                    xb + (size_t)i * (size_t)v->dim, v->dim, q, 1, 0.0f, ip + i, 1);
    size_t nh = 0;
    for (int64_t l = 0; l < n; l++) {
        if (v->label_id[l] < 0) continue;
        scored c = {ip[l], l};
        if (nh < k) {
            /* sift up */
            size_t i = nh++;
            while (i > 0 && below(&c, &h[(i - 1) / 2])) {
                h[i] = h[(i - 1) / 2];
                i = (i - 1) / 2;
            }
            h[i] = c;
        } else if (below(&h[0], &c)) {
            h[0] = c;
            sift_down(h, nh, 0);
        }
    }
    qsort(h, nh, sizeof *h, scored_cmp);
    for (size_t i = 0; i < nh; i++) {
        hits[i].id = v->label_id[h[i].label];
        hits[i].score = h[i].score;
    }
    *n_hits = nh;
    lode_free(ip);
    lode_free(h);
    return LODE_OK;
}

lode_status ret_vindex_search(ret_vindex *v, const float *q, size_t k, ret_vhit *hits,
                              size_t *n_hits)
{
    lode_status rc = LODE_OK;
    float *dist = NULL;
    idx_t *lab = NULL;
    *n_hits = 0;
    if (k == 0) return LODE_OK;
    pthread_rwlock_rdlock(&v->lock);
    FaissIndexFlat *flat = v->approx ? NULL : faiss_IndexFlat_cast(v->index);
    if (flat) {
        rc = flat_search(v, flat, q, k, hits, n_hits);
        pthread_rwlock_unlock(&v->lock);
        return rc;
    }
    int64_t total = v->n_labels;
    /* fetch more than k when labels are dead, doubling until k live ones are found */
    int64_t want = (int64_t)k + (v->n_dead ? (int64_t)k : 0);
    for (;;) {
        if (want > total) want = total;
        if (want == 0) break;
        lode_free(dist);
        lode_free(lab);
        dist = lode_malloc((size_t)want * sizeof *dist);
        lab = lode_malloc((size_t)want * sizeof *lab);
        if (!dist || !lab) {
            rc = lode_seterr(v->err, sizeof v->err, LODE_ERR_NOMEM, "vindex: out of memory");
            break;
        }
        if (faiss_Index_search(v->index, 1, q, want, dist, lab)) {
            rc = faiss_err(v, "search failed");
            break;
        }
        size_t got = 0;
        for (int64_t i = 0; i < want && got < k; i++) {
            if (lab[i] < 0 || lab[i] >= v->n_labels || v->label_id[lab[i]] < 0) continue;
            hits[got].id = v->label_id[lab[i]];
            hits[got].score = dist[i];
            got++;
        }
        *n_hits = got;
        if (got == k || want == total) break;
        want *= 2;
    }
    pthread_rwlock_unlock(&v->lock);
    lode_free(dist);
    lode_free(lab);
    return rc;
}

int ret_vindex_contains(ret_vindex *v, int64_t id)
{
    pthread_rwlock_rdlock(&v->lock);
    int in = hash_find(v, id) >= 0;
    pthread_rwlock_unlock(&v->lock);
    return in;
}

int64_t ret_vindex_count(ret_vindex *v)
{
    pthread_rwlock_rdlock(&v->lock);
    int64_t n = v->n_labels - v->n_dead;
    pthread_rwlock_unlock(&v->lock);
    return n;
}

int ret_vindex_is_approx(ret_vindex *v)
{
    return v->approx;
}

int ret_vindex_dim(const ret_vindex *v)
{
    return v->dim;
}

const char *ret_vindex_errmsg(ret_vindex *v)
{
    return v->err;
}

/* ---- save and load ----------------------------------------------------------------- */

lode_status ret_vindex_save(ret_vindex *v, const char *path, int64_t change_seq)
{
    lode_status rc = LODE_OK;
    char tmp[4096];
    /* a name of this process: two processes saving at once must not share a file */
    snprintf(tmp, sizeof tmp, "%.4000s.tmp.%ld", path, (long)getpid());
    pthread_rwlock_rdlock(&v->lock);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = lode_seterr(v->err, sizeof v->err, LODE_ERR_IO, "vindex: cannot create %s: %s", tmp,
                         strerror(errno));
        goto out;
    }
    uint32_t hdr[4] = {FILE_VERSION, (uint32_t)v->dim, v->approx ? 1u : 0u, v->tag};
    int64_t fbytes = 0;
    int ok = fwrite(FILE_MAGIC, 1, 8, f) == 8 && fwrite(hdr, 4, 4, f) == 4 &&
             fwrite(&change_seq, 8, 1, f) == 1 && fwrite(&v->n_labels, 8, 1, f) == 1 &&
             fwrite(&fbytes, 8, 1, f) == 1 &&
             fwrite(v->label_id, 8, (size_t)v->n_labels, f) == (size_t)v->n_labels;
    long start = ok ? ftell(f) : -1;
    if (ok && faiss_write_index(v->index, f)) {
        rc = faiss_err(v, "cannot write the index");
        fclose(f);
        unlink(tmp);
        goto out;
    }
    long end = ok ? ftell(f) : -1;
    fbytes = end - start;
    /* the FAISS part's length goes into the header once known (offset 40) */
    ok = ok && start > 0 && end > start && fseek(f, 40, SEEK_SET) == 0 &&
         fwrite(&fbytes, 8, 1, f) == 1 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok) {
        rc = lode_seterr(v->err, sizeof v->err, LODE_ERR_IO, "vindex: cannot write %s: %s", tmp,
                         strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        rc = lode_seterr(v->err, sizeof v->err, LODE_ERR_IO, "vindex: cannot rename %s: %s", tmp,
                         strerror(errno));
        unlink(tmp);
    }
out:
    pthread_rwlock_unlock(&v->lock);
    return rc;
}

lode_status ret_vindex_load(const char *path, const ret_vindex_opts *o, ret_vindex **out,
                            int64_t *change_seq, char *err, size_t errlen)
{
    lode_status rc = LODE_OK;
    ret_vindex *v = NULL;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return lode_seterr(err, errlen, errno == ENOENT ? LODE_ERR_NOTFOUND : LODE_ERR_IO,
                           "vindex: cannot open %s: %s", path, strerror(errno));
    char magic[8];
    uint32_t hdr[4];
    int64_t seq, n, fbytes;
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, FILE_MAGIC, 8) != 0 ||
        fread(hdr, 4, 4, f) != 4 || fread(&seq, 8, 1, f) != 1 || fread(&n, 8, 1, f) != 1 ||
        fread(&fbytes, 8, 1, f) != 1) {
        rc = lode_seterr(err, errlen, LODE_ERR_FORMAT, "vindex: %s is not a lode vector index",
                         path);
        goto out;
    }
    uint32_t ver = hdr[0], dim = hdr[1], flags = hdr[2];
    if (ver != FILE_VERSION) {
        rc = lode_seterr(err, errlen, LODE_ERR_VERSION,
                         "vindex: %s has version %u (this lode reads %u)", path, ver, FILE_VERSION);
        goto out;
    }
    if (!o || (int)dim != o->dim) {
        rc = lode_seterr(err, errlen, LODE_ERR_INVALID,
                         "vindex: %s holds %u-dimensional vectors, not %d", path, dim,
                         o ? o->dim : 0);
        goto out;
    }
    if (hdr[3] != o->tag) {
        rc = lode_seterr(err, errlen, LODE_ERR_INVALID,
                         "vindex: %s was made for other vectors (tag %08x, not %08x)", path, hdr[3],
                         o->tag);
        goto out;
    }
    struct stat sb;
    if (n < 0 || n > ((int64_t)1 << 40) || fbytes <= 0 || fstat(fileno(f), &sb) != 0 ||
        (int64_t)sb.st_size != 48 + 8 * n + fbytes) {
        rc = lode_seterr(err, errlen, LODE_ERR_FORMAT, "vindex: %s is damaged or truncated", path);
        goto out;
    }
    if (!(v = alloc_vindex(o))) {
        rc = lode_seterr(err, errlen, LODE_ERR_NOMEM, "vindex: out of memory");
        goto out;
    }
    if ((rc = reserve_labels(v, n ? n : 1))) {
        lode_seterr(err, errlen, rc, "%s", v->err);
        goto out;
    }
    if (fread(v->label_id, 8, (size_t)n, f) != (size_t)n) {
        rc = lode_seterr(err, errlen, LODE_ERR_FORMAT, "vindex: %s is truncated", path);
        goto out;
    }
    v->n_labels = n;
    if (faiss_read_index(f, 0, &v->index)) {
        const char *m = faiss_get_last_error();
        rc = lode_seterr(err, errlen, LODE_ERR_FORMAT, "vindex: %s: %s", path,
                         m ? m : "bad FAISS data");
        goto out;
    }
    if (faiss_Index_d(v->index) != (int)dim || faiss_Index_ntotal(v->index) != n ||
        faiss_Index_metric_type(v->index) != METRIC_INNER_PRODUCT) {
        rc = lode_seterr(err, errlen, LODE_ERR_FORMAT, "vindex: %s: index and label table disagree",
                         path);
        goto out;
    }
    for (int64_t l = 0; l < n; l++) {
        if (v->label_id[l] < -1) {
            rc = lode_seterr(err, errlen, LODE_ERR_FORMAT, "vindex: %s is damaged (ids)", path);
            goto out;
        }
        if (v->label_id[l] < 0) {
            v->n_dead++;
            continue;
        }
        int64_t s = hash_find(v, v->label_id[l]);
        if (s >= 0) { /* an id twice: the later label wins, as in add */
            kill_id(v, s);
        }
        if ((rc = hash_put(v, v->label_id[l], l))) {
            lode_seterr(err, errlen, rc, "%s", v->err);
            goto out;
        }
    }
    v->approx = (flags & 1) != 0;
    if (v->approx && (rc = set_ef(v, v->index))) {
        lode_seterr(err, errlen, rc, "%s", v->err);
        goto out;
    }
    *change_seq = seq;
out:
    fclose(f);
    if (rc) {
        ret_vindex_destroy(v);
        return rc;
    }
    *out = v;
    return LODE_OK;
}
