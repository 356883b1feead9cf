/* Coroutines: tw_coro_start (ensureDeferred), tw_await, cancellation.
 *
 * Resuming. A coroutine suspends only inside tw_await, after adding a pair
 * to the awaited deferred; the pair's release function (which runs right
 * after the pair's callback or errback, or when the deferred is released
 * without reaching it) resumes it, on whatever stack runs that deferred's
 * chain. resume() saves the resumer's context in the coroutine and switches;
 * the coroutine switches back to it when it suspends again or returns. So a
 * resume nests like a function call, whichever stack it starts from (the
 * thread's own, or another coroutine's), and the set of coroutines being
 * resumed at any moment is a chain in which each appears at most once: only
 * a suspended coroutine can be resumed, and a coroutine in the chain is
 * running, not suspended. Resuming from the release function rather than from
 * the callback keeps the deferred machinery from touching the pair's argument
 * (the coroutine, which may be gone) after the coroutine has run.
 *
 * Ending. A coroutine that returns switches back for good. The resumer, on
 * its own stack, gives the stack back to the pool and only then fires the
 * coroutine's deferred, so the callbacks on it run on the resumer's stack
 * (as if the function had been called there). Firing it may resume a
 * coroutine that was waiting for it, which may end in turn, and so on up a
 * chain of coroutines each awaiting the next: fired from inside one another,
 * those firings would nest, one level of C frames per coroutine on the
 * stack that fired the first (a 64 KiB coroutine stack would overflow after
 * a few hundred). So each stack keeps a queue of the coroutines that ended
 * while it was firing one: the outermost firing on that stack drains it, one
 * at a time, and the chain unwinds in constant stack, as deferred chains do.
 * A coroutine ending outside any firing has its deferred fired at once.
 *
 * Cancelling (Twisted's _cancellableInlineCallbacks). The deferred handed to
 * the caller ("out") has a canceller, and a first pair, added before anyone
 * else can add one, whose errback recognises one particular failure (the
 * marker). Cancelling out fails it with the marker: the first errback
 * replaces the marker by a new deferred for the coroutine to fire, which out
 * then waits on; then the deferred being awaited is cancelled, and the
 * coroutine resumes with TW_ECANCELED. Whatever it returns then fires the new
 * deferred, and through it out. Each such deferred holds a reference to the
 * coroutine's state until its first pair is done, so a paused out may still
 * find the marker's replacement later.
 *
 * References to the state (struct tw_coro): one while the coroutine has not
 * ended, one per first pair of an out deferred. The stack is separate and goes
 * back to the pool as soon as the coroutine ends. */
#include <math.h>

#include <twine/alloc.h>
#include <twine/coro.h>
#include <twine/error.h>
#include <twine/log.h>

#include "coro/sanitizer.h"
#include "coro/stack.h"
#include "coro/switch.h"
#include "reactor/reactor-internal.h"

#define NS "twine.coro"

enum coro_state { CORO_RUNNING, CORO_SUSPENDED, CORO_DONE };

/* Coroutines that ended, waiting for their deferred to fire (see Ending). */
struct ended_queue {
    tw_coro *head, *tail;
    bool draining;
};

struct tw_coro {
    tw__ctx ctx;      /* its own registers, while it is not running */
    tw__ctx caller;   /* its resumer's, while it runs */
    tw_coro *resumer; /* what was current when it was resumed (NULL: the thread's stack) */
    struct tw__coro_stack stack;
    tw_reactor *reactor;
    tw_coro_fn fn;
    void *arg;
    enum coro_state state;
    unsigned refs;

    tw_deferred *out;          /* fired with the result (a replacement after a cancel) */
    tw_failure *cancel_marker; /* identity only: the failure a cancel sent down out */
    tw_deferred *replacement;  /* what that out's chain waits on next (a reference) */
    bool cancel_pending;       /* cancelled while running: cancel what it awaits next */

    tw_deferred *awaiting; /* borrowed: valid while the pair tw_await added is pending */
    bool await_got;        /* the pair's callback or errback ran */
    bool await_done;       /* the pair is done with: await_result is the answer */
    tw_result await_result;
    tw_result final; /* what fn returned, between its return and the firing */

