/*
 * run.c: the ingest run of run.h. The calling thread walks, looks every file up in the
 * store, then hands the files to loader threads (read, SHA-256, load, chunk) and writes
 * their results in walk order, batching documents into transactions. Loader threads never
 * touch the store (one SQLite connection, one thread) and run at most a window of files
 * ahead of the writer, which bounds memory.
 */
#include "ingest/run.h"

#include "engine/bert.h"
#include "ingest/walk.h"
#include "retrieval/dense.h"

#include <errno.h>
#include <fcntl.h>
#include <libxml/parser.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Commit a batch after this many documents, bytes of chunk text or seconds. */
#define BATCH_DOCS    256
#define BATCH_BYTES   ((size_t)8 << 20)
#define BATCH_SECONDS 0.5
/* Loaders stay at most this many bytes of files ahead of the writer (a loaded file takes
 * about twice its size until written). */
#define MAX_INFLIGHT_BYTES ((int64_t)64 << 20)

typedef struct job {
    const ing_file *f;
    int need;  /* 0: unchanged by size and mtime, nothing to do */
    int known; /* the store has this URI */
    ret_doc_info old;
    /* results, written by a loader */
    int done;
    lode_status st;
    char err[256];
    char sha[65];
    int same_hash; /* content equals the stored document's */
    ing_doc *doc;
    ing_chunk *chunks;
    size_t n_chunks;
    char *texts; /* the chunks' texts, NUL-separated */
    ret_chunk_in *cin;
    size_t text_bytes;
    float *vecs; /* (n_chunks, dim) embeddings, when embedding */
} job;

typedef struct pool {
    job *jobs;
    size_t n;
    size_t next;     /* next job a loader takes */
    size_t consumed; /* jobs the writer has finished with */
    size_t window;
    int64_t inflight; /* bytes of files taken by loaders and not yet consumed */
    int stop;
    const ing_run_opts *o;
    int64_t max_size;
    pthread_mutex_t mu;
    pthread_cond_t work; /* loaders wait for the window to move */
    pthread_cond_t done; /* the writer waits for a job */
} pool;

static void job_clear(job *j)
{
    ing_doc_destroy(j->doc);
    lode_free(j->chunks);
    lode_free(j->texts);
    lode_free(j->cin);
    lode_free(j->vecs);
    j->vecs = NULL;
    j->doc = NULL;
    j->chunks = NULL;
    j->texts = NULL;
    j->cin = NULL;
}

