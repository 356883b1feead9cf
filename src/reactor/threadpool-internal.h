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

/* ---- Tracked calls to a reactor.
 *
 * A reactor being freed drops its queued cross-thread calls unrun. Code that
 * must hear of that (a blocked caller to wake, a result to deliver) tracks
 * the call: tw_reactor_free then sweeps every tracked entry of that reactor,
 * calling swept(p) on the reactor's thread, before it joins the pool (so a
 * worker blocked on such a call is released) and again after. An entry swept
 * is untracked; a call it stood for never runs. */
typedef struct tw__tracked tw__tracked;
struct tw__tracked {
    tw__tracked *prev, *next;
    tw_reactor *r; /* NULL when not tracked */
    void (*swept)(tw__tracked *t);
};
/* Thread-safe. t must not be tracked already. */
void tw__tracked_add(tw_reactor *r, tw__tracked *t, void (*swept)(tw__tracked *t));
/* Thread-safe. Returns true if t was tracked (and is no longer), false if a
 * sweep took it first (its swept function has run or is running). */
bool tw__tracked_remove(tw__tracked *t);

#endif
