/*
 * sched.h: the serving scheduler of one model, independent of the model and backend so
 * that it can be driven by a simulated model in tests. Each step it chooses which
 * sequences advance and by how many tokens under a token budget (continuous batching:
 * decode tokens of running sequences and chunks of prompts share one forward step),
 * takes KV blocks for them from the block manager (kvcache.h), reuses cached prefix
 * blocks at admission, and when blocks run out preempts sequences by recompute (their
 * blocks are released, they wait again and later recompute their tokens, mostly from
 * the prefix cache).
 *
 * The caller (engine.c) owns the sequences and their arrays; one step is
 *   eng_sched_next -> copy the plan's swap_out blocks to the host, then its swap_in
 *   blocks back -> run the batch -> eng_sched_commit -> for each item that reached the
 *   end of its tokens, sample and append a token or finish (eng_sched_remove).
 * The copies of a plan must be done (or at least ordered before any later work on the
 * same blocks and slots) before the next eng_sched_next.
 * Not thread-safe: the model's scheduler thread owns it.
 */
#ifndef LODE_ENGINE_SCHED_H
#define LODE_ENGINE_SCHED_H

#include <stdint.h>

#include "common/lode.h"
#include "engine/engine.h"
#include "engine/kvcache.h"

typedef struct eng_sched_opts {
    eng_policy policy;
    int step_tokens;  /* tokens of one step (budget), >= max_seqs */
    int max_seqs;     /* sequences holding a running slot at once */
    int max_live;     /* sequences known at once (running and waiting) */
    int max_out;      /* logits rows of one step, >= 2 */
    int prefix_cache; /* reuse cached prefix blocks */
    int mlfq_levels;  /* <= 0: 4 */
    int mlfq_quantum; /* tokens a sequence runs at level 0 before it drops; doubles per level;
                         <= 0: 32 */
    int mlfq_boost;   /* steps between lifting every sequence back to level 0; <= 0: 512 */
    int swap_slots;   /* > 0: preempt by swapping to a host pool of this many block slots,
                         by recompute when it is full; 0: always by recompute */
    /* Latency-aware chunked prefill: while sequences decode, a step's prompt tokens are
     * capped so that its predicted time (eng_sched_observe's cost model) stays within
     * prefill_slack times that of the same step without them; the first prompt chunk
     * of a step gets at least prefill_min tokens. 0: off, the token budget alone. */
    double prefill_slack; /* 0 or >= 1 */
    int prefill_min;      /* <= 0: 4 (on a CPU a prompt token deep in a long prompt can
                             cost a sixth of a 32-row decode step: its attention) */
} eng_sched_opts;

typedef enum eng_seq_state {
    ENG_SEQ_WAITING = 0, /* not admitted yet, or preempted */
    ENG_SEQ_RUNNING,     /* holds a running slot and KV blocks */
    ENG_SEQ_SWAPPED,     /* preempted by swap: waiting, table[0..n_table) are host slots */
} eng_seq_state;

/* A sequence. The caller fills the fields above the line and keeps the struct alive
 * until eng_sched_remove; the scheduler owns the rest. */
typedef struct eng_sseq {
    uint64_t id;
    void *user;
    int32_t *toks;   /* (cap) prompt, then generated tokens */
    int n_toks;      /* prompt + generated so far */
    int cap;         /* most tokens (the context) */
    int n_prompt;    /* the first n_prompt of toks */
    int want_prompt; /* logits of prompt rows 0..n_prompt-2 are wanted (prompt logprobs) */
    int32_t *table;  /* (table_cap) block table, logical -> physical (host slots while
                        ENG_SEQ_SWAPPED) */
    int table_cap;   /* >= ceil(cap / ENG_KV_BLOCK) */
    /* ---- scheduler state ---- */
    eng_seq_state state;
    int n_computed;    /* tokens whose K/V is in the cache */
    int n_table;       /* blocks held */
    int n_published;   /* leading full blocks published to the prefix cache */
    uint64_t chain;    /* hash of block n_published - 1 (0 when none) */
    int lp_next;       /* next prompt row whose logits are still owed */
    int level, used;   /* MLFQ level and tokens run at it */
    uint64_t order;    /* arrival order */
    int n_preempt;     /* times preempted */
    int n_swapped;     /* of those, by swap */
    int cached_tokens; /* prompt tokens found in the prefix cache at the first admission;
                          -1 before it */
    int admitted;      /* has run at least once */
    int in_step;
} eng_sseq;

/* One sequence's share of a step: tokens toks[pos0 .. pos0+n) at those positions. Rows
 * out_lo..out_hi-1 (positions) want logits: prompt rows owed for prompt logprobs and,
 * when `last`, the final row, from which the next token is sampled. */
