/*
 * kvcache.c: the KV block manager of kvcache.h. Per block: a reference count, and for
 * published blocks the hash chain value, the parent's hash and the block's tokens (so a
 * lookup verifies what it matched instead of trusting 64 bits). Free blocks sit on a
 * stack; unreferenced published blocks on a doubly linked list in release order (the
 * head is evicted first); published blocks are found through an open-addressing index
 * with linear probing and backward-shift deletion. Everything is allocated at create.
 */
#include "engine/kvcache.h"

#include <string.h>

#define NIL (-1)

struct eng_kvcache {
    int n;
    int32_t *ref;     /* (n) */
    uint8_t *cached;  /* (n) published in the index */
    uint64_t *hash;   /* (n) */
    uint64_t *parent; /* (n) */
    int32_t *toks;    /* (n, ENG_KV_BLOCK) */
    int32_t *prev;    /* (n) eviction order links */
    int32_t *next;    /* (n) */
    int32_t lru_head; /* least recently released */
    int32_t lru_tail;
    int n_lru;
    int32_t *free_stk; /* (n) */
    int n_free;
    int32_t *index; /* (cap) block or NIL */
    size_t cap;     /* power of two >= 2n */
    int n_cached;
    uint64_t lookup_tokens, hit_tokens, evictions;
};

uint64_t eng_kvcache_hash(uint64_t parent, const int32_t *toks)
{
    /* splitmix64 finalizer folded over the parent and each token: cheap and well mixed */
    uint64_t h = parent ^ 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < ENG_KV_BLOCK; i++) {
        h ^= (uint64_t)(uint32_t)toks[i] + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
        h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
        h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
        h ^= h >> 31;
    }
    return h ? h : 1; /* 0 means "no parent" */
}

void eng_kvcache_destroy(eng_kvcache *c)
{
    if (!c) return;
    lode_free(c->ref);
    lode_free(c->cached);
    lode_free(c->hash);
    lode_free(c->parent);
    lode_free(c->toks);
    lode_free(c->prev);
    lode_free(c->next);
    lode_free(c->free_stk);
    lode_free(c->index);
    lode_free(c);
}

lode_status eng_kvcache_create(int n_blocks, eng_kvcache **out)
{
    *out = NULL;
    if (n_blocks <= 0 || n_blocks > (1 << 28)) return LODE_ERR_INVALID;
    eng_kvcache *c = lode_calloc(1, sizeof *c);
    if (!c) return LODE_ERR_NOMEM;
    size_t n = (size_t)n_blocks;
    c->n = n_blocks;
    c->cap = 16;
    while (c->cap < 2 * n) c->cap *= 2;
    c->ref = lode_calloc(n, sizeof *c->ref);
    c->cached = lode_calloc(n, sizeof *c->cached);
    c->hash = lode_calloc(n, sizeof *c->hash);
    c->parent = lode_calloc(n, sizeof *c->parent);
    c->toks = lode_calloc(n * ENG_KV_BLOCK, sizeof *c->toks);
    c->prev = lode_malloc(n * sizeof *c->prev);
    c->next = lode_malloc(n * sizeof *c->next);
    c->free_stk = lode_malloc(n * sizeof *c->free_stk);
    c->index = lode_malloc(c->cap * sizeof *c->index);
    if (!c->ref || !c->cached || !c->hash || !c->parent || !c->toks || !c->prev || !c->next ||
        !c->free_stk || !c->index) {
        eng_kvcache_destroy(c);
        return LODE_ERR_NOMEM;
    }
    for (size_t i = 0; i < c->cap; i++) c->index[i] = NIL;
    /* the stack pops block 0 first */
    for (int i = 0; i < n_blocks; i++) {
        c->free_stk[i] = n_blocks - 1 - i;
        c->prev[i] = c->next[i] = NIL;
    }
    c->n_free = n_blocks;
    c->lru_head = c->lru_tail = NIL;
    *out = c;
    return LODE_OK;
}

