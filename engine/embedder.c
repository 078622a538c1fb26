/*
 * embedder.c: the embedder of embedder.h. A request becomes a job: its texts are
 * tokenized in the submitting thread (so the serving thread only runs the encoder),
 * their ids kept in one array, and the job is queued in the encoder queue (esched.h).
 * A step takes the next batch from the queue, runs it through eng_bert_embed_ids with
 * the texts of all its jobs together, copies each job's vectors to its output, and
 * finishes the jobs that are complete. Steps run on the host model's scheduler thread
 * (engine.c picks between its own steps and ours by the time share) or on our thread.
 *
 * Locking: mu guards the queue and the counters; the encoder and the gather buffers
 * belong to the serving thread. mu is never held while taking the host's lock.
 */
#include "engine/embedder.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "engine/esched.h"

typedef struct ejob {
    eng_ejob base;
    eng_embed_request r;
    int32_t *ids;   /* every text's ids, back to back */
    size_t *off;    /* (n) where text i's ids start */
    int *n_tok;     /* (n) */
    lode_status st; /* first failure */
    char err[256];
} ejob;

struct eng_embedder {
    eng_bert *bert;
    int dim, max_seq;
    eng_embedder_opts o;
    eng_model *host;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* own thread: work or stop; destroy: a batch finished */
    eng_esched *q;
    int stop;
    int running; /* a batch is in the encoder */
    pthread_t th;
    int started;
    eng_embedder_stats st;
    /* the serving thread's gather buffers (batch_texts entries) */
    const int32_t **ids;
    int *n_ids;
    float *out; /* (batch_texts, dim) */
    ejob **fin; /* (batch_texts) jobs a batch finished */
};

static void job_free(ejob *j)
{
    if (!j) return;
    lode_free(j->ids);
    lode_free(j->off);
    lode_free(j->n_tok);
    lode_free(j);
}

int eng_embedder_dim(const eng_embedder *e)
{
    return e->dim;
}

eng_bert *eng_embedder_bert(const eng_embedder *e)
{
    return e->bert;
}

int eng_embedder_ready(eng_embedder *e)
{
    pthread_mutex_lock(&e->mu);
    int r = eng_esched_pending(e->q) > 0 && !e->stop;
    pthread_mutex_unlock(&e->mu);
    return r;
}

int eng_embedder_step(eng_embedder *e)
{
    eng_ebatch b;
    pthread_mutex_lock(&e->mu);
    eng_esched_next(e->q, &b);
    if (b.n_items == 0) {
        pthread_mutex_unlock(&e->mu);
        return 0;
    }
    e->running = 1;
    pthread_mutex_unlock(&e->mu);

    /* the jobs stay queued (and alive) until the commit below */
    int k = 0;
    for (int i = 0; i < b.n_items; i++) {
        ejob *j = (ejob *)b.items[i].j;
        for (int t = b.items[i].first; t < b.items[i].first + b.items[i].n; t++, k++) {
            e->ids[k] = j->ids + j->off[t];
            e->n_ids[k] = j->n_tok[t];
        }
    }
    int64_t t0 = lode_now_ns();
    lode_status st = eng_bert_embed_ids(e->bert, e->ids, e->n_ids, (size_t)k, e->out);
    double secs = (double)(lode_now_ns() - t0) / 1e9;
    k = 0;
    for (int i = 0; i < b.n_items; i++) {
        ejob *j = (ejob *)b.items[i].j;
        size_t n = (size_t)b.items[i].n;
        if (st == LODE_OK)
            memcpy(j->r.out + (size_t)b.items[i].first * (size_t)e->dim,
                   e->out + (size_t)k * (size_t)e->dim, n * (size_t)e->dim * sizeof(float));
        else if (j->st == LODE_OK) {
            j->st = st;
            snprintf(j->err, sizeof j->err, "%s", eng_bert_errmsg(e->bert));
        }
        k += (int)n;
    }

    /* finished jobs: complete, or failed in this batch (their other texts are dropped) */
    ejob **fin = e->fin;
    int n_fin = 0;
    pthread_mutex_lock(&e->mu);
    eng_esched_commit(e->q, &b);
    for (int i = 0; i < b.n_items; i++) {
        ejob *j = (ejob *)b.items[i].j;
        if (j->base.done == j->base.n)
            fin[n_fin++] = j;
        else if (j->st) {
            eng_esched_remove(e->q, &j->base);
            fin[n_fin++] = j;
        }
    }
    e->running = 0;
    e->st.batches++;
    e->st.texts += (uint64_t)b.n_texts;
    e->st.tokens += (uint64_t)b.n_tokens;
    e->st.jobs += (uint64_t)n_fin;
    e->st.seconds += secs;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < n_fin; i++) {
        fin[i]->r.done(fin[i]->r.user, fin[i]->st, fin[i]->st ? fin[i]->err : "");
        job_free(fin[i]);
    }
    return 1;
}