    struct ended_queue ended; /* those resumed from this stack that ended */
    tw_coro *next_ended;      /* link in the queue of the stack that resumed it */

    /* AddressSanitizer: the stack to name when switching back to the resumer. */
    const void *caller_bottom;
    size_t caller_size;
};

static _Thread_local tw_coro *current;
static _Thread_local size_t live;
static _Thread_local struct ended_queue thread_ended; /* the thread's own stack's */

static void coro_unref(void *arg)
{
    tw_coro *c = arg;
    if (--c->refs)
        return;
    tw_deferred_unref(c->replacement); /* a paused out never came back for it */
    tw_free(c);
}

/* ---- Switching */

static void finish(tw_coro *c);

/* On the stack whose queue q is: fires the deferreds of the coroutines that
 * ended, including those that end while it does. */
static void ended(struct ended_queue *q, tw_coro *c)
{
    c->next_ended = NULL;
    if (q->tail)
        q->tail->next_ended = c;
    else
        q->head = c;
    q->tail = c;
    if (q->draining)
        return; /* an outer frame on this stack is firing one: it will get to c */
    q->draining = true;
    while (q->head) {
        tw_coro *done = q->head;
        q->head = done->next_ended;
        if (!q->head)
            q->tail = NULL;
        finish(done);
    }
    q->draining = false;
}

/* On the resumer's stack: runs c until it suspends or ends. */
static void resume(tw_coro *c)
{
    c->resumer = current;
    current = c;
    c->state = CORO_RUNNING;
    void *fake_stack = NULL;
    tw__asan_start_switch(&fake_stack, c->stack.lo, c->stack.size);
    tw__ctx_switch(&c->caller, &c->ctx);
    tw__asan_finish_switch(fake_stack, NULL, NULL);
    /* c put current back before it switched. */
    if (c->state == CORO_DONE)
        ended(current ? &current->ended : &thread_ended, c);
}

/* On c's stack (c is current): back to the resumer until resumed again. */
static void suspend(tw_coro *c)
{
    c->state = CORO_SUSPENDED;
    current = c->resumer;
    void *fake_stack = NULL;
    tw__asan_start_switch(&fake_stack, c->caller_bottom, c->caller_size);
    tw__ctx_switch(&c->ctx, &c->caller);
    tw__asan_finish_switch(fake_stack, &c->caller_bottom, &c->caller_size);
}

static void coro_main(void *arg)
{
    tw_coro *c = arg;
    tw__asan_finish_switch(NULL, &c->caller_bottom, &c->caller_size);
    tw_result r = c->fn(c->arg);
    if (tw_result_is_deferred(r))
        r = tw_await(r.value); /* the coroutine's deferred fires with its result */
    c->final = r;
    c->state = CORO_DONE;
    current = c->resumer;
    /* NULL: this stack never runs again, so ASan may drop its fake stack. */
    tw__asan_start_switch(NULL, c->caller_bottom, c->caller_size);
    tw__ctx_switch(&c->ctx, &c->caller);
    __builtin_unreachable(); /* nothing switches to an ended coroutine */
}

/* On the resumer's stack, once c has returned. */
static void finish(tw_coro *c)
{
    tw__coro_stack_put(&c->stack);
    live--;
    tw_result r = c->final;
    c->final = (tw_result){0};
    tw_deferred *out = c->out;
    c->out = NULL;
    coro_unref(c); /* the running coroutine's; out's first pair still holds one */
    if (out) {
        tw_deferred_callback(out, r);
        tw_deferred_unref(out);
        return;
    }
    /* Only after a cancel that ran out of memory: out failed with ECANCELED. */
    if (r.failure)
        tw_log_failure(TW_LOG_WARN, NS, r.failure,
                       "a cancelled coroutine's result is dropped (out of memory when cancelled):");
    tw_result_release(&r);
}

/* ---- The coroutine's deferred and its cancellation */

static void coro_cancel(tw_deferred *d, void *arg);

