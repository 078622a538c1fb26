/*
 * doctor.h: checks of a store's consistency, and their repairs (`lode doctor`).
 *
 * Checked: SQLite's integrity_check; the FTS5 index against the chunks (its
 * integrity-check); vectors whose chunk is gone; vectors of a model or dimension other
 * than the store's embedding model; chunks without a vector (a note: an interrupted or
 * lexical-only ingest leaves them, and the next ingest embeds them); the FAISS file beside
 * the store (readable, made for the store's model, not ahead of the change log, and, once
 * caught up, holding exactly the store's vectors).
 *
 * A problem is an inconsistency; a note is work left to do (vectors to embed, an index
 * file behind the change log, which every open catches up). With repair, each is fixed:
 * the FTS index rebuilt, stray vectors deleted, missing vectors embedded (with the store's
 * model), the FAISS file caught up or rebuilt. A damaged SQLite file cannot be repaired
 * here (the message says what to do).
 */
#ifndef LODE_RETRIEVAL_DOCTOR_H
#define LODE_RETRIEVAL_DOCTOR_H

#include "common/lode.h"
#include "retrieval/store.h"

struct eng_bert;

enum { RET_DOCTOR_OK = 0, RET_DOCTOR_NOTE, RET_DOCTOR_PROBLEM, RET_DOCTOR_REPAIRED };

typedef struct ret_doctor_opts {
    int repair;
    const char *model_path; /* for embedding missing vectors when repairing; NULL: the
                               store's embed_path */
    struct eng_bert *model; /* or an embedder to use (not owned) */
    const char *index_path; /* NULL: the store's file + ".faiss" */
    /* One line per check: kind is RET_DOCTOR_OK, _NOTE, _PROBLEM or _REPAIRED. */
    void (*on_line)(void *ctx, int kind, const char *check, const char *msg);
    void *ctx;
} ret_doctor_opts;

typedef struct ret_doctor_report {
    int problems;   /* inconsistencies found (before repair) */
    int notes;      /* work left to do, found (before repair) */
    int repaired;   /* problems and notes fixed */
    int unrepaired; /* problems still there after repair (or found without repair) */
} ret_doctor_report;

/* Runs every check on s (a read-write handle when repairing) and fills *out. Returns
 * LODE_OK when the checks ran (whatever they found), or the error that stopped them. */
lode_status ret_doctor_run(ret_store *s, const ret_doctor_opts *o,
                           ret_doctor_report *out /* OUT */);

#endif
