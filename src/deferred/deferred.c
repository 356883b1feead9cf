/* Deferreds: Twisted's Deferred, run by an iterative loop in constant stack.
 *
 * The run loop (run) follows Twisted's _runCallbacks. A callback that returns
 * an unfired deferred makes its deferred wait: a continuation pair goes on the
 * inner deferred's chain, and when the inner's chain reaches it, the waiting
 * deferred takes the result and is pushed on the stack of the loop that is
 * running the inner, instead of being run by a nested call. The stack is
 * intrusive (tw_deferred.link), so it costs no allocation; a deferred is on at
 * most one loop's stack (in_loop), and the loop that holds it is the one that
 * runs its callbacks: starting a loop on a deferred already in one does
 * nothing, as Twisted's _runningCallbacks guard.
 *
 * References. A loop holds one on each deferred on its stack. A deferred that
 * waits is held by the continuation on the inner's chain (so its callbacks go
 * on after its users dropped it) and holds the inner (so cancelling it can
 * forward), until nobody but the continuation holds it: then nobody can
 * cancel it any more, and it lets the inner go, which breaks the cycle. If the
 * inner then dies unfired, its continuation releases the waiting deferred.
 * Releasing is iterative too: a deferred whose count drops to zero is queued,
 * and the outermost unref destroys the queue's deferreds one by one, so
 * tearing down a deep nest does not recurse. */
#include <twine/alloc.h>
#include <twine/deferred.h>
#include <twine/error.h>
#include <twine/log.h>

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "deferred/deferred-internal.h"

#define NS "twine.deferred"

/* Room for this many pairs inside the deferred: most chains are this short. */
#define INLINE_PAIRS 4

struct pair {
    tw_callback_fn callback; /* or a marker: continue_marker, chain_marker */
    tw_callback_fn errback;
    void *arg;
    tw_release_fn arg_release;
};

struct tw_deferred {
    tw_result result;
    struct pair *pairs; /* inline_pairs, or a tw_malloc'd array once it outgrew them */
    uint32_t next;      /* first pair not yet run */
    uint32_t count;     /* pairs stored: [next, count) are waiting */
    uint32_t cap;
    uint32_t reserved; /* free slots promised to tw__deferred_add_reserved */
    uint32_t refs;
    uint32_t pauses; /* tw_deferred_pause, not yet unpaused */
    bool called;
    bool in_loop;    /* on a run loop's stack */
    bool suppress;   /* cancelled without a canceller: ignore one later firing */
    bool owns_inner; /* holds a reference to waiting_on */
    bool cancelling; /* inside its canceller */
    tw_canceller_fn canceller;
    void *canceller_arg;
    tw_deferred *waiting_on; /* the deferred a callback returned, until it hands its result */
    tw_deferred *link;       /* the deferred below on a loop's stack; next in the dead queue */
    struct pair inline_pairs[INLINE_PAIRS];
};

static atomic_size_t unhandled_count;

/* Markers: never called; their bodies differ so no linker folds them into one. */
static tw_result continue_marker(tw_result result, void *arg)
{
    (void)arg;
    return result;
}

static tw_result chain_marker(tw_result result, void *arg)
{
    (void)result;
    (void)arg;
    return tw_result_from_int(2);
}

size_t tw_deferred_unhandled_count(void)
{
    return atomic_load(&unhandled_count);
}

tw_deferred *tw_deferred_new(tw_canceller_fn canceller, void *canceller_arg)
{
    tw_deferred *d = tw_malloc(sizeof *d);
    if (!d)
        return NULL;
    /* Field by field: the inline pairs need no zeroing. */
    d->result = (tw_result){0};
    d->next = d->count = d->reserved = d->pauses = 0;
    d->cap = INLINE_PAIRS;
    d->refs = 1;
    d->called = d->in_loop = d->suppress = d->owns_inner = d->cancelling = false;
    d->canceller = canceller;
    d->canceller_arg = canceller_arg;
    d->waiting_on = d->link = NULL;
    d->pairs = d->inline_pairs;
    return d;
}

tw_deferred *tw_deferred_ref(tw_deferred *d)
{
    if (d)
        d->refs++;
    return d;
}

void tw_deferred_release_value(void *d)
{
    tw_deferred_unref(d);
}

bool tw_deferred_called(const tw_deferred *d)
{
    return d && d->called;
}

/* ---- Pair storage */

/* Makes room for `want` more pairs after the stored ones, compacting away the
 * pairs already run, or growing. The run loop copies a pair out before calling
 * it and reads next/count afresh, so this may move pairs under it. */
