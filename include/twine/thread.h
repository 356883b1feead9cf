/* Threads (IReactorThreads, twisted.python.threadpool, deferToThread,
 * blockingCallFromThread).
 *
 * The reactor is single-threaded. Other threads reach it only through
 * tw_reactor_call_from_thread; code that must block runs on a thread pool. */
#ifndef TWINE_THREAD_H
#define TWINE_THREAD_H

#include <stddef.h>

#include <twine/clock.h>
#include <twine/reactor.h>
#include <twine/result.h>

/* Thread-safe (and callable on the reactor's own thread). Queues fn(arg) to
 * run on the reactor's thread, in the order queued (per calling thread), on
 * the reactor's next iteration, and wakes the loop if it sleeps. Many calls
 * while the loop is busy cost one wakeup. Steady state allocates nothing
 * (nodes come from a pool the reactor recycles). Returns 0; TW_EINVAL for a
 * NULL fn; TW_ENOMEM; TW_ESHUTDOWN once the reactor is being freed (fn will
 * then never run). Calls queued when the reactor is freed are dropped without
 * running. tw_reactor_free refuses calls before it joins the reactor's thread
 * pool, so its workers get TW_ESHUTDOWN; any other thread must stop calling
 * before tw_reactor_free returns (the reactor's memory is gone then). */
int tw_reactor_call_from_thread(tw_reactor *r, tw_call_fn fn, void *arg);

/* ---- Thread pools */

typedef struct tw_threadpool tw_threadpool;

/* A pool of at most max_threads workers (at least 1), started lazily as work
 * arrives; idle workers beyond min_threads exit. Returns 0, TW_EINVAL,
 * TW_ENOMEM. */
int tw_threadpool_new(tw_threadpool **out, size_t min_threads, size_t max_threads);

/* Thread-safe. Changes the bounds; extra workers exit once idle. */
int tw_threadpool_set_size(tw_threadpool *pool, size_t min_threads, size_t max_threads);

/* Thread-safe. Queues fn(arg) to run on a worker. Returns 0; TW_ENOMEM;
 * TW_ESHUTDOWN once the pool is stopping (fn will not run); -errno if no
 * worker could be started and none is running. */
int tw_threadpool_call(tw_threadpool *pool, tw_call_fn fn, void *arg);

/* Runs the work already queued, then joins every worker. Later calls get
 * TW_ESHUTDOWN. Must not be called from a worker (TW_EWRONGTHREAD). */
int tw_threadpool_stop(tw_threadpool *pool);

/* Stops (if needed) and frees. */
void tw_threadpool_free(tw_threadpool *pool);

/* The reactor's own pool (default at most 10 threads), made on first use and
 * stopped when the reactor shuts down or is freed. NULL when out of memory. */
tw_threadpool *tw_reactor_thread_pool(tw_reactor *r);
/* Sets the most threads the reactor's pool may run (suggestThreadPoolSize). */
int tw_reactor_suggest_thread_pool_size(tw_reactor *r, size_t max_threads);

/* ---- Deferreds across threads */

typedef tw_result (*tw_thread_fn)(void *arg);

/* Runs fn(arg) on the reactor's pool; the returned deferred fires on the
 * reactor thread with what fn returned (fn must not return a deferred: that
 * becomes a TW_EINVAL failure, and the deferred is released on the reactor
 * thread). Returns a new reference, or NULL when out of memory (fn will not
 * run). Cancelling the deferred before fn starts keeps fn from running. */
tw_deferred *tw_defer_to_thread(tw_reactor *r, tw_thread_fn fn, void *arg);

/* For code on a non-reactor thread: runs fn(arg) on the reactor thread and
 * blocks until its result is ready; if fn returns a deferred, waits until it
 * fires. Returns that result (the caller owns it). Called on the reactor's
 * own thread it would deadlock, so it returns a TW_EWRONGTHREAD failure;
 * TW_ESHUTDOWN if the reactor is being freed. */
tw_result tw_blocking_call_from_thread(tw_reactor *r, tw_thread_fn fn, void *arg);

#endif
