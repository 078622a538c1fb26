/*
 * threadpool.c: persistent workers for lode_parallel_for. A region is published by
 * bumping a generation counter; workers spin on it for a short while after each region
 * (decode issues regions back to back) and then sleep on it with a futex, so an idle
 * pool costs no CPU. Tasks are claimed from a ticket that holds the generation and the
 * next task index, so a worker that wakes late (descheduled on a busy machine) can never
 * run a task of the wrong region, and the caller waits only for tasks, not for workers:
 * if a worker never shows up, the caller simply runs everything itself.
 */
#include "common/threadpool.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Spin iterations before sleeping: a pause is ~40-140 cycles, so this is roughly
 * 0.1-0.3 ms, longer than the gap between two regions of one decode step. */
#define SPIN_ITERS 4096

struct lode_pool {
    int n;         /* threads including the caller */
    pthread_t *th; /* (n - 1) workers */
    int started;   /* workers actually started */
    pthread_mutex_t call_mu;

    /* the current region, written by the caller before the ticket and gen move on */
    _Atomic(lode_pool_fn) fn;
    _Atomic(void *) ctx;
    atomic_size_t n_tasks;

    _Alignas(64) _Atomic uint64_t ticket; /* gen << 32 | next unclaimed task */
    _Alignas(64) atomic_uint gen;         /* futex word: region generation */
    atomic_int sleepers;                  /* workers inside futex_wait on gen */
    atomic_int stop;
    _Alignas(64) atomic_size_t done; /* tasks finished in this region */
    atomic_uint done_gen;            /* futex word: last generation completed */
    atomic_int caller_sleeping;
};

static _Thread_local int tls_in_region;

