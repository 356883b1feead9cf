/* Coroutines (inlineCallbacks, ensureDeferred, async def + await): straight-
 * line code that waits for deferreds.
 *
 *     static tw_result fetch(void *arg)
 *     {
 *         tw_result r = tw_await(start_request(arg)); // suspends until it fires
 *         if (tw_result_is_failure(r))
 *             return r;                               // the failure, cause chain and all
 *         ... use r.value ...
 *         tw_result_release(&r);
 *         return tw_result_from_int(1);
 *     }
 *     tw_deferred *d = tw_coro_start(reactor, fetch, arg, NULL);
 *
 * A coroutine is a function running on a stack of its own, on the reactor's
 * thread. tw_coro_start runs it at once, as Twisted runs an inlineCallbacks
 * generator, until it first waits for a deferred that has not fired; the
 * reactor's thread then goes on with the caller, and the coroutine resumes
 * when that deferred fires, right there in the firing callback (as Twisted
 * resumes the generator from its callback) — whatever runs the callback, the
 * reactor's own stack or another coroutine. Resuming is a function call
 * that happens to change stacks: the coroutine runs until it waits again or
 * returns, then the firing goes on. No stack grows with the number of
 * switches: each coroutine runs on its own, and a coroutine that is running
 * (or resuming another) cannot be resumed. Coroutines that end one another
 * (each awaiting the next) unwind through a queue, not nested calls, so a
 * chain thousands deep ends in constant stack.
 *
 * ---- Results and failures
 * What the function returns (a tw_result) is what the deferred that
 * tw_coro_start returned fires with: a value, or a failure (errback). A
 * returned deferred is waited for first, so the coroutine's deferred fires
 * with its result (a callback returning a deferred behaves the same). C has
 * no exceptions: a failure that tw_await returns is a value like any other,
 * and returning it is how it propagates to whoever waits on the coroutine,
 * with its cause chain (wrap it with tw_failure_new(code, failure, ...) to add
 * context as it goes up).
 *
 * ---- Cancellation (Twisted's inlineCallbacks semantics)
 * Cancelling the coroutine's deferred cancels the deferred the coroutine is
 * waiting on: that one's canceller runs, it fails with TW_ECANCELED (unless
 * its canceller fired it otherwise), and the coroutine resumes with that
 * failure from tw_await. It may clean up (await more, even) and return what
 * it likes: its deferred fires with what the coroutine returns — a value if
 * it swallowed the cancellation, as in Twisted, where a generator that
 * catches CancelledError and returns a value gives the Deferred that value.
 * Until the coroutine returns, its deferred has not fired (it waits on an
 * inner one, so cancelling it again cancels what the coroutine waits on
 * then). A coroutine whose deferred is cancelled while it runs (from its own
 * code, or code it called) is not waiting on anything: the cancellation is
 * kept, and its next tw_await cancels the deferred it is given at once.
 *
 * ---- When the awaited deferred can never fire
 * A coroutine waiting on a deferred holds no reference to it (the deferred's
 * chain holds the coroutine). If every reference to that deferred goes
 * without it firing, nothing can resume the coroutine any more: it resumes
 * then, from tw_await, with a TW_ECANCELED failure ("released without
 * firing"), so it can release what it holds and return. A coroutine waiting
 * on something that stays alive but never fires (a delayed call on a reactor
 * or manual clock that is freed first: their pending calls are dropped, not
 * released) is never resumed: its stack, its state and all it holds stay
 * allocated, and leak checkers report them. Let coroutines finish, or cancel
 * them, before freeing the reactor; tw_coro_get_stats counts those alive.
 *
 * ---- Stacks
 * Each coroutine gets a stack of tw_coro_options.stack_size bytes (64 KiB by
 * default, 256 KiB under AddressSanitizer, whose redzones inflate frames),
 * mapped with mmap with an inaccessible guard page below it, so an overflow
 * is a SIGSEGV at the guard rather than silent corruption. Only the pages a
 * coroutine touches are committed: one parked in tw_await after a few calls
 * costs about 4.6 KiB in all — one page of its stack, its state and its
 * deferred (measured: docs/benchmarks.md) — so 10,000 waiting coroutines take
 * about 46 MB. Each stack is two kernel mappings (stack and guard): the
 * default vm.max_map_count (65530) allows about 32,000 live coroutines per
 * process; raise it for more. When a coroutine ends, its
 * stack goes back to a pool of the thread (at most TW_CORO_POOL_MAX stacks,
 * reused for a coroutine asking the same size); the rest are unmapped. The
 * pool is released when the thread exits, or by tw_coro_pool_trim.
 * 64 KiB is room for what library code does on a coroutine's stack: deferred
 * chains run in constant stack, stdio's printf needs a few KiB, a TLS write
 * a few more; a coroutine that recurses or keeps big local arrays asks for
 * more. A larger reservation costs address space, not memory.
 *
 * ---- Switching
 * The switch saves the callee-saved registers and the stack pointer and
 * loads another's: about a dozen instructions of assembly on x86-64 and
 * aarch64 (swapcontext, used on other architectures, also saves the signal
 * mask with a system call per switch). The floating-point environment
 * (rounding mode, exception flags) belongs to the thread, shared by its
 * coroutines. AddressSanitizer is told of each switch (its fiber
 * annotations) and valgrind of each stack, so both work on coroutine code.
 *
 * Threads: coroutines run on the thread of their reactor; tw_coro_current
 * and the stack pool are per thread. Nothing here is thread-safe. */
