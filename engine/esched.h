/*
 * esched.h: the scheduling of embedding work, independent of the encoder and of threads
 * so that tests drive it with a simulated encoder and clock (as sched.h is for
 * generation). Two parts:
 *
 * - The encoder queue: embedding jobs (a client's texts, tokenized, with their token
 *   counts) wait in arrival order; each encoder batch takes texts from many jobs under a
 *   token and a text budget. Every waiting job first gets an equal part of the batch's
 *   tokens (at least one text), then what is left goes to jobs in arrival order, so a
 *   search query's one text arriving behind a bulk ingest of thousands joins the very
 *   next batch instead of waiting for the bulk to drain. Admission is bounded by queued
 *   texts (LODE_ERR_BUSY beyond: a server answers 429).
 *
 * - The share: one thread serves both generation steps and encoder batches of a model;
 *   while both have work, each kind gets its configured share of that thread's time
 *   (weighted fair queueing on measured seconds: the kind with the least service per
 *   weight runs next, and a kind that was idle does not bank credit for later).
 *
 * Not thread-safe: the caller locks.
 */
#ifndef LODE_ENGINE_ESCHED_H
#define LODE_ENGINE_ESCHED_H

#include <stdint.h>

#include "common/lode.h"

/* One embedding job. The caller fills the fields above the line and keeps it alive
 * until it is done (done == n after a commit) or removed. */
typedef struct eng_ejob {
    uint64_t id;
    void *user;
    int n;            /* texts, >= 1 */
    const int *n_tok; /* (n) tokens of each text, >= 1 */
    /* ---- scheduler state ---- */
    int planned; /* texts handed to batches */
    int done;    /* texts computed (committed) */
    uint64_t order;
    struct eng_ejob *prev, *next; /* the queue */
} eng_ejob;

typedef struct eng_esched_opts {
    int batch_tokens; /* tokens of one encoder batch; a longer text runs alone */
    int batch_texts;  /* texts of one batch */
    int max_texts;    /* texts queued and not computed, at most; a job beyond is refused */
} eng_esched_opts;

/* Texts first..first+n-1 of job j. */
typedef struct eng_ebatch_item {
    eng_ejob *j;
    int first, n;
} eng_ebatch_item;

typedef struct eng_ebatch {
    eng_ebatch_item *items; /* (n_items) one per job, in arrival order */
    int n_items;
    int n_texts, n_tokens;
} eng_ebatch;

typedef struct eng_esched eng_esched;

/* LODE_OK and *out, LODE_ERR_INVALID for budgets < 1, or LODE_ERR_NOMEM. */
lode_status eng_esched_create(const eng_esched_opts *o, eng_esched **out /* OUT */);
void eng_esched_destroy(eng_esched *s); /* accepts NULL; not the jobs */

/* Queues j. LODE_ERR_BUSY when its texts would pass max_texts queued, LODE_ERR_RANGE
 * when it alone has more than max_texts, LODE_ERR_INVALID for a bad job. */
lode_status eng_esched_add(eng_esched *s, eng_ejob *j);
/* Takes j out (done, failed or cancelled); its uncomputed texts leave the count. */
void eng_esched_remove(eng_esched *s, eng_ejob *j);
/* The next encoder batch (n_items == 0 when nothing waits). Valid until the next call. */
void eng_esched_next(eng_esched *s, eng_ebatch *b /* OUT */);
/* Records the batch as computed: done advances; jobs that reached n leave the queue
 * (the caller finishes them: j->done == j->n). */
void eng_esched_commit(eng_esched *s, const eng_ebatch *b);
/* Texts queued and not yet computed. */
int eng_esched_pending(const eng_esched *s);
/* Jobs in the queue. */
int eng_esched_n_jobs(const eng_esched *s);

/* ---- the share of one thread between generation and encoder batches ---------------- */
enum { ENG_SHARE_GEN = 0, ENG_SHARE_ENC = 1 };
typedef struct eng_share {
    double vt[2]; /* service received / weight, seconds */
    double w[2];
} eng_share;
/* enc_percent of the time to encoder batches while both kinds wait (1..99). */
void eng_share_init(eng_share *s, int enc_percent);
/* Which kind runs next: ENG_SHARE_GEN or ENG_SHARE_ENC, -1 when neither has work. */
int eng_share_pick(eng_share *s, int gen_ready, int enc_ready);
/* Charges the seconds a kind's step or batch took. */
void eng_share_charge(eng_share *s, int kind, double seconds);

#endif
