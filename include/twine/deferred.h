/* Deferreds (twisted.internet.defer): a result that is not there yet.
 *
 * Semantics are Twisted's (compared with Twisted 22.4), except where a
 * point below or a declaration says how Twine differs:
 * - Callbacks and errbacks are added in pairs and run in order. The chain
 *   holds one current result: a value goes to the next callback, a failure
 *   skips to the next errback. What a callback or errback returns becomes the
 *   current result, so an errback that returns a value sends the chain back
 *   to the callbacks, and a callback that returns a failure to the errbacks.
 * - A callback that returns a deferred (tw_result_deferred) pauses the chain
 *   until that deferred fires; its result then becomes the current result.
 *   A callback that returns its own deferred fails it with TW_EINVAL (logged:
 *   it would wait forever). Twisted 22.4 only warns, and that chain stops
 *   there for good.
 * - Adding callbacks to a deferred that has fired (and is not paused) runs
 *   them at once; added from inside that deferred's chain (a running callback
 *   of it, or of a deferred it is handing its result to), they run when the
 *   chain gets back to them, as Twisted's _runningCallbacks guard.
 * - Chains run iteratively, in constant stack, however long or deeply nested
 *   (deferreds returned from callbacks, chain, cancellation forwarding and
 *   releasing included).
 * - Cancelling an unfired deferred calls its canceller; if the canceller did
 *   not fire it, it fails with TW_ECANCELED. Without a canceller, one later
 *   callback/errback from the producer is then silently ignored (Twisted's
 *   _suppressAlreadyCalled); with one, the canceller was the producer's
 *   chance to stop, and a later firing is the misuse it always is.
 *   Cancelling a deferred that waits on another cancels the one it waits on
 *   (the innermost of a nest). Cancelling a fired deferred does nothing.
 *
 * Ownership: deferreds are reference counted. tw_deferred_new returns one
 * reference; a producer that will fire it later typically hands a second one
 * (tw_deferred_ref) to its caller. Callbacks keep running after the caller
 * has dropped its reference. The result, when the chain ends, is owned by the
 * deferred and released with it.
 *
 * A deferred waiting on another (a callback returned it) is held by that one,
 * which will hand it its result: its chain goes on when the inner fires even
 * if nobody else holds it. While someone else does hold it, it holds the
 * inner in turn (so cancelling it can reach the inner); once only the inner
 * holds it, it lets go, so an inner that nobody can fire any more is
 * released, and the waiting deferred with it (every pair argument released,
 * no callback run). As in any reference-counted C library, a cycle the user
 * builds is not collected: if a pending callback's argument holds a reference
 * to the very deferred its own deferred waits on, and nobody ever fires that
 * one, neither is released.
 *
 * Unhandled failures: a deferred released with a failure as its current
 * result logs "Unhandled error in Deferred:" with the failure (level error,
 * namespace "twine.deferred") and counts it (tw_deferred_unhandled_count).
 *
 * Not thread-safe: a deferred belongs to one thread (see thread.h to cross).
 *
 * Functions returning a tw_deferred * return a new reference, or NULL only
 * when out of memory (after releasing what they were given). */
#ifndef TWINE_DEFERRED_H
#define TWINE_DEFERRED_H

#include <stdbool.h>
#include <stddef.h>

#include <twine/clock.h>
#include <twine/failure.h>
#include <twine/result.h>

typedef struct tw_deferred tw_deferred;

/* A callback or errback: gets the current result (and owns it) and returns the
 * new current result. Returning the argument passes it on unchanged. */
typedef tw_result (*tw_callback_fn)(tw_result result, void *arg);

/* Called by tw_deferred_cancel on an unfired deferred. It may fire d (with
 * any result); if it does not, d fails with TW_ECANCELED. */
typedef void (*tw_canceller_fn)(tw_deferred *d, void *arg);

tw_deferred *tw_deferred_new(tw_canceller_fn canceller, void *canceller_arg);
tw_deferred *tw_deferred_ref(tw_deferred *d);
/* Drops a reference; the last one releases the result (logging an unhandled
 * failure, see above) and every callback argument still waiting (through its
 * arg_release). NULL is ignored. */