static void futex_wait(atomic_uint *w, unsigned val)
{
    syscall(SYS_futex, (unsigned *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(atomic_uint *w)
{
    syscall(SYS_futex, (unsigned *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Runs tasks of region g until none are left or the region is over. The thread that
 * finishes the last task marks the region done. */
static void run_tasks(lode_pool *p, unsigned g, int thread)
{
    /* The ticket first, then the region: the caller closes the old ticket before it
     * writes a new region, so a late worker that reads any of the new region's fields
     * (acquire) can no longer claim a task of the old generation with them. */
    uint64_t t = atomic_load_explicit(&p->ticket, memory_order_acquire);
    lode_pool_fn fn = atomic_load_explicit(&p->fn, memory_order_acquire);
    void *ctx = atomic_load_explicit(&p->ctx, memory_order_acquire);
    size_t n = atomic_load_explicit(&p->n_tasks, memory_order_acquire);
    for (;;) {
        if ((unsigned)(t >> 32) != g || (t & 0xFFFFFFFFu) >= n) return;
        if (!atomic_compare_exchange_weak_explicit(&p->ticket, &t, t + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        fn(ctx, (size_t)(t & 0xFFFFFFFFu), thread);
        if (atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel) + 1 == n) {
            atomic_store(&p->done_gen, g);
            if (atomic_load(&p->caller_sleeping)) futex_wake(&p->done_gen);
            return;
        }
        t = atomic_load_explicit(&p->ticket, memory_order_acquire);
    }
}

typedef struct worker_arg {
    lode_pool *p;
    int id;
} worker_arg;

static void *worker_main(void *arg)
{
    lode_pool *p = ((worker_arg *)arg)->p;
    int id = ((worker_arg *)arg)->id;
    lode_free(arg);
    tls_in_region = 1;
    unsigned seen = 0; /* gen at creation: a worker may start after the first region */
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            if (++spins < SPIN_ITERS) {
                cpu_relax();
                continue;
            }
            atomic_fetch_add(&p->sleepers, 1);
            futex_wait(&p->gen, seen);
            atomic_fetch_sub(&p->sleepers, 1);
            spins = 0;
        }
        seen = g;
        if (atomic_load(&p->stop)) break;
        run_tasks(p, g, id);
    }
    return NULL;
}

lode_status lode_pool_create(int n_threads, lode_pool **out)
{
    lode_status rc = LODE_OK;
    *out = NULL;
    if (n_threads <= 0) n_threads = lode_cpu_count();
    if (n_threads > 1024) n_threads = 1024;
    lode_pool *p = lode_aligned_alloc(64, sizeof *p); /* the hot atomics are cache-line aligned */
    if (!p) return LODE_ERR_NOMEM;
    memset(p, 0, sizeof *p);
    p->n = n_threads;
    pthread_mutex_init(&p->call_mu, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->done_gen, 0);
    if (n_threads > 1) {
        p->th = lode_calloc((size_t)n_threads - 1, sizeof *p->th);
        if (!p->th) {
            rc = LODE_ERR_NOMEM;
            goto out;
        }
        for (int i = 1; i < n_threads; i++) {
            worker_arg *a = lode_malloc(sizeof *a);
            if (!a) {
                rc = LODE_ERR_NOMEM;
                goto out;
            }
            a->p = p;
            a->id = i;
            if (pthread_create(&p->th[i - 1], NULL, worker_main, a) != 0) {
                lode_free(a);
                rc = LODE_ERR_INTERNAL;
                goto out;
            }
            p->started++;
        }
    }
out:
    if (rc != LODE_OK) {
        lode_pool_destroy(p);
        return rc;
    }
    *out = p;
    return LODE_OK;
}

void lode_pool_destroy(lode_pool *p)
{
    if (!p) return;
    if (p->started) {
        atomic_store(&p->stop, 1);
        atomic_fetch_add(&p->gen, 1);
        futex_wake(&p->gen);
        for (int i = 0; i < p->started; i++) pthread_join(p->th[i], NULL);
    }
    pthread_mutex_destroy(&p->call_mu);
    lode_free(p->th);
    lode_aligned_free(p);
}

int lode_pool_size(const lode_pool *p)
{
    return p ? p->n : 1;
}

static void run_serial(size_t n_tasks, lode_pool_fn fn, void *ctx)
{
    int was = tls_in_region;
    tls_in_region = 1;
    for (size_t t = 0; t < n_tasks; t++) fn(ctx, t, 0);
    tls_in_region = was;
}

void lode_parallel_for(lode_pool *p, size_t n_tasks, lode_pool_fn fn, void *ctx)
{
    if (n_tasks == 0) return;
    if (!p || p->n <= 1 || n_tasks == 1 || tls_in_region ||
        pthread_mutex_trylock(&p->call_mu) != 0) {
        run_serial(n_tasks, fn, ctx);
        return;
    }
    if (n_tasks > 0xFFFFFFFFu) {
        pthread_mutex_unlock(&p->call_mu);
        run_serial(n_tasks, fn, ctx);
        return;
    }
    unsigned g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
    /* Close the previous ticket (no index is below 0xFFFFFFFF tasks) before the region
     * changes: a worker still in the previous region must fail its claim. */
    atomic_store(&p->ticket, ((uint64_t)g << 32) | 0xFFFFFFFFu);
    atomic_store_explicit(&p->fn, fn, memory_order_release);
    atomic_store_explicit(&p->ctx, ctx, memory_order_release);
    atomic_store_explicit(&p->n_tasks, n_tasks, memory_order_release);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->ticket, (uint64_t)g << 32, memory_order_release);
    atomic_store(&p->gen, g); /* seq_cst: publishes the region, ordered before sleepers */
    if (atomic_load(&p->sleepers) > 0) futex_wake(&p->gen);

    tls_in_region = 1;
    run_tasks(p, g, 0);
    tls_in_region = 0;

    int spins = 0;
    while (atomic_load_explicit(&p->done_gen, memory_order_acquire) != g) {
        if (++spins < SPIN_ITERS) {
            cpu_relax();
            continue;
        }
        atomic_store(&p->caller_sleeping, 1);
        unsigned d = atomic_load(&p->done_gen);
        if (d != g) futex_wait(&p->done_gen, d);
        atomic_store(&p->caller_sleeping, 0);
        spins = 0;
    }
    pthread_mutex_unlock(&p->call_mu);
}
