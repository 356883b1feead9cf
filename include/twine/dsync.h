/* Deferred synchronization: twisted.internet.defer's DeferredLock,
 * DeferredSemaphore and DeferredQueue. Waiting never blocks: acquiring a held
 * lock, or getting from an empty queue, returns a deferred that fires when
 * the lock is handed over or a value arrives. ("dsync": sync primitives for
 * deferreds; "lock" alone would suggest a mutex, which these are not.)
 *
 * Common rules:
 * - Waiters are served first come, first served. Cancelling a waiter's
 *   deferred removes it from the line (it fails with TW_ECANCELED); what it
 *   was about to be handed (a token, a value) goes to the next in line.
 * - Handing over runs the waiter's callbacks from inside release/put, after
 *   the state has changed (the lock is already the waiter's). A callback
 *   that releases or puts again hands over from the outer call's loop, not
 *   recursively, so a long line drains in constant stack.
 * - Freeing one fails its waiters with TW_ECANCELED (they never get it); a
 *   run in progress keeps the memory it needs until it finishes.
 * - Single-threaded, like deferreds. */
#ifndef TWINE_DSYNC_H
#define TWINE_DSYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <twine/deferred.h>
#include <twine/result.h>

/* The function a run helper calls with the lock or token held: returns a
 * value, a failure, or a deferred (the lock is held until it fires). */
typedef tw_result (*tw_dsync_fn)(void *arg);

/* ---- DeferredLock */

typedef struct tw_dlock tw_dlock;

/* Returns 0 and *out (unlocked), TW_EINVAL (out NULL) or TW_ENOMEM. */
int tw_dlock_new(tw_dlock **out);
/* See the common rules. NULL is ignored. */
void tw_dlock_free(tw_dlock *lock);

/* acquire: a new reference to a deferred that fires with the lock (borrowed
 * tw_dlock *) once it is this caller's: at once if it is free. NULL when out
 * of memory. */
tw_deferred *tw_dlock_acquire(tw_dlock *lock);

/* release: unlocks, or hands the lock to the first waiter. Returns 0, or
 * TW_EINVAL if it is not locked (logged: Twisted asserts). */
int tw_dlock_release(tw_dlock *lock);

/* run: acquires, calls fn(arg), and releases when fn's result is there (when
 * the deferred it returned fires). The returned deferred (a new reference)
 * fires with fn's result after the release. Cancelling it while waiting for
 * the lock leaves the line (fn never runs); while fn's deferred is pending,
 * cancels that one. NULL when out of memory (fn never runs). */
tw_deferred *tw_dlock_run(tw_dlock *lock, tw_dsync_fn fn, void *arg);

bool tw_dlock_locked(const tw_dlock *lock);
/* Waiters in line. */
size_t tw_dlock_waiting(const tw_dlock *lock);

/* ---- DeferredSemaphore */

typedef struct tw_dsemaphore tw_dsemaphore;

/* A semaphore of `tokens` tokens (the limit). Returns 0 and *out, TW_EINVAL
 * (tokens 0, out NULL) or TW_ENOMEM. */
int tw_dsemaphore_new(tw_dsemaphore **out, size_t tokens);
/* See the common rules. NULL is ignored. */
void tw_dsemaphore_free(tw_dsemaphore *sem);

/* acquire: a new reference to a deferred that fires with the semaphore
 * (borrowed tw_dsemaphore *) once a token is this caller's: at once if one is
 * free. NULL when out of memory. */
tw_deferred *tw_dsemaphore_acquire(tw_dsemaphore *sem);

/* release: gives a token back, or hands it to the first waiter. Returns 0, or
 * TW_EINVAL if every token is free already (released too many times; logged). */
int tw_dsemaphore_release(tw_dsemaphore *sem);

/* run: as tw_dlock_run, holding one token: at most `limit` runs at once. */
tw_deferred *tw_dsemaphore_run(tw_dsemaphore *sem, tw_dsync_fn fn, void *arg);

/* Free tokens now, and the limit given to new. */
size_t tw_dsemaphore_tokens(const tw_dsemaphore *sem);
size_t tw_dsemaphore_limit(const tw_dsemaphore *sem);
size_t tw_dsemaphore_waiting(const tw_dsemaphore *sem);

/* ---- DeferredQueue */

typedef struct tw_dqueue tw_dqueue;

/* No bound (Twisted's None), for size and backlog. */
#define TW_DQUEUE_UNLIMITED SIZE_MAX

/* A queue holding at most `size` values nobody has asked for yet, and at most
 * `backlog` gets waiting for a value (TW_DQUEUE_UNLIMITED: no bound; 0 is a
 * real bound: a size of 0 only hands values to waiting gets). Returns 0 and
 * *out, TW_EINVAL (out NULL) or TW_ENOMEM. */
int tw_dqueue_new(tw_dqueue **out, size_t size, size_t backlog);
/* Releases the values still queued; see the common rules. NULL is ignored. */
void tw_dqueue_free(tw_dqueue *q);

/* put: hands value to the first waiting get, or queues it. On success the
 * queue owns value; on error the caller still does. Returns 0; TW_ELIMIT when
 * `size` values are queued already (QueueOverflow: the queue is full);
 * TW_EINVAL for a deferred value or NULL q; TW_ENOMEM. A failure may be put:
 * the get it reaches fails with it. */
int tw_dqueue_put(tw_dqueue *q, tw_result value);

/* get: a new reference to a deferred that fires with the next value (the
 * deferred owns it, then its callbacks do): at once if one is queued. When
 * `backlog` gets are waiting already, the deferred has failed with TW_ELIMIT
 * (QueueUnderflow: too many waiting gets). NULL when out of memory. */
tw_deferred *tw_dqueue_get(tw_dqueue *q);

/* run: gets the next value and calls fn(value, arg) with it (fn owns it) —
 * a consumer's step, as the lock's and semaphore's run are a critical
 * section's. The returned deferred (a new reference) fires with fn's result,
 * after the deferred fn returned when it returned one. A failure that was
 * put fails it without calling fn, and so does a get refused by the backlog
 * (TW_ELIMIT). Cancelling it while it waits for a value leaves the line (fn
 * never runs); while fn's deferred is pending, cancels that one. NULL when
 * out of memory (fn never runs, nothing is taken from the queue). */
tw_deferred *tw_dqueue_run(tw_dqueue *q, tw_callback_fn fn, void *arg);

/* Values queued, and gets waiting. */
size_t tw_dqueue_pending(const tw_dqueue *q);
size_t tw_dqueue_waiting(const tw_dqueue *q);

#endif
