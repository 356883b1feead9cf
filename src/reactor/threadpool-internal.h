/* Thread pool internals shared with the reactor layer's tests. */
#ifndef TWINE_SRC_THREADPOOL_INTERNAL_H
#define TWINE_SRC_THREADPOOL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <twine/thread.h>

/* How long a worker beyond min_threads waits idle before it exits.
 * Default 5 s; tests shorten it. Must be > 0, else TW_EINVAL. */
#define TW__THREADPOOL_IDLE_DEFAULT 5.0
int tw__threadpool_set_idle_timeout(tw_threadpool *pool, double seconds);

/* A snapshot, taken under the pool's lock. */
typedef struct tw__threadpool_stats {
    size_t threads; /* workers started and not exited */
    size_t idle;    /* of those, waiting for work */
    size_t queued;  /* calls waiting for a worker */
    size_t started; /* workers ever started */
} tw__threadpool_stats;
void tw__threadpool_get_stats(tw_threadpool *pool, tw__threadpool_stats *out);

/* True when the calling thread is one of this pool's workers. */
bool tw__threadpool_on_worker(const tw_threadpool *pool);

#endif
