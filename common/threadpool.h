/*
 * threadpool.h: a persistent pool of worker threads for the engine's compute kernels.
 * Decoding one token of a small model runs a few hundred short parallel regions, so a
 * region must cost microseconds: workers spin briefly between regions and only then
 * sleep on a futex, the calling thread takes part in the work, and nothing is allocated
 * per call.
 */
#ifndef LODE_COMMON_THREADPOOL_H
#define LODE_COMMON_THREADPOOL_H

#include <stddef.h>

#include "common/lode.h"

typedef struct lode_pool lode_pool;

/* A task body: runs task number `task` (0 <= task < n_tasks) on thread `thread`
 * (0 = the calling thread, 1..size-1 the workers; a thread id is stable for one call and
 * below lode_pool_size(), so it can index per-thread scratch). */
typedef void (*lode_pool_fn)(void *ctx, size_t task, int thread);

/* Creates a pool of n_threads threads in all, the caller of lode_parallel_for counting as
 * one (so n_threads - 1 workers are started); n_threads <= 0 means lode_cpu_count().
 * Returns LODE_OK and *out (free with lode_pool_destroy), or LODE_ERR_NOMEM /
 * LODE_ERR_INTERNAL when memory or threads are lacking (nothing is left behind). */
lode_status lode_pool_create(int n_threads, lode_pool **out /* OUT */);

/* Stops and joins the workers and frees the pool. Must not race with a running
 * lode_parallel_for on the same pool. Accepts NULL. */
void lode_pool_destroy(lode_pool *pool);

/* Threads in the pool including the caller; 1 for NULL. */
int lode_pool_size(const lode_pool *pool);

/* Runs fn(ctx, t, thread) once for every t in [0, n_tasks) and returns when all have
 * finished. Tasks are handed out dynamically, so they may be uneven. The call is
 * serialized rather than parallel (all tasks run on the calling thread, thread id 0)
 * when pool is NULL or of size 1, when it is made from inside a task (nesting), or when
 * another thread is already running a region on the same pool. */
void lode_parallel_for(lode_pool *pool, size_t n_tasks, lode_pool_fn fn, void *ctx);

#endif