/* The first errback of every out deferred. */
static tw_result take_marker(tw_result result, void *arg)
{
    tw_coro *c = arg;
    if (!result.failure || result.failure != c->cancel_marker)
        return result;
    c->cancel_marker = NULL;
    tw_failure_unref(result.failure);
    tw_deferred *next = c->replacement;
    c->replacement = NULL;
    return tw_result_deferred(next);
}

static tw_deferred *new_out(tw_coro *c)
{
    tw_deferred *d = tw_deferred_new(coro_cancel, c);
    if (!d)
        return NULL;
    /* The first pair of a fresh deferred fits in it: this cannot fail, but
     * would be handled if it did. */
    if (tw_deferred_add_callbacks(d, NULL, take_marker, c, coro_unref) < 0) {
        tw_deferred_unref(d);
        return NULL;
    }
    c->refs++;
    return d;
}

/* The canceller of out (d is c->out: older outs have fired with the marker).
 * c is alive: d's first pair holds it. */
static void coro_cancel(tw_deferred *d, void *arg)
{
    tw_coro *c = arg;
    if (d != c->out) {
        tw_log_error(NS, "coroutine canceller called for a deferred it does not fire");
        return;
    }
    tw_deferred *next = new_out(c);
    tw_failure *marker = next ? tw_failure_new(TW_ECANCELED, NULL, "coroutine cancelled") : NULL;
    if (next && tw_failure_code(marker) == TW_ECANCELED) {
        c->cancel_marker = marker;
        c->replacement = tw_deferred_ref(next);
        c->out = next;                  /* with new_out's reference */
        tw_deferred_errback(d, marker); /* take_marker: d now waits on next */
        tw_deferred_unref(d);           /* c's; tw_deferred_cancel holds its own */
    } else {
        /* Out of memory: d fails with ECANCELED when this returns, and what
         * the coroutine returns later is dropped (and logged). */
        tw_failure_unref(marker);
        tw_deferred_unref(next);
        c->out = NULL;
        tw_deferred_unref(d);
    }
    if (c->state == CORO_SUSPENDED && c->awaiting)
        tw_deferred_cancel(c->awaiting); /* resumes c, which may end: c is not touched after */
    else
        c->cancel_pending = true;
}

/* ---- Starting */

tw_deferred *tw_coro_start(tw_reactor *r, tw_coro_fn fn, void *arg, const tw_coro_options *options)
{
    if (!r || !fn)
        return tw_fail(
            tw_failure_new(TW_EINVAL, NULL, "tw_coro_start: %s is NULL", r ? "fn" : "the reactor"));
    if (!tw__reactor_on_owner_thread(r))
        return tw_fail(tw_failure_new(TW_EWRONGTHREAD, NULL,
                                      "tw_coro_start: called off the reactor's thread"));
    size_t asked = options ? options->stack_size : 0;
    size_t size = tw__coro_stack_round(asked);
    if (!size)
        return tw_fail(tw_failure_new(
            TW_EINVAL, NULL, "tw_coro_start: a stack of %zu bytes is above the maximum (%d)", asked,
            TW_CORO_STACK_MAX));
    tw_coro *c = tw_calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->refs = 1;
    c->reactor = r;
    c->fn = fn;
    c->arg = arg;
    c->out = new_out(c);
    if (!c->out) {
        tw_free(c);
        return NULL;
    }
    if (tw__coro_stack_get(&c->stack, size) < 0) {
        tw_deferred_unref(c->out); /* its pair drops its reference */
        tw_free(c);
        return NULL;
    }
    tw__ctx_make(&c->ctx, c->stack.lo, c->stack.size, coro_main, c);
    live++;
    tw_deferred *d = tw_deferred_ref(c->out);
    resume(c); /* c may be gone after this */
    return d;
}

/* ---- Awaiting */

static tw_result await_got(tw_result result, void *arg)
{
    tw_coro *c = arg;
    c->await_result = result;
    c->await_got = true;
    return tw_result_ok(NULL, NULL); /* the awaited chain goes on with None */
}

