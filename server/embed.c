/*
 * embed.c: the server's embedding queue. The BERT encoder serves one call at a time and
 * runs most efficiently on many texts at once, so every embedding the server needs
 * (/v1/embeddings, the query of a dense search, the chunks of an uploaded document) is a
 * job queued here, and one worker thread takes all queued jobs up to a batch of texts and
 * embeds them in a single eng_bert_embed call. Concurrent requests thereby share batches
 * instead of waiting for each other one by one, and no HTTP worker thread ever runs the
 * encoder itself for an asynchronous job.
 */
#include "server/srv_int.h"

#include "engine/bert.h"

#include <string.h>

/* Texts gathered from several jobs into one encoder call. A job with more texts than
 * this runs alone (the encoder packs any number into its own token batches). */
#define BATCH_TEXTS 256

struct srv_embedder {
    eng_bert *m;
    int dim;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_embed_job *head, *tail; /* the queue */
    int stop;
    int n_queued; /* jobs waiting */
    int running;  /* jobs in the encoder now */
    uint64_t batches, texts, jobs;
    double seconds;
    pthread_t th;
    int started;
    /* gather buffers, BATCH_TEXTS entries; the worker's alone */
    const char **ptrs;
    size_t *lens;
    float *out; /* (BATCH_TEXTS, dim) */
};

static void finish(srv_embed_job *j, lode_status st, const char *msg)
{
    j->st = st;
    if (st) snprintf(j->err, sizeof j->err, "%s", msg ? msg : lode_strerror(st));
    j->done(j);
}

static void *worker(void *arg)
{
    srv_embedder *e = arg;
    srv_embed_job *batch[BATCH_TEXTS];
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->stop && !e->head) pthread_cond_wait(&e->cv, &e->mu);
        if (!e->head) break; /* stopping with an empty queue */
        /* take whole jobs while they fit one batch (the first one always) */
        int nb = 0;
        size_t texts = 0;
        while (e->head && nb < BATCH_TEXTS &&
               (nb == 0 || texts + e->head->n <= (size_t)BATCH_TEXTS)) {
            srv_embed_job *j = e->head;
            e->head = j->next;
            if (!e->head) e->tail = NULL;
            j->next = NULL;
            batch[nb++] = j;
            texts += j->n;
        }
        e->n_queued -= nb;
        e->running = nb;
        int stopping = e->stop;
        pthread_mutex_unlock(&e->mu);

        int64_t t0 = lode_now_ns();
        lode_status st = LODE_OK;
        char msg[256] = "";
        if (stopping) {
            st = LODE_ERR_CANCELLED;
            snprintf(msg, sizeof msg, "the server is shutting down");
        } else if (nb == 1) {
            st = eng_bert_embed(e->m, batch[0]->texts, batch[0]->lens, batch[0]->n, batch[0]->out);
        } else {
            size_t k = 0;
            for (int i = 0; i < nb; i++)
                for (size_t t = 0; t < batch[i]->n; t++, k++) {
                    e->ptrs[k] = batch[i]->texts[t];
                    e->lens[k] = batch[i]->lens ? batch[i]->lens[t] : strlen(batch[i]->texts[t]);
                }
            st = eng_bert_embed(e->m, e->ptrs, e->lens, k, e->out);
            k = 0;
            for (int i = 0; st == LODE_OK && i < nb; i++) {
                memcpy(batch[i]->out, e->out + k * (size_t)e->dim,
                       batch[i]->n * (size_t)e->dim * sizeof(float));
                k += batch[i]->n;
            }
        }
        if (st && !stopping) snprintf(msg, sizeof msg, "%s", eng_bert_errmsg(e->m));
        double secs = (double)(lode_now_ns() - t0) / 1e9;
        for (int i = 0; i < nb; i++) finish(batch[i], st, msg);

        pthread_mutex_lock(&e->mu);
        e->running = 0;
        e->batches++;
        e->texts += texts;
        e->jobs += (uint64_t)nb;
        e->seconds += secs;
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

srv_embedder *srv_embedder_create(struct eng_bert *m)
{
    srv_embedder *e = lode_calloc(1, sizeof *e);
    if (!e) return NULL;
    e->m = m;
    e->dim = eng_bert_dim(m);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->ptrs = lode_calloc(BATCH_TEXTS, sizeof *e->ptrs);
    e->lens = lode_calloc(BATCH_TEXTS, sizeof *e->lens);
    e->out = lode_malloc((size_t)BATCH_TEXTS * (size_t)e->dim * sizeof(float));
    if (!e->ptrs || !e->lens || !e->out || pthread_create(&e->th, NULL, worker, e) != 0) {
        srv_embedder_destroy(e);
        return NULL;
    }
    e->started = 1;
    return e;
}

void srv_embedder_destroy(srv_embedder *e)
{
    if (!e) return;
    if (e->started) {
        pthread_mutex_lock(&e->mu);
        e->stop = 1;
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->th, NULL);
    }
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    lode_free(e->ptrs);
    lode_free(e->lens);
    lode_free(e->out);
    lode_free(e);
}

int srv_embedder_dim(const srv_embedder *e)
{
    return e->dim;
}

lode_status srv_embed_submit(srv_embedder *e, srv_embed_job *j)
{
    j->next = NULL;
    j->st = LODE_OK;
    j->err[0] = 0;
    pthread_mutex_lock(&e->mu);
    if (e->stop) {
        pthread_mutex_unlock(&e->mu);
        return LODE_ERR_CANCELLED;
    }
    if (e->tail)
        e->tail->next = j;
    else
        e->head = j;
    e->tail = j;
    e->n_queued++;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return LODE_OK;
}

typedef struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} sync_wait;

static void sync_done(srv_embed_job *j)
{
    sync_wait *w = j->user;
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

lode_status srv_embed_run(srv_embedder *e, const char *const *texts, const size_t *lens, size_t n,
                          float *out, char *err, size_t errlen)
{
    sync_wait w = {.done = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    srv_embed_job j = {
        .texts = texts, .lens = lens, .n = n, .out = out, .done = sync_done, .user = &w};
    lode_status st = srv_embed_submit(e, &j);
    if (st == LODE_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        st = j.st;
        if (st && err) snprintf(err, errlen, "%s", j.err);
    } else if (err) {
        snprintf(err, errlen, "the server is shutting down");
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return st;
}

void srv_embedder_stats(srv_embedder *e, srv_embed_stats *out)
{
    pthread_mutex_lock(&e->mu);
    out->queued = e->n_queued;
    out->running = e->running;
    out->batches = e->batches;
    out->texts = e->texts;
    out->jobs = e->jobs;
    out->seconds = e->seconds;
    pthread_mutex_unlock(&e->mu);
}