typedef struct eng_sched_item {
    eng_sseq *s;
    int pos0, n;
    int out_lo, out_hi; /* positions with logits, out_lo == out_hi for none */
    int last;           /* the chunk ends at n_toks: sample from row pos0+n-1 */
} eng_sched_item;

/* One block copy between the KV pool and the host pool. */
typedef struct eng_sched_copy {
    eng_sseq *s;   /* the sequence it belongs to */
    int32_t block; /* physical KV block */
    int32_t slot;  /* host pool slot */
} eng_sched_copy;

typedef struct eng_sched_plan {
    eng_sched_item *items; /* (n_items) in batch order */
    int n_items;
    int n_tokens;      /* sum of items' n */
    int n_out;         /* sum of items' logits rows */
    eng_sseq **failed; /* sequences that cannot fit the KV pool alone: finish them with an
                          error and remove them */
    int n_failed;
    int n_preempted; /* preemptions made while planning this step */
    /* Copies to do before the step, all of swap_out first (a block swapped out may be
     * swapped into by a later sequence of the same plan), then swap_in. */
    eng_sched_copy *swap_out; /* block -> slot */
    int n_swap_out;
    eng_sched_copy *swap_in; /* slot -> block */
    int n_swap_in;
} eng_sched_plan;

typedef struct eng_sched eng_sched;

/* Creates a scheduler over a block manager of n_blocks blocks (owned). Returns LODE_OK
 * and *out, LODE_ERR_INVALID for inconsistent options, or LODE_ERR_NOMEM. */
lode_status eng_sched_create(const eng_sched_opts *o, int n_blocks, eng_sched **out /* OUT */);
/* Releases everything the scheduler owns (not the sequences). Accepts NULL. */
void eng_sched_destroy(eng_sched *s);

/* Adds a sequence (its fields above the line filled, n_toks >= 1) as waiting. Returns
 * LODE_OK, LODE_ERR_BUSY when max_live sequences are known, LODE_ERR_INVALID for a bad
 * sequence. */
lode_status eng_sched_add(eng_sched *s, eng_sseq *q);
/* Forgets a sequence (finished, cancelled or failed) and releases its blocks at once. */
void eng_sched_remove(eng_sched *s, eng_sseq *q);

/* Chooses the next step's work and takes the KV blocks it needs. plan points into the
 * scheduler and is valid until the next eng_sched_next. n_items may be 0 while
 * sequences wait (nothing fits) only when failed or preempted ones were reported. */
void eng_sched_next(eng_sched *s, eng_sched_plan *plan /* OUT */);
/* Records that the plan's tokens were computed: publishes newly full blocks to the
 * prefix cache and advances the MLFQ accounting. */
void eng_sched_commit(eng_sched *s, const eng_sched_plan *plan);

/* Records the wall time of a step run from plan (call it before the next eng_sched_next;
 * it reads only the items' pos0 and n, so sequences may have been removed). Feeds the
 * step cost model that prefill_slack uses. */
void eng_sched_observe(eng_sched *s, const eng_sched_plan *plan, double secs);

/* The step cost model: predicted seconds = c[0] + c[1]*decode rows + c[2]*prompt tokens
 * + c[3]*attended positions/1024 (a row at position p attends p+1 positions), fitted by
 * non-negative least squares over recent steps. n_obs counts the steps it holds. */
typedef struct eng_sched_cost {
    double c[4];
    int n_obs, n_prefill_obs;
} eng_sched_cost;
void eng_sched_cost_get(const eng_sched *s, eng_sched_cost *out /* OUT */);
/* The prompt tokens the next step would give one prompt chunk at position pos0 while
 * n_decode rows at the given attended positions run beside it, from the cost model and
 * prefill_slack (before the token budget and prefill_min); INT32_MAX when not capped. */
int eng_sched_prefill_cap(const eng_sched *s, int n_decode, double decode_attn, int pos0);

int eng_sched_n_live(const eng_sched *s);
int eng_sched_n_running(const eng_sched *s);
eng_kvcache *eng_sched_kvcache(eng_sched *s);
/* Total preemptions so far (by recompute and by swap). */
uint64_t eng_sched_preemptions(const eng_sched *s);

typedef struct eng_sched_swap_stats {
    int slots_total, slots_used;
    uint64_t swapped_out;  /* preemptions by swap */
    uint64_t swapped_in;   /* resumes from the host pool */
    uint64_t blocks_out;   /* blocks copied to the host */
    uint64_t blocks_in;    /* blocks copied back */
    uint64_t swap_refused; /* preemptions that fell back to recompute (host pool full) */
} eng_sched_swap_stats;
void eng_sched_swap_stats_get(const eng_sched *s, eng_sched_swap_stats *out /* OUT */);

#endif