static void await_release(void *arg)
{
    tw_coro *c = arg;
    if (!c->await_got)
        c->await_result = tw_result_fail(
            tw_failure_new(TW_ECANCELED, NULL,
                           "the awaited deferred was released without firing: nothing can fire "
                           "it any more"));
    c->awaiting = NULL;
    c->await_done = true;
    if (c->state == CORO_SUSPENDED)
        resume(c);
    /* else: still inside tw_await, which returns the result without switching */
}

tw_result tw_await(tw_deferred *d)
{
    tw_coro *c = current;
    if (!c) {
        tw_deferred_unref(d);
        tw_log_error(NS, "tw_await called outside a coroutine: there is nothing to suspend");
        return tw_result_fail(tw_failure_new(
            TW_EINVAL, NULL, "tw_await outside a coroutine: there is nothing to suspend"));
    }
    if (!d)
        return tw_result_fail(
            tw_failure_new(TW_ENOMEM, NULL, "tw_await: no deferred to wait for (out of memory)"));
    if (d == c->out) {
        tw_deferred_unref(d);
        tw_log_error(NS, "a coroutine awaited its own deferred: that would wait forever");
        return tw_result_fail(
            tw_failure_new(TW_EINVAL, NULL, "a coroutine cannot await its own deferred"));
    }
    c->await_got = c->await_done = false;
    c->await_result = (tw_result){0};
    int rc = tw_deferred_add_callbacks(d, await_got, await_got, c, await_release);
    if (rc < 0) {
        tw_deferred_unref(d);
        return tw_result_fail(tw_failure_new(rc, NULL, "tw_await: cannot wait for the deferred"));
    }
    if (!c->await_done)
        c->awaiting = d;
    tw_deferred_unref(d); /* the caller's: if it was the last, d is released unfired now */
    if (!c->await_done && c->cancel_pending) {
        c->cancel_pending = false;
        tw_deferred_cancel(c->awaiting);
    }
    if (!c->await_done)
        suspend(c);
    tw_result r = c->await_result;
    c->await_result = (tw_result){0};
    return r;
}

/* ---- Sleeping */

struct sleeper {
    tw_deferred *d; /* the timer's reference */
    tw_delayed_call call;
};

static void sleep_fire(void *arg)
{
    struct sleeper *s = arg;
    tw_deferred *d = s->d;
    tw_free(s); /* d has fired from here on: its canceller will not run */
    tw_deferred_callback(d, tw_result_ok(NULL, NULL));
    tw_deferred_unref(d);
}

static void sleep_cancel(tw_deferred *d, void *arg)
{
    struct sleeper *s = arg;
    tw_delayed_call_cancel(s->call);
    tw_free(s);
    tw_deferred_unref(d); /* the timer's; the cancel holds one until it fails d */
}

int tw_await_sleep(tw_clock *clock, double seconds)
{
    if (!current) {
        tw_log_error(NS, "tw_await_sleep called outside a coroutine");
        return TW_EINVAL;
    }
    if (!clock || !(seconds >= 0) || isinf(seconds))
        return TW_EINVAL;
    struct sleeper *s = tw_malloc(sizeof *s);
    if (!s)
        return TW_ENOMEM;
    s->d = tw_deferred_new(sleep_cancel, s);
    if (!s->d) {
        tw_free(s);
        return TW_ENOMEM;
    }
    tw_deferred *d = s->d;
    int rc = tw_call_later(clock, seconds, sleep_fire, s, &s->call);
    if (rc < 0) {
        tw_deferred_unref(d);
        tw_free(s);
        return rc;
    }
    tw_result r = tw_await(tw_deferred_ref(d));
    rc = r.failure ? tw_failure_code(r.failure) : 0;
    tw_result_release(&r);
    return rc;
}

/* ---- Introspection */

tw_coro *tw_coro_current(void)
{
    return current;
}

tw_reactor *tw_coro_reactor(const tw_coro *c)
{
    return c ? c->reactor : NULL;
}

size_t tw_coro_stack_size(const tw_coro *c)
{
    return c ? c->stack.size : 0;
}

void tw_coro_get_stats(tw_coro_stats *out)
{
    if (!out)
        return;
    tw__coro_stack_stats(out);
    out->live = live;
}
