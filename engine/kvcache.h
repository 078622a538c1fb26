/*
 * kvcache.h: the block manager of the paged KV cache. The pool itself (K and V of every
 * layer) lives in the backend (backend.h kv_create); this module decides which physical
 * block holds what: a free list, reference counts so that sequences can share blocks,
 * and the prefix cache, in which every full block is known by a hash chain over its
 * tokens and everything before them, so a later request with the same prefix reuses the
 * computed K/V instead of recomputing it. Blocks no sequence references but that hold a
 * cached prefix stay cached until a new block is needed; then the least recently
 * released one is evicted.
 *
 * Host-only and backend-neutral; not thread-safe (the scheduler thread owns it).
 */
#ifndef LODE_ENGINE_KVCACHE_H
#define LODE_ENGINE_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "common/lode.h"
#include "engine/backend.h"

typedef struct eng_kvcache eng_kvcache;

/* Creates a manager for n_blocks physical blocks of ENG_KV_BLOCK tokens, all free.
 * Returns LODE_OK and *out (free with eng_kvcache_destroy), LODE_ERR_INVALID for
 * n_blocks <= 0, or LODE_ERR_NOMEM. */
lode_status eng_kvcache_create(int n_blocks, eng_kvcache **out /* OUT */);
void eng_kvcache_destroy(eng_kvcache *c); /* accepts NULL */

/* Blocks a caller can get from eng_kvcache_alloc now: free ones plus cached ones that
 * nobody references (those are evicted on demand). */
int eng_kvcache_available(const eng_kvcache *c);
int eng_kvcache_n_blocks(const eng_kvcache *c);

/* A block for the caller's exclusive use (reference count 1), evicting the least
 * recently released cached block when none is free. -1 when every block is in use. */
int32_t eng_kvcache_alloc(eng_kvcache *c);
/* Drops one reference; at zero a cached block joins the eviction order, any other
 * block the free list. */
void eng_kvcache_release(eng_kvcache *c, int32_t blk);
int eng_kvcache_refcount(const eng_kvcache *c, int32_t blk);

/* The hash of a full block of ENG_KV_BLOCK tokens whose predecessors hash to parent (0
 * for the first block of a sequence). */
uint64_t eng_kvcache_hash(uint64_t parent, const int32_t *toks);

/* Looks up the longest cached prefix of toks made of whole blocks, at most max_blocks
 * of them: for each block matched, takes a reference and writes its number to
 * table[i]. Returns the number of blocks matched (0..max_blocks); *last_hash (may be
 * NULL) gets the hash of the last matched block (0 when none). Counts toward the hit
 * rate: n_lookup tokens were asked for (the caller's prompt length). */
int eng_kvcache_lookup(eng_kvcache *c, const int32_t *toks, int max_blocks, int n_lookup,
                       int32_t *table /* OUT */, uint64_t *last_hash /* OUT */);
/* Makes full block blk (computed, holding toks[0..ENG_KV_BLOCK), hash h whose parent is
 * parent) findable by later lookups. Returns 1 when published, 0 when another block
 * already holds that prefix (blk then stays private and is freed when released). */
int eng_kvcache_publish(eng_kvcache *c, int32_t blk, uint64_t parent, uint64_t h,
                        const int32_t *toks);

typedef struct eng_kvcache_stats {
    int blocks_total;
    int blocks_used;        /* referenced by at least one sequence */
    int blocks_cached;      /* holding a published prefix (used or not) */
    int blocks_free;        /* neither used nor cached */
    uint64_t lookup_tokens; /* prompt tokens looked up */
    uint64_t hit_tokens;    /* of those, found in the cache */
    uint64_t evictions;
    double hit_rate; /* hit_tokens / lookup_tokens; 0 before any lookup */
} eng_kvcache_stats;
void eng_kvcache_stats_get(const eng_kvcache *c, eng_kvcache_stats *out /* OUT */);

/* Checks every internal invariant (free list, eviction order, hash index, counts);
 * LODE_OK or LODE_ERR_INTERNAL. For tests. */
lode_status eng_kvcache_check(const eng_kvcache *c);

#endif