static int make_room(tw_deferred *d, uint32_t want)
{
    uint32_t live = d->count - d->next;
    if (d->cap - d->count >= want)
        return 0;
    if (d->cap - live >= want) {
        memmove(d->pairs, d->pairs + d->next, live * sizeof *d->pairs);
        d->count = live;
        d->next = 0;
        return 0;
    }
    size_t need = (size_t)live + want;
    size_t cap = (size_t)d->cap * 2;
    while (cap < need)
        cap *= 2;
    if (cap > UINT32_MAX / 2)
        return TW_ENOMEM;
    struct pair *pairs;
    if (d->pairs == d->inline_pairs) {
        pairs = tw_malloc(cap * sizeof *pairs);
        if (!pairs)
            return TW_ENOMEM;
        memcpy(pairs, d->pairs + d->next, live * sizeof *pairs);
    } else {
        pairs = tw_realloc(d->pairs, cap * sizeof *pairs);
        if (!pairs)
            return TW_ENOMEM;
        memmove(pairs, pairs + d->next, live * sizeof *pairs);
    }
    d->pairs = pairs;
    d->cap = (uint32_t)cap;
    d->count = live;
    d->next = 0;
    return 0;
}

/* Appends into room already made. */
static void append(tw_deferred *d, tw_callback_fn callback, tw_callback_fn errback, void *arg,
                   tw_release_fn arg_release)
{
    d->pairs[d->count++] = (struct pair){callback, errback, arg, arg_release};
}

static void unlink_waiter(tw_deferred *waiter)
{
    waiter->waiting_on = NULL;
    waiter->owns_inner = false;
    tw_deferred_unref(waiter);
}

/* A pair that will never run: hand back what it holds. */
static void release_pair(struct pair *p)
{
    if (p->callback == continue_marker)
        unlink_waiter(p->arg); /* its inner is going away: it will wait forever */
    else if (p->callback == chain_marker)
        tw_deferred_unref(p->arg);
    else if (p->arg_release)
        p->arg_release(p->arg);
}

/* ---- Releasing */

static _Thread_local tw_deferred *dead_head, *dead_tail;
static _Thread_local bool reaping;

static void destroy(tw_deferred *d)
{
    if (d->result.failure) {
        atomic_fetch_add(&unhandled_count, 1);
        tw_log_failure(TW_LOG_ERROR, NS, d->result.failure, "Unhandled error in Deferred:");
    }
    tw_result_release(&d->result);
    /* A released pair can run user code that queues more dead deferreds, never
     * this one (it has no references left), so the indices stay put. */
    for (uint32_t i = d->next; i < d->count; i++)
        release_pair(&d->pairs[i]);
    if (d->pairs != d->inline_pairs)
        tw_free(d->pairs);
    tw_free(d);
}

void tw_deferred_unref(tw_deferred *d)
{
    while (d) {
        if (--d->refs > 0) {
            /* Only the continuation holds a waiting deferred now: nobody can
             * cancel it, so it need not hold its inner any more. */
            if (d->refs == 1 && d->waiting_on && d->owns_inner) {
                d->owns_inner = false;
                d = d->waiting_on;
                continue;
            }
            return;
        }
        d->link = NULL;
        if (dead_tail)
            dead_tail->link = d;
        else
            dead_head = d;
        dead_tail = d;
        break;
    }
    if (reaping || !dead_head)
        return;
    reaping = true;
    while (dead_head) {
        tw_deferred *dead = dead_head;
        dead_head = dead->link;
        if (!dead_head)
            dead_tail = NULL;
        destroy(dead);
    }
    reaping = false;
}

/* ---- Running */

/* The deferred a callback returned (r holds one reference to it) becomes cur's
 * result: at once if it has one, else cur waits for it. Returns cur's new
 * result (empty while waiting). */
static tw_result adopt(tw_deferred *cur, tw_result r)
{
    tw_deferred *inner = r.value;
    if (inner == cur) {
        tw_log_error(NS,
                     "a callback returned the deferred it was added to (%p): that would wait "
                     "forever; failing with EINVAL",
                     (void *)cur);
        inner->refs--; /* the loop holds cur too */
        return tw_result_fail(
            tw_failure_new(TW_EINVAL, NULL, "callback returned its own deferred"));
    }
    if (inner->called && !inner->pauses && !inner->waiting_on) {
        tw_result got = inner->result;
        inner->result = (tw_result){0};
        tw_deferred_unref(inner);
        return got;
    }
    if (make_room(inner, inner->reserved + 1) < 0) {
        tw_deferred_unref(inner);
        return tw_result_fail(tw_failure_new(
            TW_ENOMEM, NULL, "out of memory: cannot wait for the deferred a callback returned"));
    }
    append(inner, continue_marker, continue_marker, cur, NULL);
    cur->refs++; /* the continuation's */
    cur->waiting_on = inner;
    cur->owns_inner = true; /* the reference r held */
    return (tw_result){0};
}