void tw_deferred_unref(tw_deferred *d);

/* Adds a callback/errback pair. Either may be NULL: the result then passes
 * through that side unchanged. arg_release, if not NULL, is called with arg
 * exactly once when the pair is done with: after the one that ran returned
 * (or the result passed through a NULL side), or when the deferred is
 * released without reaching it. Pairs are stored in the deferred (room for
 * four), then in an array that grows: no allocation per pair in the common
 * case. Returns 0, TW_EINVAL (d NULL), or TW_ENOMEM (nothing added,
 * arg_release not called). */
int tw_deferred_add_callbacks(tw_deferred *d, tw_callback_fn callback, tw_callback_fn errback,
                              void *arg, tw_release_fn arg_release);

static inline int tw_deferred_add_callback(tw_deferred *d, tw_callback_fn fn, void *arg)
{
    return tw_deferred_add_callbacks(d, fn, NULL, arg, NULL);
}
static inline int tw_deferred_add_errback(tw_deferred *d, tw_callback_fn fn, void *arg)
{
    return tw_deferred_add_callbacks(d, NULL, fn, arg, NULL);
}
/* addBoth: fn runs whichever the result is. */
static inline int tw_deferred_add_both(tw_deferred *d, tw_callback_fn fn, void *arg)
{
    return tw_deferred_add_callbacks(d, fn, fn, arg, NULL);
}

/* Fires the deferred with a result, which it takes over whatever happens.
 * Returns 0; TW_EALREADYCALLED if it fired before (the result is released and
 * the misuse logged), except once after a cancellation without a canceller,
 * where it is silently released and 0 returned; TW_EINVAL if the result is a
 * deferred (released, logged; d stays unfired) or d is NULL. */
int tw_deferred_callback(tw_deferred *d, tw_result result);
/* Fires with a failure (taken over); as tw_deferred_callback. A NULL failure
 * is TW_EINVAL (logged, d stays unfired). */
int tw_deferred_errback(tw_deferred *d, tw_failure *failure);

/* True once callback or errback has been called. */
bool tw_deferred_called(const tw_deferred *d);

/* Pause: callbacks stop running (results wait) until a matching unpause.
 * Pauses nest. unpause returns TW_EPAUSED if d is not paused (waiting on a
 * returned deferred is not a pause to undo).
 * Paused from inside d's own chain (one of its callbacks), the chain stops
 * right after that callback: the callbacks already added after it wait for
 * the unpause too. Twisted 22.4 differs here: its run loop looks at the
 * pause only between deferreds, so the callbacks already in the chain run
 * on in the same pass, and only the ones added later wait for unpause. */
void tw_deferred_pause(tw_deferred *d);
int tw_deferred_unpause(tw_deferred *d);

/* chainDeferred: when d's chain reaches this point, other fires with the
 * current result and d's chain goes on with a NULL value (as Twisted's None);
 * other's chain runs first, in constant stack however many are chained. If
 * other has fired already, d's chain goes on with a TW_EALREADYCALLED failure
 * (the misuse logged, the result released), as Twisted's raise would.
 * Takes its own reference to other. Returns 0, TW_EINVAL if other == d or
 * either is NULL, or TW_ENOMEM. */
int tw_deferred_chain(tw_deferred *d, tw_deferred *other);

/* Cancels (see the top of this file). Safe on any deferred, fired or not. */
void tw_deferred_cancel(tw_deferred *d);

/* addTimeout: if d has not fired `seconds` from now on `clock`, cancel it; a
 * TW_ECANCELED failure that results becomes a TW_ETIMEDOUT failure (caused by
 * the cancellation). As Twisted's, it covers the callbacks added before it:
 * it is a pair added to d's chain, and the timer goes away when the chain
 * reaches it, or when d is released. The clock must outlive that. Returns 0,
 * TW_EINVAL (negative, NaN or infinite delay; NULL d or clock), or
 * TW_ENOMEM. */
int tw_deferred_add_timeout(tw_deferred *d, tw_clock *clock, double seconds);