int eng_kvcache_available(const eng_kvcache *c)
{
    return c->n_free + c->n_lru;
}

int eng_kvcache_n_blocks(const eng_kvcache *c)
{
    return c->n;
}

int eng_kvcache_refcount(const eng_kvcache *c, int32_t blk)
{
    return blk >= 0 && blk < c->n ? c->ref[blk] : -1;
}

/* ---- eviction order ---------------------------------------------------------------- */
static void lru_remove(eng_kvcache *c, int32_t b)
{
    if (c->prev[b] != NIL)
        c->next[c->prev[b]] = c->next[b];
    else
        c->lru_head = c->next[b];
    if (c->next[b] != NIL)
        c->prev[c->next[b]] = c->prev[b];
    else
        c->lru_tail = c->prev[b];
    c->prev[b] = c->next[b] = NIL;
    c->n_lru--;
}

static void lru_push(eng_kvcache *c, int32_t b)
{
    c->prev[b] = c->lru_tail;
    c->next[b] = NIL;
    if (c->lru_tail != NIL)
        c->next[c->lru_tail] = b;
    else
        c->lru_head = b;
    c->lru_tail = b;
    c->n_lru++;
}

/* ---- index ------------------------------------------------------------------------- */
static size_t slot_of(const eng_kvcache *c, uint64_t h)
{
    return (size_t)(h ^ (h >> 29)) & (c->cap - 1);
}

/* The slot holding block b; (size_t)-1 when absent. */
static size_t index_find_block(const eng_kvcache *c, int32_t b)
{
    for (size_t i = slot_of(c, c->hash[b]);; i = (i + 1) & (c->cap - 1)) {
        if (c->index[i] == NIL) return (size_t)-1;
        if (c->index[i] == b) return i;
    }
}

static void index_remove(eng_kvcache *c, int32_t b)
{
    size_t i = index_find_block(c, b);
    if (i == (size_t)-1) return;
    /* backward-shift: move later entries of the probe run into the hole */
    size_t hole = i;
    for (size_t j = (i + 1) & (c->cap - 1); c->index[j] != NIL; j = (j + 1) & (c->cap - 1)) {
        size_t home = slot_of(c, c->hash[c->index[j]]);
        /* j's entry may fill the hole when home is not cyclically within (hole, j] */
        int between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!between) {
            c->index[hole] = c->index[j];
            hole = j;
        }
    }
    c->index[hole] = NIL;
}

/* The published block with hash h, parent and tokens; NIL when none. */
static int32_t index_find(const eng_kvcache *c, uint64_t parent, uint64_t h, const int32_t *toks)
{
    for (size_t i = slot_of(c, h);; i = (i + 1) & (c->cap - 1)) {
        int32_t b = c->index[i];
        if (b == NIL) return NIL;
        if (c->hash[b] == h && c->parent[b] == parent &&
            !memcmp(c->toks + (size_t)b * ENG_KV_BLOCK, toks, ENG_KV_BLOCK * sizeof *toks))
            return b;
    }
}

static void unpublish(eng_kvcache *c, int32_t b)
{
    index_remove(c, b);
    c->cached[b] = 0;
    c->n_cached--;
}

/* ---- blocks ------------------------------------------------------------------------ */
int32_t eng_kvcache_alloc(eng_kvcache *c)
{
    int32_t b;
    if (c->n_free > 0) {
        b = c->free_stk[--c->n_free];
    } else if (c->lru_head != NIL) {
        b = c->lru_head;
        lru_remove(c, b);
        unpublish(c, b);
        c->evictions++;
    } else {
        return NIL;
    }
    c->ref[b] = 1;
    return b;
}

void eng_kvcache_release(eng_kvcache *c, int32_t b)
{
    if (b < 0 || b >= c->n || c->ref[b] <= 0) return;
    if (--c->ref[b] > 0) return;
    if (c->cached[b])
        lru_push(c, b);
    else
        c->free_stk[c->n_free++] = b;
}