/* Sets d's result without running its callbacks. Returns 0 when d now has it,
 * 1 when the firing was swallowed after a cancellation, or an error (the
 * result released, the misuse logged). */
static int fire(tw_deferred *d, tw_result r, const char *who)
{
    if (tw_result_is_deferred(r)) {
        tw_log_error(NS,
                     "%s: a deferred cannot be fired with a deferred (return it from a "
                     "callback instead)",
                     who);
        tw_result_release(&r);
        return TW_EINVAL;
    }
    if (d->called) {
        if (d->suppress) {
            d->suppress = false;
            tw_result_release(&r);
            return 1;
        }
        tw_log_error(NS, "%s: deferred %p already called: a deferred fires only once", who,
                     (void *)d);
        tw_result_release(&r);
        return TW_EALREADYCALLED;
    }
    d->called = true;
    d->result = r;
    return 0;
}

static void push(tw_deferred **top, tw_deferred *d)
{
    d->in_loop = true;
    d->link = *top;
    *top = d;
}

/* _runCallbacks. Every deferred on the stack has a reference held for it. */
static void run(tw_deferred *d)
{
    if (!d->called || d->in_loop || d->pauses || d->waiting_on)
        return;
    d->refs++;
    tw_deferred *top = NULL;
    push(&top, d);
    while (top) {
        tw_deferred *cur = top;
        while (!cur->pauses && !cur->waiting_on && cur->next < cur->count) {
            struct pair p = cur->pairs[cur->next++];
            if (p.callback == continue_marker) {
                /* The waiter takes the result and goes on, on this stack. */
                tw_deferred *w = p.arg;
                w->result = cur->result;
                cur->result = (tw_result){0};
                w->waiting_on = NULL;
                if (w->owns_inner) {
                    w->owns_inner = false;
                    cur->refs--; /* never the last: this loop holds cur */
                }
                push(&top, w); /* with the continuation's reference */
                break;
            }
            if (p.callback == chain_marker) {
                tw_deferred *other = p.arg;
                tw_result r = cur->result;
                cur->result = (tw_result){0};
                int rc = fire(other, r, "tw_deferred_chain");
                if (rc == 0) {
                    push(&top, other); /* with the pair's reference */
                    break;
                }
                tw_deferred_unref(other);
                if (rc == TW_EALREADYCALLED)
                    cur->result = tw_result_fail(tw_failure_new(
                        TW_EALREADYCALLED, NULL, "the chained deferred was already called"));
                continue;
            }
            tw_callback_fn fn = cur->result.failure ? p.errback : p.callback;
            if (fn) {
                tw_result r = cur->result;
                cur->result = (tw_result){0};
                r = fn(r, p.arg);
                if (p.arg_release)
                    p.arg_release(p.arg);
                if (tw_result_is_deferred(r))
                    r = adopt(cur, r);
                /* A callback may have stored nothing here (the slot is empty
                 * while it runs), so this overwrites no result. */
                cur->result = r;
            } else if (p.arg_release) {
                p.arg_release(p.arg);
            }
        }
        if (top != cur)
            continue; /* run what was pushed, then come back to cur */
        top = cur->link;
        cur->link = NULL;
        cur->in_loop = false;
        if (cur->next == cur->count)
            cur->next = cur->count = 0;
        tw_deferred_unref(cur);
    }
}

/* ---- Adding callbacks */

int tw_deferred_add_callbacks(tw_deferred *d, tw_callback_fn callback, tw_callback_fn errback,
                              void *arg, tw_release_fn arg_release)
{
    if (!d)
        return TW_EINVAL;
    int rc = make_room(d, d->reserved + 1);
    if (rc < 0)
        return rc;
    append(d, callback, errback, arg, arg_release);
    run(d);
    return 0;
}

int tw__deferred_reserve(tw_deferred *d)
{
    int rc = make_room(d, d->reserved + 1);
    if (rc == 0)
        d->reserved++;
    return rc;
}

void tw__deferred_unreserve(tw_deferred *d)
{
    d->reserved--;
}

void tw__deferred_add_reserved(tw_deferred *d, tw_callback_fn callback, tw_callback_fn errback,
                               void *arg, tw_release_fn arg_release)
{
    d->reserved--;
    append(d, callback, errback, arg, arg_release);
    run(d);
}