/* ---- Ready-made deferreds */

/* succeed(value): an already-fired deferred holding the value (taken over).
 * Given a deferred, it fails with TW_EINVAL (logged). */
tw_deferred *tw_succeed(tw_result result);
/* fail(failure): an already-failed deferred (failure taken over; NULL gives a
 * TW_EINVAL failure). */
tw_deferred *tw_fail(tw_failure *failure);
/* maybeDeferred: calls fn(arg) now and returns a deferred with its result (the
 * same deferred, if fn returned one). */
tw_deferred *tw_maybe_deferred(tw_result (*fn)(void *arg), void *arg);

/* ---- Combinators. Each takes over one reference to each of ds[0..n), and
 * cancelling the deferred it returns cancels every input whose result it has
 * not had yet, in input order, as Twisted does: all of them, even when the
 * first cancellation fires it (gather fails at the first TW_ECANCELED; a
 * canceller may supply a value under FIRE_ON_ONE_CALLBACK). Otherwise it
 * holds the inputs only until its own deferred fires or is released. A
 * NULL in ds (an input that could not be made) makes it release the others
 * and return NULL, so out-of-memory passes through. Each adds one pair to
 * every input, and allocates nothing after the first pair is added: when it
 * returns NULL, the inputs are as they were. */

/* The result value of tw_deferred_list (without FIRE_ON_ONE_CALLBACK) and of
 * tw_gather: one item per input, in input order. Released with the result
 * (its release frees every item's result too). */
typedef struct tw_deferred_list_item {
    bool success;     /* the input's result was a value */
    tw_result result; /* its value, or (with success false) its failure */
} tw_deferred_list_item;
typedef struct tw_deferred_list_result {
    size_t count;
    tw_deferred_list_item items[];
} tw_deferred_list_result;

/* The result value with FIRE_ON_ONE_CALLBACK, and of tw_race. */
typedef struct tw_deferred_first_result {
    size_t index;     /* which input fired first */
    tw_result result; /* its value */
} tw_deferred_first_result;

enum {
    TW_DL_FIRE_ON_ONE_CALLBACK = 1, /* fire with the first value (a first_result) */
    TW_DL_FIRE_ON_ONE_ERRBACK = 2,  /* fail with the first failure: TW_EFIRSTERROR,
                                       caused by it; the message names its index */
    TW_DL_CONSUME_ERRORS = 4,       /* an input's failure stops there (its chain goes on
                                       with NULL); otherwise it stays in the input too */
};

/* DeferredList. Fires when all inputs have fired (with a list_result), or
 * sooner as the flags say. With no inputs it fires at once with an empty
 * list, unless FIRE_ON_ONE_CALLBACK is set: then it never fires (as Twisted).
 * With FIRE_ON_ONE_CALLBACK, it fires with a first_result, except when every
 * input failed: then with the list_result of their failures, as Twisted does
 * (add FIRE_ON_ONE_ERRBACK to fail instead).
 * C cannot share ownership as Python does, so a value an input produces is
 * moved into the list and the input's own chain goes on with a NULL value;
 * once the list has fired, later inputs keep their values. */
tw_deferred *tw_deferred_list(tw_deferred *const *ds, size_t n, unsigned flags);

/* gatherResults: a list_result of every value (all success), or the first
 * failure as TW_EFIRSTERROR. consume_errors as TW_DL_CONSUME_ERRORS. */
tw_deferred *tw_gather(tw_deferred *const *ds, size_t n, bool consume_errors);

/* race: fires with the first value (a first_result) and cancels the others
 * (before it fires, as Twisted); a value arriving later stays with its input.
 * If every input fails, fails with TW_EALLFAILED caused by the failure of the
 * first input (in input order, as Twisted's FailureGroup lists them); so does
 * cancelling the race, which cancels every input. With no inputs it fails at
 * once (TW_EALLFAILED). Inputs' failures are consumed. */
tw_deferred *tw_race(tw_deferred *const *ds, size_t n);

/* Unhandled failures logged so far in this process (tests compare it). */
size_t tw_deferred_unhandled_count(void);

#endif
