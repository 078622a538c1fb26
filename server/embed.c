/*
 * embed.c: the server's embedding queue. Every embedding the server needs
 * (/v1/embeddings, the query of a dense search, the chunks of an uploaded document) is a
 * job handed to the engine's embedder (engine/embedder.h), which packs the texts of
 * concurrent jobs into shared encoder batches. With a generation model loaded the
 * batches run on that model's scheduler thread, which shares its time between encoder
 * batches and generation steps, so embedding traffic and answering share the machine
 * fairly instead of two thread pools fighting over the same cores; without one the
 * embedder has its own thread. No HTTP worker thread runs the encoder for an
 * asynchronous job. The queue is bounded: a job beyond it is refused with
 * LODE_ERR_BUSY (429).
 */
#include "server/srv_int.h"

#include "engine/embedder.h"

#include <string.h>

struct srv_embedder {
    eng_embedder *e;
    int dim;
};

srv_embedder *srv_embedder_create(struct eng_bert *m, struct eng_model *host, int max_queue)
{
    srv_embedder *e = lode_calloc(1, sizeof *e);
    if (!e) return NULL;
    eng_embedder_opts o = {.max_queue = max_queue};
    if (eng_embedder_create(m, &o, host, &e->e) != LODE_OK) {
        lode_free(e);
        return NULL;
    }
    e->dim = eng_bert_dim(m);
    return e;
}

void srv_embedder_destroy(srv_embedder *e)
{
    if (!e) return;
    eng_embedder_destroy(e->e);
    lode_free(e);
}

struct eng_embedder *srv_embedder_engine(srv_embedder *e)
{
    return e->e;
}

int srv_embedder_dim(const srv_embedder *e)
{
    return e->dim;
}

static void job_done(void *user, lode_status st, const char *err)
{
    srv_embed_job *j = user;
    j->st = st;
    if (st) snprintf(j->err, sizeof j->err, "%s", err && *err ? err : lode_strerror(st));
    j->done(j);
}

lode_status srv_embed_submit(srv_embedder *e, srv_embed_job *j)
{
    j->next = NULL;
    j->st = LODE_OK;
    j->err[0] = 0;
    eng_embed_request r = {j->texts, j->lens, j->n, j->out, job_done, j};
    return eng_embed_submit(e->e, &r, j->err, sizeof j->err);
}

lode_status srv_embed_run(srv_embedder *e, const char *const *texts, const size_t *lens, size_t n,
                          float *out, char *err, size_t errlen)
{
    return eng_embed_run(e->e, texts, lens, n, out, err, errlen);
}

void srv_embedder_stats(srv_embedder *e, srv_embed_stats *out)
{
    eng_embedder_stats s;
    eng_embedder_stats_get(e->e, &s);
    out->queued = s.queued_jobs;
    out->running = s.running;
    out->batches = s.batches;
    out->texts = s.texts;
    out->jobs = s.jobs;
    out->rejected = s.rejected;
    out->seconds = s.seconds;
    out->hosted = s.hosted;
}
