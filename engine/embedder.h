/*
 * embedder.h: embedding requests served by a scheduler, so that everything that embeds
 * (HTTP /v1/embeddings, search queries, uploaded documents, ingest) shares encoder
 * batches and, next to a generation model, the machine. Callers submit texts with a
 * completion callback from any thread; the texts are tokenized there, queued
 * (esched.h: bounded, LODE_ERR_BUSY beyond), and packed from many callers into encoder
 * batches. The batches run either on the scheduler thread of a generation model (the
 * host: its steps and the encoder batches share that thread by time, esched.h share),
 * or, without one, on the embedder's own thread.
 *
 * Vectors are bitwise those of eng_bert_embed on the same texts, however the texts are
 * grouped into batches.
 */
#ifndef LODE_ENGINE_EMBEDDER_H
#define LODE_ENGINE_EMBEDDER_H

#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"
#include "engine/bert.h"
#include "engine/engine.h"

typedef struct eng_embedder eng_embedder;

typedef struct eng_embedder_opts {
    int batch_tokens; /* tokens of one encoder batch; <= 0: 1024 */
    int batch_texts;  /* texts of one encoder batch; <= 0: 256 */
    int max_queue;    /* texts queued at once; beyond, submit says LODE_ERR_BUSY; <= 0:
                         16384 */
    int share;        /* with a host: percent of its thread's time for encoder batches while
                         generation also waits; <= 0: 50 */
} eng_embedder_opts;

/* Creates an embedder over bert (borrowed; it must outlive the embedder). With host
 * (may be NULL) its batches run on the host model's scheduler thread, else on a thread
 * of its own. One host serves one embedder. o may be NULL. Returns LODE_OK and *out,
 * LODE_ERR_BUSY when host serves another embedder already, LODE_ERR_NOMEM, or
 * LODE_ERR_INTERNAL (no thread). Destroy it before its host. */
lode_status eng_embedder_create(eng_bert *bert, const eng_embedder_opts *o, eng_model *host,
                                eng_embedder **out /* OUT */);
/* Fails what is still queued (LODE_ERR_CANCELLED), waits for a batch in progress,
 * detaches from the host or stops its thread, frees. Accepts NULL. */
void eng_embedder_destroy(eng_embedder *e);

int eng_embedder_dim(const eng_embedder *e);
eng_bert *eng_embedder_bert(const eng_embedder *e);

/* Called once per request on the serving thread (or in eng_embed_submit's caller: never;
 * a refused request returns the error instead). st is LODE_OK when out is filled; err
 * says why otherwise. */
typedef void (*eng_embed_done)(void *user, lode_status st, const char *err);

typedef struct eng_embed_request {
    const char *const *texts; /* (n) read during eng_embed_submit only (tokenized there) */
    const size_t *lens;       /* (n) byte lengths, or NULL for NUL-terminated texts */
    size_t n;                 /* >= 1 */
    float *out;               /* OUT (n, dim): must stay valid until done is called */
    eng_embed_done done;
    void *user;
} eng_embed_request;

/* Queues a request. Returns LODE_OK (done will be called once), LODE_ERR_BUSY (the queue
 * holds max_queue texts: try later; a server answers 429), LODE_ERR_RANGE (more texts
 * than max_queue), LODE_ERR_INVALID, LODE_ERR_CANCELLED (shutting down), or a
 * tokenizer error; on error done is not called. err (may be NULL) gets the message. */
lode_status eng_embed_submit(eng_embedder *e, const eng_embed_request *r, char *err, size_t errlen);
/* Submits and waits: the synchronous form. */
lode_status eng_embed_run(eng_embedder *e, const char *const *texts, const size_t *lens, size_t n,
                          float *out /* OUT */, char *err, size_t errlen);

typedef struct eng_embedder_stats {
    int queued_texts;  /* waiting or in the running batch */
    int queued_jobs;   /* requests not finished */
    int running;       /* 1 while a batch runs */
    uint64_t batches;  /* encoder batches run */
    uint64_t texts;    /* texts embedded */
    uint64_t tokens;   /* their tokens */
    uint64_t jobs;     /* requests finished */
    uint64_t rejected; /* submits refused with LODE_ERR_BUSY */
    double seconds;    /* in the encoder */
    int hosted;        /* batches run on a generation model's thread */
} eng_embedder_stats;
/* A consistent snapshot, from any thread. */
void eng_embedder_stats_get(eng_embedder *e, eng_embedder_stats *out /* OUT */);

/* ---- for the host's scheduler thread (engine.c) ------------------------------------ */
/* 1 when texts wait for an encoder batch. */
int eng_embedder_ready(eng_embedder *e);
/* Runs one encoder batch and finishes the requests it completes; 0 when nothing
 * waited. */
int eng_embedder_step(eng_embedder *e);
/* The host is being freed (its thread has stopped): what is queued is cancelled, later
 * submits are refused with LODE_ERR_CANCELLED; destroy still frees the embedder. */
void eng_embedder_host_gone(eng_embedder *e);

#endif