int tw_deferred_chain(tw_deferred *d, tw_deferred *other)
{
    if (!d || !other || other == d)
        return TW_EINVAL;
    int rc = make_room(d, d->reserved + 1);
    if (rc < 0)
        return rc;
    append(d, chain_marker, chain_marker, tw_deferred_ref(other), NULL);
    run(d);
    return 0;
}

/* ---- Firing, pausing, cancelling */

int tw_deferred_callback(tw_deferred *d, tw_result result)
{
    if (!d) {
        tw_result_release(&result);
        return TW_EINVAL;
    }
    int rc = fire(d, result, "tw_deferred_callback");
    if (rc == 0)
        run(d);
    return rc < 0 ? rc : 0;
}

int tw_deferred_errback(tw_deferred *d, tw_failure *failure)
{
    if (!failure) {
        tw_log_error(NS, "tw_deferred_errback: no failure given");
        return TW_EINVAL;
    }
    return tw_deferred_callback(d, tw_result_fail(failure));
}

void tw_deferred_pause(tw_deferred *d)
{
    if (d)
        d->pauses++;
}

int tw_deferred_unpause(tw_deferred *d)
{
    if (!d)
        return TW_EINVAL;
    if (!d->pauses)
        return TW_EPAUSED;
    if (--d->pauses == 0)
        run(d);
    return 0;
}

void tw_deferred_cancel(tw_deferred *d)
{
    if (!d)
        return;
    /* A deferred waiting on another forwards to it; walking the nest here
     * rather than recursing keeps a deep one in constant stack. */
    while (d->waiting_on)
        d = d->waiting_on;
    if (d->called || d->cancelling)
        return; /* a canceller cancelling its own deferred: it is being done */
    d->refs++;  /* the canceller may drop the last reference */
    if (d->canceller) {
        d->cancelling = true;
        d->canceller(d, d->canceller_arg);
        d->cancelling = false;
    } else {
        d->suppress = true; /* the producer does not know: eat its firing */
    }
    if (!d->called)
        tw_deferred_errback(d, tw_failure_new(TW_ECANCELED, NULL, "deferred cancelled"));
    tw_deferred_unref(d);
}

/* ---- addTimeout */

struct timeout {
    tw_deferred *d; /* valid while the pair waits: releasing d releases the pair */
    tw_delayed_call call;
    double seconds;
    bool timed_out;
};

static void timeout_expired(void *arg)
{
    struct timeout *t = arg;
    t->timed_out = true;
    tw_deferred_cancel(t->d); /* may run the pair, which frees t */
}

static tw_result timeout_convert(tw_result result, void *arg)
{
    struct timeout *t = arg;
    if (t->timed_out && result.failure && tw_failure_code(result.failure) == TW_ECANCELED)
        return tw_result_fail(tw_failure_new(TW_ETIMEDOUT, result.failure,
                                             "deferred timed out after %g seconds", t->seconds));
    return result;
}

static void timeout_release(void *arg)
{
    struct timeout *t = arg;
    tw_delayed_call_cancel(t->call); /* fired first, or released: the timer goes */
    tw_free(t);
}

int tw_deferred_add_timeout(tw_deferred *d, tw_clock *clock, double seconds)
{
    if (!d || !clock || !(seconds >= 0) || isinf(seconds))
        return TW_EINVAL;
    int rc = make_room(d, d->reserved + 1);
    if (rc < 0)
        return rc;
    struct timeout *t = tw_malloc(sizeof *t);
    if (!t)
        return TW_ENOMEM;
    *t = (struct timeout){.d = d, .seconds = seconds};
    rc = tw_call_later(clock, seconds, timeout_expired, t, &t->call);
    if (rc < 0) {
        tw_free(t);
        return rc;
    }
    append(d, timeout_convert, timeout_convert, t, timeout_release);
    run(d);
    return 0;
}

/* ---- Ready-made deferreds */

tw_deferred *tw_succeed(tw_result result)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    if (!d) {
        tw_result_release(&result);
        return NULL;
    }
    if (tw_deferred_callback(d, result) < 0)
        tw_deferred_errback(
            d, tw_failure_new(TW_EINVAL, NULL, "tw_succeed: the result was a deferred"));
    return d;
}

tw_deferred *tw_fail(tw_failure *failure)
{
    if (!failure)
        failure = tw_failure_new(TW_EINVAL, NULL, "tw_fail: no failure given");
    return tw_succeed(tw_result_fail(failure));
}

tw_deferred *tw_maybe_deferred(tw_result (*fn)(void *arg), void *arg)
{
    tw_result r = fn(arg);
    if (tw_result_is_deferred(r))
        return r.value;
    return tw_succeed(r);
}