int eng_kvcache_lookup(eng_kvcache *c, const int32_t *toks, int max_blocks, int n_lookup,
                       int32_t *table, uint64_t *last_hash)
{
    uint64_t parent = 0;
    int i = 0;
    for (; i < max_blocks; i++) {
        const int32_t *t = toks + (size_t)i * ENG_KV_BLOCK;
        uint64_t h = eng_kvcache_hash(parent, t);
        int32_t b = index_find(c, parent, h, t);
        if (b == NIL) break;
        if (c->ref[b] == 0) lru_remove(c, b);
        c->ref[b]++;
        table[i] = b;
        parent = h;
    }
    if (last_hash) *last_hash = parent;
    if (n_lookup > 0) {
        c->lookup_tokens += (uint64_t)n_lookup;
        c->hit_tokens += (uint64_t)i * ENG_KV_BLOCK;
    }
    return i;
}

int eng_kvcache_publish(eng_kvcache *c, int32_t b, uint64_t parent, uint64_t h, const int32_t *toks)
{
    if (b < 0 || b >= c->n || c->ref[b] <= 0 || c->cached[b]) return 0;
    if (index_find(c, parent, h, toks) != NIL) return 0;
    c->hash[b] = h;
    c->parent[b] = parent;
    memcpy(c->toks + (size_t)b * ENG_KV_BLOCK, toks, ENG_KV_BLOCK * sizeof *toks);
    size_t i = slot_of(c, h);
    while (c->index[i] != NIL) i = (i + 1) & (c->cap - 1);
    c->index[i] = b;
    c->cached[b] = 1;
    c->n_cached++;
    return 1;
}

void eng_kvcache_stats_get(const eng_kvcache *c, eng_kvcache_stats *o)
{
    memset(o, 0, sizeof *o);
    o->blocks_total = c->n;
    o->blocks_free = c->n_free;
    o->blocks_used = c->n - c->n_free - c->n_lru;
    o->blocks_cached = c->n_cached;
    o->lookup_tokens = c->lookup_tokens;
    o->hit_tokens = c->hit_tokens;
    o->evictions = c->evictions;
    o->hit_rate = c->lookup_tokens ? (double)c->hit_tokens / (double)c->lookup_tokens : 0.0;
}

lode_status eng_kvcache_check(const eng_kvcache *c)
{
    int n_ref = 0, n_zero_cached = 0, n_cached = 0, n_idx = 0;
    for (int b = 0; b < c->n; b++) {
        if (c->ref[b] < 0) return LODE_ERR_INTERNAL;
        if (c->ref[b] > 0) n_ref++;
        if (c->cached[b]) {
            n_cached++;
            if (c->ref[b] == 0) n_zero_cached++;
            if (index_find_block(c, b) == (size_t)-1) return LODE_ERR_INTERNAL;
        }
    }
    for (size_t i = 0; i < c->cap; i++)
        if (c->index[i] != NIL) {
            n_idx++;
            if (!c->cached[c->index[i]]) return LODE_ERR_INTERNAL;
        }
    int n_list = 0;
    for (int32_t b = c->lru_head; b != NIL; b = c->next[b]) {
        if (c->ref[b] != 0 || !c->cached[b] || ++n_list > c->n) return LODE_ERR_INTERNAL;
        if (c->next[b] != NIL && c->prev[c->next[b]] != b) return LODE_ERR_INTERNAL;
    }
    for (int i = 0; i < c->n_free; i++) {
        int32_t b = c->free_stk[i];
        if (b < 0 || b >= c->n || c->ref[b] != 0 || c->cached[b]) return LODE_ERR_INTERNAL;
    }
    if (n_list != c->n_lru || n_zero_cached != c->n_lru || n_cached != c->n_cached ||
        n_idx != n_cached || n_ref + c->n_lru + c->n_free != c->n)
        return LODE_ERR_INTERNAL;
    return LODE_OK;
}