#ifndef TWINE_CORO_H
#define TWINE_CORO_H

#include <stdbool.h>
#include <stddef.h>

#include <twine/clock.h>
#include <twine/deferred.h>
#include <twine/reactor.h>
#include <twine/result.h>

typedef struct tw_coro tw_coro;

/* The coroutine's body: gets the arg given to tw_coro_start and returns the
 * result its deferred fires with (a value, a failure, or a deferred to wait
 * for). */
typedef tw_result (*tw_coro_fn)(void *arg);

#define TW_CORO_STACK_MIN (16 * 1024)         /* smaller sizes are raised to this */
#define TW_CORO_STACK_MAX (256 * 1024 * 1024) /* larger ones are refused */
#define TW_CORO_POOL_MAX  128                 /* stacks a thread keeps for reuse */

typedef struct tw_coro_options {
    /* Usable stack bytes, rounded up to whole pages (the guard page comes on
     * top). 0: the default, 64 KiB (256 KiB under AddressSanitizer). */
    size_t stack_size;
} tw_coro_options;

/* ensureDeferred: runs fn(arg) as a coroutine of reactor r, at once, until it
 * first waits for a deferred that has not fired (or returns), then returns
 * a new reference to the deferred that fires with fn's result (it may have
 * fired already). options may be NULL (defaults). Call it on r's thread,
 * inside a coroutine or not (a coroutine started from another runs until it
 * first waits, then the starting one goes on).
 * Returns NULL when out of memory — the state, the deferred or the stack
 * could not be allocated (mmap failing counts) — and fn did not run. Bad
 * arguments give a deferred failed with TW_EINVAL (NULL r or fn, a stack
 * size above TW_CORO_STACK_MAX) or TW_EWRONGTHREAD (not r's thread), and fn
 * does not run. */
tw_deferred *tw_coro_start(tw_reactor *r, tw_coro_fn fn, void *arg, const tw_coro_options *options);

/* await: waits for d to fire and returns its result, which the caller owns
 * (d's chain goes on with a NULL value, as after Twisted's yield). Takes over
 * the caller's reference to d, whatever happens — so tw_await(make_request())
 * leaks nothing; pass tw_deferred_ref(d) to keep one. If d has fired already
 * (and is not paused or waiting on another), returns its result at once,
 * without switching. Otherwise suspends the calling coroutine; the reactor's
 * thread goes on, and the coroutine resumes when d's chain reaches the pair
 * this adds (see the top of this file for cancellation and for a d that can
 * never fire). Failures it makes itself: TW_EINVAL when called outside a
 * coroutine ("tw_await outside a coroutine"; d is released, nothing waits,
 * never a crash); TW_ENOMEM for d == NULL (what a function returning a
 * deferred gives when out of memory) or when the pair cannot be added. */
tw_result tw_await(tw_deferred *d);

/* The coroutine running on this thread, or NULL on the thread's own stack. */
tw_coro *tw_coro_current(void);

/* The reactor the coroutine was started on. */
tw_reactor *tw_coro_reactor(const tw_coro *c);

/* Usable bytes of the coroutine's stack (after rounding). */
size_t tw_coro_stack_size(const tw_coro *c);

/* deferLater for the calling coroutine: suspends it for `seconds` on clock (a
 * reactor's, or a manual one). Returns 0 once the time has passed,
 * TW_ECANCELED if the coroutine's deferred was cancelled meanwhile (the
 * timer is cancelled too), TW_EINVAL (outside a coroutine, NULL clock,
 * negative, NaN or infinite delay) or TW_ENOMEM. */
int tw_await_sleep(tw_clock *clock, double seconds);

/* ---- Counters (per thread), for tests and leak hunts */
typedef struct tw_coro_stats {
    size_t live;          /* coroutines started and not yet returned */
    size_t stacks_mapped; /* stacks mapped now: in use plus pooled */
    size_t stacks_pooled; /* stacks waiting in the pool for reuse */
    size_t stacks_reused; /* stacks taken from the pool since the thread began */
} tw_coro_stats;

void tw_coro_get_stats(tw_coro_stats *out);

/* Unmaps every stack in this thread's pool (done by itself when the thread
 * exits). Returns how many were unmapped. */
size_t tw_coro_pool_trim(void);

#endif