static lode_status read_file(const char *path, int64_t max, char **data, size_t *len, char *err,
                             size_t errlen)
{
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lode_seterr(err, errlen, LODE_ERR_IO, "cannot open: %s", strerror(errno));
    lode_status st = LODE_OK;
    struct stat sb;
    char *buf = NULL;
    if (fstat(fd, &sb) != 0) {
        st = lode_seterr(err, errlen, LODE_ERR_IO, "cannot stat: %s", strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = lode_seterr(err, errlen, LODE_ERR_INVALID, "not a regular file");
        goto out;
    }
    if ((int64_t)sb.st_size > max) {
        st = lode_seterr(err, errlen, LODE_ERR_LIMIT, "over the size limit (%lld > %lld bytes)",
                         (long long)sb.st_size, (long long)max);
        goto out;
    }
    if (sb.st_size == 0) {
        st = lode_seterr(err, errlen, LODE_ERR_INVALID, "empty file");
        goto out;
    }
    size_t want = (size_t)sb.st_size, got = 0;
    if (!(buf = lode_malloc(want + 1))) {
        st = lode_seterr(err, errlen, LODE_ERR_NOMEM, "out of memory");
        goto out;
    }
    while (got < want) {
        ssize_t r = read(fd, buf + got, want - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = lode_seterr(err, errlen, LODE_ERR_IO, "read failed: %s", strerror(errno));
            goto out;
        }
        if (r == 0) break; /* shrank while reading: take what is there */
        got += (size_t)r;
    }
    if (got == 0) {
        st = lode_seterr(err, errlen, LODE_ERR_INVALID, "empty file");
        goto out;
    }
    buf[got] = 0;
    *data = buf;
    *len = got;
    buf = NULL;
out:
    lode_free(buf);
    close(fd);
    return st;
}

/* Read, hash, load and chunk one file; results go into the job. */
static void load_job(pool *p, job *j)
{
    char *data = NULL;
    size_t len = 0;
    j->st = read_file(j->f->path, p->max_size, &data, &len, j->err, sizeof j->err);
    if (j->st) return;
    if ((j->st = ing_sha256_hex(data, len, j->sha))) {
        lode_seterr(j->err, sizeof j->err, j->st, "cannot hash");
        goto out;
    }
    if (j->known && !strcmp(j->sha, j->old.sha256)) {
        j->same_hash = 1;
        goto out;
    }
    ing_prepared pr;
    j->st = ing_prepare(data, len, ing_media_from_name(j->f->path), &p->o->chunk, &pr, j->err,
                        sizeof j->err);
    if (j->st) goto out;
    j->doc = pr.doc;
    j->chunks = pr.chunks;
    j->n_chunks = pr.n_chunks;
    j->texts = pr.texts;
    j->cin = pr.cin;
    j->text_bytes = pr.text_bytes;
out:
    lode_free(data);
}

static void *loader(void *arg)
{
    pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        /* at most a window of files, and of bytes, ahead of the writer (but always the
         * file the writer waits for) */
        while (!p->stop && p->next < p->n &&
               (p->next >= p->consumed + p->window ||
                (p->inflight >= MAX_INFLIGHT_BYTES && p->next > p->consumed)))
            pthread_cond_wait(&p->work, &p->mu);
        if (p->stop || p->next >= p->n) break;
        job *j = &p->jobs[p->next++];
        p->inflight += j->f->size;
        pthread_mutex_unlock(&p->mu);
        if (j->need && !(p->o->cancel && *p->o->cancel)) load_job(p, j);
        pthread_mutex_lock(&p->mu);
        j->done = 1;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- the writer -------------------------------------------------------------------- */
typedef struct writer {
    ret_store *s;
    const ing_run_opts *o;
    ing_run_stats *stats;
    int in_txn;
    job *batch[BATCH_DOCS]; /* documents (or new mtimes) waiting for the next flush */
    size_t batch_docs, batch_bytes;
    int64_t batch_t0;
} writer;

static void message(const ing_run_opts *o, const char *path, const char *reason, int failed)
{
    if (o->on_message) o->on_message(o->ctx, path, reason, failed);
}

static lode_status ensure_txn(writer *w)
{
    if (w->in_txn) return LODE_OK;
    lode_status st = ret_store_begin(w->s);
    if (st) return st;
    w->in_txn = 1;
    return LODE_OK;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Writes the batch's documents, each atomically, in one transaction, and commits. */
static lode_status flush(writer *w)
{
    ing_run_stats *S = w->stats;
    lode_status st = LODE_OK;
    char msg[1200];
    if (w->batch_docs) {
        if ((st = ensure_txn(w))) return st;
        for (size_t i = 0; i < w->batch_docs && !st; i++) {
            job *j = w->batch[i];
            if (j->same_hash) { /* content unchanged: only the new mtime */
                st = ret_store_doc_set_mtime(w->s, j->old.id, j->f->mtime_ns);
                if (st == LODE_ERR_NOTFOUND) st = LODE_OK; /* deleted meanwhile */
                continue;
            }
            ret_doc d = {
                .uri = j->f->path,
                .title = j->doc->title[0] ? j->doc->title : base_name(j->f->path),
                .media_type = ing_media_mime(j->doc->media),
                .sha256 = j->sha,
                .size = j->f->size,
                .mtime_ns = j->f->mtime_ns,
            };
            int64_t doc_id = 0;
            st = ret_store_doc_replace(w->s, &d, j->cin, j->n_chunks, &doc_id);
            if (st == LODE_OK && j->vecs) /* in the same transaction as the chunks */
                st = ret_store_doc_vectors_put(w->s, eng_bert_name(w->o->embedder),
                                               eng_bert_dim(w->o->embedder), doc_id, j->n_chunks,
                                               j->vecs);
            if (st == LODE_ERR_INVALID || st == LODE_ERR_UTF8) {
                /* this document only: its savepoint is undone, the batch goes on */
                snprintf(msg, sizeof msg, "store refused it: %s", ret_store_errmsg(w->s));
                S->files_failed++;
                message(w->o, j->f->path, msg, 1);
                st = LODE_OK;
                continue;
            }
            if (st) break;
            if (j->known)
                S->files_updated++;
            else
                S->files_added++;
            S->chunks += (int64_t)j->n_chunks;
            if (j->doc->utf8_repairs) {
                S->files_repaired++;
                snprintf(msg, sizeof msg, "invalid UTF-8 repaired (%zu bytes replaced by U+FFFD)",
                         j->doc->utf8_repairs);
                message(w->o, j->f->path, msg, 0);
            }
        }
        if (st && !ret_store_in_txn(w->s)) w->in_txn = 0; /* SQLite rolled it back */
        for (size_t i = 0; i < w->batch_docs; i++) job_clear(w->batch[i]);
        w->batch_docs = w->batch_bytes = 0;
        if (st) return st;
    }
    if (!w->in_txn) return LODE_OK;
    w->in_txn = 0;
    return ret_store_commit(w->s);
}

/* Embeds a loaded job's chunks into j->vecs; on failure sets j->err. */
static lode_status embed_job(writer *w, job *j)
{
    struct eng_bert *m = w->o->embedder;
    int dim = eng_bert_dim(m);
    int64_t t0 = lode_now_ns();
    lode_status st = LODE_OK;
    lode_buf *in = lode_calloc(j->n_chunks, sizeof *in);
    const char **texts = lode_calloc(j->n_chunks, sizeof *texts);
    j->vecs = lode_malloc(sizeof(float) * (size_t)dim * j->n_chunks);
    if (!in || !texts || !j->vecs) {
        st = lode_seterr(j->err, sizeof j->err, LODE_ERR_NOMEM, "out of memory for embeddings");
        goto out;
    }
    for (size_t i = 0; i < j->n_chunks && !st; i++) {
        if ((st = ret_embed_input(&in[i], j->cin[i].heading_path, j->cin[i].text)))
            lode_seterr(j->err, sizeof j->err, st, "out of memory for embeddings");
        texts[i] = in[i].data;
    }
    if (!st && (st = eng_bert_embed(m, texts, NULL, j->n_chunks, j->vecs)))
        lode_seterr(j->err, sizeof j->err, st, "cannot embed: %s", eng_bert_errmsg(m));
    if (!st) w->stats->chunks_embedded += (int64_t)j->n_chunks;
out:
    for (size_t i = 0; in && i < j->n_chunks; i++) lode_buf_free(&in[i]);
    lode_free(in);
    lode_free(texts);
    w->stats->embed_seconds += (double)(lode_now_ns() - t0) * 1e-9;
    return st;
}

/* Takes one finished job: counts it, or queues its document for the next flush. Returns a
 * store error that stops the run, else LODE_OK. */
static lode_status write_job(writer *w, job *j)
{
    ing_run_stats *S = w->stats;
    lode_status st = LODE_OK;
    if (!j->need) {
        S->files_unchanged++;
        return LODE_OK;
    }
    S->bytes_read += j->f->size;
    if (j->st) {
        S->files_failed++;
        message(w->o, j->f->path, j->err, 1);
        job_clear(j);
        return LODE_OK;
    }
    if (j->same_hash) {
        S->files_unchanged++;
        job_clear(j);
        if (j->old.mtime_ns == j->f->mtime_ns) return LODE_OK;
        /* the new mtime goes with the next batch: the write lock is taken only in flush */
    }
    if (!j->same_hash && w->o->embedder && embed_job(w, j)) {
        S->files_failed++;
        message(w->o, j->f->path, j->err, 1);
        job_clear(j);
        return LODE_OK;
    }
    if (w->batch_docs == 0) w->batch_t0 = lode_now_ns();
    w->batch[w->batch_docs++] = j;
    w->batch_bytes += j->text_bytes;
    if (w->batch_docs >= BATCH_DOCS || w->batch_bytes >= BATCH_BYTES ||
        (double)(lode_now_ns() - w->batch_t0) * 1e-9 >= BATCH_SECONDS)
        st = flush(w);
    return st;
}

static lode_status prune(writer *w, const ing_walk_result *wr)
{
    lode_status st = LODE_OK;
    for (size_t r = 0; r < wr->n_roots && !st; r++) {
        const char *root = wr->roots[r];
        size_t rl = strlen(root);
        char **uris = NULL;
        size_t n = 0;
        if ((st = ret_store_doc_uris(w->s, root, &uris, &n))) break;
        for (size_t i = 0; i < n && !st; i++) {
            const char *u = uris[i];
            /* the root itself or something below it, not a sibling sharing its prefix */
            if (u[rl] && u[rl] != '/' && !(rl == 1 && root[0] == '/')) continue;
            struct stat sb;
            if (stat(u, &sb) == 0 || (errno != ENOENT && errno != ENOTDIR)) continue;
            if ((st = ensure_txn(w))) break;
            st = ret_store_doc_delete(w->s, u);
            if (st == LODE_ERR_NOTFOUND)
                st = LODE_OK; /* another process pruned it */
            else if (!st)
                w->stats->files_pruned++;
        }
        ret_strv_free(uris, n);
    }
    return st;
}

/* ---- embedding stage ---------------------------------------------------------------- */
/* Makes the embedder's model the store's, dropping another model's vectors. */
static lode_status embed_model_setup(ret_store *s, const ing_run_opts *o, ing_run_stats *stats)
{
    const char *name = eng_bert_name(o->embedder);
    int dim = eng_bert_dim(o->embedder);
    ret_embed_info cur;
    lode_status st = ret_store_embed_get(s, &cur);
    if (st && st != LODE_ERR_NOTFOUND) return st;
    int same = st == LODE_OK && !strcmp(cur.model, name) && cur.dim == dim;
    if (same && !strcmp(cur.path, o->embed_path ? o->embed_path : "")) return LODE_OK;
    if ((st = ret_store_embed_set(s, name, dim, o->embed_path, &stats->vectors_dropped))) return st;
    if (!same && cur.model[0]) {
        char msg[512];
        snprintf(msg, sizeof msg,
                 "the embedding model changed from %s (%d dimensions) to %s (%d): %lld vectors "
                 "of the old model were dropped and every chunk is re-embedded",
                 cur.model, cur.dim, name, dim, (long long)stats->vectors_dropped);
        message(o, "(store)", msg, 0);
    }
    return LODE_OK;
}

typedef struct fill_ctx {
    const ing_run_opts *o;
    ing_run_stats *stats;
    int64_t t0, base;
} fill_ctx;

static void fill_progress(void *ctx, int64_t done, int64_t total)
{
    fill_ctx *c = ctx;
    c->stats->embed_done = done;
    c->stats->embed_total = total;
    c->stats->chunks_embedded = c->base + done;
    c->stats->seconds = (double)(lode_now_ns() - c->t0) * 1e-9;
    if (c->o->on_progress) c->o->on_progress(c->o->ctx, c->stats);
}

/* Embeds the chunks that still have no vector, then catches the FAISS index file up. */
static lode_status embed_rest(ret_store *s, const ing_run_opts *o, ing_run_stats *stats, int64_t t0)
{
    int64_t missing = 0, embedded = 0;
    lode_status st = ret_store_vector_counts(s, eng_bert_name(o->embedder), NULL, &missing);
    if (st) return st;
    if (missing > 0) {
        fill_ctx fc = {o, stats, t0, stats->chunks_embedded};
        stats->embedding = 1;
        stats->embed_total = missing;
        if (o->on_progress) o->on_progress(o->ctx, stats);
        int64_t te = lode_now_ns();
        st = ret_vectors_fill(s, o->embedder, o->cancel, fill_progress, &fc, &embedded);
        stats->embed_seconds += (double)(lode_now_ns() - te) * 1e-9;
        if (o->cancel && *o->cancel) stats->interrupted = 1;
        if (st) return st;
    }
    char err[1024];
    ret_dense *d = NULL;
    ret_dense_opts dopts = {.model = o->embedder};
    st = ret_dense_open(s, &dopts, &d, err, sizeof err);
    if (st) {
        message(o, "(index)", err, 1);
        return st;
    }
    ret_dense_close(d);
    return LODE_OK;
}

typedef struct walk_ctx {
    const ing_run_opts *o;
    ing_run_stats *stats;
} walk_ctx;

static void walk_error(void *ctx, const char *path, const char *reason)
{
    walk_ctx *c = ctx;
    c->stats->files_failed++;
    message(c->o, path, reason, 1);
}

lode_status ing_run(ret_store *s, const char *const *paths, size_t n, const ing_run_opts *o,
                    ing_run_stats *stats)
{
    ing_run_opts defaults = {0};
    if (!o) o = &defaults;
    memset(stats, 0, sizeof *stats);
    int64_t t0 = lode_now_ns();
    walk_ctx wc = {o, stats};
    ing_walk_opts wo = {o->includes, o->n_includes, o->excludes, o->n_excludes,
                        o->prune,    walk_error,    &wc};
    ing_walk_result wr;
    pool p = {0};
    pthread_t *threads = NULL;
    int n_threads = 0, sync_init = 0;
    static const writer w0;
    writer w = w0;
    w.s = s;
    w.o = o;
    w.stats = stats;
    lode_status st = ing_walk(paths, n, &wo, &wr);
    if (st) return st;
    stats->files_total = (int64_t)wr.n_files;
    stats->bytes_total = wr.bytes;
    stats->files_ignored = (int64_t)wr.ignored;
    stats->files_seen = (int64_t)wr.n_files + (int64_t)wr.errors;
    if ((st = ret_store_run_start(s, (const char *const *)wr.roots, wr.n_roots, &stats->run_id)))
        goto out;
    if (o->embedder && (st = embed_model_setup(s, o, stats))) goto out;

    /* what the store already has decides which files need reading */
    p.jobs = lode_calloc(wr.n_files ? wr.n_files : 1, sizeof *p.jobs);
    if (!p.jobs) {
        st = LODE_ERR_NOMEM;
        goto out;
    }
    p.n = wr.n_files;
    p.o = o;
    p.max_size = o->max_size > 0 ? o->max_size : ING_MAX_SIZE_DEFAULT;
    for (size_t i = 0; i < p.n; i++) {
        job *j = &p.jobs[i];
        j->f = &wr.files[i];
        lode_status ls = ret_store_doc_lookup(s, j->f->path, &j->old);
        if (ls && ls != LODE_ERR_NOTFOUND) {
            st = ls;
            goto out;
        }
        j->known = ls == LODE_OK;
        j->need = !(j->known && !o->rehash && j->old.size == j->f->size &&
                    j->old.mtime_ns == j->f->mtime_ns);
    }

    n_threads = o->threads > 0 ? o->threads : lode_cpu_count();
    if (n_threads > 64) n_threads = 64;
    p.window = p.n;  /* files ahead are bounded by MAX_INFLIGHT_BYTES alone */
    xmlInitParser(); /* once, before threads use libxml2 */
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.work, NULL);
    pthread_cond_init(&p.done, NULL);
    sync_init = 1;
    threads = lode_calloc((size_t)n_threads, sizeof *threads);
    if (!threads) {
        st = LODE_ERR_NOMEM;
        goto out;
    }
    int started = 0;
    for (int i = 0; i < n_threads; i++) {
        if (pthread_create(&threads[i], NULL, loader, &p) != 0) break;
        started++;
    }
    n_threads = started;
    if (!started) {
        st = LODE_ERR_INTERNAL;
        goto out;
    }

    for (size_t i = 0; i < p.n && !st; i++) {
        job *j = &p.jobs[i];
        int64_t tw = lode_now_ns();
        pthread_mutex_lock(&p.mu);
        while (!j->done) pthread_cond_wait(&p.done, &p.mu);
        pthread_mutex_unlock(&p.mu);
        int64_t tw2 = lode_now_ns();
        stats->wait_seconds += (double)(tw2 - tw) * 1e-9;
        if (o->cancel && *o->cancel) {
            stats->interrupted = 1;
            break;
        }
        struct timespec c0, c1;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
        st = write_job(&w, j);
        pthread_mutex_lock(&p.mu);
        p.consumed = i + 1;
        p.inflight -= j->f->size;
        pthread_cond_broadcast(&p.work);
        pthread_mutex_unlock(&p.mu);
        stats->files_done++;
        stats->bytes_done += j->f->size;
        stats->write_seconds += (double)(lode_now_ns() - tw2) * 1e-9;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
        stats->write_cpu_seconds +=
            (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) * 1e-9;
        stats->seconds = (double)(lode_now_ns() - t0) * 1e-9;
        if (o->on_progress) o->on_progress(o->ctx, stats);
    }
    if (!st) st = flush(&w);
    if (!st && o->prune && !stats->interrupted) {
        st = prune(&w, &wr);
        if (!st) st = flush(&w);
    }
    if (!st && o->embedder && !stats->interrupted) st = embed_rest(s, o, stats, t0);
out:
    if (sync_init) {
        pthread_mutex_lock(&p.mu);
        p.stop = 1;
        pthread_cond_broadcast(&p.work);
        pthread_mutex_unlock(&p.mu);
        for (int i = 0; i < n_threads; i++) pthread_join(threads[i], NULL);
        pthread_mutex_destroy(&p.mu);
        pthread_cond_destroy(&p.work);
        pthread_cond_destroy(&p.done);
    }
    if (w.in_txn && st) ret_store_rollback(s);
    for (size_t i = 0; i < p.n; i++) job_clear(&p.jobs[i]);
    lode_free(p.jobs);
    lode_free(threads);
    stats->seconds = (double)(lode_now_ns() - t0) * 1e-9;
    if (stats->run_id) {
        ret_run_stats rs = {
            .files_seen = stats->files_seen,
            .files_added = stats->files_added,
            .files_updated = stats->files_updated,
            .files_skipped = stats->files_unchanged,
            .files_failed = stats->files_failed,
            .files_pruned = stats->files_pruned,
            .bytes = stats->bytes_read,
        };
        const char *status = st                    ? "failed"
                             : stats->interrupted  ? "interrupted"
                             : stats->files_failed ? "partial"
                                                   : "ok";
        lode_status fs = ret_store_run_finish(s, stats->run_id, &rs, status);
        if (!st) st = fs;
    }
    ing_walk_free(&wr);
    return st;
}