static void *own_thread(void *arg)
{
    eng_embedder *e = arg;
    pthread_mutex_lock(&e->mu);
    while (!e->stop) {
        if (eng_esched_pending(e->q) == 0) {
            pthread_cond_wait(&e->cv, &e->mu);
            continue;
        }
        pthread_mutex_unlock(&e->mu);
        eng_embedder_step(e);
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

lode_status eng_embedder_create(eng_bert *bert, const eng_embedder_opts *o, eng_model *host,
                                eng_embedder **out)
{
    *out = NULL;
    eng_embedder *e = lode_calloc(1, sizeof *e);
    if (!e) return LODE_ERR_NOMEM;
    eng_embedder_opts def = {0};
    e->o = o ? *o : def;
    if (e->o.batch_tokens <= 0) e->o.batch_tokens = 1024;
    if (e->o.batch_texts <= 0) e->o.batch_texts = 256;
    if (e->o.max_queue <= 0) e->o.max_queue = 16384;
    if (e->o.share <= 0) e->o.share = 50;
    e->bert = bert;
    e->dim = eng_bert_dim(bert);
    e->max_seq = eng_bert_max_seq_len(bert);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    lode_status st = LODE_ERR_NOMEM;
    eng_esched_opts qo = {e->o.batch_tokens, e->o.batch_texts, e->o.max_queue};
    if ((st = eng_esched_create(&qo, &e->q))) goto fail;
    st = LODE_ERR_NOMEM;
    size_t bt = (size_t)e->o.batch_texts;
    e->ids = lode_calloc(bt, sizeof *e->ids);
    e->n_ids = lode_calloc(bt, sizeof *e->n_ids);
    e->out = lode_malloc(bt * (size_t)e->dim * sizeof(float));
    e->fin = lode_calloc(bt, sizeof *e->fin);
    if (!e->ids || !e->n_ids || !e->out || !e->fin) goto fail;
    if (host) {
        if ((st = eng_model_host_embedder(host, e, e->o.share))) goto fail;
        e->host = host;
        e->st.hosted = 1;
    } else {
        if (pthread_create(&e->th, NULL, own_thread, e) != 0) {
            st = LODE_ERR_INTERNAL;
            goto fail;
        }
        e->started = 1;
    }
    *out = e;
    return LODE_OK;
fail:
    eng_embedder_destroy(e);
    return st;
}

/* Fails every queued job with LODE_ERR_CANCELLED (no batch may be running). */
static void cancel_queued(eng_embedder *e)
{
    for (;;) {
        pthread_mutex_lock(&e->mu);
        eng_ebatch b;
        eng_esched_next(e->q, &b);
        ejob *j = b.n_items ? (ejob *)b.items[0].j : NULL;
        if (j) eng_esched_remove(e->q, &j->base);
        pthread_mutex_unlock(&e->mu);
        if (!j) break;
        j->r.done(j->r.user, LODE_ERR_CANCELLED, "the embedder is shutting down");
        job_free(j);
    }
}

void eng_embedder_host_gone(eng_embedder *e)
{
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    e->host = NULL;
    pthread_mutex_unlock(&e->mu);
    cancel_queued(e);
}

void eng_embedder_destroy(eng_embedder *e)
{
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stop = 1; /* no new submits, no new batches */
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_mutex_lock(&e->mu);
    eng_model *host = e->host;
    pthread_mutex_unlock(&e->mu);
    if (host) eng_model_host_embedder(host, NULL, 0); /* waits for its batch */
    if (e->started) pthread_join(e->th, NULL);
    cancel_queued(e);
    eng_esched_destroy(e->q);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    lode_free(e->ids);
    lode_free(e->n_ids);
    lode_free(e->out);
    lode_free(e->fin);
    lode_free(e);
}

lode_status eng_embed_submit(eng_embedder *e, const eng_embed_request *r, char *err, size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof dummy;
    }
    if (!r->texts || r->n < 1 || !r->out || !r->done)
        return lode_seterr(err, errlen, LODE_ERR_INVALID, "embedding: no texts");
    if (r->n > (size_t)e->o.max_queue)
        return lode_seterr(err, errlen, LODE_ERR_RANGE,
                           "embedding: %zu texts in one request (at most %d)", r->n,
                           e->o.max_queue);
    /* cheap refusal before tokenizing; checked again below */
    pthread_mutex_lock(&e->mu);
    int busy = eng_esched_pending(e->q) + (int)r->n > e->o.max_queue, stop = e->stop;
    if (busy && !stop) e->st.rejected++;
    pthread_mutex_unlock(&e->mu);
    if (stop) return lode_seterr(err, errlen, LODE_ERR_CANCELLED, "embedding: shutting down");
    if (busy)
        return lode_seterr(err, errlen, LODE_ERR_BUSY,
                           "embedding: %d texts are queued already (limit %d)", e->o.max_queue,
                           e->o.max_queue);
    lode_status st = LODE_ERR_NOMEM;
    ejob *j = lode_calloc(1, sizeof *j);
    if (!j) return lode_seterr(err, errlen, st, "embedding: out of memory");
    j->r = *r;
    j->r.texts = NULL; /* read here only */
    j->r.lens = NULL;
    j->off = lode_malloc(r->n * sizeof *j->off);
    j->n_tok = lode_malloc(r->n * sizeof *j->n_tok);
    j->ids = lode_malloc(r->n * (size_t)e->max_seq * sizeof *j->ids);
    if (!j->off || !j->n_tok || !j->ids) goto fail;
    size_t used = 0;
    for (size_t i = 0; i < r->n; i++) {
        const char *t = r->texts[i] ? r->texts[i] : "";
        size_t len = r->lens ? r->lens[i] : strlen(t);
        int k = 0;
        if ((st = eng_bert_tokenize(e->bert, t, len, j->ids + used, e->max_seq, &k))) {
            job_free(j);
            return lode_seterr(err, errlen, st, "embedding: tokenizing text %zu failed", i);
        }
        j->off[i] = used;
        j->n_tok[i] = k;
        used += (size_t)k;
    }
    /* the ids of long batches of short texts: give back the unused tail */
    int32_t *shrunk = lode_realloc(j->ids, LODE_MAX(used, 1) * sizeof *j->ids);
    if (shrunk) j->ids = shrunk;
    j->base.n = (int)r->n;
    j->base.n_tok = j->n_tok;
    j->base.user = j;
    pthread_mutex_lock(&e->mu);
    st = e->stop ? LODE_ERR_CANCELLED : eng_esched_add(e->q, &j->base);
    eng_model *host = e->host; /* callers stop submitting before the host is freed */
    if (st == LODE_ERR_BUSY) e->st.rejected++;
    if (st == LODE_OK) pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (st) {
        job_free(j);
        return lode_seterr(err, errlen, st, "embedding: %s",
                           st == LODE_ERR_BUSY ? "the queue is full" : lode_strerror(st));
    }
    if (host) eng_model_wake(host);
    return LODE_OK;
fail:
    job_free(j);
    return lode_seterr(err, errlen, st, "embedding: out of memory");
}

typedef struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    lode_status st;
    char err[256];
} sync_wait;

static void sync_done(void *user, lode_status st, const char *err)
{
    sync_wait *w = user;
    pthread_mutex_lock(&w->mu);
    w->st = st;
    if (st) snprintf(w->err, sizeof w->err, "%s", err ? err : lode_strerror(st));
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

lode_status eng_embed_run(eng_embedder *e, const char *const *texts, const size_t *lens, size_t n,
                          float *out, char *err, size_t errlen)
{
    sync_wait w = {.done = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    eng_embed_request r = {texts, lens, n, out, sync_done, &w};
    lode_status st = eng_embed_submit(e, &r, err, errlen);
    if (st == LODE_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        st = w.st;
        if (st && err) snprintf(err, errlen, "%s", w.err);
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return st;
}

void eng_embedder_stats_get(eng_embedder *e, eng_embedder_stats *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->st;
    out->queued_texts = eng_esched_pending(e->q);
    out->queued_jobs = eng_esched_n_jobs(e->q);
    out->running = e->running;
    pthread_mutex_unlock(&e->mu);
}
