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
 * arrives (a call starts a worker when no idle one will take it); workers
 * beyond min_threads exit after 5 s idle. Calls run in the order queued.
 * Workers block every signal, so signals reach the reactor's thread.
 * Returns 0, TW_EINVAL (max_threads 0, or min_threads > max_threads),
 * TW_ENOMEM. */
int tw_threadpool_new(tw_threadpool **out, size_t min_threads, size_t max_threads);

/* Thread-safe. Changes the bounds (TW_EINVAL as new): growing starts workers
 * for calls waiting; workers beyond the new max exit as they finish. */
int tw_threadpool_set_size(tw_threadpool *pool, size_t min_threads, size_t max_threads);

/* Thread-safe. Queues fn(arg) to run on a worker. Returns 0; TW_ENOMEM;
 * TW_ESHUTDOWN once the pool is stopping (fn will not run); -errno if no
 * worker could be started and none is running. */
int tw_threadpool_call(tw_threadpool *pool, tw_call_fn fn, void *arg);

/* Runs the work already queued, then joins every worker. Later calls get
 * TW_ESHUTDOWN; stopping again returns 0. Must not be called from a worker
 * (TW_EWRONGTHREAD). */
int tw_threadpool_stop(tw_threadpool *pool);

/* Stops (if needed) and frees. */
void tw_threadpool_free(tw_threadpool *pool);

/* The reactor's own pool (at most 10 threads unless suggested otherwise, none
 * kept idle), made on first use and stopped when the reactor shuts down or is
 * freed (a later use makes a new one). Thread-safe. NULL when out of memory.
 *
 * Stopping at shutdown: the work queued still runs, and the reactor keeps
 * iterating until every worker is done, so a worker waiting on the reactor
 * (tw_blocking_call_from_thread) gets its answer and every tw_defer_to_thread
 * deferred has fired when tw_reactor_run returns.
 * Stopping at free: nothing queued runs at free, so a worker blocked in
 * tw_blocking_call_from_thread (its call would be dropped, or the deferred it
 * waits on can no longer fire) is woken with TW_ESHUTDOWN, and calling in
 * during the free gets TW_ESHUTDOWN too; every tw_defer_to_thread deferred
 * fires, on the freeing thread, before tw_reactor_free returns. */
tw_threadpool *tw_reactor_thread_pool(tw_reactor *r);
/* Sets the most threads the reactor's pool may run (suggestThreadPoolSize),
 * now and for a pool made later. Thread-safe. Returns 0 or TW_EINVAL (0). */
int tw_reactor_suggest_thread_pool_size(tw_reactor *r, size_t max_threads);

/* ---- Deferreds across threads */

typedef tw_result (*tw_thread_fn)(void *arg);

/* Runs fn(arg) on the reactor's pool; the returned deferred fires on the
 * reactor thread with what fn returned (fn must not return a deferred: that
 * becomes a TW_EINVAL failure, and the deferred is released on the reactor
 * thread). Call it on the reactor's thread (else the deferred has failed with
 * TW_EWRONGTHREAD). Returns a new reference, or NULL when out of memory (fn
 * will not run); a pool that cannot start a thread fails the deferred with
 * -errno. The deferred stays alive until it fires even if the caller drops
 * its reference. Cancelling the deferred before fn starts keeps fn from
 * running; cancelling it while fn runs fails it with TW_ECANCELED at once, and
 * what fn returns later is released on the reactor thread. */
tw_deferred *tw_defer_to_thread(tw_reactor *r, tw_thread_fn fn, void *arg);

/* For code on a non-reactor thread: runs fn(arg) on the reactor thread and
 * blocks until its result is ready; if fn returns a deferred, waits until it
 * fires. Returns that result (the caller owns it). Called on the reactor's
 * own thread it would deadlock, so it returns a TW_EWRONGTHREAD failure.
 * Other failures: TW_ENOMEM; TW_ESHUTDOWN if the reactor is freed before fn
 * ran or before the deferred it returned fired; TW_ECANCELED if that
 * deferred is released without firing. */
tw_result tw_blocking_call_from_thread(tw_reactor *r, tw_thread_fn fn, void *arg);

#endif
