/*
 * esched.c: the encoder queue and the thread share of esched.h. The queue is a list in
 * arrival order of the jobs with texts not yet computed; a batch is planned in two
 * passes over it (an equal token quota per waiting job, then the rest in arrival order),
 * so each job's texts in a batch are one contiguous run and a batch holds one item per
 * job at most.
 */
#include "engine/esched.h"

#include <string.h>

struct eng_esched {
    eng_esched_opts o;
    eng_ejob *head, *tail;
    int n_jobs;
    int pending; /* sum of n - done over the queue */
    uint64_t next_order;
    eng_ebatch_item *items; /* (batch_texts) */
};

lode_status eng_esched_create(const eng_esched_opts *o, eng_esched **out)
{
    *out = NULL;
    if (o->batch_tokens < 1 || o->batch_texts < 1 || o->max_texts < 1) return LODE_ERR_INVALID;
    eng_esched *s = lode_calloc(1, sizeof *s);
    if (!s) return LODE_ERR_NOMEM;
    s->o = *o;
    s->items = lode_calloc((size_t)o->batch_texts, sizeof *s->items);
    if (!s->items) {
        lode_free(s);
        return LODE_ERR_NOMEM;
    }
    *out = s;
    return LODE_OK;
}

void eng_esched_destroy(eng_esched *s)
{
    if (!s) return;
    lode_free(s->items);
    lode_free(s);
}

int eng_esched_pending(const eng_esched *s)
{
    return s->pending;
}

int eng_esched_n_jobs(const eng_esched *s)
{
    return s->n_jobs;
}

lode_status eng_esched_add(eng_esched *s, eng_ejob *j)
{
    if (j->n < 1 || !j->n_tok) return LODE_ERR_INVALID;
    for (int i = 0; i < j->n; i++)
        if (j->n_tok[i] < 1) return LODE_ERR_INVALID;
    if (j->n > s->o.max_texts) return LODE_ERR_RANGE;
    if (s->pending + j->n > s->o.max_texts) return LODE_ERR_BUSY;
    j->planned = j->done = 0;
    j->order = s->next_order++;
    j->next = NULL;
    j->prev = s->tail;
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    s->n_jobs++;
    s->pending += j->n;
    return LODE_OK;
}

static void unlink_job(eng_esched *s, eng_ejob *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        s->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        s->tail = j->prev;
    j->prev = j->next = NULL;
    s->n_jobs--;
}

void eng_esched_remove(eng_esched *s, eng_ejob *j)
{
    for (eng_ejob *x = s->head; x; x = x->next)
        if (x == j) {
            s->pending -= j->n - j->done;
            unlink_job(s, j);
            return;
        }
}

/* Extends item it (of job j) by j's next texts while they fit the batch and, when
 * quota > 0, the item's tokens stay within quota (its first text always may). */
static void take(const eng_esched *s, eng_ebatch *b, eng_ebatch_item *it, int quota)
{
    eng_ejob *j = it->j;
    int item_tok = 0;
    for (int k = 0; k < it->n; k++) item_tok += j->n_tok[it->first + k];
    while (j->planned < j->n && b->n_texts < s->o.batch_texts) {
        int t = j->n_tok[j->planned];
        if (b->n_texts > 0 && b->n_tokens + t > s->o.batch_tokens) break;
        if (quota > 0 && it->n > 0 && item_tok + t > quota) break;
        it->n++;
        item_tok += t;
        j->planned++;
        b->n_texts++;
        b->n_tokens += t;
    }
}

void eng_esched_next(eng_esched *s, eng_ebatch *b)
{
    memset(b, 0, sizeof *b);
    b->items = s->items;
    int waiting = 0;
    for (eng_ejob *j = s->head; j; j = j->next) waiting += j->planned < j->n;
    if (!waiting) return;
    /* pass 1: an equal quota of the tokens for every waiting job */
    int quota = LODE_MAX(1, s->o.batch_tokens / waiting);
    for (eng_ejob *j = s->head; j && b->n_texts < s->o.batch_texts; j = j->next) {
        if (j->planned >= j->n) continue;
        eng_ebatch_item *it = &b->items[b->n_items];
        *it = (eng_ebatch_item){j, j->planned, 0};
        take(s, b, it, quota);
        if (it->n > 0) b->n_items++;
    }
    /* pass 2: what is left, in arrival order */
    for (int i = 0; i < b->n_items; i++) take(s, b, &b->items[i], 0);
}

void eng_esched_commit(eng_esched *s, const eng_ebatch *b)
{
    for (int i = 0; i < b->n_items; i++) {
        eng_ejob *j = b->items[i].j;
        j->done += b->items[i].n;
        s->pending -= b->items[i].n;
        if (j->done == j->n) unlink_job(s, j);
    }
}

/* ---- share ---------------------------------------------------------------------------- */
void eng_share_init(eng_share *s, int enc_percent)
{
    int p = LODE_MIN(LODE_MAX(enc_percent, 1), 99);
    s->vt[0] = s->vt[1] = 0;
    s->w[ENG_SHARE_ENC] = p / 100.0;
    s->w[ENG_SHARE_GEN] = 1.0 - p / 100.0;
}

int eng_share_pick(eng_share *s, int gen_ready, int enc_ready)
{
    if (!gen_ready && !enc_ready) return -1;
    if (!gen_ready || !enc_ready) {
        int k = gen_ready ? ENG_SHARE_GEN : ENG_SHARE_ENC;
        /* the idle kind keeps no credit from its idle time */
        if (s->vt[1 - k] < s->vt[k]) s->vt[1 - k] = s->vt[k];
        return k;
    }
    return s->vt[ENG_SHARE_ENC] < s->vt[ENG_SHARE_GEN] ? ENG_SHARE_ENC : ENG_SHARE_GEN;
}

void eng_share_charge(eng_share *s, int kind, double seconds)
{
    if (seconds > 0) s->vt[kind] += seconds / s->w[kind];
}
